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

/// The messages of one micro-batch, decoded: one decoder per partition.
pub(super) struct MicroBatch<'s> {
    schema: &'s EventSchema,
    decoders: BTreeMap<i32, (EventDecoder<'s>, u64)>,
    /// Messages read.
    pub messages: u64,
    /// Messages that did not decode.
    pub bad: u64,
    /// Each message's Kafka timestamp (ms since the epoch; CreateTime: when it was produced).
    pub stamps: Vec<i64>,
}

impl<'s> MicroBatch<'s> {
    pub fn new(schema: &'s EventSchema) -> Self {
        Self {
            schema,
            decoders: BTreeMap::new(),
            messages: 0,
            bad: 0,
            stamps: Vec::new(),
        }
    }

    /// Decodes one message; a bad one is returned as a dead-letter record naming topic,
    /// partition, offset and the reason.
    pub fn push(&mut self, m: &BorrowedMessage<'_>) -> Option<serde_json::Value> {
        self.messages += 1;
        if let Some(t) = m.timestamp().to_millis() {
            self.stamps.push(t);
        }
        let schema = self.schema;
        let (dec, n) = self
            .decoders
            .entry(m.partition())
            .or_insert_with(|| (EventDecoder::new(schema), 0));
        *n += 1;
        let record = KafkaRecord {
            timestamp_ms: m.timestamp().to_millis(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key(),
        };
        let res = match m.payload() {
            Some(bytes) => dec
                .push_from(bytes, Some(&record))
                .map_err(|e| (e.0, bytes)),
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
    pub fn finish(self) -> impl Iterator<Item = (i32, RecordBatch, u64)> {
        self.decoders
            .into_iter()
            .map(|(part, (mut d, n))| (part, d.finish(), n))
    }
}

/// Takes the messages already fetched, without arming a timer (one per message would cost as
/// much as the message), then waits up to `deadline` for one more when the queue is empty.
pub(super) async fn next_message<'c>(
    consumer: &'c SpeedConsumer,
    deadline: tokio::time::Instant,
) -> Option<rdkafka::error::KafkaResult<BorrowedMessage<'c>>> {
    match consumer.recv().now_or_never() {
        Some(m) => Some(m),
        None => tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .ok(),
    }
}

/// The longest a replay waits for a message before it names where it stopped.
pub(super) fn replay_patience(connect_timeout: Duration) -> Duration {
    connect_timeout.max(Duration::from_secs(10))
}
