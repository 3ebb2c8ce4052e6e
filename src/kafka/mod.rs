//! Kafka plumbing shared by the commands: client configuration, the reachability check that
//! makes every command fail fast (and say how to start a broker) instead of hanging, topic
//! administration (`lambdaflow topic`), and the console producer (`lambdaflow produce`).

pub mod group;

use std::collections::BTreeMap;
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
    client_config_with_defaults(k, &[])
}

/// [`client_config`] with `defaults`: properties we choose for the client unless
/// `kafka.properties` sets them (a value given there wins).
pub fn client_config_with_defaults(k: &KafkaConfig, defaults: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.bootstrap_servers);
    for (key, v) in defaults {
        c.set(*key, *v);
    }
    for (key, v) in &k.properties {
        c.set(key, v);
    }
    c
}

fn unreachable(k: &KafkaConfig, e: rdkafka::error::KafkaError) -> Error {
    Error::kafka(
        format!(
            "cannot reach the Kafka brokers at {} within {:?} (is a broker running there? Start \
             a local one with `scripts/kafka.sh start`, or point kafka.bootstrap-servers \
             (--bootstrap-servers, LAMBDAFLOW_KAFKA__BOOTSTRAP_SERVERS) at yours)",
            k.bootstrap_servers, k.connect_timeout
        ),
        e,
    )
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
            .map_err(Error::KafkaConfig)?;
        consumer
            .fetch_metadata(topic.as_deref(), k2.connect_timeout)
            .map_err(|e| unreachable(&k2, e))
    })
    .await
    .map_err(|e| Error::task("Kafka metadata", e))?
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

/// [`partitions`] for a long-running command: while the brokers do not answer (or the topic is
/// missing), logs why and retries with back-off (1 s doubling to 30 s) — unless
/// `kafka.fail-fast`, which returns the first error.
pub async fn wait_for_partitions(k: &KafkaConfig) -> Result<Vec<i32>> {
    let mut backoff = std::time::Duration::from_secs(1);
    let mut attempts = 0u32;
    loop {
        match partitions(k).await {
            Ok(p) => {
                if attempts > 0 {
                    tracing::info!(brokers = %k.bootstrap_servers, attempts, "the Kafka brokers answer: starting");
                }
                return Ok(p);
            }
            Err(e) if k.fail_fast => return Err(e),
            Err(e) => {
                attempts += 1;
                tracing::warn!(cause = %e.report(), retry_in_s = backoff.as_secs(), "waiting for the Kafka brokers (kafka.fail-fast = true exits instead)");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
            }
        }
    }
}

fn missing_topic(k: &KafkaConfig) -> Error {
    Error::kafka_msg(format!(
        "topic `{}` does not exist on {}; create it with `lambdaflow topic create --topic {}`",
        k.topic, k.bootstrap_servers, k.topic
    ))
}

/// Low and high watermarks of every partition of the topic.
pub async fn watermarks(k: &KafkaConfig) -> Result<Vec<(i32, i64, i64)>> {
    let parts = partitions(k).await?;
    let k2 = k.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = client_config(&k2).create().map_err(Error::KafkaConfig)?;
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
    .map_err(|e| Error::task("Kafka watermarks", e))?
}

/// Creates the topic with `replication` copies of each partition (`None`: the brokers'
/// `default.replication.factor`). With `if_not_exists`, an existing topic is not an error.
pub async fn create_topic(
    k: &KafkaConfig,
    partitions: i32,
    replication: Option<i32>,
    if_not_exists: bool,
) -> Result<bool> {
    metadata(k, None).await?;
    let admin: AdminClient<DefaultClientContext> =
        client_config(k).create().map_err(Error::KafkaConfig)?;
    let topic = NewTopic::new(
        &k.topic,
        partitions,
        TopicReplication::Fixed(replication.unwrap_or(-1)),
    );
    let opts = AdminOptions::new()
        .operation_timeout(Some(k.connect_timeout))
        .request_timeout(Some(k.connect_timeout));
    let res = admin
        .create_topics([&topic], &opts)
        .await
        .map_err(|e| Error::kafka(format!("create topic `{}`", k.topic), e))?;
    match res.into_iter().next() {
        Some(Ok(_)) => Ok(true),
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) if if_not_exists => Ok(false),
        Some(Err((name, code))) => Err(Error::kafka(
            format!("create topic `{name}`"),
            rdkafka::error::KafkaError::AdminOp(code),
        )),
        None => Err(Error::Internal("create_topics returned no result".into())),
    }
}

