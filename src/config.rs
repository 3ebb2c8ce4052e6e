//! Configuration, loaded in layers (lowest first):
//!
//! 1. `config/default.toml`, embedded in the binary (it reproduces the seed);
//! 2. the config file: `--config FILE`, else `./lambdaflow.toml` when it exists;
//! 3. `LAMBDAFLOW_<SECTION>__<KEY>` environment variables (`LAMBDAFLOW_KAFKA__TOPIC=orders`,
//!    `LAMBDAFLOW_KAFKA__BOOTSTRAP_SERVERS=broker:9092`; `_` in a key stands for `-`);
//! 4. command-line flags.
//!
//! Keys are kebab-case and unknown keys are errors that name the key and the file. Every key is
//! documented in `docs/config.md`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::{EventSchema, FieldDef, FieldType};
use crate::view::ViewDef;
use crate::view::window::WatermarkPolicy;

/// The embedded defaults.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// Where the speed layer reads events, and the producer writes them.
    pub kafka: KafkaConfig,
    /// The declared event schema (the seed's `StructType`).
    pub schema: SchemaConfig,
    /// The views: each one SQL query, run by both layers.
    pub views: Vec<ViewConfig>,
    /// The batch layer.
    pub batch: BatchConfig,
    /// The speed layer.
    pub speed: SpeedConfig,
    /// Where results and state are written.
    pub output: OutputConfig,
    /// The serving layer's HTTP API and dashboard.
    pub serving: ServingConfig,
}

/// Kafka connection, with Kafka's own names.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`: comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// The topic of new events.
    pub topic: String,
    /// Consumer group the speed layer commits to. Commits are advisory (for lag tools): the
    /// offsets that count are in the speed layer's checkpoint.
    pub group_id: String,
    /// How long a command waits for the brokers before it fails with an error.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Long-running commands (`speed`, `run`) that find no broker at start-up: `false` waits
    /// and retries with back-off (reported in the log and on `/health`); `true` exits with the
    /// error, for a supervisor that restarts them. One-shot commands always fail fast.
    #[serde(default)]
    pub fail_fast: bool,
    /// Extra librdkafka properties, passed through unchanged (`security.protocol`, `sasl.*`…).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets (sasl.password, ssl.key.password, …) never reach logs.
        let props: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| {
                let secret = k.contains("password") || k.contains("secret");
                (k.as_str(), if secret { "<redacted>" } else { v.as_str() })
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("topic", &self.topic)
            .field("group_id", &self.group_id)
            .field("connect_timeout", &self.connect_timeout)
            .field("fail_fast", &self.fail_fast)
            .field("properties", &props)
            .finish()
    }
}

/// The event schema.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SchemaConfig {
    /// The table name the view SQL reads from.
    pub table: String,
    /// The fields, in order.
    pub fields: Vec<FieldDef>,
}

/// One view.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ViewConfig {
    /// Name, used in output paths and the API: letters, digits, `_` and `-`.
    pub name: String,
    /// The query over the events table.
    pub sql: String,
    /// The event-time watermark of a view with a `window()`: how long after an event time the
    /// speed layer still expects events before it (Spark's `withWatermark(ts, "10 minutes")`).
    /// Per partition, the latest event time seen minus this delay; the view's watermark is the
    /// lowest over the partitions. Without it the view has none.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub watermark: Option<Duration>,
    /// A partition that has had no event for this long no longer holds the watermark back
    /// (Flink's `withIdleness`).
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// An event time further than this ahead of the speed layer's clock (clock skew, a
    /// mistyped year) does not move the watermark; it is counted as `ahead`, and folded into its
    /// window like any other.
    #[serde(default = "default_max_ahead", with = "humantime_serde")]
    pub max_ahead: Duration,
    /// A view with a watermark: windows that end before the watermark minus this leave the
    /// speed state and the served view, and the batch layer does not publish them, so the view's
    /// memory is bounded by its retention (events for them are still archived). Without it,
    /// every window stays.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub retention: Option<Duration>,
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_max_ahead() -> Duration {
    Duration::from_secs(3600)
}

