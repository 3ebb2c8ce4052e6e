//! The speed layer: Kafka → micro-batches → incremental view state, exactly once, with every
//! good event archived into the master dataset.
//!
//! ```text
//!  topic partitions ──assign(offsets from checkpoint)──► reader thread: view::event decoder,
//!      │ bad message: topic/partition/offset + reason      chunks of one partition's messages
//!      │   ─► output/dead_letter.jsonl                      │
//!      ▼                                                    ▼
//!  micro-batch of chunks (≤ max-batch-rows, linger) ─► ViewState::update per view and
//!                         partition (the same compiled SQL expressions the batch layer runs)
//!      ▼  every checkpoint-interval:
//!  1. events since the last checkpoint ─► master/…/.pending.offsets=<from>-<to>.parquet
//!  2. checkpoint.json = { offsets, the batch run each view continues, dead-letter length }
//!                                                                    one atomic rename
//!  3. pending segments renamed: committed, visible to the batch layer
//!      ▼
//!  output/streaming_view/ (published atomically), console table "Batch: N", progress line
//! ```
//!
//! **The handoff** to each new batch run: see [`views`]. The whole design, with the other
//! layers: `docs/architecture.md`.
//!
//! **Exactly once.** Kafka auto-commit is off. The offsets that count are those in the
//! checkpoint; a segment is committed only once a checkpoint covers it (see
//! [`crate::storage::segments`]), so the state at a checkpoint is exactly the fold of the
//! committed segments after the batch view's offsets — which is how a restart rebuilds it
//! ([`crate::storage::checkpoint`] holds positions only). On restart the consumer is assigned
//! exactly the checkpoint's offsets, pending segments are committed or dropped, and the
//! dead-letter file is cut back to its checkpointed length. Offsets are also committed to the
//! consumer group afterwards, only so that lag tools can see progress.
//!
//! **What serving gets.** After each micro-batch, a [`Snapshot`] of positions and counters
//! (no state) on a `watch` channel, and the micro-batch's events as a small state per view
//! ([`SpeedUpdate::Delta`]) on a bounded queue: serving merges it in, at a cost that grows with
//! the keys the micro-batch touched. After recovery and at each handoff, the whole speed state
//! ([`SpeedUpdate::Reset`]). When serving falls [`UPDATE_QUEUE`] updates behind, the layer
//! waits for it (backpressure; nothing is dropped).
//!
//! ## Files
//! - `source.rs`: the Kafka consumer, and the reader thread that takes and decodes its
//!   messages while the loop folds (shared with [`replay()`]);
//! - [`views`]: the state per view and partition, and the handoff to a new batch run;
//! - `checkpointer.rs`: segments, checkpoint, commit, in the background;
//! - `group.rs`: the consumer group's rebalance callback, which claims partitions in the table;
//!   `ownership.rs`: what the layer does when partitions come, go, or are fenced;
//! - [`stats`]: progress, histograms, the status snapshot.

mod checkpointer;
mod dead_letters;
mod group;
mod ownership;
mod recovery;
mod replay;
mod source;
pub mod stats;
pub mod views;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{Notify, mpsc, watch};
use tracing::{info, warn};

use crate::config::{Pipeline, StartingOffsets};
use crate::error::Result;
use crate::kafka::BrokerHealth;
use crate::storage::{DeadLetterFile, Layout, PublishedBatch};
use crate::view::{ViewDef, ViewState};
use checkpointer::Checkpointer;
use dead_letters::DeadLetterLog;
use group::Claims;
pub use replay::{Replay, replay};
use source::{Chunk, MicroBatch, Read, Reader, SpeedConsumer};
pub use stats::{DurationHistogram, EventTime, LatencyHistogram, Progress, Snapshot, rfc3339};
use views::Handoff;
pub use views::SpeedView;

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

/// Updates waiting for serving before the speed layer waits for it.
pub const UPDATE_QUEUE: usize = 16;

/// One view's whole speed state, as a [`SpeedUpdate::Reset`] carries it.
#[derive(Debug)]
pub struct ResetView {
    /// The batch view the state continues.
    pub batch: Option<Arc<PublishedBatch>>,
    /// The state over the events after that batch view's offsets, all partitions.
    pub speed: ViewState,
}

