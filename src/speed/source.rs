//! The Kafka source: the consumer (auto-commit off: the checkpoint holds the offsets) and the
//! decoding of one micro-batch of messages, shared by the speed layer and `replay`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;
use futures::FutureExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use crate::config::{Pipeline, StartingOffsets};
use crate::error::{Error, Result};
use crate::event::{EventDecoder, EventSchema, KafkaRecord};
use crate::storage;

use super::group::{Claims, SpeedContext};

/// The consumer of the speed layer and `replay`.
pub(super) type SpeedConsumer = StreamConsumer<SpeedContext>;

/// The consumer both the speed layer and `replay` read with; `extra` properties last. `group`:
/// a member of a consumer group whose rebalances claim partitions (else partitions are
/// assigned by [`assign`]).
pub(super) fn consumer(
    p: &Pipeline,
    extra: &[(&str, &str)],
    group: Option<Arc<Claims>>,
) -> Result<SpeedConsumer> {
    let cfg = &p.config;
    // librdkafka postpones the next fetch by `fetch.queue.backoff.ms` (1 s by default) once its
    // local queue holds `queued.min.messages`; at high rates that idles the layer for a second
    // after every few micro-batches. Defaults only: a value in kafka.properties wins.
    let mut client = crate::kafka::client_config_with_defaults(
        &cfg.kafka,
        &[
            ("fetch.queue.backoff.ms", "1"),
            ("queued.min.messages", "1000000"),
        ],
    );
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
    if group.is_some() {
        group_properties(&cfg.kafka.properties, &mut client);
    }
    client
        .create_with_context(SpeedContext::new(group))
        .map_err(Error::KafkaConfig)
}

/// A group member's defaults (a value in `kafka.properties` wins): cooperative rebalancing,
/// which moves only the partitions that change owner (not with the KIP-848 consumer protocol,
/// `group.protocol=consumer`, where the broker assigns), and a `client.id` naming the instance
/// in the group's description (`/api/status`, `kafka-consumer-groups --describe`).
fn group_properties(props: &BTreeMap<String, String>, client: &mut rdkafka::config::ClientConfig) {
    let kip848 = props.get("group.protocol").map(String::as_str) == Some("consumer");
    if !kip848 && !props.contains_key("partition.assignment.strategy") {
        client.set("partition.assignment.strategy", "cooperative-sticky");
    }
    if !props.contains_key("client.id") {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let id = format!("lambdaflow-speed-{}-{}", host.trim(), std::process::id());
        client.set("client.id", id);
    }
}

/// Joins the consumer group on the topic: partitions come and go through rebalances.
pub(super) fn subscribe(consumer: &SpeedConsumer, topic: &str) -> Result<()> {
    consumer
        .subscribe(&[topic])
        .map_err(|e| Error::kafka(format!("subscribe to `{topic}`"), e))
}

/// Assigns the consumer the topic's partitions, each from its starting offset (no group
/// rebalancing: the checkpoint, not the group, says where each partition resumes).
///
/// The consumer first learns the topic's metadata (within `patience`): partitions assigned
/// before the client knows their leaders wait for librdkafka's next try of the offset query,
/// about half a second, before their first fetch — at every start and every recovery.
pub(super) fn assign(
    consumer: &SpeedConsumer,
    topic: &str,
    starts: impl IntoIterator<Item = (i32, Offset)>,
    patience: Duration,
) -> Result<()> {
    let learn = || consumer.fetch_metadata(Some(topic), patience);
    let learned = match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(learn)
        }
        _ => learn(),
    };
    if let Err(e) = learned {
        // Not fatal: the assignment below finds the leaders itself, only later.
        tracing::debug!(cause = %e, topic, "metadata before assigning partitions");
    }
    let mut tpl = TopicPartitionList::new();
    for (part, off) in starts {
        tpl.add_partition_offset(topic, part, off).map_err(|e| {
            Error::kafka(format!("start partition {part} of `{topic}` at {off:?}"), e)
        })?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| Error::kafka(format!("assign the partitions of `{topic}`"), e))
}

