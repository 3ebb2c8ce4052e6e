//! The speed layer: Kafka → micro-batches → incremental view state, exactly once, with every
//! good event archived into the master dataset.
//!
//! ```text
//!  topic partitions ──assign(offsets from checkpoint)──► micro-batch (≤ max-batch-rows, linger)
//!      │ bad message: topic/partition/offset + reason ─► output/dead_letter.jsonl
//!      ▼
//!  view::event decoder ─► ViewState::update per view and partition (the same compiled SQL
//!                         expressions the batch layer runs)
//!      ▼  every checkpoint-interval:
//!  1. events since the last checkpoint ─► master/…/.pending.offsets=<from>-<to>.parquet
//!  2. checkpoint.json = { offsets, state per view and partition, batch run it continues,
//!                         dead-letter length }                       one atomic rename
//!  3. pending segments renamed: committed, visible to the batch layer
//!      ▼
//!  output/streaming_view/ (published atomically), console table "Batch: N", progress line
//! ```
//!
//! **The handoff.** Each view's speed state holds exactly the events *after* the offsets of
//! the batch view in service (per partition; all events when there is none). When a batch run
//! publishes a view that covers more segments, the layer rebuilds that view's state from the
//! segments after the new offsets: the realtime view "expires" by offsets, never by time, so
//! `serving = batch ⊕ speed` neither counts an event twice nor misses one.
//!
//! **Exactly once.** Kafka auto-commit is off. The offsets that count are those in the
//! checkpoint, written atomically with the state they produced; a segment is committed only
//! once a checkpoint covers it (see [`crate::master`]). On restart the consumer is assigned
//! exactly those offsets, pending segments are committed or dropped, and the dead-letter file is
//! cut back to its checkpointed length. Offsets are also committed to the consumer group
//! afterwards, only so that lag tools can see progress.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;
use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use crate::batch::{self, PublishedBatch};
use crate::config::{Pipeline, StartingOffsets};
use crate::error::{Error, IoContext, Result};
use crate::kafka::{BrokerHealth, QuietContext};
use crate::master;
use crate::storage::{self, DeadLetterFile, Layout};
use crate::view::event::EventDecoder;
use crate::view::{ViewDef, ViewState};

/// One view's part in the speed layer.
#[derive(Debug, Clone, Default)]
pub struct SpeedView {
    /// The id of the batch run this state continues (`None`: there was none in service).
    pub batch_run: Option<String>,
    /// That batch view, once loaded: the state covers the events after its offsets.
    pub batch: Option<Arc<PublishedBatch>>,
    /// The state, per partition.
    pub parts: BTreeMap<i32, ViewState>,
}

impl SpeedView {
    /// The state over all partitions.
    pub fn state(&self, def: &ViewDef) -> ViewState {
        let mut s = def.new_state();
        for part in self.parts.values() {
            s.merge(part);
        }
        s
    }

    /// The id of the batch run this state continues.
    pub fn batch_run(&self) -> Option<&str> {
        self.batch_run.as_deref()
    }
}

/// One micro-batch, as Spark reports a streaming query's progress.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    /// Micro-batch number since start.
    pub batch_id: u64,
    /// Messages in the micro-batch.
    pub input_rows: u64,
    /// Messages per second arriving (since the previous micro-batch).
    pub input_rows_per_second: f64,
    /// Messages per second processed (over this micro-batch's duration).
    pub processed_rows_per_second: f64,
    /// How long the micro-batch took.
    pub duration_ms: f64,
    /// Messages behind the high watermarks, over all partitions (as last seen).
    pub lag: i64,
    /// 99th percentile over the micro-batch's messages of the time from their Kafka timestamp
    /// (when they were produced) to the end of the micro-batch (when serving sees them).
    pub visible_latency_p99_ms: Option<i64>,
}

/// Micro-batch durations since start, in the buckets `/metrics` exports: 0.5 ms doubling up
/// to 16 s, then +Inf. Cumulative in the layer, so a reader that skips snapshots loses nothing.
#[derive(Debug, Clone)]
pub struct DurationHistogram {
    /// (upper bound in seconds, observations in this bucket only).
    pub buckets: Vec<(f64, u64)>,
    /// Sum of the observations, in seconds.
    pub sum: f64,
    /// Observations.
    pub count: u64,
}