/// What serving is told of the view state.
#[derive(Debug)]
pub enum SpeedUpdate {
    /// The state to serve from now on, whole (after recovery, and at each batch handoff).
    Reset {
        /// Per view (config order).
        views: Vec<ResetView>,
        /// Where the state is, per partition.
        offsets: BTreeMap<i32, i64>,
    },
    /// One micro-batch's events, as a state per view, to merge into the last one.
    Delta {
        /// Per view (config order).
        views: Vec<ViewState>,
        /// Where the state is after it, per partition.
        offsets: BTreeMap<i32, i64>,
    },
}

/// Where the speed layer hands its results (both optional).
#[derive(Debug, Default)]
pub struct Publish {
    /// Positions and counters after every micro-batch.
    pub status: Option<watch::Sender<Arc<Snapshot>>>,
    /// View state: a reset, then deltas (bounded by [`UPDATE_QUEUE`]).
    pub updates: Option<mpsc::Sender<SpeedUpdate>>,
}

/// The speed layer as it stopped.
#[derive(Debug)]
pub struct Stopped {
    /// Its last status.
    pub status: Snapshot,
    /// Its state, per view.
    pub views: Vec<SpeedView>,
}

impl Stopped {
    /// View `i`'s state over all partitions.
    pub fn view_state(&self, i: usize, def: &ViewDef) -> ViewState {
        self.views[i].state(def)
    }
}

/// The speed layer while it runs: the fields the loop threads through each micro-batch.
struct SpeedLayer {
    p: Arc<Pipeline>,
    layout: Layout,
    opts: Options,
    publish: Publish,
    /// Positions and counters (what [`Publish::status`] gets).
    snap: Snapshot,
    /// The state per view and partition.
    views: Vec<SpeedView>,
    handoff: Handoff,
    checkpointer: Checkpointer,
    /// The dead-letter file (`None` in a consumer group: dead letters go with their range).
    dlq: Option<DeadLetterFile>,
    /// In a consumer group: the rebalances' changes (the partitions owned, with their owner
    /// epochs, are the checkpointer's: it fences every commit with them).
    group: Option<Arc<Claims>>,
    /// The log lines of rejected messages, summarized.
    rejected: DeadLetterLog,
    brokers: watch::Receiver<BrokerHealth>,
    /// Start of the previous micro-batch (for the arrival rate).
    last_batch_start: Instant,
    /// Consecutive consumer errors (the first is logged).
    consumer_errors: u64,
    /// When a message last arrived: proof that the brokers answer, sooner than the watch.
    heard_at: Option<Instant>,
    /// A batch run was announced: look for it now.
    check_batches: bool,
    last_check: Instant,
    /// Per view with a retention: the horizon its state was last cut at.
    cut_at: BTreeMap<String, i64>,
    /// Behind the partitions' ends, to checkpoint at once when caught up.
    backlog: Backlog,
}

/// Runs the speed layer until `shutdown` resolves; then finishes the current micro-batch,
/// writes a final checkpoint and returns.
pub async fn run(
    p: Arc<Pipeline>,
    opts: Options,
    publish: Publish,
    shutdown: impl Future<Output = ()>,
) -> Result<Stopped> {
    tokio::pin!(shutdown);
    let parts = tokio::select! {
        r = crate::kafka::wait_for_partitions(&p.config.kafka) => r?,
        _ = &mut shutdown => {
            info!("speed layer: stopped before the brokers answered");
            return Ok(Stopped { status: Snapshot::default(), views: Vec::new() });
        }
    };
    let (mut layer, consumer) = SpeedLayer::recover(p, opts, publish, parts).await?;
    let consumer = Arc::new(consumer);
    let notify = layer.opts.batch_published.clone().unwrap_or_default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = false;
    // A chunk of a partition being handed over, kept for after the hand-over.
    let mut carry = None;
    let claims = layer.group.clone();
    let topic = layer.p.config.kafka.topic.clone();
    let cap = layer.p.config.speed.max_batch_rows;
    // Dropped in reverse order, on every way out: `closing` first (so the consumer's close
    // never waits for a rebalance nobody answers), then the reader's thread is joined, then
    // the consumer closes here.
    let mut reader = Reader::start(layer.p.schema.clone(), Arc::clone(&consumer), cap)?;
    let _closing = group::Closing(claims.clone(), &consumer, &topic);
    let handed_over = || async {
        match &claims {
            Some(c) => c.changed().await,
            None => std::future::pending().await,
        }
    };
    while !stopping {
        // Wait for the first chunk of a micro-batch (or shutdown, or something to do).
        let first = match carry.take() {
            Some(c) => Some(Read::Chunk(c)),
            None => tokio::select! {
                biased;
                _ = &mut shutdown => { stopping = true; None }
                r = reader.recv() => Some(r?),
                _ = tokio::time::sleep(Duration::from_millis(500)), if layer.checkpointer.has_pending() => None,
                _ = notify.notified() => { layer.check_batches = true; None }
                _ = handed_over() => None,
                _ = tick.tick() => None,
            },
        };
        carry = layer
            .micro_batch(&consumer, &mut reader, first, stopping)
            .await?;
        layer.apply_changes(&consumer).await?;
    }
    layer.stop().await
}