/// `lambdaflow topic create|list|describe`, printing what it did (like `kafka-topics`).
pub async fn topic_command(k: &KafkaConfig, action: &crate::cli::TopicAction) -> Result<()> {
    use crate::cli::TopicAction;
    match *action {
        TopicAction::Create {
            partitions,
            replication_factor,
            if_not_exists,
        } => {
            if create_topic(k, partitions, replication_factor, if_not_exists).await? {
                wait_for_topic(k).await?;
                println!("Created topic {}.", k.topic);
            } else {
                println!("Topic {} already exists.", k.topic);
            }
        }
        TopicAction::List => {
            for t in list_topics(k).await? {
                println!("{t}");
            }
        }
        TopicAction::Describe => print!("{}", describe(k).await?),
    }
    Ok(())
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

/// The producer type: librdkafka's retries are logged through [`QuietContext`].
pub type Producer = FutureProducer<QuietContext>;

/// What every producer of the project guarantees, whatever `kafka.properties` says otherwise:
/// a send is acknowledged once all in-sync replicas have it (`acks=all`), and a retried send
/// is not written twice (`enable.idempotence`).
pub const PRODUCER_GUARANTEES: &str = "acks=all, idempotent";

/// A producer with the configured client properties, `acks=all` and idempotence. A send is
/// retried for `message.timeout.ms` (default 60 s, or `kafka.connect-timeout` when longer;
/// settable in `kafka.properties`), which rides out a partition leader's failover.
pub fn producer(k: &KafkaConfig) -> Result<Producer> {
    let timeout = k.connect_timeout.max(Duration::from_secs(60)).as_millis();
    let defaults = [
        ("linger.ms", "5"),
        ("message.timeout.ms", &timeout.to_string()),
    ];
    client_config_with_defaults(k, &defaults)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create_with_context(QuietContext::default())
        .map_err(Error::KafkaConfig)
}

/// Deliveries awaited at once by a [`Sender`].
const IN_FLIGHT: usize = 10_000;

/// Sends payloads to the topic in order, with at most 10,000 deliveries awaited at once,
/// and counts those the brokers acknowledged.
pub struct Sender<'a> {
    producer: &'a Producer,
    k: &'a KafkaConfig,
    in_flight: std::collections::VecDeque<rdkafka::producer::DeliveryFuture>,
    acked: usize,
}

impl<'a> Sender<'a> {
    /// A sender to `k.topic`.
    pub fn new(producer: &'a Producer, k: &'a KafkaConfig) -> Self {
        Self {
            producer,
            k,
            in_flight: Default::default(),
            acked: 0,
        }
    }

    /// Deliveries not acknowledged yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Enqueues one payload; waits for deliveries when the window or librdkafka's queue is full.
    pub async fn send(&mut self, payload: &[u8]) -> Result<()> {
        use rdkafka::error::KafkaError::MessageProduction;
        loop {
            let rec = FutureRecord::<(), [u8]>::to(&self.k.topic).payload(payload);
            match self.producer.send_result(rec) {
                Ok(f) => break self.in_flight.push_back(f),
                Err((MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if self.in_flight.is_empty() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    } else {
                        self.delivered().await?;
                    }
                }
                Err((e, _)) => return Err(self.failed(e)),
            }
        }
        if self.in_flight.len() >= IN_FLIGHT {
            self.delivered().await?;
        }
        Ok(())
    }

    /// Waits for the oldest delivery in flight (forever when there is none). Cancel-safe:
    /// dropped before it resolves, the delivery stays in flight.
    pub async fn delivered(&mut self) -> Result<()> {
        let Some(next) = self.in_flight.front_mut() else {
            return std::future::pending().await;
        };
        let r = next.await;
        self.in_flight.pop_front();
        match r {
            Ok(Ok(_)) => {
                self.acked += 1;
                Ok(())
            }
            Ok(Err((e, _))) => Err(self.failed(e)),
            Err(_) => Err(Error::Internal("the producer dropped a delivery".into())),
        }
    }

    /// Waits for every delivery; returns how many were acknowledged in all.
    pub async fn flush(mut self) -> Result<usize> {
        while !self.in_flight.is_empty() {
            self.delivered().await?;
        }
        Ok(self.acked)
    }

    fn failed(&self, e: rdkafka::error::KafkaError) -> Error {
        Error::kafka(
            format!(
                "sending to topic `{}` on {} ({} message(s) acknowledged before this one)",
                self.k.topic, self.k.bootstrap_servers, self.acked
            ),
            e,
        )
    }
}

