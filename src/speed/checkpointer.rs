//! Checkpoints: the events consumed since the last one become pending segments, then the
//! checkpoint (positions) is written, then the segments are committed — in a background task,
//! one checkpoint at a time, while the layer keeps consuming.
//!
//! ```text
//!   pending (per partition: first offset + decoded events)
//!      │ start(): sync the dead-letter file, take `pending`, spawn:
//!      ▼
//!   1. segments/.pending.offsets=<from>-<to>.parquet
//!   2. _speed/checkpoint.json   (offsets, batch runs, dead-letter length; atomic rename)
//!   3. segments renamed and committed to the master dataset's Delta log (one commit, with
//!      each partition's archived offset): visible to the batch layer
//!   4. streaming_view/ republished (when given rows)
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;

use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::storage::checkpoint::{self, Checkpoint, CheckpointView};
use crate::storage::{self, DeadLetterFile, Layout, delta, segments};

/// Above this many speed-state groups the streaming view is rewritten at most every
/// [`LARGE_VIEW_INTERVAL`] instead of at every checkpoint: finalizing it costs the state's size.
pub const LARGE_VIEW_GROUPS: usize = 100_000;
/// See [`LARGE_VIEW_GROUPS`].
pub const LARGE_VIEW_INTERVAL: Duration = Duration::from_secs(10);

/// Events consumed since the last checkpoint on one partition: the next segment.
struct Pending {
    from: i64,
    batches: Vec<RecordBatch>,
}

/// A checkpoint being written on a blocking thread; it hands the table writer back.
type Writing = tokio::task::JoinHandle<(Result<()>, delta::Writer)>;

/// What the speed layer has not archived yet, and the checkpoint being written.
pub(super) struct Checkpointer {
    p: Arc<Pipeline>,
    layout: Layout,
    pending: BTreeMap<i32, Pending>,
    /// The checkpoint being written in the background, if any, and the offsets it covers.
    writing: Option<(Writing, BTreeMap<i32, i64>)>,
    /// The offsets the last completed checkpoint covers: what survives a crash.
    committed: BTreeMap<i32, i64>,
    /// When the last checkpoint started.
    last: Instant,
    /// When the streaming view was last rewritten.
    last_view: Option<Instant>,
    /// The archive's table writer (with the checkpoint being written while one is).
    table: Option<delta::Writer>,
}

impl Checkpointer {
    pub fn new(p: Arc<Pipeline>, layout: Layout) -> Self {
        Self {
            pending: BTreeMap::new(),
            writing: None,
            committed: BTreeMap::new(),
            last: Instant::now(),
            last_view: None,
            table: Some(segments::writer(&layout, &p.schema)),
            p,
            layout,
        }
    }

    /// Notes that a message at `offset` of `part` was consumed (`from`: the next offset to
    /// read before it, when known).
    pub fn consumed(&mut self, part: i32, from: Option<i64>, offset: i64) {
        self.pending.entry(part).or_insert_with(|| Pending {
            from: from.unwrap_or(offset),
            batches: Vec::new(),
        });
    }

    /// Adds decoded events of `part` to its next segment.
    pub fn archive(&mut self, part: i32, batch: RecordBatch) {
        if let Some(p) = self.pending.get_mut(&part) {
            p.batches.push(batch);
        }
    }

    /// True when consumed events await a checkpoint.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// True when `speed.checkpoint-interval` has passed since the last checkpoint.
    pub fn due(&self) -> bool {
        self.last.elapsed() >= self.p.config.speed.checkpoint_interval
    }

    /// True when the streaming view should be rewritten with this checkpoint.
    pub fn view_due(&self, groups: usize, stopping: bool) -> bool {
        stopping
            || groups <= LARGE_VIEW_GROUPS
            || self
                .last_view
                .is_none_or(|t| t.elapsed() >= LARGE_VIEW_INTERVAL)
    }

    /// Waits for the checkpoint in flight, if any; its failure stops the layer.
    pub async fn finish(&mut self) -> Result<()> {
        if let Some((h, offsets)) = self.writing.take() {
            let (done, table) = h.await.map_err(|e| Error::task("checkpoint", e))?;
            self.table = Some(table);
            done?;
            self.committed = offsets;
        }
        Ok(())
    }