impl Default for DurationHistogram {
    fn default() -> Self {
        let bounds = (0..16).map(|i| 0.0005 * f64::from(1u32 << i));
        Self {
            buckets: bounds
                .chain([f64::MAX]) // f64::MAX is how the encoder writes +Inf
                .map(|b| (b, 0))
                .collect(),
            sum: 0.0,
            count: 0,
        }
    }
}

impl DurationHistogram {
    fn observe(&mut self, secs: f64) {
        if let Some(b) = self.buckets.iter_mut().find(|(upper, _)| secs <= *upper) {
            b.1 += 1;
        }
        self.sum += secs;
        self.count += 1;
    }
}

/// Produce-to-visible latencies since start, in 1 ms buckets up to 10 s.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    buckets: Vec<u64>,
    /// Messages recorded.
    pub count: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: vec![0; 10_001],
            count: 0,
        }
    }
}

impl LatencyHistogram {
    fn record(&mut self, ms: i64) {
        let i = (ms.max(0) as usize).min(self.buckets.len() - 1);
        self.buckets[i] += 1;
        self.count += 1;
    }

    /// The latency (ms) that a fraction `q` of the messages did not exceed (10 000 means
    /// "10 s or more"); `None` before any message.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let want = ((self.count as f64 * q).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (ms, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= want {
                return Some(ms as u64);
            }
        }
        Some(self.buckets.len() as u64 - 1)
    }
}

/// The speed layer's state at the end of a micro-batch: what serving merges.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Micro-batches processed since the layer started from its checkpoint.
    pub batch_id: u64,
    /// Next offset to read, per partition.
    pub offsets: BTreeMap<i32, i64>,
    /// Per view (config order).
    pub views: Vec<SpeedView>,
    /// Messages consumed, in total.
    pub consumed: u64,
    /// Messages consumed since this process started, per partition.
    pub consumed_by_partition: BTreeMap<i32, u64>,
    /// Messages sent to the dead-letter file, in total.
    pub dead_letters: u64,
    /// The last micro-batch.
    pub progress: Option<Progress>,
    /// Reachability of the brokers and their high watermarks.
    pub brokers: BrokerHealth,
    /// Micro-batch durations since start.
    pub microbatch: DurationHistogram,
    /// Produce-to-visible latency of every message since start.
    pub latency: LatencyHistogram,
}

impl Snapshot {
    fn empty(p: &Pipeline) -> Self {
        Self {
            views: vec![SpeedView::default(); p.views.len()],
            ..Default::default()
        }
    }

    /// View `i`'s state over all partitions.
    pub fn view_state(&self, i: usize, def: &ViewDef) -> ViewState {
        self.views[i].state(def)
    }

    /// Messages behind the high watermark, per partition.
    pub fn lag(&self) -> BTreeMap<i32, i64> {
        self.brokers
            .high
            .iter()
            .map(|(p, hi)| (*p, (hi - self.offsets.get(p).copied().unwrap_or(0)).max(0)))
            .collect()
    }
}

#[derive(Serialize, Deserialize)]
struct CheckpointFile {
    version: u32,
    topic: String,
    batch_id: u64,
    offsets: BTreeMap<i32, i64>,
    consumed: u64,
    dead_letter_len: u64,
    views: BTreeMap<String, CheckpointView>,
}

#[derive(Serialize, Deserialize)]
struct CheckpointView {
    /// The batch run the state continues (`None`: none was in service).
    batch_run: Option<String>,
    /// partition → state rows (JSON lines text, in the view's state schema).
    parts: BTreeMap<i32, String>,
}

/// A speed checkpoint as read back.
pub struct Checkpoint {
    /// The state (views' `batch` are not loaded: see `batch_runs`).
    pub snapshot: Snapshot,
    /// Per view: the batch run its state continues; `None` inside when there was none, and the
    /// outer `None` when the checkpoint has no state for the view (added since).
    pub batch_runs: Vec<Option<Option<String>>>,
    /// The dead-letter file's length at the checkpoint.
    pub dead_letter_len: u64,
}

fn write_checkpoint(p: &Pipeline, layout: &Layout, snap: &Snapshot, dlq_len: u64) -> Result<()> {
    let mut views = BTreeMap::new();
    for (def, v) in p.views.iter().zip(&snap.views) {
        let mut parts = BTreeMap::new();
        for (part, st) in &v.parts {
            let rows = storage::json_lines(&[st.to_state_batch(def)?])?;
            parts.insert(
                *part,
                String::from_utf8(rows).map_err(|e| Error::Internal(e.to_string()))?,
            );
        }
        views.insert(
            def.name.clone(),
            CheckpointView {
                batch_run: v.batch_run().map(String::from),
                parts,
            },
        );
    }
    let cp = CheckpointFile {
        version: 2,
        topic: p.config.kafka.topic.clone(),
        batch_id: snap.batch_id,
        offsets: snap.offsets.clone(),
        consumed: snap.consumed,
        dead_letter_len: dlq_len,
        views,
    };
    let bytes = serde_json::to_vec(&cp).map_err(|e| Error::Internal(e.to_string()))?;
    storage::write_atomic(&layout.speed_checkpoint(), &bytes)
}

