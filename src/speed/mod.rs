//! The speed layer: Kafka → micro-batches → incremental view state, exactly once.
//!
//! ```text
//!  topic partitions ──assign(offsets from checkpoint)──► micro-batch (≤ max-batch-rows, linger)
//!      │ bad message: topic/partition/offset + reason ─► output/dead_letter.jsonl
//!      ▼
//!  view::event decoder ─► ViewState::update per view and partition (the same compiled SQL
//!                         expressions the batch layer runs)
//!      ▼
//!  checkpoint.json = { offsets, states, dead-letter length }   one atomic rename
//!      ▼
//!  output/streaming_view/ (published atomically), console table "Batch: N", progress line
//! ```
//!
//! Kafka auto-commit is off. The offsets that count are those in the checkpoint, written
//! atomically with the state they produced; on restart the consumer is assigned exactly those
//! offsets (partitions without one start per `speed.starting-offsets`) and the dead-letter file
//! is cut back to its checkpointed length, so no message is counted twice or lost. Offsets are
//! also committed to the consumer group afterwards, only so that lag tools can see progress.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::{Pipeline, StartingOffsets};
use crate::error::{Error, IoContext, Result};
use crate::storage::{self, DeadLetterFile, Layout};
use crate::view::event::EventDecoder;
use crate::view::{ViewDef, ViewState};

/// The speed layer's state at the end of a micro-batch: what serving merges.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Micro-batches processed since the layer started from its checkpoint.
    pub batch_id: u64,
    /// Next offset to read, per partition.
    pub offsets: BTreeMap<i32, i64>,
    /// Per view (config order), per partition.
    pub states: Vec<BTreeMap<i32, ViewState>>,
    /// Messages consumed, in total.
    pub consumed: u64,
    /// Messages sent to the dead-letter file, in total.
    pub dead_letters: u64,
}

impl Snapshot {
    fn empty(p: &Pipeline) -> Self {
        Self {
            states: vec![BTreeMap::new(); p.views.len()],
            ..Default::default()
        }
    }