/// Messages of one partition, in increasing offsets, decoded: what the [`Reader`] hands on.
pub(super) struct Chunk {
    pub part: i32,
    /// Each message's offset, in order.
    offsets: Vec<i64>,
    /// The events of the messages that decoded, in order.
    pub batch: RecordBatch,
    /// The messages that did not, as (index in `offsets`, dead-letter record).
    bad: Vec<(usize, serde_json::Value)>,
    /// Each message's Kafka timestamp (ms since the epoch), `i64::MIN` without one.
    stamps: Vec<i64>,
}

impl Chunk {
    /// Messages in the chunk.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn first_offset(&self) -> i64 {
        self.offsets[0]
    }

    /// The offset after the chunk's last message.
    pub fn end(&self) -> i64 {
        self.offsets[self.offsets.len() - 1] + 1
    }

    /// Takes the dead-letter records of the messages that did not decode, with their offsets.
    pub fn take_dead_letters(&mut self) -> Vec<(i64, serde_json::Value)> {
        std::mem::take(&mut self.bad)
            .into_iter()
            .map(|(i, rec)| (self.offsets[i], rec))
            .collect()
    }

    /// The chunk's messages at offsets in `from..to`, if any.
    pub fn within(mut self, from: i64, to: i64) -> Option<Chunk> {
        let a = self.offsets.partition_point(|&o| o < from);
        let b = self.offsets.partition_point(|&o| o < to);
        if a == 0 && b == self.len() {
            return Some(self);
        }
        if a >= b {
            return None;
        }
        let bad_before = |k: usize| self.bad.iter().filter(|(i, _)| *i < k).count();
        let (ra, rb) = (a - bad_before(a), b - bad_before(b));
        self.batch = self.batch.slice(ra, rb - ra);
        self.bad.retain(|(i, _)| (a..b).contains(i));
        for (i, _) in &mut self.bad {
            *i -= a;
        }
        self.offsets.truncate(b);
        self.offsets.drain(..a);
        self.stamps.truncate(b);
        self.stamps.drain(..a);
        Some(self)
    }
}

/// A partition's chunk being decoded.
struct ChunkBuilder<'s> {
    part: i32,
    decoder: EventDecoder<'s>,
    offsets: Vec<i64>,
    bad: Vec<(usize, serde_json::Value)>,
    stamps: Vec<i64>,
}

impl<'s> ChunkBuilder<'s> {
    fn new(schema: &'s EventSchema, part: i32) -> Self {
        ChunkBuilder {
            part,
            decoder: EventDecoder::new(schema),
            offsets: Vec::new(),
            bad: Vec::new(),
            stamps: Vec::new(),
        }
    }

    /// Whether `m` continues the chunk: same partition, a later offset (a message fetched
    /// again after a seek starts a chunk of its own), and room left.
    fn continues(&self, m: &BorrowedMessage<'_>, cap: usize) -> bool {
        m.partition() == self.part
            && self.offsets.last().is_none_or(|&o| m.offset() > o)
            && self.offsets.len() < cap
    }

    /// Decodes one message; a bad one is kept as a dead-letter record naming topic,
    /// partition, offset and the reason.
    fn push(&mut self, m: &BorrowedMessage<'_>) {
        let ts = m.timestamp().to_millis();
        self.stamps.push(ts.unwrap_or(i64::MIN));
        self.offsets.push(m.offset());
        let record = KafkaRecord {
            timestamp_ms: ts,
            partition: m.partition(),
            offset: m.offset(),
            key: m.key(),
        };
        let res = match m.payload() {
            Some(bytes) => self
                .decoder
                .push_from(bytes, Some(&record))
                .map_err(|e| (e.0, bytes)),
            None => Err(("empty message (no value)".to_string(), &b""[..])),
        };
        if let Err((reason, raw)) = res {
            let (k, v) = storage::payload_fields(raw);
            let mut rec = serde_json::json!({
                "topic": m.topic(), "partition": m.partition(), "offset": m.offset(), "reason": reason,
            });
            rec[k] = v;
            self.bad.push((self.offsets.len() - 1, rec));
        }
    }