impl SpeedLayer {
    /// Recovery: the checkpoint's positions, then the archive it governs, then the batch views
    /// in service (the state is rebuilt from the segments after their offsets); then the
    /// consumer, assigned exactly those positions. In a consumer group, none of this: the
    /// consumer joins the group, and each partition assigned is recovered from the table when
    /// it comes ([`group`]).
    async fn recover(
        p: Arc<Pipeline>,
        opts: Options,
        publish: Publish,
        parts: Vec<i32>,
    ) -> Result<(Self, SpeedConsumer)> {
        let cfg = &p.config;
        let topic = cfg.kafka.topic.clone();
        let layout = p.layout();
        layout.check_writable()?;
        let group = cfg
            .speed
            .consumer_group
            .then(|| Claims::new(Arc::clone(&p)))
            .transpose()?;
        let (cp, offsets) = match group {
            Some(_) => (None, BTreeMap::new()),
            None => recovery::resume_positions(&layout, &p.schema, &topic)?,
        };
        let event_time = cp
            .iter()
            .flat_map(|c| &c.views)
            .filter_map(|(name, v)| Some((name.clone(), EventTime::resume(v.event_time.as_ref()?))))
            .collect();
        let mut snap = Snapshot {
            offsets,
            consumed: cp.as_ref().map_or(0, |c| c.consumed),
            owned: group.as_ref().map(|_| Vec::new()),
            event_time,
            ..Snapshot::default()
        };
        let mut views = vec![SpeedView::default(); p.views.len()];
        let mut handoff = Handoff::new(p.views.len());
        handoff.sync(&p, &layout, &mut views, &snap.offsets, true)?;
        // In a consumer group, and on an object store (no appends), dead letters are kept per
        // archived range instead (see `storage::dead_letter_ranges`).
        let dlq = match (&group, layout.dead_letter()) {
            (None, Some(path)) => Some(DeadLetterFile::open(
                &path,
                Some(cp.as_ref().map_or(0, |c| c.dead_letter_len)),
            )?),
            _ => None,
        };
        snap.dead_letters = dlq.as_ref().map_or(0, DeadLetterFile::count);
        let consumer = source::consumer(&p, &[("group.id", &cfg.kafka.group_id)], group.clone())?;
        match group {
            Some(_) => source::subscribe(&consumer, &topic)?,
            None => source::assign(
                &consumer,
                &topic,
                parts
                    .iter()
                    .map(|&part| (part, start(&p, &opts, &snap.offsets, part))),
                cfg.kafka.connect_timeout,
            )?,
        }
        let brokers =
            crate::kafka::watch_brokers(&cfg.kafka, parts.clone(), Duration::from_secs(1))?;
        info!(topic = %topic, partitions = parts.len(), offsets = ?snap.offsets, consumer_group = group.is_some(), "speed layer: consuming");
        let checkpointer = Checkpointer::new(Arc::clone(&p), layout.clone());
        let mut layer = SpeedLayer {
            p,
            layout,
            opts,
            publish,
            snap,
            views,
            handoff,
            checkpointer,
            dlq,
            group,
            rejected: DeadLetterLog::new("sent to the dead-letter file"),
            brokers,
            last_batch_start: Instant::now(),
            consumer_errors: 0,
            heard_at: None,
            check_batches: false,
            last_check: Instant::now(),
            cut_at: BTreeMap::new(),
            backlog: Backlog::default(),
        };
        if layer.group.is_none() {
            // The checkpoint of the recovered positions (and the streaming view rewritten).
            layer.checkpoint(true).await?;
            layer.snap.checkpointed = layer.checkpointer.committed().clone();
        }
        layer.send_status(true);
        layer.send_reset().await;
        Ok((layer, consumer))
    }