    /// The offsets the last completed checkpoint covers (the next offset per partition).
    pub fn committed(&self) -> &BTreeMap<i32, i64> {
        &self.committed
    }

    /// Collects the checkpoint in flight if it is done (without waiting).
    pub async fn reap(&mut self) -> Result<()> {
        if self.writing.as_ref().is_some_and(|(w, _)| w.is_finished()) {
            self.finish().await?;
        }
        Ok(())
    }

    /// Starts a checkpoint of `cp` covering what is pending (after the previous one is done):
    /// syncs the dead-letter file, hands the pending events to a background task. `view`:
    /// the streaming view's rows to republish afterwards.
    pub async fn start(
        &mut self,
        mut cp: Checkpoint,
        dlq: &mut DeadLetterFile,
        view: Option<Vec<RecordBatch>>,
    ) -> Result<()> {
        self.finish().await?;
        cp.dead_letter_len = dlq.sync()?;
        if view.is_some() {
            self.last_view = Some(Instant::now());
        }
        let (p, layout) = (Arc::clone(&self.p), self.layout.clone());
        let pending = std::mem::take(&mut self.pending);
        let offsets = cp.offsets.clone();
        let mut table = self
            .table
            .take()
            .unwrap_or_else(|| segments::writer(&layout, &p.schema));
        let task = tokio::task::spawn_blocking(move || {
            let done = write(&p, &layout, &mut table, &cp, pending, view);
            (done, table)
        });
        self.writing = Some((task, offsets));
        self.last = Instant::now();
        Ok(())
    }

    /// A quiescent point: every consumed event archived and checkpointed (waits for both).
    pub async fn now(
        &mut self,
        cp: Checkpoint,
        dlq: &mut DeadLetterFile,
        view: Option<Vec<RecordBatch>>,
    ) -> Result<()> {
        self.finish().await?;
        if self.has_pending() || view.is_some() {
            self.start(cp, dlq, view).await?;
            self.finish().await?;
        } else {
            self.committed = cp.offsets; // nothing consumed since: already covered
        }
        Ok(())
    }
}

/// The checkpoint of `offsets` and the batch runs the views continue.
pub(super) fn positions(
    p: &Pipeline,
    batch_id: u64,
    offsets: &BTreeMap<i32, i64>,
    consumed: u64,
    batch_runs: impl Iterator<Item = Option<String>>,
) -> Checkpoint {
    Checkpoint {
        version: 3,
        topic: p.config.kafka.topic.clone(),
        batch_id,
        offsets: offsets.clone(),
        consumed,
        dead_letter_len: 0,
        views: p
            .views
            .iter()
            .zip(batch_runs)
            .map(|(d, r)| (d.name.clone(), CheckpointView { batch_run: r }))
            .collect(),
    }
}

/// Archives the pending events as segments, writes the checkpoint that covers them, commits
/// the segments, and republishes the streaming view when given.
fn write(
    p: &Pipeline,
    layout: &Layout,
    table: &mut delta::Writer,
    cp: &Checkpoint,
    pending: BTreeMap<i32, Pending>,
    view: Option<Vec<RecordBatch>>,
) -> Result<()> {
    let topic = &p.config.kafka.topic;
    let mut ranges = Vec::new();
    for (part, pd) in pending {
        let to = cp.offsets.get(&part).copied().unwrap_or(pd.from);
        if to <= pd.from {
            continue;
        }
        // Only bad messages: no segment, but the partition's archived offset moves on.
        let segment = (!pd.batches.is_empty())
            .then(|| segments::write_pending(layout, topic, part, pd.from, to, &pd.batches))
            .transpose()?;
        ranges.push(delta::Range {
            topic: topic.clone(),
            partition: part,
            from: pd.from,
            to,
            segment,
        });
    }
    checkpoint::write(layout, cp)?;
    if !ranges.is_empty() {
        segments::commit_with(table, ranges, cp.batch_id)?;
    }
    if let Some(rows) = view {
        let version = storage::new_version();
        for (def, rows) in p.views.iter().zip(rows) {
            storage::publish_dir(&layout.streaming_view(&def.name), &version, 2, |dir| {
                storage::write_part(dir, &version, &rows)
            })?;
        }
    }
    Ok(())
}
