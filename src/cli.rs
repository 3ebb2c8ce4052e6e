//! The command line: every command and option, as `clap` parses them. Each flag is a
//! configuration key given last (it wins over `lambdaflow.toml` and `LAMBDAFLOW_*`).
//!
//! Doc comments here are the `--help` text, so the types are documented by their help alone.
#![allow(missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::config::{BatchEngine, Config, Overrides, Pipeline};
use crate::error::{Error, Result};
use crate::storage::delta::AsOf;

/// A Lambda-architecture data system: one SQL view, a DataFusion batch layer, a Kafka speed
/// layer, and an exact serving merge.
#[derive(Parser)]
#[command(
    name = "lambdaflow",
    version,
    propagate_version = true,
    after_help = "Each command's options: lambdaflow <COMMAND> --help. In the repository: \
                  docs/commands.md (every command), docs/config.md (every key)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args)]
pub struct Global {
    /// Config file (default: ./lambdaflow.toml when it exists, else the built-in defaults).
    #[arg(long, short = 'c', global = true, env = "LAMBDAFLOW_CONFIG")]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers (kafka.bootstrap-servers).
    #[arg(long, global = true)]
    pub bootstrap_servers: Option<String>,
    /// Kafka topic of new events (kafka.topic).
    #[arg(long, global = true)]
    pub topic: Option<String>,
    /// Root directory of all outputs (output.dir).
    #[arg(long, global = true)]
    pub output_dir: Option<PathBuf>,
    /// The batch layer's engine (batch.engine): datafusion (embedded) or spark.
    #[arg(long, global = true, value_enum)]
    pub engine: Option<BatchEngine>,
    /// Spark Connect server of the spark engine (batch.spark-remote), e.g.
    /// sc://127.0.0.1:15002.
    #[arg(long, global = true)]
    pub spark_remote: Option<String>,
    /// A librdkafka property, e.g. -X security.protocol=SASL_SSL (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE", global = true)]
    pub kafka_property: Vec<String>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Batch layer: recompute every view over the master dataset and publish it.
    ///
    /// Reads the files of batch.dataset and one version of the archive's Delta table, computes
    /// every view (embedded, or on Spark with --engine spark), prints it, and publishes
    /// output/batch_view/ atomically; a failed run leaves the previous view in service.
    Batch {
        /// Dataset files or directories of JSON lines (batch.dataset); repeatable.
        #[arg(long)]
        dataset: Vec<PathBuf>,
        /// Read the archive as its Delta table was at this version (a number) or time (RFC
        /// 3339, e.g. 2026-11-26T10:00:00Z); the view is printed, not published.
        #[arg(long, value_parser = AsOf::parse)]
        as_of: Option<AsOf>,
    },
    /// Speed layer: consume the topic in micro-batches, archive every event.
    ///
    /// Keeps incremental views of the events after the batch view's offsets, prints each
    /// micro-batch's table and progress, archives the events into the master dataset and keeps
    /// output/streaming_view/ current. Ctrl-C/SIGTERM finishes the micro-batch and checkpoints;
    /// started again, it continues where it stopped.
    Speed {
        /// Don't print the table after each micro-batch.
        #[arg(long)]
        quiet: bool,
        /// Share the topic's partitions with the other instances of the consumer group
        /// (speed.consumer-group; kafka.group-id names the group).
        #[arg(long)]
        consumer_group: bool,
    },
    /// Serving layer: merge batch and speed from the files and serve the API.
    ///
    /// Merges each batch view with the archived events after its offsets, prints the final view,
    /// writes output/serving_view.json/, then serves the HTTP API and dashboard, following the
    /// files every second, until Ctrl-C.
    Serve {
        /// Print and write the view, then exit (the seed's serving script).
        #[arg(long)]
        once: bool,
        /// Also print what each row is made of: "Ali: total_amount = 400 (320 from batch + 80
        /// from speed)".
        #[arg(long)]
        explain: bool,
        /// Address of the HTTP API (serving.listen).
        #[arg(long)]
        listen: Option<String>,
        /// Address of the PostgreSQL wire protocol server (serving.pg-listen).
        #[arg(long, value_name = "ADDR")]
        pg_listen: Option<String>,
    },
    /// The three layers in one process, with the HTTP API and dashboard.
    ///
    /// The speed layer consumes, the batch layer recomputes every batch.interval (and on POST
    /// /api/batch), and the HTTP API and dashboard serve the exact merged views.
    Run {
        /// Address of the HTTP API (serving.listen).
        #[arg(long)]
        listen: Option<String>,
        /// Address of the PostgreSQL wire protocol server (serving.pg-listen).
        #[arg(long, value_name = "ADDR")]
        pg_listen: Option<String>,
    },
    /// Recompute from all the data and compare key by key with serving.
    ///
    /// Prints each difference and exits 1 when there is one.
    Verify,
    /// Kappa mode: rebuild every view from the topic alone.
    ///
    /// Reads the topic from its earliest offset to now, with the same view definitions; nothing
    /// on disk changes.
    Replay,
    /// Send JSON lines to the topic, checked against the schema.
    ///
    /// Reads stdin (or --file) and sends each line as it is read, like kafka-console-producer.
    /// A line that does not match the schema is reported as FILE:LINE with its reason and not
    /// sent; exit 1 when any was.
    Produce {
        /// Read lines from this file instead of stdin.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Stop at the first bad line and send nothing.
        #[arg(long)]
        strict: bool,
    },
    /// Merge the archive's small files and vacuum old ones.
    ///
    /// Merges the archive segments every batch view covers (Delta OPTIMIZE), then deletes the
    /// files no version within --retention needs (VACUUM). Safe while the speed layer appends
    /// and a batch reads.
    Compact {
        /// Keep files the table stopped using less than this long ago (readers of older
        /// versions, time travel).
        #[arg(long, default_value = "7days", value_parser = humantime::parse_duration)]
        retention: std::time::Duration,
    },
    /// Create, list or describe topics, like kafka-topics.
    Topic {
        #[command(subcommand)]
        action: TopicAction,
    },
    /// The seed workshop end to end.
    ///
    /// Batch over datasets/transactions.json, the speed layer on three messages sent through
    /// Kafka, serving, then a batch recompute over the archive that serves the same totals.
    Demo,
}