/// Sends `payloads` in order and waits for every delivery.
pub async fn send_all(p: &Producer, k: &KafkaConfig, payloads: &[Vec<u8>]) -> Result<()> {
    let mut s = Sender::new(p, k);
    for payload in payloads {
        s.send(payload).await?;
    }
    s.flush().await.map(drop)
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

/// What the speed layer knows of the brokers: whether they answer, and each partition's
/// high watermark (for consumer lag).
#[derive(Debug, Clone, Default)]
pub struct BrokerHealth {
    /// The last watermark request succeeded.
    pub up: bool,
    /// High watermark per partition, from the last successful request.
    pub high: BTreeMap<i32, i64>,
    /// Times the brokers went from reachable to unreachable.
    pub outages: u64,
}

/// Polls the topic's high watermarks every `every` on a dedicated client, logging when the
/// brokers stop answering and when they are back. Stops when the receiver is dropped.
pub fn watch_brokers(
    k: &KafkaConfig,
    parts: Vec<i32>,
    every: Duration,
) -> Result<tokio::sync::watch::Receiver<BrokerHealth>> {
    let consumer: BaseConsumer<QuietContext> = client_config(k)
        // Ask again within a second of a broker's return (librdkafka backs off up to 10 s).
        .set("reconnect.backoff.max.ms", "1000")
        .create_with_context(QuietContext::default())
        .map_err(Error::KafkaConfig)?;
    let (tx, rx) = tokio::sync::watch::channel(BrokerHealth {
        up: true,
        ..Default::default()
    });
    let k = k.clone();
    std::thread::Builder::new()
        .name("lambdaflow-broker-watch".into())
        .spawn(move || {
            let mut health = BrokerHealth {
                up: true,
                ..Default::default()
            };
            loop {
                let timeout = every.max(Duration::from_secs(1));
                let res: std::result::Result<BTreeMap<i32, i64>, String> = parts
                    .iter()
                    .map(|&p| {
                        consumer
                            .fetch_watermarks(&k.topic, p, timeout)
                            .map(|(_, hi)| (p, hi))
                            .map_err(|e| e.to_string())
                    })
                    .collect();
                match res {
                    Ok(high) => {
                        if !health.up {
                            tracing::info!(brokers = %k.bootstrap_servers, "Kafka is reachable again: the speed layer resumes");
                        }
                        health.up = true;
                        health.high = high;
                    }
                    Err(e) => {
                        if health.up {
                            health.outages += 1;
                            tracing::warn!(brokers = %k.bootstrap_servers, cause = %e, "Kafka is unreachable: the speed layer waits and retries by itself");
                        }
                        health.up = false;
                    }
                }
                if tx.send(health.clone()).is_err() {
                    return;
                }
                std::thread::sleep(every);
            }
        })
        .map_err(|e| Error::io("thread lambdaflow-broker-watch", e))?;
    Ok(rx)
}

/// A client context that logs librdkafka's errors once per kind per minute instead of at every
/// retry (a broker outage otherwise floods the log ten times a second; the broker watch
/// reports outages and recoveries once).
#[derive(Default)]
pub struct QuietContext {
    last: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl QuietContext {
    fn limited(&self, kind: &str, msg: &str) {
        let now = std::time::Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let due = last
            .get(kind)
            .is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(60));
        if due {
            last.insert(kind.to_string(), now);
            tracing::warn!(target: "lambdaflow::kafka", "librdkafka: {msg} (repeats of this are logged at debug level for a minute)");
        } else {
            tracing::debug!(target: "lambdaflow::kafka", "librdkafka: {msg}");
        }
    }
}

impl rdkafka::ClientContext for QuietContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        use rdkafka::config::RDKafkaLogLevel::*;
        match level {
            Emerg | Alert | Critical | Error => self.limited(fac, log_message),
            Warning | Notice => {
                tracing::debug!(target: "lambdaflow::kafka", "librdkafka {fac}: {log_message}")
            }
            Info | Debug => {
                tracing::trace!(target: "lambdaflow::kafka", "librdkafka {fac}: {log_message}")
            }
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        let kind = error
            .rdkafka_error_code()
            .map_or_else(|| error.to_string(), |c| format!("{c:?}"));
        self.limited(&kind, &format!("{error}: {reason}"));
    }
}

impl rdkafka::consumer::ConsumerContext for QuietContext {}