    /// View `i`'s state over all partitions.
    pub fn view_state(&self, i: usize, def: &ViewDef) -> ViewState {
        let mut s = def.new_state();
        for part in self.states[i].values() {
            s.merge(part);
        }
        s
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
    /// view name → partition → state rows (JSON lines text, in the view's state schema).
    views: BTreeMap<String, BTreeMap<i32, String>>,
}

fn write_checkpoint(p: &Pipeline, layout: &Layout, snap: &Snapshot, dlq_len: u64) -> Result<()> {
    let mut views = BTreeMap::new();
    for (def, parts) in p.views.iter().zip(&snap.states) {
        let mut m = BTreeMap::new();
        for (part, st) in parts {
            let rows = storage::json_lines(&[st.to_state_batch(def)?])?;
            m.insert(
                *part,
                String::from_utf8(rows).map_err(|e| Error::Internal(e.to_string()))?,
            );
        }
        views.insert(def.name.clone(), m);
    }
    let cp = CheckpointFile {
        version: 1,
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

/// Loads the speed layer's last checkpoint (`None` when it never ran), with the dead-letter
/// length it recorded.
pub fn load_checkpoint(p: &Pipeline, layout: &Layout) -> Result<Option<(Snapshot, u64)>> {
    let path = layout.speed_checkpoint();
    if !path.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(&path).at(&path)?;
    let cp: CheckpointFile = serde_json::from_slice(&bytes).map_err(|e| {
        Error::config(format!(
            "speed checkpoint {} is unreadable: {e}",
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
    for (i, def) in p.views.iter().enumerate() {
        // A view added since the checkpoint starts empty; it then covers only new events.
        let Some(parts) = cp.views.get(&def.name) else {
            continue;
        };
        for (part, rows) in parts {
            let mut st = def.new_state();
            st.merge_state_batch(
                def,
                &storage::read_json_lines(rows.as_bytes(), def.state_schema())?,
            )?;
            snap.states[i].insert(*part, st);
        }
    }
    Ok(Some((snap, cp.dead_letter_len)))
}

/// Options of one speed-layer run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Print the complete-mode table after each micro-batch that changed something.
    pub print_tables: bool,
    /// Where to start on partitions the checkpoint does not cover (overrides the config).
    pub starting_offsets: Option<BTreeMap<i32, i64>>,
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
    let layout = Layout::new(&cfg.output.dir, p.views.len());
    layout.check_writable()?;
    let parts = crate::kafka::partitions(&cfg.kafka).await?;
    let (mut snap, dlq_len) = match load_checkpoint(&p, &layout)? {
        Some((s, len)) => (s, Some(len)),
        None => (Snapshot::empty(&p), None),
    };
    let mut dlq = DeadLetterFile::open(&layout.dead_letter(), dlq_len.or(Some(0)))?;
    snap.dead_letters = dlq.count();

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
    let consumer: StreamConsumer = client
        .set("group.id", &cfg.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set(
            "auto.offset.reset",
            match cfg.speed.starting_offsets {
                StartingOffsets::Earliest => "earliest",
                StartingOffsets::Latest => "latest",
            },
        )
        .create()
        .map_err(|e| Error::Kafka(format!("bad Kafka consumer configuration: {e}")))?;
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
        tpl.add_partition_offset(&cfg.kafka.topic, part, off)
            .map_err(|e| Error::Kafka(e.to_string()))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| Error::Kafka(format!("assign: {e}")))?;
    info!(topic = %cfg.kafka.topic, partitions = parts.len(), offsets = ?snap.offsets, "speed layer: consuming");

    tokio::pin!(shutdown);
    let mut last_checkpoint = Instant::now();
    let mut dirty = false;
    let mut stopping = false;
    while !stopping {
        // Wait for the first message of a micro-batch (or shutdown), then gather more until the
        // batch is full or `linger` has passed.
        let first = tokio::select! {
            biased;
            _ = &mut shutdown => { stopping = true; None }
            m = consumer.recv() => Some(m),
            _ = tokio::time::sleep(Duration::from_millis(500)), if dirty => None,
        };
        let started = Instant::now();
        let mut decoders: BTreeMap<i32, EventDecoder<'_>> = BTreeMap::new();
        let mut n = 0usize;
        let mut bad_in_batch = 0u64;
        let mut msg = first;
        let deadline = tokio::time::Instant::now() + cfg.speed.linger;
        while let Some(m) = msg.take() {
            match m {
                Ok(m) => {
                    let part = m.partition();
                    let dec = decoders
                        .entry(part)
                        .or_insert_with(|| EventDecoder::new(&p.schema));
                    let res = match m.payload() {
                        Some(bytes) => dec.push(bytes).map_err(|e| (e.0, bytes)),
                        None => Err(("empty message (no value)".to_string(), &b""[..])),
                    };
                    if let Err((reason, raw)) = res {
                        let (k, v) = storage::payload_fields(raw);
                        let mut rec = serde_json::json!({
                            "topic": m.topic(), "partition": part, "offset": m.offset(), "reason": reason,
                        });
                        rec[k] = v;
                        warn!(topic = m.topic(), partition = part, offset = m.offset(), %reason, "message sent to the dead-letter file");
                        dlq.append(&rec)?;
                        bad_in_batch += 1;
                    }
                    snap.offsets.insert(part, m.offset() + 1);
                    n += 1;
                }
                Err(e) => warn!(cause = %e, "Kafka consumer error (the client retries by itself)"),
            }
            if n >= cfg.speed.max_batch_rows {
                break;
            }
            msg = tokio::time::timeout_at(deadline, consumer.recv())
                .await
                .ok();
        }
        if n > 0 {
            for (part, mut dec) in decoders {
                let batch = dec.finish();
                if batch.num_rows() == 0 {
                    continue;
                }
                for (i, def) in p.views.iter().enumerate() {
                    snap.states[i]
                        .entry(part)
                        .or_insert_with(|| def.new_state())
                        .update(def, &batch)?;
                }
            }
            snap.batch_id += 1;
            snap.consumed += n as u64;
            snap.dead_letters += bad_in_batch;
            dirty = true;
        }
        let due = last_checkpoint.elapsed() >= cfg.speed.checkpoint_interval;
        if dirty && (due || stopping || n == 0) {
            let len = dlq.sync()?;
            write_checkpoint(&p, &layout, &snap, len)?;
            publish_streaming_view(&p, &layout, &snap)?;
            last_checkpoint = Instant::now();
            dirty = false;
            let mut tpl = TopicPartitionList::new();
            for (&part, &off) in &snap.offsets {
                let _ = tpl.add_partition_offset(&cfg.kafka.topic, part, Offset::Offset(off));
            }
            if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                warn!(cause = %e, "advisory offset commit failed (the checkpoint holds the offsets)");
            }
        }
        if n > 0 {
            let secs = started.elapsed().as_secs_f64().max(1e-6);
            info!(
                batch_id = snap.batch_id,
                input_rows = n,
                dead_letters = bad_in_batch,
                processed_rows_per_second = (n as f64 / secs).round(),
                duration_ms = started.elapsed().as_millis() as u64,
                "speed layer: micro-batch"
            );
            if opts.print_tables {
                print_tables(&p, &snap)?;
            }
            if let Some(tx) = &snapshots {
                tx.send_replace(Arc::new(snap.clone()));
            }
        }
    }
    if dirty {
        let len = dlq.sync()?;
        write_checkpoint(&p, &layout, &snap, len)?;
        publish_streaming_view(&p, &layout, &snap)?;
    }
    info!(offsets = ?snap.offsets, "speed layer: stopped after a final checkpoint");
    Ok(snap)
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
    let version = format!("{:012}", snap.batch_id);
    for (i, def) in p.views.iter().enumerate() {
        let rows = streaming_rows(def, snap, i)?;
        storage::publish_dir(&layout.streaming_view(&def.name), &version, 2, |dir| {
            storage::write_part(dir, &version, &rows)
        })?;
    }
    Ok(())
}