#[derive(Subcommand)]
pub enum TopicAction {
    /// Create the topic (--topic, default kafka.topic).
    Create {
        /// Number of partitions.
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        /// Replication factor (default: the brokers' `default.replication.factor`).
        #[arg(long)]
        replication_factor: Option<i32>,
        /// Succeed when the topic already exists.
        #[arg(long)]
        if_not_exists: bool,
    },
    /// List the topics on the cluster.
    List,
    /// Show the topic's partitions, leaders, replicas and offsets.
    Describe,
}

impl Global {
    /// Loads the configuration with these options (and `--dataset`, `--listen` where the
    /// command has them) on top, and compiles it.
    pub async fn pipeline(
        &self,
        dataset: &[PathBuf],
        listen: Option<&str>,
    ) -> Result<Arc<Pipeline>> {
        self.serving_pipeline(dataset, listen, None).await
    }

    /// [`Global::pipeline`] of `run` and `serve`, with `--pg-listen`.
    pub async fn serving_pipeline(
        &self,
        dataset: &[PathBuf],
        listen: Option<&str>,
        pg_listen: Option<&str>,
    ) -> Result<Arc<Pipeline>> {
        let mut o = overrides(self, dataset, listen)?;
        if let Some(v) = pg_listen {
            o.push(("serving.pg-listen".into(), v.into()));
        }
        let cfg = Config::load(self.config.as_deref(), &o)?;
        compile(cfg).await
    }

    /// [`Global::pipeline`] of `lambdaflow speed` (`--consumer-group` on top).
    pub async fn speed_pipeline(&self, consumer_group: bool) -> Result<Arc<Pipeline>> {
        let mut o = overrides(self, &[], None)?;
        if consumer_group {
            o.push(("speed.consumer-group".into(), true.into()));
        }
        let cfg = Config::load(self.config.as_deref(), &o)?;
        compile(cfg).await
    }
}

/// Compiles the configuration, then checks it against the batch engine it names: a view the
/// Spark engine would compute differently is refused before any work.
async fn compile(cfg: Config) -> Result<Arc<Pipeline>> {
    let p = cfg.compile().await?;
    if p.config.batch.engine == BatchEngine::Spark {
        crate::batch::spark::check(&p).await?;
    }
    Ok(Arc::new(p))
}

/// The command line's options as configuration keys (they win over the files and the
/// environment).
fn overrides(g: &Global, dataset: &[PathBuf], listen: Option<&str>) -> Result<Overrides> {
    let mut o: Overrides = Vec::new();
    if let Some(v) = listen {
        o.push(("serving.listen".into(), v.into()));
    }
    if let Some(v) = &g.bootstrap_servers {
        o.push(("kafka.bootstrap-servers".into(), v.clone().into()));
    }
    if let Some(v) = &g.topic {
        o.push(("kafka.topic".into(), v.clone().into()));
    }
    if let Some(v) = g.engine {
        o.push(("batch.engine".into(), v.name().into()));
    }
    if let Some(v) = &g.spark_remote {
        o.push(("batch.spark-remote".into(), v.clone().into()));
    }
    if let Some(v) = &g.output_dir {
        o.push(("output.dir".into(), v.display().to_string().into()));
    }
    for kv in &g.kafka_property {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| Error::config(format!("-X {kv}: expected KEY=VALUE")))?;
        let t = std::collections::BTreeMap::from([(k.to_string(), v)]);
        o.push(("kafka.properties".into(), t.into()));
    }
    if !dataset.is_empty() {
        let list = dataset
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>();
        o.push(("batch.dataset".into(), list.into()));
    }
    Ok(o)
}