/// Loads the speed layer's last checkpoint (`None` when it never ran).
pub fn load_checkpoint(p: &Pipeline, layout: &Layout) -> Result<Option<Checkpoint>> {
    let path = layout.speed_checkpoint();
    if !path.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(&path).at(&path)?;
    let cp: CheckpointFile = serde_json::from_slice(&bytes).map_err(|e| {
        Error::config(format!(
            "speed checkpoint {} is unreadable ({e}); move it away to rebuild the speed state \
             from the archived segments",
            path.display()
        ))
    })?;
    if cp.topic != p.config.kafka.topic {
        return Err(Error::config(format!(
            "the speed checkpoint {} is for topic `{}`, not `{}`; use another output.dir or remove it",
            path.display(),
            cp.topic,
            p.config.kafka.topic
        )));
    }
    let mut snap = Snapshot::empty(p);
    snap.offsets = cp.offsets;
    snap.consumed = cp.consumed;
    let mut batch_runs = Vec::new();
    for (i, def) in p.views.iter().enumerate() {
        let Some(v) = cp.views.get(&def.name) else {
            batch_runs.push(None);
            continue;
        };
        for (part, rows) in &v.parts {
            let mut st = def.new_state();
            st.merge_state_batch(
                def,
                &storage::read_json_lines(rows.as_bytes(), def.state_schema())?,
            )?;
            snap.views[i].parts.insert(*part, st);
        }
        batch_runs.push(Some(v.batch_run.clone()));
    }
    Ok(Some(Checkpoint {
        snapshot: snap,
        batch_runs,
        dead_letter_len: cp.dead_letter_len,
    }))
}

/// Recomputes views' speed state from the archived segments of the configured topic: per
/// view, the events of segments that start at or after `after[view]` (per partition; all when
/// absent) and end at or before `bound` (what a checkpoint covers). Each segment is read once.
pub fn rebuild(
    p: &Pipeline,
    layout: &Layout,
    views: &[(usize, BTreeMap<i32, i64>)],
    bound: &BTreeMap<i32, i64>,
) -> Result<Vec<BTreeMap<i32, ViewState>>> {
    let mut out = vec![BTreeMap::new(); views.len()];
    for seg in master::covered(layout, &p.config.kafka.topic, bound)? {
        let wanted: Vec<usize> = views
            .iter()
            .enumerate()
            .filter(|(_, (_, after))| after.get(&seg.partition).is_none_or(|&a| seg.from >= a))
            .map(|(k, _)| k)
            .collect();
        if wanted.is_empty() {
            continue;
        }
        for b in master::read(&seg, &p.schema)? {
            for &k in &wanted {
                let def = &p.views[views[k].0];
                out[k]
                    .entry(seg.partition)
                    .or_insert_with(|| def.new_state())
                    .update(def, &b)?;
            }
        }
    }
    Ok(out)
}

/// Options of one speed-layer run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Print the complete-mode table after each micro-batch that changed something.
    pub print_tables: bool,
    /// Where to start on partitions the checkpoint does not cover (overrides the config).
    pub starting_offsets: Option<BTreeMap<i32, i64>>,
    /// Notified when a batch run published new views (the layer also looks 5 times a second).
    pub batch_published: Option<Arc<Notify>>,
}

/// Events consumed since the last checkpoint on one partition: the next segment.
struct Pending {
    from: i64,
    batches: Vec<RecordBatch>,
}