impl ViewConfig {
    /// A view of `sql`, without a watermark.
    pub fn new(name: impl Into<String>, sql: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            sql: sql.into(),
            watermark: None,
            idle_timeout: default_idle_timeout(),
            max_ahead: default_max_ahead(),
            retention: None,
        }
    }
}

/// The batch layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BatchConfig {
    /// The master dataset: JSON-lines files, or directories of them.
    pub dataset: Vec<PathBuf>,
    /// How many published batch runs to keep on disk (the newest is in service).
    pub keep_runs: usize,
    /// `lambdaflow run`: time between two scheduled batch recomputes (`0s`: only on demand,
    /// `POST /api/batch`). A run also happens at start-up.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Which engine computes the views' state.
    pub engine: BatchEngine,
    /// The Spark Connect server for `engine = "spark"`: `sc://host:port/;token=…;use_ssl=true`
    /// (Spark Connect's own URL format).
    pub spark_remote: String,
}

/// The batch layer's engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum BatchEngine {
    /// Apache DataFusion, embedded: the batch layer runs in this process.
    Datafusion,
    /// Apache Spark, through Spark Connect: the batch layer runs on a Spark cluster.
    Spark,
}

impl BatchEngine {
    /// Its name in the config, on the command line and in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            BatchEngine::Datafusion => "datafusion",
            BatchEngine::Spark => "spark",
        }
    }
}

/// Where the speed layer starts on a partition it has no checkpoint for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartingOffsets {
    /// From the first retained message: nothing already in the topic is missed.
    Earliest,
    /// Only messages produced from now on.
    Latest,
}

/// The speed layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SpeedConfig {
    /// Most messages in one micro-batch.
    pub max_batch_rows: usize,
    /// How long a micro-batch waits for more messages after the first one.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// Where to start on partitions without a checkpoint.
    pub starting_offsets: StartingOffsets,
    /// Least time between two checkpoints (`0s`: after every micro-batch).
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// Share the topic's partitions with the other instances of `kafka.group-id` (a Kafka
    /// consumer group); `false`: this instance reads every partition.
    #[serde(default)]
    pub consumer_group: bool,
}

/// The serving layer's HTTP API.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServingConfig {
    /// Address of the HTTP API and dashboard (`--listen`).
    pub listen: String,
    /// When set, every endpoint but `/health` requires `Authorization: Bearer <token>`.
    #[serde(default)]
    pub token: Option<String>,
    /// What `lambdaflow run` serves of the speed layer's state.
    #[serde(default)]
    pub isolation: Isolation,
    /// Address of the PostgreSQL wire protocol server (`--pg-listen`; unset: none).
    #[serde(default)]
    pub pg_listen: Option<String>,
    /// The PostgreSQL server's certificate chain (PEM), with `pg-tls-key`: TLS for clients that
    /// ask for it (`sslmode=require`).
    #[serde(default)]
    pub pg_tls_cert: Option<PathBuf>,
    /// The private key (PEM, PKCS#8, PKCS#1 or SEC1) of `pg-tls-cert`.
    #[serde(default)]
    pub pg_tls_key: Option<PathBuf>,
    /// The longest an SQL query may run (over the wire and on `POST /api/sql`).
    #[serde(default = "default_sql_timeout", with = "humantime_serde")]
    pub sql_timeout: Duration,
}

fn default_sql_timeout() -> Duration {
    Duration::from_secs(30)
}

/// What serving shows of the speed layer's state in `lambdaflow run` (named after Kafka's
/// `isolation.level`). `lambdaflow serve` reads the files, so it always reads committed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// Every micro-batch as soon as it is folded: the lowest latency, but after a crash a read
    /// can go back to the last checkpoint until the restarted layer has caught up again.
    #[default]
    ReadUncommitted,
    /// Only what the speed layer has checkpointed: a read never goes back, even across
    /// `kill -9`; it lags by up to `speed.checkpoint-interval` plus the checkpoint's write.
    ReadCommitted,
}

