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
//!
//! In a consumer group (see [`super::group`]) there is no checkpoint file: each partition's
//! segment and dead letters are written, then committed with the owner's epoch; a range
//! refused because another instance claimed the partition is deleted and reported
//! ([`Checkpointer::take_fenced`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;

use super::stats::EventTime;
use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::storage::checkpoint::{self, Checkpoint, CheckpointView};
use crate::storage::{self, DeadLetterFile, Layout, Output, dead_letter_ranges, delta, segments};

/// Above this many speed-state groups the streaming view is rewritten at most every
/// [`LARGE_VIEW_INTERVAL`] instead of at every checkpoint: finalizing it costs the state's size.
pub const LARGE_VIEW_GROUPS: usize = 100_000;
/// See [`LARGE_VIEW_GROUPS`].
pub const LARGE_VIEW_INTERVAL: Duration = Duration::from_secs(10);

/// Events consumed since the last checkpoint on one partition: the next segment.
struct Pending {
    from: i64,
    batches: Vec<RecordBatch>,
    /// Dead letters (in a consumer group; otherwise they go to the dead-letter file at once).
    dead: Vec<serde_json::Value>,
}

/// Partitions whose ranges were refused: (partition, the epoch of its owner now).
type Fenced = Vec<(i32, i64)>;

/// A checkpoint being written on a blocking thread; it hands the table writer back.
type Writing = tokio::task::JoinHandle<(Result<Fenced>, delta::Writer)>;

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
    /// In a consumer group: the owner epoch of each partition this instance claimed.
    owners: Option<BTreeMap<i32, i64>>,
    /// Partitions fenced by the checkpoints written since the last [`Self::take_fenced`].
    fenced: Fenced,
}

impl Checkpointer {
    pub fn new(p: Arc<Pipeline>, layout: Layout) -> Self {
        Self {
            owners: p.config.speed.consumer_group.then(BTreeMap::new),
            fenced: Vec::new(),
            pending: BTreeMap::new(),
            writing: None,
            committed: BTreeMap::new(),
            last: Instant::now(),
            last_view: None,
            table: None,
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
            dead: Vec::new(),
        });
    }

    /// Adds a dead letter of `part` to its next range (consumer group).
    pub fn dead_letter(&mut self, part: i32, record: serde_json::Value) {
        if let Some(p) = self.pending.get_mut(&part) {
            p.dead.push(record);
        }
    }

    /// Notes that this instance claimed `part` with `epoch` (consumer group).
    pub fn own(&mut self, part: i32, epoch: i64) {
        if let Some(o) = &mut self.owners {
            o.insert(part, epoch);
        }
    }

    /// In a consumer group, whether this instance owns `part` (always true outside one).
    pub fn owns(&self, part: i32) -> bool {
        self.owners.as_ref().is_none_or(|o| o.contains_key(&part))
    }

    /// In a consumer group, the partitions this instance owns.
    pub fn owned(&self) -> Option<Vec<i32>> {
        self.owners.as_ref().map(|o| o.keys().copied().collect())
    }

    /// Forgets a partition this instance no longer owns, with its unarchived events.
    pub fn forget(&mut self, part: i32) {
        self.pending.remove(&part);
        self.committed.remove(&part);
        if let Some(o) = &mut self.owners {
            o.remove(&part);
        }
    }

    /// The partitions fenced since the last call (another instance claimed them).
    pub fn take_fenced(&mut self) -> Fenced {
        std::mem::take(&mut self.fenced)
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
            let fenced = done?;
            self.committed = offsets;
            for &(part, _) in &fenced {
                self.committed.remove(&part);
            }
            self.fenced.extend(fenced);
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
        dlq: Option<&mut DeadLetterFile>,
        view: Option<Vec<RecordBatch>>,
    ) -> Result<()> {
        self.finish().await?;
        if let Some(dlq) = dlq {
            cp.dead_letter_len = dlq.sync()?;
        }
        if view.is_some() {
            self.last_view = Some(Instant::now());
        }
        let (p, layout) = (Arc::clone(&self.p), self.layout.clone());
        let pending = std::mem::take(&mut self.pending);
        let offsets = cp.offsets.clone();
        let mut table = match self.table.take() {
            Some(t) => t,
            None => segments::writer(&layout, &p.schema)?,
        };
        let owners = self.owners.clone();
        let task = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            // Every step can be done again (see `storage::segments`): while the storage is
            // unreachable or full, the checkpoint is retried, and consumption waits for it.
            let done = layout.store().and_then(|root| {
                storage::store::patiently("speed layer: checkpoint", &root, None, || {
                    let view = view.as_ref();
                    write(
                        &p,
                        &layout,
                        &mut table,
                        &cp,
                        &pending,
                        view,
                        owners.as_ref(),
                    )
                })
            });
            // What a checkpoint costs where the outputs are (a disk, a bucket).
            tracing::debug!(
                batch_id = cp.batch_id,
                ms = started.elapsed().as_secs_f64() * 1e3,
                "speed layer: checkpoint written"
            );
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
        dlq: Option<&mut DeadLetterFile>,
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

/// The checkpoint of `offsets`, the batch runs the views continue and their event-time
/// progress (by view name).
pub(super) fn positions(
    p: &Pipeline,
    batch_id: u64,
    offsets: &BTreeMap<i32, i64>,
    consumed: u64,
    batch_runs: impl Iterator<Item = Option<String>>,
    event_time: &BTreeMap<String, EventTime>,
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
            .map(|(d, r)| {
                let view = CheckpointView {
                    batch_run: r,
                    event_time: event_time.get(&d.name).map(EventTime::mark),
                };
                (d.name.clone(), view)
            })
            .collect(),
    }
}