/// Aligns each view with the batch view in service: when another run was published since the
/// state was built (or `force`), loads it and rebuilds the state from the segments after its
/// offsets. Must be called with no pending events. Returns whether anything changed.
fn sync_batches(
    p: &Pipeline,
    layout: &Layout,
    snap: &mut Snapshot,
    seen: &mut [Option<String>],
    force: &[bool],
) -> Result<bool> {
    let mut rebuild_views = Vec::new();
    let mut changed = false;
    for (i, def) in p.views.iter().enumerate() {
        let current = batch::published_run(layout, def);
        if current == seen[i] && !force[i] {
            continue;
        }
        let loaded = batch::load_published(layout, def)?.map(Arc::new);
        seen[i] = current;
        let run = loaded.as_ref().map(|b| b.manifest.run_id.clone());
        let same = run == snap.views[i].batch_run;
        snap.views[i].batch = loaded;
        snap.views[i].batch_run = run;
        changed = true;
        if !same || force[i] {
            let after = snap.views[i]
                .batch
                .as_ref()
                .map(|b| b.manifest.offsets_of(&p.config.kafka.topic))
                .unwrap_or_default();
            rebuild_views.push((i, after));
        }
    }
    if rebuild_views.is_empty() {
        return Ok(changed);
    }
    let started = Instant::now();
    let states = rebuild(p, layout, &rebuild_views, &snap.offsets)?;
    for ((i, after), parts) in rebuild_views.into_iter().zip(states) {
        info!(view = %p.views[i].name, batch_run = ?snap.views[i].batch_run(), after = ?after,
              ms = started.elapsed().as_millis() as u64,
              "speed layer: now continues the batch view in service (state before its offsets expired)");
        snap.views[i].parts = parts;
    }
    Ok(true)
}

fn consumer(p: &Pipeline, extra: &[(&str, &str)]) -> Result<StreamConsumer<QuietContext>> {
    let cfg = &p.config;
    let mut client = crate::kafka::client_config(&cfg.kafka);
    // librdkafka postpones the next fetch by `fetch.queue.backoff.ms` (1 s by default) once its
    // local queue holds `queued.min.messages`; at high rates that idles the layer for a second
    // after every few micro-batches. Defaults only: a value in kafka.properties wins.
    for (k, v) in [
        ("fetch.queue.backoff.ms", "1"),
        ("queued.min.messages", "1000000"),
    ] {
        if !cfg.kafka.properties.contains_key(k) {
            client.set(k, v);
        }
    }
    client
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set(
            "auto.offset.reset",
            match cfg.speed.starting_offsets {
                StartingOffsets::Earliest => "earliest",
                StartingOffsets::Latest => "latest",
            },
        );
    for (k, v) in extra {
        client.set(*k, *v);
    }
    client
        .create_with_context(QuietContext::default())
        .map_err(|e| Error::Kafka(format!("bad Kafka consumer configuration: {e}")))
}

/// Decodes the messages of one micro-batch, one decoder per partition.
struct MicroBatch<'s> {
    decoders: BTreeMap<i32, (EventDecoder<'s>, u64)>,
    messages: u64,
    bad: u64,
    /// Each message's Kafka timestamp (ms since the epoch; CreateTime: when it was produced).
    stamps: Vec<i64>,
}

impl<'s> MicroBatch<'s> {
    fn new() -> Self {
        Self {
            decoders: BTreeMap::new(),
            messages: 0,
            bad: 0,
            stamps: Vec::new(),
        }
    }

    /// Decodes one message; a bad one is returned as a dead-letter record.
    fn push(
        &mut self,
        schema: &'s crate::view::event::EventSchema,
        m: &BorrowedMessage<'_>,
    ) -> Option<serde_json::Value> {
        self.messages += 1;
        if let Some(t) = m.timestamp().to_millis() {
            self.stamps.push(t);
        }
        let (dec, n) = self
            .decoders
            .entry(m.partition())
            .or_insert_with(|| (EventDecoder::new(schema), 0));
        *n += 1;
        let res = match m.payload() {
            Some(bytes) => dec.push(bytes).map_err(|e| (e.0, bytes)),
            None => Err(("empty message (no value)".to_string(), &b""[..])),
        };
        let (reason, raw) = res.err()?;
        self.bad += 1;
        let (k, v) = storage::payload_fields(raw);
        let mut rec = serde_json::json!({
            "topic": m.topic(), "partition": m.partition(), "offset": m.offset(), "reason": reason,
        });
        rec[k] = v;
        Some(rec)
    }

    /// The decoded events per partition, with the number of messages read from it.
    fn finish(self) -> impl Iterator<Item = (i32, RecordBatch, u64)> {
        self.decoders
            .into_iter()
            .map(|(part, (mut d, n))| (part, d.finish(), n))
    }
}