impl ServingConfig {
    /// `listen` as a socket address, or an error naming the key.
    pub fn listen_addr(&self) -> Result<std::net::SocketAddr> {
        self.listen.parse().map_err(|e| {
            Error::config(format!(
                "serving.listen `{}`: {e} (expected an address like 127.0.0.1:8080)",
                self.listen
            ))
        })
    }

    /// `pg-listen` as a socket address (`None`: no PostgreSQL server), or an error naming the
    /// key.
    pub fn pg_listen_addr(&self) -> Result<Option<std::net::SocketAddr>> {
        self.pg_listen
            .as_deref()
            .map(|a| {
                a.parse().map_err(|e| {
                    Error::config(format!(
                        "serving.pg-listen `{a}`: {e} (expected an address like 127.0.0.1:5433)"
                    ))
                })
            })
            .transpose()
    }
}

impl fmt::Debug for ServingConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServingConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("pg_listen", &self.pg_listen)
            .field("pg_tls_cert", &self.pg_tls_cert)
            .field("pg_tls_key", &self.pg_tls_key)
            .field("sql_timeout", &self.sql_timeout)
            .finish()
    }
}

/// Output locations.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct OutputConfig {
    /// Root of every file lambdaflow writes.
    pub dir: PathBuf,
    /// The S3 endpoint's settings, over the AWS environment's (an S3-compatible server).
    #[serde(default)]
    pub s3: S3Config,
    /// How long `batch` and `compact` wait for storage that is away (unreachable, or a full
    /// disk) before they fail; the speed layer waits as long as it takes.
    #[serde(with = "humantime_serde")]
    pub storage_wait: Duration,
}

/// `[output.s3]`: what differs from AWS's own S3 for an S3-compatible server. Each one unset
/// is taken from the AWS environment (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ALLOW_HTTP`).
/// Credentials are not set here: they come from the environment or the instance's role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct S3Config {
    /// The endpoint URL (`http://127.0.0.1:9000`).
    pub endpoint: Option<String>,
    /// The region (`us-east-1`).
    pub region: Option<String>,
    /// Whether a plain-HTTP endpoint is allowed (a server on loopback).
    pub allow_http: Option<bool>,
    /// Path-style requests (`endpoint/bucket/key`, what most S3-compatible servers want)
    /// rather than virtual-hosted style (`bucket.endpoint/key`).
    pub path_style: Option<bool>,
}

/// The seed's schema: `customer` string, `amount` integer.
pub fn default_fields() -> Vec<FieldDef> {
    vec![
        FieldDef {
            name: "customer".into(),
            ty: FieldType::String,
            nullable: false,
            unit: None,
        },
        FieldDef {
            name: "amount".into(),
            ty: FieldType::Integer,
            nullable: false,
            unit: None,
        },
    ]
}

/// `output.dir` as lambdaflow keeps it: a local path (a `file://` URL becomes one), or an
/// `s3://` / `s3a://` URL as given. Any other URL is refused by name rather than taken for a
/// relative path such as `gs:/bucket`.
fn output_root(dir: &Path) -> Result<PathBuf> {
    let Some(text) = dir.to_str() else {
        return Ok(dir.to_path_buf());
    };
    let Some((scheme, _)) = text.split_once("://") else {
        return Ok(dir.to_path_buf());
    };
    let is_scheme = scheme.len() > 1
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !is_scheme {
        return Ok(dir.to_path_buf());
    }
    if scheme.eq_ignore_ascii_case("file") {
        return url::Url::parse(text)
            .ok()
            .and_then(|u| u.to_file_path().ok())
            .ok_or_else(|| {
                Error::config(format!(
                    "output.dir `{text}`: not a file URL of an absolute path (file:///var/lib/lambdaflow)"
                ))
            });
    }
    if ["s3", "s3a"].iter().any(|s| scheme.eq_ignore_ascii_case(s)) {
        return Ok(dir.to_path_buf());
    }
    Err(Error::config(format!(
        "output.dir `{text}`: `{scheme}://` storage is not supported; give a local directory, \
         a file:// URL or s3://bucket/prefix"
    )))
}