    /// One micro-batch: gathers messages after `first` until the batch is full or `linger`
    /// has passed, folds them into the state, checkpoints when due, follows a new batch run,
    /// and publishes.
    /// Returns the chunk that ended it early, if any: one of a partition whose hand-over must
    /// be applied first (consumer group), or one that would overfill the micro-batch.
    async fn micro_batch(
        &mut self,
        consumer: &SpeedConsumer,
        reader: &mut Reader,
        first: Option<Read>,
        stopping: bool,
    ) -> Result<Option<Chunk>> {
        let started = Instant::now();
        let p = Arc::clone(&self.p);
        let max = p.config.speed.max_batch_rows as u64;
        let mut mb = MicroBatch::default();
        let mut next = first;
        let mut carry = None;
        let deadline = tokio::time::Instant::now() + p.config.speed.linger;
        let mut heard = false;
        while let Some(r) = next.take() {
            match r {
                Read::Error(e) => self.consumer_error(e),
                Read::Chunk(c) => {
                    heard = true;
                    match self.owns(c) {
                        ownership::Owns::Yes(c)
                            if mb.messages > 0 && mb.messages + c.len() as u64 > max =>
                        {
                            carry = Some(c);
                            break;
                        }
                        ownership::Owns::Yes(c) => self.take(&mut mb, c)?,
                        ownership::Owns::AfterHandOver(c) => {
                            carry = Some(c);
                            break;
                        }
                        ownership::Owns::No => {}
                    }
                }
            }
            if mb.messages >= max {
                break;
            }
            next = reader.next(deadline).await;
        }
        if heard {
            // Once per micro-batch: reading the clock per message costs more than its use.
            self.heard_at = Some(Instant::now());
        }
        let n = mb.messages;
        self.rejected.tick();
        let stamps = std::mem::take(&mut mb.stamps);
        let delta = if n > 0 { Some(self.fold(mb)?) } else { None };
        // After the fold: the events of this micro-batch were counted late or not against the
        // watermark as it stood before them (as in Spark).
        let watermarks_moved = self.advance_watermarks();
        self.snap.brokers = self.brokers.borrow().clone();
        let caught_up = self.caught_up();
        if self.checkpointer.has_pending()
            && (self.checkpointer.due() || stopping || n == 0 || caught_up)
        {
            self.checkpoint(false).await?;
            let mut tpl = TopicPartitionList::new();
            for (&part, &off) in &self.snap.offsets {
                let _ = tpl.add_partition_offset(&p.config.kafka.topic, part, Offset::Offset(off));
            }
            if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                warn!(cause = %e, "advisory offset commit failed (the checkpoint holds the offsets)");
            }
        }
        self.checkpointer.reap().await?;
        let handed_off = !stopping && self.follow_batches().await?;
        let cut = self.cut_to_retention(handed_off)?;
        let checkpointed = self.checkpointer.committed() != &self.snap.checkpointed;
        if checkpointed {
            self.snap.checkpointed = self.checkpointer.committed().clone();
        }
        // The watch asks once a second on a client of its own, which reconnects later than
        // the consumer: a message received just now says the brokers answer.
        if self
            .heard_at
            .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
        {
            self.snap.brokers.up = true;
        }
        if n > 0 {
            self.report(n, started, stamps)?;
        }
        let health_changed = self
            .publish
            .status
            .as_ref()
            .is_some_and(|tx| tx.borrow().brokers.up != self.snap.brokers.up);
        self.send_status(n > 0 || handed_off || health_changed || checkpointed || watermarks_moved);
        if handed_off || cut {
            self.send_reset().await;
        } else if let (Some(views), Some(tx)) = (delta, &self.publish.updates) {
            let offsets = self.snap.offsets.clone();
            // Waits when serving is UPDATE_QUEUE updates behind; gone when serving stopped.
            let _ = tx.send(SpeedUpdate::Delta { views, offsets }).await;
        }
        Ok(carry)
    }

    /// Whether the layer has just worked off a backlog (see [`Backlog`]) by the partitions'
    /// ends the brokers last gave.
    fn caught_up(&mut self) -> bool {
        let lag: i64 = self.snap.lag().values().sum();
        let max = self.p.config.speed.max_batch_rows as i64;
        self.backlog.worked_off(lag, max)
    }

    /// Where view `def`'s retention cuts now (`None`: no retention, or no watermark yet).
    fn horizon(&self, def: &ViewDef) -> Option<i64> {
        def.horizon(self.snap.event_time.get(&def.name)?.watermark?)
    }

    /// Drops the windows beyond each view's retention from its state: after a handoff (which
    /// rebuilt the state from the archive), and whenever the horizon has moved half the
    /// retention since the last cut — each cut costs a pass over the state, so this is a fixed
    /// share of the work per window of event time. Returns whether a state was cut.
    fn cut_to_retention(&mut self, handed_off: bool) -> Result<bool> {
        let mut cut = false;
        let horizons: Vec<Option<i64>> = self.p.views.iter().map(|d| self.horizon(d)).collect();
        for ((def, v), h) in self.p.views.iter().zip(&mut self.views).zip(horizons) {
            let (Some(policy), Some(h)) = (def.watermark(), h) else {
                continue;
            };
            let half = policy
                .retention
                .map_or(0, |r| i64::try_from(r.as_micros() / 2).unwrap_or(i64::MAX));
            let due = self
                .cut_at
                .get(&def.name)
                .is_none_or(|&last| h.saturating_sub(last) >= half);
            if !(due || handed_off) {
                continue;
            }
            for state in v.parts.values_mut() {
                cut |= state.retain_windows(def, h)?;
            }
            self.cut_at.insert(def.name.clone(), h);
        }
        Ok(cut)
    }

    /// Moves each view's watermark where its partitions put it now (an idle partition stops
    /// holding it back with time alone); returns whether one moved.
    fn advance_watermarks(&mut self) -> bool {
        let now = Instant::now();
        let mut moved = false;
        for def in &self.p.views {
            if let (Some(policy), Some(et)) =
                (def.watermark(), self.snap.event_time.get_mut(&def.name))
            {
                moved |= et.advance(policy, now);
            }
        }
        moved
    }

    /// Takes a decoded chunk into the micro-batch; its bad messages go to the dead letters.
    fn take(&mut self, mb: &mut MicroBatch, mut c: Chunk) -> Result<()> {
        let part = c.part;
        self.checkpointer.consumed(
            part,
            self.snap.offsets.get(&part).copied(),
            c.first_offset(),
        );
        for (offset, rec) in c.take_dead_letters() {
            let reason = rec["reason"].as_str().unwrap_or_default();
            self.rejected
                .rejected(&self.p.config.kafka.topic, part, offset, reason);
            match &mut self.dlq {
                Some(dlq) => dlq.append(&rec)?,
                None => self.checkpointer.dead_letter(part, rec),
            }
            mb.bad += 1;
        }
        self.snap.offsets.insert(part, c.end());
        self.consumer_errors = 0;
        mb.push(c);
        Ok(())
    }

    fn consumer_error(&mut self, e: rdkafka::error::KafkaError) {
        self.consumer_errors += 1;
        if self.consumer_errors == 1 {
            warn!(cause = %e, "Kafka consumer error (the client retries by itself)");
        }
    }

    /// Folds a micro-batch into each view's per-partition state and returns its delta: the
    /// state of just these events, per view (what serving merges).
    fn fold(&mut self, mb: MicroBatch) -> Result<Vec<ViewState>> {
        let (n, bad) = (mb.messages, mb.bad);
        let mut deltas: Vec<ViewState> = self.p.views.iter().map(|d| d.new_state()).collect();
        let (now, clock) = (Instant::now(), chrono::Utc::now().timestamp_micros());
        let horizons: Vec<Option<i64>> = self.p.views.iter().map(|d| self.horizon(d)).collect();
        for (part, batches, count) in mb.finish() {
            *self.snap.consumed_by_partition.entry(part).or_default() += count;
            if batches.is_empty() {
                continue;
            }
            for def in self.p.views.iter() {
                if let (Some(w), Some(policy)) = (def.window(), def.watermark()) {
                    let et = self.snap.event_time.entry(def.name.clone()).or_default();
                    for batch in &batches {
                        et.observe(w, policy, part, batch, now, clock)?;
                    }
                }
            }
            for (((def, v), delta), h) in self
                .p
                .views
                .iter()
                .zip(&mut self.views)
                .zip(&mut deltas)
                .zip(&horizons)
            {
                // Windows beyond retention are not kept (their events are archived).
                let mut d = def.new_state();
                for batch in &batches {
                    d.update_within(def, batch, *h)?;
                }
                v.parts
                    .entry(part)
                    .or_insert_with(|| def.new_state())
                    .merge(&d);
                if delta.is_empty() {
                    *delta = d;
                } else {
                    delta.merge(&d);
                }
            }
            for batch in batches {
                self.checkpointer.archive(part, batch);
            }
        }
        self.snap.batch_id += 1;
        self.snap.consumed += n;
        self.snap.dead_letters += bad;
        Ok(deltas)
    }

    /// Starts a checkpoint of what is pending (waits for it too when `wait`).
    async fn checkpoint(&mut self, wait: bool) -> Result<()> {
        let groups = self.views.iter().map(SpeedView::groups).max().unwrap_or(0);
        // In a consumer group each instance holds some partitions: `serve` shows them all.
        let rows = if self.group.is_none() && self.checkpointer.view_due(groups, wait) {
            Some(streaming_rows_all(&self.p, &self.views)?)
        } else {
            None
        };
        let cp = checkpointer::positions(
            &self.p,
            self.snap.batch_id,
            &self.snap.offsets,
            self.snap.consumed,
            self.views.iter().map(|v| v.batch_run.clone()),
            &self.snap.event_time,
        );
        if wait {
            self.checkpointer.now(cp, self.dlq.as_mut(), rows).await?;
            self.drop_fenced();
            Ok(())
        } else {
            self.checkpointer.start(cp, self.dlq.as_mut(), rows).await
        }
    }

    /// A newly published batch view: makes a quiescent point (every consumed event archived
    /// and checkpointed), then continues that batch run. Looked for at most 5 times a second
    /// (a readlink per view), and at once when `run` says a batch was published.
    async fn follow_batches(&mut self) -> Result<bool> {
        if !self.check_batches && self.last_check.elapsed() < Duration::from_millis(200) {
            return Ok(false);
        }
        self.check_batches = false;
        self.last_check = Instant::now();
        if !self.handoff.newer(&self.p, &self.layout) {
            return Ok(false);
        }
        self.checkpoint(true).await?;
        let changed = self.handoff.sync(
            &self.p,
            &self.layout,
            &mut self.views,
            &self.snap.offsets,
            false,
        )?;
        if changed {
            self.checkpoint(true).await?;
        }
        Ok(changed)
    }

    /// Logs the micro-batch's progress line and records its histograms.
    fn report(&mut self, n: u64, started: Instant, mut stamps: Vec<i64>) -> Result<()> {
        let secs = started.elapsed().as_secs_f64().max(1e-6);
        let since = self.last_batch_start.elapsed().as_secs_f64().max(1e-6);
        self.last_batch_start = started;
        // Produce-to-visible: the state is handed to serving right after this.
        let now = chrono::Utc::now().timestamp_millis();
        for t in &mut stamps {
            *t = (now - *t).max(0);
            self.snap.latency.record(*t);
        }
        let p99 = (!stamps.is_empty()).then(|| {
            let k = (stamps.len() - 1) * 99 / 100;
            *stamps.select_nth_unstable(k).1
        });
        let progress = Progress {
            batch_id: self.snap.batch_id,
            input_rows: n,
            input_rows_per_second: (n as f64 / since * 10.0).round() / 10.0,
            processed_rows_per_second: (n as f64 / secs).round(),
            duration_ms: (secs * 1e3 * 1000.0).round() / 1000.0,
            lag: self.snap.lag().values().sum(),
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
        self.snap.microbatch.observe(secs);
        self.snap.progress = Some(progress);
        if self.opts.print_tables {
            print_tables(&self.p, &self.snap, &self.views)?;
        }
        Ok(())
    }

    fn send_status(&self, changed: bool) {
        if let (Some(tx), true) = (&self.publish.status, changed) {
            tx.send_replace(Arc::new(self.snap.clone()));
        }
    }

    /// Hands serving the whole state (after recovery and at each handoff).
    async fn send_reset(&self) {
        let Some(tx) = &self.publish.updates else {
            return;
        };
        let views = self
            .p
            .views
            .iter()
            .zip(&self.views)
            .map(|(def, v)| ResetView {
                batch: v.batch.clone(),
                speed: v.state(def),
            })
            .collect();
        let offsets = self.snap.offsets.clone();
        let _ = tx.send(SpeedUpdate::Reset { views, offsets }).await;
    }

    /// The final checkpoint.
    async fn stop(mut self) -> Result<Stopped> {
        self.checkpoint(true).await?;
        self.rejected.flush();
        info!(
            offsets = ?self.snap.offsets,
            messages = self.snap.latency.count(),
            visible_latency_p50_ms = self.snap.latency.quantile(0.5),
            visible_latency_p99_ms = self.snap.latency.quantile(0.99),
            visible_latency_max_ms = self.snap.latency.quantile(1.0),
            "speed layer: stopped after a final checkpoint"
        );
        Ok(Stopped {
            status: self.snap,
            views: self.views,
        })
    }
}