/// Runs the speed layer until `shutdown` resolves; then finishes the current micro-batch,
/// writes a final checkpoint and returns. Each micro-batch's result is sent on `snapshots`.
pub async fn run(
    p: Arc<Pipeline>,
    opts: Options,
    snapshots: Option<watch::Sender<Arc<Snapshot>>>,
    shutdown: impl Future<Output = ()>,
) -> Result<Snapshot> {
    let cfg = &p.config;
    let topic = cfg.kafka.topic.clone();
    let layout = Layout::new(&cfg.output.dir, p.views.len());
    layout.check_writable()?;
    let parts = crate::kafka::partitions(&cfg.kafka).await?;

    // Recovery: the checkpoint, then the archive it governs, then the batch views in service.
    let (mut snap, dlq_len, mut force) = match load_checkpoint(&p, &layout)? {
        Some(c) => {
            let force: Vec<bool> = c.batch_runs.iter().map(Option::is_none).collect();
            let mut snap = c.snapshot;
            for (v, r) in snap.views.iter_mut().zip(c.batch_runs) {
                v.batch_run = r.flatten();
            }
            (snap, Some(c.dead_letter_len), force)
        }
        None => (Snapshot::empty(&p), None, vec![true; p.views.len()]),
    };
    master::recover(&layout, &topic, &snap.offsets)?;
    for (part, end) in master::archived_until(&master::list(&layout)?, &topic) {
        if snap.offsets.get(&part).is_none_or(|&o| o < end) {
            warn!(
                partition = part,
                offset = end,
                "the checkpoint is behind the archived segments (lost or restored?): resuming after the archive and rebuilding the speed state from it"
            );
            snap.offsets.insert(part, end);
            force.iter_mut().for_each(|f| *f = true);
        }
    }
    let mut seen: Vec<Option<String>> = vec![Some(String::new()); p.views.len()];
    if sync_batches(&p, &layout, &mut snap, &mut seen, &force)? {
        publish_streaming_view(&p, &layout, &snap)?;
    }
    let no_force = vec![false; p.views.len()];
    let mut dlq = DeadLetterFile::open(&layout.dead_letter(), dlq_len.or(Some(0)))?;
    snap.dead_letters = dlq.count();

    let consumer = consumer(&p, &[("group.id", &cfg.kafka.group_id)])?;
    let mut tpl = TopicPartitionList::new();
    for &part in &parts {
        let off = match snap.offsets.get(&part).copied().or_else(|| {
            opts.starting_offsets
                .as_ref()
                .and_then(|m| m.get(&part).copied())
        }) {
            Some(o) => Offset::Offset(o),
            None => match cfg.speed.starting_offsets {
                StartingOffsets::Earliest => Offset::Beginning,
                StartingOffsets::Latest => Offset::End,
            },
        };
        tpl.add_partition_offset(&topic, part, off)
            .map_err(|e| Error::Kafka(e.to_string()))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| Error::Kafka(format!("assign: {e}")))?;
    let brokers = crate::kafka::watch_brokers(&cfg.kafka, parts.clone(), Duration::from_secs(1))?;
    info!(topic = %topic, partitions = parts.len(), offsets = ?snap.offsets, "speed layer: consuming");
    if let Some(tx) = &snapshots {
        tx.send_replace(Arc::new(snap.clone()));
    }

    tokio::pin!(shutdown);
    let notify = opts.batch_published.clone().unwrap_or_default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending: BTreeMap<i32, Pending> = BTreeMap::new();
    let mut last_checkpoint = Instant::now();
    let mut last_batch_start = Instant::now();
    let mut consumer_errors = 0u64;
    let mut writing: Writing = None;
    let mut check_batches = false;
    let mut last_check = Instant::now();
    let mut stopping = false;
    while !stopping {
        // Wait for the first message of a micro-batch (or shutdown, or something to do), then
        // gather more until the batch is full or `linger` has passed.
        let first = tokio::select! {
            biased;
            _ = &mut shutdown => { stopping = true; None }
            m = consumer.recv() => Some(m),
            _ = tokio::time::sleep(Duration::from_millis(500)), if !pending.is_empty() => None,
            _ = notify.notified() => { check_batches = true; None }
            _ = tick.tick() => None,
        };
        let started = Instant::now();
        let mut mb = MicroBatch::new();
        let mut msg = first;
        let deadline = tokio::time::Instant::now() + cfg.speed.linger;
        while let Some(m) = msg.take() {
            match m {
                Ok(m) => {
                    let part = m.partition();
                    pending.entry(part).or_insert_with(|| Pending {
                        from: snap.offsets.get(&part).copied().unwrap_or(m.offset()),
                        batches: Vec::new(),
                    });
                    if let Some(rec) = mb.push(&p.schema, &m) {
                        warn!(topic = m.topic(), partition = part, offset = m.offset(), reason = %rec["reason"], "message sent to the dead-letter file");
                        dlq.append(&rec)?;
                    }
                    snap.offsets.insert(part, m.offset() + 1);
                    consumer_errors = 0;
                }
                Err(e) => {
                    consumer_errors += 1;
                    if consumer_errors == 1 {
                        warn!(cause = %e, "Kafka consumer error (the client retries by itself)");
                    }
                }
            }
            if mb.messages as usize >= cfg.speed.max_batch_rows {
                break;
            }
            // A message already fetched is taken without arming a timer (one per message
            // would cost as much as the message); only an empty queue waits, up to `linger`.
            msg = match consumer.recv().now_or_never() {
                Some(m) => Some(m),
                None => tokio::time::timeout_at(deadline, consumer.recv())
                    .await
                    .ok(),
            };
        }
        let n = mb.messages;
        let mut stamps = std::mem::take(&mut mb.stamps);
        if n > 0 {
            let bad = mb.bad;
            for (part, batch, count) in mb.finish() {
                *snap.consumed_by_partition.entry(part).or_default() += count;
                if batch.num_rows() == 0 {
                    continue;
                }
                for (def, v) in p.views.iter().zip(snap.views.iter_mut()) {
                    v.parts
                        .entry(part)
                        .or_insert_with(|| def.new_state())
                        .update(def, &batch)?;
                }
                if let Some(pd) = pending.get_mut(&part) {
                    pd.batches.push(batch);
                }
            }
            snap.batch_id += 1;
            snap.consumed += n;
            snap.dead_letters += bad;
        }
        let due = last_checkpoint.elapsed() >= cfg.speed.checkpoint_interval;
        if !pending.is_empty() && (due || stopping || n == 0) {
            // One checkpoint at a time, in order; the layer keeps consuming while it is written.
            finish_writing(&mut writing).await?;
            writing = Some(start_checkpoint(
                &p,
                &layout,
                &snap,
                &mut pending,
                &mut dlq,
            )?);
            last_checkpoint = Instant::now();
            let mut tpl = TopicPartitionList::new();
            for (&part, &off) in &snap.offsets {
                let _ = tpl.add_partition_offset(&topic, part, Offset::Offset(off));
            }
            if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                warn!(cause = %e, "advisory offset commit failed (the checkpoint holds the offsets)");
            }
        }
        let mut changed = n > 0;
        if writing.as_ref().is_some_and(|w| w.is_finished()) {
            finish_writing(&mut writing).await?;
        }
        // A newly published batch view: make a quiescent point (every consumed event archived
        // and checkpointed), then continue that batch run. Looked for at most 5 times a second
        // (a readlink per view), and at once when `run` says a batch was published.
        if !stopping && (check_batches || last_check.elapsed() >= Duration::from_millis(200)) {
            check_batches = false;
            last_check = Instant::now();
            let newer = p
                .views
                .iter()
                .zip(&seen)
                .any(|(d, s)| batch::published_run(&layout, d) != *s);
            if newer {
                checkpoint_now(&p, &layout, &snap, &mut pending, &mut dlq, &mut writing).await?;
                last_checkpoint = Instant::now();
                if sync_batches(&p, &layout, &mut snap, &mut seen, &no_force)? {
                    publish_streaming_view(&p, &layout, &snap)?;
                    changed = true;
                }
            }
        }
        snap.brokers = brokers.borrow().clone();
        if n > 0 {
            let secs = started.elapsed().as_secs_f64().max(1e-6);
            let since = last_batch_start.elapsed().as_secs_f64().max(1e-6);
            last_batch_start = started;
            // Produce-to-visible: the state is handed to serving right after this.
            let now = chrono::Utc::now().timestamp_millis();
            for t in &mut stamps {
                *t = (now - *t).max(0);
                snap.latency.record(*t);
            }
            let p99 = (!stamps.is_empty()).then(|| {
                let k = (stamps.len() - 1) * 99 / 100;
                *stamps.select_nth_unstable(k).1
            });
            let progress = Progress {
                batch_id: snap.batch_id,
                input_rows: n,
                input_rows_per_second: (n as f64 / since * 10.0).round() / 10.0,
                processed_rows_per_second: (n as f64 / secs).round(),
                duration_ms: (secs * 1e3 * 1000.0).round() / 1000.0,
                lag: snap.lag().values().sum(),
                visible_latency_p99_ms: p99,
            };
            info!(
                batch_id = progress.batch_id,
                input_rows = progress.input_rows,
                input_rows_per_second = progress.input_rows_per_second,
                processed_rows_per_second = progress.processed_rows_per_second,
                duration_ms = progress.duration_ms,
                lag = progress.lag,
                visible_latency_p99_ms = progress.visible_latency_p99_ms,
                "speed layer: micro-batch"
            );
            snap.microbatch.observe(secs);
            snap.progress = Some(progress);
            if opts.print_tables {
                print_tables(&p, &snap)?;
            }
        }
        if let Some(tx) = &snapshots {
            let health_changed = tx.borrow().brokers.up != snap.brokers.up;
            if changed || health_changed {
                tx.send_replace(Arc::new(snap.clone()));
            }
        }
    }
    checkpoint_now(&p, &layout, &snap, &mut pending, &mut dlq, &mut writing).await?;
    info!(
        offsets = ?snap.offsets,
        messages = snap.latency.count,
        visible_latency_p50_ms = snap.latency.quantile(0.5),
        visible_latency_p99_ms = snap.latency.quantile(0.99),
        visible_latency_max_ms = snap.latency.quantile(1.0),
        "speed layer: stopped after a final checkpoint"
    );
    Ok(snap)
}