/// Archives the pending events as segments, writes the checkpoint that covers them, commits
/// the segments, and republishes the streaming view when given. In a consumer group
/// (`owners`): no checkpoint file; each range's dead letters are written beside it and the
/// commit carries the owner's epoch. Returns the partitions fenced.
fn write(
    p: &Pipeline,
    layout: &Layout,
    table: &mut delta::Writer,
    cp: &Checkpoint,
    pending: &BTreeMap<i32, Pending>,
    view: Option<&Vec<RecordBatch>>,
    owners: Option<&BTreeMap<i32, i64>>,
) -> Result<Fenced> {
    let topic = &p.config.kafka.topic;
    // Per partition with events since its last range: (partition, owner, to, pending).
    let mut todo = Vec::new();
    for (&part, pd) in pending {
        let to = cp.offsets.get(&part).copied().unwrap_or(pd.from);
        if to <= pd.from {
            continue;
        }
        let owner = match owners {
            None => None,
            Some(o) => match o.get(&part) {
                Some(&e) => Some(e),
                None => continue, // no longer ours
            },
        };
        todo.push((part, owner, to, pd));
    }
    // Only bad messages: no segment, but the partition's archived offset moves on.
    let with_events: Vec<segments::PendingRange<'_>> = todo
        .iter()
        .filter(|(.., pd)| !pd.batches.is_empty())
        .map(|&(part, owner, to, pd)| ((part, owner), pd.from, to, &pd.batches[..]))
        .collect();
    let mut written = segments::write_pending_all(layout, topic, &with_events).into_iter();
    let mut ranges = Vec::new();
    let mut dead_files = Vec::new();
    for (part, owner, to, pd) in todo {
        let fence = owner.map_or(delta::Fence::None, delta::Fence::Owner);
        let segment = match pd.batches.is_empty() {
            true => None,
            false => Some(written.next().expect("one result per range")?),
        };
        if !pd.dead.is_empty() {
            let f =
                dead_letter_ranges::write(layout, topic, (part, owner), (pd.from, to), &pd.dead)?;
            dead_files.push((part, f));
        }
        ranges.push(delta::Range {
            topic: topic.clone(),
            partition: part,
            from: pd.from,
            to,
            segment,
            fence,
            event_times: cp
                .views
                .iter()
                .filter_map(|(v, c)| Some((v.clone(), *c.event_time.as_ref()?.latest.get(&part)?)))
                .collect(),
        });
    }
    if owners.is_none() {
        checkpoint::write(layout, cp)?;
    }
    let mut fenced = Vec::new();
    if !ranges.is_empty() {
        fenced = segments::commit_with(table, ranges, cp.batch_id)?.fenced;
    }
    for (part, key) in dead_files {
        if fenced.iter().any(|&(p, _)| p == part) {
            layout.dead_letter_ranges()?.delete(&key)?;
        }
    }
    if let Some(rows) = view {
        let version = storage::new_version();
        for (def, rows) in p.views.iter().zip(rows) {
            let part = storage::json_lines(std::slice::from_ref(rows))?;
            layout.output(Output::StreamingView, &def.name)?.publish(
                &version,
                2,
                vec![(storage::part_name(&version), part)],
            )?;
        }
    }
    Ok(fenced)
}