/// Values from command-line flags, each a dotted key (`kafka.topic`) and its value.
pub type Overrides = Vec<(String, figment::value::Value)>;

impl Config {
    /// Loads the layers described in the module docs.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config> {
        let mut fig = Figment::from(Toml::string(DEFAULT_TOML));
        match file {
            Some(f) if !f.exists() => {
                return Err(Error::config(format!(
                    "config file {} does not exist",
                    f.display()
                )));
            }
            Some(f) => fig = fig.merge(Toml::file_exact(f)),
            None if Path::new("lambdaflow.toml").exists() => {
                fig = fig.merge(Toml::file_exact("lambdaflow.toml"))
            }
            None => {}
        }
        fig = fig.merge(
            Env::prefixed("LAMBDAFLOW_")
                .filter(|k| k.as_str().contains("__"))
                .split("__")
                .map(|k| k.as_str().replace('_', "-").into()),
        );
        for (k, v) in overrides {
            fig = fig.merge(Serialized::default(k, v));
        }
        let mut cfg: Config = fig
            .extract()
            .map_err(|e| Error::config(figment_message(e)))?;
        cfg.output.dir = output_root(&cfg.output.dir)?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        if self.views.is_empty() {
            return Err(Error::config("views: declare at least one view"));
        }
        for (i, v) in self.views.iter().enumerate() {
            let ok = !v.name.is_empty()
                && v.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok {
                return Err(Error::config(format!(
                    "views[{i}].name `{}`: use letters, digits, `_` and `-`",
                    v.name
                )));
            }
            if self.views[..i].iter().any(|w| w.name == v.name) {
                return Err(Error::config(format!(
                    "views: two views are named `{}`",
                    v.name
                )));
            }
        }
        if self.speed.max_batch_rows == 0 {
            return Err(Error::config("speed.max-batch-rows must be at least 1"));
        }
        self.serving.pg_listen_addr()?;
        if self.serving.pg_tls_cert.is_some() != self.serving.pg_tls_key.is_some() {
            return Err(Error::config(
                "serving.pg-tls-cert and serving.pg-tls-key go together: set both for TLS, or neither",
            ));
        }
        if self.serving.sql_timeout.is_zero() {
            return Err(Error::config("serving.sql-timeout must be above 0"));
        }
        if self.serving.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(Error::config(format!(
                "serving.listen `{}`: expected ADDRESS:PORT, e.g. 127.0.0.1:8080",
                self.serving.listen
            )));
        }
        if self
            .serving
            .token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(Error::config(
                "serving.token is empty: remove it to serve without a token, or set a secret",
            ));
        }
        if self.kafka.topic.is_empty() {
            return Err(Error::config("kafka.topic is empty"));
        }
        Ok(())
    }

    /// Builds the event schema and plans every view: the checks that must pass before any work.
    /// What the batch engine adds (`batch.engine = "spark"`) the command checks with the engine
    /// (`batch::spark::check`): the configuration knows no layer.
    pub async fn compile(self) -> Result<Pipeline> {
        let schema = EventSchema::new(self.schema.fields.clone())?;
        let mut views = Vec::new();
        for v in &self.views {
            let mut def = ViewDef::compile(&v.name, &v.sql, &self.schema.table, &schema).await?;
            match (v.watermark, v.retention) {
                (Some(delay), retention) => def.set_watermark(WatermarkPolicy {
                    delay,
                    idle_timeout: v.idle_timeout,
                    max_ahead: v.max_ahead,
                    retention,
                })?,
                (None, Some(_)) => {
                    return Err(Error::config(format!(
                        "views `{}`: `retention` counts back from the watermark; declare \
                         `watermark` too",
                        v.name
                    )));
                }
                (None, None) => {}
            }
            views.push(Arc::new(def));
        }
        let layout = crate::storage::Layout::open(&self.output, views.len())?;
        Ok(Pipeline {
            config: self,
            schema,
            views,
            layout,
        })
    }
}