/// A checkpoint being written in the background.
type Writing = Option<tokio::task::JoinHandle<Result<()>>>;

/// Waits for the checkpoint in flight, if any; its failure stops the layer.
async fn finish_writing(w: &mut Writing) -> Result<()> {
    if let Some(h) = w.take() {
        h.await
            .map_err(|e| Error::Internal(format!("checkpoint task: {e}")))??;
    }
    Ok(())
}

/// A quiescent point: waits for the checkpoint in flight, then checkpoints what is pending and
/// waits for that too, so that every consumed event is archived and checkpointed.
async fn checkpoint_now(
    p: &Arc<Pipeline>,
    layout: &Layout,
    snap: &Snapshot,
    pending: &mut BTreeMap<i32, Pending>,
    dlq: &mut DeadLetterFile,
    writing: &mut Writing,
) -> Result<()> {
    finish_writing(writing).await?;
    if !pending.is_empty() {
        *writing = Some(start_checkpoint(p, layout, snap, pending, dlq)?);
        finish_writing(writing).await?;
    }
    Ok(())
}

/// Syncs the dead-letter file and hands the pending events and a copy of the state to a
/// blocking task that writes them (see [`checkpoint`]).
fn start_checkpoint(
    p: &Arc<Pipeline>,
    layout: &Layout,
    snap: &Snapshot,
    pending: &mut BTreeMap<i32, Pending>,
    dlq: &mut DeadLetterFile,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    let dlq_len = dlq.sync()?;
    let (p, layout) = (Arc::clone(p), layout.clone());
    let snap = Snapshot {
        views: snap.views.clone(),
        offsets: snap.offsets.clone(),
        batch_id: snap.batch_id,
        consumed: snap.consumed,
        ..Default::default()
    };
    let pending = std::mem::take(pending);
    Ok(tokio::task::spawn_blocking(move || {
        checkpoint(&p, &layout, &snap, pending, dlq_len)
    }))
}