    fn finish(mut self) -> Chunk {
        Chunk {
            part: self.part,
            offsets: self.offsets,
            batch: self.decoder.finish(),
            bad: self.bad,
            stamps: self.stamps,
        }
    }
}

/// What the [`Reader`] hands on.
pub(super) enum Read {
    Chunk(Chunk),
    /// An error of the consumer (it retries by itself).
    Error(rdkafka::error::KafkaError),
}

/// Chunks queued between the reader and the layer (see [`Reader`]).
const READ_AHEAD: usize = 16;

/// The most messages in one chunk.
const CHUNK_MESSAGES: usize = 4096;

/// The consumer's messages, taken and decoded on a thread of their own, so that the layer
/// folds one micro-batch while the next is decoded: on one loop, taking messages from
/// librdkafka (a lock and clock readings each) and decoding them cost more than folding them.
///
/// Chunks wait in a queue of [`READ_AHEAD`]; when it is full the thread waits, and
/// librdkafka's own queue (bounded by `queued.max.messages.kbytes`) stops fetching. The
/// thread stops, and is joined, when the reader is dropped. A consumer in a group serves its
/// rebalance callbacks on this thread.
pub(super) struct Reader {
    rx: mpsc::Receiver<Read>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reader {
    /// Starts reading `consumer`, decoded with `schema`, at most `cap` messages a chunk.
    pub fn start(schema: EventSchema, consumer: Arc<SpeedConsumer>, cap: usize) -> Result<Reader> {
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let cap = cap.clamp(1, CHUNK_MESSAGES);
        let thread = std::thread::Builder::new()
            .name("lambdaflow-read".into())
            .spawn(move || {
                // A runtime of its own rather than `futures`' executor: the rebalance callback
                // runs on this thread and waits on the storage's runtime, which `futures`
                // refuses from within its executor.
                match tokio::runtime::Builder::new_current_thread().build() {
                    Ok(rt) => rt.block_on(read(&schema, &consumer, &tx, cap)),
                    Err(e) => tracing::error!(cause = %e, "the Kafka reader's runtime"),
                }
            })
            .map_err(|e| Error::Internal(format!("start the Kafka reader thread: {e}")))?;
        Ok(Reader {
            rx,
            thread: Some(thread),
        })
    }

    /// The next chunk (or consumer error).
    pub async fn recv(&mut self) -> Result<Read> {
        // The thread ends before the reader only when it panicked.
        self.rx
            .recv()
            .await
            .ok_or_else(|| Error::Internal("the Kafka reader thread stopped".into()))
    }

    /// A chunk already decoded, or else one that comes before `deadline`.
    pub async fn next(&mut self, deadline: tokio::time::Instant) -> Option<Read> {
        match self.rx.try_recv() {
            Ok(r) => Some(r),
            Err(_) => tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .ok()
                .flatten(),
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.rx.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reader's loop: a chunk is the messages of one partition that librdkafka already holds,
/// in a row; it is handed on as soon as the next message is not at hand.
async fn read(schema: &EventSchema, consumer: &SpeedConsumer, tx: &mpsc::Sender<Read>, cap: usize) {
    let mut next = None;
    loop {
        let m = match next.take() {
            Some(m) => m,
            None => tokio::select! {
                biased;
                _ = tx.closed() => return,
                m = consumer.recv() => m,
            },
        };
        let read = match m {
            Err(e) => Read::Error(e),
            Ok(m) => {
                let mut chunk = ChunkBuilder::new(schema, m.partition());
                chunk.push(&m);
                drop(m);
                while let Some(m) = consumer.recv().now_or_never() {
                    match m {
                        Ok(m) if chunk.continues(&m, cap) => chunk.push(&m),
                        other => {
                            next = Some(other);
                            break;
                        }
                    }
                }
                Read::Chunk(chunk.finish())
            }
        };
        if tx.send(read).await.is_err() {
            return;
        }
    }
}

/// The chunks of one micro-batch, per partition.
#[derive(Default)]
pub(super) struct MicroBatch {
    parts: BTreeMap<i32, (Vec<RecordBatch>, u64)>,
    /// Messages read.
    pub messages: u64,
    /// Messages that did not decode.
    pub bad: u64,
    /// Each message's Kafka timestamp (ms since the epoch; CreateTime: when it was produced).
    pub stamps: Vec<i64>,
}

impl MicroBatch {
    /// Adds a chunk (its dead letters taken, and counted in `bad`, by the caller).
    pub fn push(&mut self, c: Chunk) {
        let n = c.len() as u64;
        self.messages += n;
        self.stamps
            .extend(c.stamps.iter().copied().filter(|&t| t != i64::MIN));
        let (batches, count) = self.parts.entry(c.part).or_default();
        *count += n;
        if c.batch.num_rows() > 0 {
            batches.push(c.batch);
        }
    }

    /// The decoded events per partition, with the number of messages read from it.
    pub fn finish(self) -> impl Iterator<Item = (i32, Vec<RecordBatch>, u64)> {
        self.parts.into_iter().map(|(part, (b, n))| (part, b, n))
    }
}

/// The longest a replay waits for a message before it names where it stopped.
pub(super) fn replay_patience(connect_timeout: Duration) -> Duration {
    connect_timeout.max(Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::Chunk;

    /// Messages at offsets 10, 11, 13, 14, 15, 17 (a gap, as transactions leave), 13 and 15
    /// bad; the good ones' rows hold their offsets.
    fn chunk() -> Chunk {
        let offsets = vec![10, 11, 13, 14, 15, 17];
        let good = [10i64, 11, 14, 17];
        let schema = Arc::new(Schema::new(vec![Field::new("o", DataType::Int64, false)]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(good.to_vec()))]).unwrap();
        Chunk {
            part: 0,
            stamps: offsets.clone(),
            offsets,
            batch,
            bad: vec![
                (2, serde_json::json!({"offset": 13})),
                (4, serde_json::json!({"offset": 15})),
            ],
        }
    }

    fn rows(c: &Chunk) -> Vec<i64> {
        let a = c
            .batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        a.values().to_vec()
    }

    /// The offsets of the chunk's dead letters, each the one its record names.
    fn dead_offsets(c: &mut Chunk) -> Vec<i64> {
        c.take_dead_letters()
            .into_iter()
            .map(|(o, rec)| {
                assert_eq!(rec["offset"], o);
                o
            })
            .collect()
    }

    #[test]
    fn a_chunk_keeps_the_messages_within_its_offsets() {
        let c = chunk().within(i64::MIN, i64::MAX).unwrap();
        assert_eq!((c.len(), c.first_offset(), c.end()), (6, 10, 18));
        // Messages fetched again after a seek: those before the position are dropped, good
        // and bad alike, and the dead letters still name their own offsets.
        let mut c = chunk().within(12, i64::MAX).unwrap();
        assert_eq!((c.len(), c.first_offset(), c.end()), (4, 13, 18));
        assert_eq!(rows(&c), [14, 17]);
        assert_eq!(dead_offsets(&mut c), [13, 15]);
        assert_eq!(c.stamps, [13, 14, 15, 17]);
        // A replay's end cuts the other side.
        let mut c = chunk().within(11, 15).unwrap();
        assert_eq!((c.len(), c.first_offset(), c.end()), (3, 11, 15));
        assert_eq!(rows(&c), [11, 14]);
        assert_eq!(dead_offsets(&mut c), [13]);
        assert!(c.take_dead_letters().is_empty(), "taken once");
        // Nothing left.
        assert!(chunk().within(18, i64::MAX).is_none());
        assert!(chunk().within(i64::MIN, 10).is_none());
        assert!(chunk().within(12, 13).is_none());
    }
}