/// Whether the layer is working off a backlog: more than a micro-batch (`max-batch-rows`)
/// behind the partitions' ends, and not at them since. When it reaches them, its events are
/// checkpointed at once rather than at the next interval (or after half a second idle): the
/// end of a catch-up — after a restart, a burst — is durable, and visible to `serve`, as soon
/// as it is folded. The ends are those the brokers last gave (asked once a second), so a
/// stream that keeps moving ends a backlog at most once per answer, and a backlog worked off
/// within a second may go unseen (the interval or the idle checkpoint then covers it).
#[derive(Debug, Default)]
struct Backlog(bool);

impl Backlog {
    /// After a micro-batch, `lag` events behind the ends: true when that ends a backlog.
    fn worked_off(&mut self, lag: i64, max: i64) -> bool {
        let was = self.0;
        if lag > max {
            self.0 = true;
        } else if lag == 0 {
            self.0 = false;
        }
        was && lag == 0
    }
}

/// Where a partition starts without a consumer group: the checkpoint's offset, else the
/// command's starting offset, else `speed.starting-offsets`.
fn start(p: &Pipeline, opts: &Options, offsets: &BTreeMap<i32, i64>, part: i32) -> Offset {
    let from = offsets.get(&part).copied().or_else(|| {
        opts.starting_offsets
            .as_ref()
            .and_then(|m| m.get(&part).copied())
    });
    match from {
        Some(o) => Offset::Offset(o),
        None => match p.config.speed.starting_offsets {
            StartingOffsets::Earliest => Offset::Beginning,
            StartingOffsets::Latest => Offset::End,
        },
    }
}