/// Archives the pending events as segments, writes the checkpoint that covers them, commits
/// the segments, and publishes the streaming view.
fn checkpoint(
    p: &Pipeline,
    layout: &Layout,
    snap: &Snapshot,
    pending: BTreeMap<i32, Pending>,
    dlq_len: u64,
) -> Result<()> {
    let topic = &p.config.kafka.topic;
    let mut written = Vec::new();
    for (part, pd) in pending {
        let to = snap.offsets.get(&part).copied().unwrap_or(pd.from);
        if pd.batches.is_empty() || to <= pd.from {
            continue; // only bad messages: nothing to archive
        }
        written.push(master::write_pending(
            layout,
            topic,
            part,
            pd.from,
            to,
            &pd.batches,
        )?);
    }
    write_checkpoint(p, layout, snap, dlq_len)?;
    for s in &written {
        master::commit(s)?;
    }
    publish_streaming_view(p, layout, snap)
}

fn print_tables(p: &Pipeline, snap: &Snapshot) -> Result<()> {
    let mut out = format!(
        "-------------------------------------------\nBatch: {}\n-------------------------------------------\n",
        snap.batch_id
    );
    for (i, def) in p.views.iter().enumerate() {
        if p.views.len() > 1 {
            out.push_str(&format!("view {}\n", def.name));
        }
        out.push_str(&crate::show::show(
            &streaming_rows(def, snap, i)?,
            crate::show::DEFAULT_ROWS,
        ));
    }
    println!("{out}");
    Ok(())
}

