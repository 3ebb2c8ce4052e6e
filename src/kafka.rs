//! Kafka plumbing shared by the commands: client configuration, the reachability check that
//! makes every command fail fast (and say how to start a broker) instead of hanging, topic
//! administration (`lambdaflow topic`), and the console producer (`lambdaflow produce`).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::metadata::Metadata;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaConfig;
use crate::error::{Error, Result};

/// A librdkafka configuration with the bootstrap servers and the pass-through properties.
pub fn client_config(k: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.bootstrap_servers);
    for (key, v) in &k.properties {
        c.set(key, v);
    }
    c
}

fn unreachable(k: &KafkaConfig, e: impl std::fmt::Display) -> Error {
    Error::Kafka(format!(
        "cannot reach the Kafka brokers at {} within {:?} ({e}). Is a broker running there? \
         Start a local one with `scripts/kafka.sh start`, or point kafka.bootstrap-servers \
         (--bootstrap-servers, LAMBDAFLOW_KAFKA__BOOTSTRAP_SERVERS) at yours",
        k.bootstrap_servers, k.connect_timeout
    ))
}

/// Fetches cluster metadata (for `topic`, or all topics), failing within
/// `kafka.connect-timeout` with an error that names the address when no broker answers.
pub async fn metadata(k: &KafkaConfig, topic: Option<&str>) -> Result<Metadata> {
    let k2 = k.clone();
    let topic = topic.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = client_config(&k2)
            .set("allow.auto.create.topics", "false")
            .create()
            .map_err(|e| Error::Kafka(format!("bad Kafka client configuration: {e}")))?;
        consumer
            .fetch_metadata(topic.as_deref(), k2.connect_timeout)
            .map_err(|e| unreachable(&k2, e))
    })
    .await
    .map_err(|e| Error::Internal(format!("metadata task: {e}")))?
}

/// The partition ids of `topic`, or an error saying how to create it.
pub async fn partitions(k: &KafkaConfig) -> Result<Vec<i32>> {
    let md = metadata(k, Some(&k.topic)).await?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == k.topic)
        .ok_or_else(|| missing_topic(k))?;
    if t.error().is_some() || t.partitions().is_empty() {
        return Err(missing_topic(k));
    }
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    Ok(ids)
}

fn missing_topic(k: &KafkaConfig) -> Error {
    Error::Kafka(format!(
        "topic `{}` does not exist on {}; create it with `lambdaflow topic create --topic {}`",
        k.topic, k.bootstrap_servers, k.topic
    ))
}

/// Low and high watermarks of every partition of the topic.
pub async fn watermarks(k: &KafkaConfig) -> Result<Vec<(i32, i64, i64)>> {
    let parts = partitions(k).await?;
    let k2 = k.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = client_config(&k2)
            .create()
            .map_err(|e| Error::Kafka(format!("bad Kafka client configuration: {e}")))?;
        parts
            .into_iter()
            .map(|p| {
                let (lo, hi) = consumer
                    .fetch_watermarks(&k2.topic, p, k2.connect_timeout)
                    .map_err(|e| unreachable(&k2, e))?;
                Ok((p, lo, hi))
            })
            .collect()
    })
    .await
    .map_err(|e| Error::Internal(format!("watermark task: {e}")))?
}

/// Creates the topic. With `if_not_exists`, an existing topic is not an error.
pub async fn create_topic(
    k: &KafkaConfig,
    partitions: i32,
    replication: i32,
    if_not_exists: bool,
) -> Result<bool> {
    metadata(k, None).await?;
    let admin: AdminClient<DefaultClientContext> = client_config(k)
        .create()
        .map_err(|e| Error::Kafka(format!("bad Kafka client configuration: {e}")))?;
    let topic = NewTopic::new(&k.topic, partitions, TopicReplication::Fixed(replication));
    let opts = AdminOptions::new()
        .operation_timeout(Some(k.connect_timeout))
        .request_timeout(Some(k.connect_timeout));
    let res = admin
        .create_topics([&topic], &opts)
        .await
        .map_err(|e| Error::Kafka(format!("create topic `{}`: {e}", k.topic)))?;
    match res.into_iter().next() {
        Some(Ok(_)) => Ok(true),
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) if if_not_exists => Ok(false),
        Some(Err((name, code))) => Err(Error::Kafka(format!("create topic `{name}`: {code}"))),
        None => Err(Error::Internal("create_topics returned no result".into())),
    }
}

/// Waits until the topic's metadata shows all its partitions with a leader (after a create).
pub async fn wait_for_topic(k: &KafkaConfig) -> Result<Vec<i32>> {
    let deadline = tokio::time::Instant::now() + k.connect_timeout;
    loop {
        match partitions(k).await {
            Ok(p) => return Ok(p),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A producer with the configured client properties; `acks=all` and idempotence, so a retried
/// send is not written twice.
pub fn producer(k: &KafkaConfig) -> Result<FutureProducer> {
    client_config(k)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set(
            "message.timeout.ms",
            (k.connect_timeout.as_millis().max(1000)).to_string(),
        )
        .create()
        .map_err(|e| Error::Kafka(format!("bad Kafka producer configuration: {e}")))
}

/// Sends `payloads` in order and waits for every delivery.
pub async fn send_all(p: &FutureProducer, k: &KafkaConfig, payloads: &[Vec<u8>]) -> Result<()> {
    use futures::stream::{FuturesOrdered, StreamExt};
    let mut pending = FuturesOrdered::new();
    for (i, payload) in payloads.iter().enumerate() {
        let rec: FutureRecord<'_, (), [u8]> =
            FutureRecord::to(&k.topic).payload(payload.as_slice());
        pending.push_back(p.send(rec, k.connect_timeout));
        if pending.len() >= 10_000 || i + 1 == payloads.len() {
            while let Some(r) = pending.next().await {
                r.map_err(|(e, _)| {
                    Error::Kafka(format!(
                        "sending to topic `{}` on {}: {e}",
                        k.topic, k.bootstrap_servers
                    ))
                })?;
            }
        }
    }
    Ok(())
}

/// One line per topic partition, as `kafka-topics --describe` prints them.
pub async fn describe(k: &KafkaConfig) -> Result<String> {
    let md = metadata(k, Some(&k.topic)).await?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == k.topic && t.error().is_none())
        .ok_or_else(|| missing_topic(k))?;
    let marks = watermarks(k).await?;
    let rf = t.partitions().first().map_or(0, |p| p.replicas().len());
    let mut out = format!(
        "Topic: {}\tPartitionCount: {}\tReplicationFactor: {rf}\n",
        t.name(),
        t.partitions().len()
    );
    for p in t.partitions() {
        let (lo, hi) = marks
            .iter()
            .find(|m| m.0 == p.id())
            .map_or((0, 0), |m| (m.1, m.2));
        out.push_str(&format!(
            "\tTopic: {}\tPartition: {}\tLeader: {}\tReplicas: {:?}\tIsr: {:?}\tOffsets: {lo}..{hi}\n",
            t.name(),
            p.id(),
            p.leader(),
            p.replicas(),
            p.isr()
        ));
    }
    Ok(out)
}

/// Names of the topics on the cluster (internal ones, starting with `__`, left out).
pub async fn list_topics(k: &KafkaConfig) -> Result<Vec<String>> {
    let md = metadata(k, None).await?;
    let mut names: Vec<String> = md
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .filter(|n| !n.starts_with("__"))
        .collect();
    names.sort();
    Ok(names)
}
