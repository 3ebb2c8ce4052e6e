//! `lambdaflow compact`: the master dataset's small segments merged into large ones (Delta's
//! OPTIMIZE), and the files no version within the retention period needs deleted (VACUUM).
//!
//! The speed layer archives one segment per partition per checkpoint; merged, a partition's
//! run of segments becomes one file covering `[first.from, last.to)` — the same events, so the
//! commit changes no data (`dataChange = false`) and readers of any version see the same rows.
//! Only segments every published batch view already covers are merged: serving and the speed
//! layer rebuild their state from the segments *after* a batch view's offsets, and a merged
//! file never straddles such an offset. Safe while the speed layer appends (its commits only
//! add files; a race is settled by Delta's conflict check) and while a batch reads (it reads
//! one version, whose files VACUUM keeps for the retention period).

use std::collections::BTreeMap;
use std::time::Duration;

use deltalake_core::operations::vacuum::VacuumMode;

use super::{Layout, batch_view, delta, segments};
use crate::config::Pipeline;
use crate::error::{Error, Result};

/// What `compact` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Compacted {
    /// Segments merged.
    pub merged: usize,
    /// Files written (one per merged run).
    pub written: usize,
    /// Files VACUUM deleted.
    pub deleted: usize,
    /// The table version afterwards.
    pub version: Option<u64>,
}

/// A merged file holds at most this many bytes of small segments.
const TARGET_BYTES: u64 = 256 << 20;

/// Per partition of the configured topic: the offset below which every published batch view
/// has read the archive (nothing is merged where some view has no batch view yet).
fn covered_by_batch(p: &Pipeline, layout: &Layout) -> Result<BTreeMap<i32, i64>> {
    let topic = &p.config.kafka.topic;
    let mut out: Option<BTreeMap<i32, i64>> = None;
    for def in &p.views {
        let Some(b) = batch_view::load_published(layout, def)? else {
            return Ok(BTreeMap::new());
        };
        let o = b.manifest.offsets_of(topic);
        out = Some(match out {
            None => o,
            Some(acc) => acc
                .into_iter()
                .filter_map(|(k, v)| o.get(&k).map(|w| (k, v.min(*w))))
                .collect(),
        });
    }
    Ok(out.unwrap_or_default())
}

/// Merges the small segments the batch views cover, then VACUUMs what is older than
/// `retention` and no longer in the table.
pub fn compact(p: &Pipeline, retention: Duration) -> Result<Compacted> {
    let layout = p.layout();
    layout.check_writable()?;
    let table = segments::catch_up(&layout, &p.schema)?;
    let below = covered_by_batch(p, &layout)?;
    let topic = &p.config.kafka.topic;
    let mut by_part: BTreeMap<i32, Vec<segments::Segment>> = BTreeMap::new();
    for s in table.segments {
        if s.topic == *topic && below.get(&s.partition).is_some_and(|&b| s.to <= b) {
            by_part.entry(s.partition).or_default().push(s);
        }
    }
    let mut done = Compacted::default();
    for (part, segs) in by_part {
        for run in runs(&segs) {
            merge(p, &layout, part, run)?;
            done.merged += run.len();
            done.written += 1;
        }
    }
    let dir = layout.master()?;
    let retention = chrono::Duration::from_std(retention)
        .map_err(|_| Error::config("compact --retention: too long"))?;
    let (deleted, version) = delta::block(async move {
        let Some(table) = delta::load(dir.clone()).await? else {
            return Ok((0, None));
        };
        let (table, metrics) = table
            .vacuum()
            .with_mode(VacuumMode::Lite)
            .with_retention_period(retention)
            .with_enforce_retention_duration(false)
            .await
            .map_err(|e| delta::table_error(&dir, "VACUUM failed", e))?;
        Ok((metrics.files_deleted.len(), table.version()))
    })?;
    done.deleted = deleted;
    done.version = version;
    Ok(done)
}

/// Consecutive runs of at least two segments whose files together stay under the target size.
fn runs(segs: &[segments::Segment]) -> Vec<&[segments::Segment]> {
    let size = |s: &segments::Segment| s.size;
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, s) in segs.iter().enumerate() {
        let n = size(s);
        if bytes.saturating_add(n) > TARGET_BYTES && i > start {
            if i - start >= 2 {
                out.push(&segs[start..i]);
            }
            (start, bytes) = (i, 0);
        }
        bytes = bytes.saturating_add(n);
    }
    if segs.len() - start >= 2 {
        out.push(&segs[start..]);
    }
    out
}

fn merge(p: &Pipeline, layout: &Layout, part: i32, run: &[segments::Segment]) -> Result<()> {
    let (from, to) = (run[0].from, run[run.len() - 1].to);
    let mut batches = Vec::new();
    for s in run {
        batches.extend(segments::read(s, &p.schema)?);
    }
    let topic = &p.config.kafka.topic;
    let pending = segments::write_pending(layout, topic, (part, None), from, to, &batches)?;
    let merged = segments::rename(&pending)?;
    let version = delta::block(delta::replace(layout.master()?, run.to_vec(), merged))?;
    tracing::info!(
        partition = part,
        from,
        to,
        segments = run.len(),
        version,
        "compacted"
    );
    Ok(())
}