/// The streaming view's rows: the speed layer's state alone, finalized.
pub fn streaming_rows(def: &ViewDef, snap: &Snapshot, i: usize) -> Result<RecordBatch> {
    def.finalize(&snap.view_state(i, def))
}

fn publish_streaming_view(p: &Pipeline, layout: &Layout, snap: &Snapshot) -> Result<()> {
    let version = storage::new_version();
    for (i, def) in p.views.iter().enumerate() {
        let rows = streaming_rows(def, snap, i)?;
        storage::publish_dir(&layout.streaming_view(&def.name), &version, 2, |dir| {
            storage::write_part(dir, &version, &rows)
        })?;
    }
    Ok(())
}

/// The result of a Kappa-style replay.
pub struct Replay {
    /// Per view (config order): the state over the whole retained topic.
    pub states: Vec<ViewState>,
    /// Messages read.
    pub messages: u64,
    /// Messages that did not decode (not written anywhere: a replay changes nothing on disk).
    pub bad: u64,
    /// The offsets read up to, per partition.
    pub offsets: BTreeMap<i32, i64>,
    /// How long it took.
    pub elapsed: Duration,
}

/// Kappa mode: rebuilds every view from the topic alone, from the earliest retained offset up
/// to the high watermarks at the start, with the same compiled definitions. Touches no state.
pub async fn replay(p: &Pipeline) -> Result<Replay> {
    let started = Instant::now();
    let k = &p.config.kafka;
    let ends: BTreeMap<i32, i64> = crate::kafka::watermarks(k)
        .await?
        .into_iter()
        .filter(|(_, lo, hi)| hi > lo)
        .map(|(part, _, hi)| (part, hi))
        .collect();
    let mut out = Replay {
        states: p.views.iter().map(|d| d.new_state()).collect(),
        messages: 0,
        bad: 0,
        offsets: BTreeMap::new(),
        elapsed: Duration::ZERO,
    };
    if ends.is_empty() {
        out.elapsed = started.elapsed();
        return Ok(out);
    }
    let group = format!("{}-replay-{}", k.group_id, std::process::id());
    let consumer = consumer(p, &[("group.id", &group)])?;
    let mut tpl = TopicPartitionList::new();
    for &part in ends.keys() {
        tpl.add_partition_offset(&k.topic, part, Offset::Beginning)
            .map_err(|e| Error::Kafka(e.to_string()))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| Error::Kafka(format!("assign: {e}")))?;
    let done = |o: &BTreeMap<i32, i64>| ends.iter().all(|(p, e)| o.get(p).is_some_and(|x| x >= e));
    while !done(&out.offsets) {
        let mut mb = MicroBatch::new();
        let mut msg = Some(
            tokio::time::timeout(k.connect_timeout.max(Duration::from_secs(10)), consumer.recv())
                .await
                .map_err(|_| {
                    Error::Kafka(format!(
                        "replay: no message from topic `{}` for {:?} before reaching offsets {ends:?} (at {:?})",
                        k.topic, k.connect_timeout.max(Duration::from_secs(10)), out.offsets
                    ))
                })?,
        );
        while let Some(m) = msg.take() {
            let m = m.map_err(|e| Error::Kafka(format!("replay: {e}")))?;
            let part = m.partition();
            if ends.get(&part).is_some_and(|&e| m.offset() < e)
                && let Some(rec) = mb.push(&p.schema, &m)
                && mb.bad <= 10
            {
                warn!(partition = part, offset = m.offset(), reason = %rec["reason"], "replay: message skipped");
            }
            out.offsets.insert(part, m.offset() + 1);
            if mb.messages as usize >= p.config.speed.max_batch_rows || done(&out.offsets) {
                break;
            }
            msg = consumer.recv().now_or_never();
        }
        out.messages += mb.messages;
        out.bad += mb.bad;
        for (_, batch, _) in mb.finish() {
            for (def, st) in p.views.iter().zip(out.states.iter_mut()) {
                st.update(def, &batch)?;
            }
        }
    }
    out.elapsed = started.elapsed();
    Ok(out)
}