fn print_tables(p: &Pipeline, snap: &Snapshot, views: &[SpeedView]) -> Result<()> {
    let mut out = format!(
        "-------------------------------------------\nBatch: {}\n-------------------------------------------\n",
        snap.batch_id
    );
    for (def, v) in p.views.iter().zip(views) {
        if p.views.len() > 1 {
            out.push_str(&format!("view {}\n", def.name));
        }
        out.push_str(&crate::show::show(
            &def.finalize(&v.state(def))?,
            crate::show::DEFAULT_ROWS,
        ));
    }
    println!("{out}");
    Ok(())
}

/// The streaming view's rows: the speed layer's state alone, finalized.
pub fn streaming_rows(
    def: &ViewDef,
    views: &[SpeedView],
    i: usize,
) -> Result<datafusion::arrow::record_batch::RecordBatch> {
    def.finalize(&views[i].state(def))
}

fn streaming_rows_all(
    p: &Pipeline,
    views: &[SpeedView],
) -> Result<Vec<datafusion::arrow::record_batch::RecordBatch>> {
    (0..p.views.len())
        .map(|i| streaming_rows(&p.views[i], views, i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::Backlog;

    #[test]
    fn a_backlog_ends_once_when_the_layer_reaches_the_ends() {
        let mut b = Backlog::default();
        // A stream the layer keeps up with: lags under a micro-batch never make a backlog.
        assert!(!b.worked_off(50, 100));
        assert!(!b.worked_off(0, 100));
        // Behind by more than a micro-batch, then less, then at the ends: ended once.
        assert!(!b.worked_off(1_000, 100));
        assert!(!b.worked_off(40, 100));
        assert!(b.worked_off(0, 100));
        assert!(!b.worked_off(0, 100));
        // Behind again: a second backlog, a second end.
        assert!(!b.worked_off(101, 100));
        assert!(b.worked_off(0, 100));
    }
}