fn figment_message(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A checked configuration: the schema built and every view compiled.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The configuration it came from.
    pub config: Config,
    /// The declared event schema.
    pub schema: EventSchema,
    /// The compiled views, in config order.
    pub views: Vec<Arc<ViewDef>>,
    /// Where its outputs are.
    layout: crate::storage::Layout,
}

impl Pipeline {
    /// Where this pipeline's files are: `output.dir`, laid out for its views.
    pub fn layout(&self) -> crate::storage::Layout {
        self.layout.clone()
    }

    /// The names of the views with a watermark: those whose event time is followed.
    pub fn watermarked_views(&self) -> Vec<String> {
        let views = self.views.iter().filter(|d| d.watermark().is_some());
        views.map(|d| d.name.clone()).collect()
    }

    /// Finds a view by name.
    pub fn view(&self, name: &str) -> Option<&Arc<ViewDef>> {
        self.views.iter().find(|v| v.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_reproduce_the_seed() {
        let c = Config::load(None, &vec![]).unwrap();
        assert_eq!(c.kafka.bootstrap_servers, "localhost:9092");
        assert_eq!(c.kafka.topic, "real-time-orders");
        assert_eq!(
            c.batch.dataset,
            vec![PathBuf::from("datasets/transactions.json")]
        );
        assert_eq!(c.schema.fields, default_fields());
        assert!(c.views[0].sql.contains("SUM(amount) AS total_amount"));
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("lf.toml");
        std::fs::write(&f, "[kafka]\nbootstrap-server = \"x:1\"\n").unwrap();
        let err = Config::load(Some(&f), &vec![]).unwrap_err().to_string();
        assert!(err.contains("bootstrap-server"), "{err}");
        assert!(err.contains("lf.toml"), "{err}");
    }

    #[test]
    fn output_dir_is_a_path_a_file_url_or_a_bucket_and_other_urls_are_refused_by_name() {
        let dir = |d: &str| Config::load(None, &vec![("output.dir".into(), d.into())]);
        assert_eq!(dir("out/x").unwrap().output.dir, PathBuf::from("out/x"));
        assert_eq!(
            dir("file:///var/lib/lambdaflow").unwrap().output.dir,
            PathBuf::from("/var/lib/lambdaflow")
        );
        let s3 = dir("s3a://bucket/prefix").unwrap();
        assert_eq!(s3.output.dir, PathBuf::from("s3a://bucket/prefix"));
        let err = dir("gs://bucket/prefix").unwrap_err().to_string();
        assert!(err.contains("output.dir `gs://bucket/prefix`"), "{err}");
        assert!(err.contains("`gs://` storage is not supported"), "{err}");
        assert!(dir("file://relative").is_err());
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("lf.toml");
        std::fs::write(&f, "[kafka]\ntopic = \"from-file\"\n").unwrap();
        let c = Config::load(Some(&f), &vec![]).unwrap();
        assert_eq!(c.kafka.topic, "from-file");
        let c = Config::load(Some(&f), &vec![("kafka.topic".into(), "from-flag".into())]).unwrap();
        assert_eq!(c.kafka.topic, "from-flag");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let mut c = Config::load(None, &vec![]).unwrap();
        c.kafka
            .properties
            .insert("sasl.password".into(), "hunter2".into());
        assert!(!format!("{:?}", c.kafka).contains("hunter2"));
    }
}
