//! The `lambdaflow` binary: parses arguments, loads the configuration, calls one layer's `run`,
//! and maps the result to an exit code.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use lambdaflow::config::{Config, Overrides, Pipeline};
use lambdaflow::{batch, demo, kafka, produce, report, runtime, serving, speed, verify};

/// A Lambda-architecture data system: one SQL view, a DataFusion batch layer, a Kafka speed
/// layer, and an exact serving merge.
#[derive(Parser)]
#[command(name = "lambdaflow", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// Config file (default: ./lambdaflow.toml when it exists, else the built-in defaults).
    #[arg(long, short = 'c', global = true, env = "LAMBDAFLOW_CONFIG")]
    config: Option<PathBuf>,
    /// Kafka bootstrap servers (kafka.bootstrap-servers).
    #[arg(long, global = true)]
    bootstrap_servers: Option<String>,
    /// Kafka topic of new events (kafka.topic).
    #[arg(long, global = true)]
    topic: Option<String>,
    /// Root directory of all outputs (output.dir).
    #[arg(long, global = true)]
    output_dir: Option<PathBuf>,
    /// A librdkafka property, e.g. -X security.protocol=SASL_SSL (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE", global = true)]
    kafka_property: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Batch layer: recompute every view from the whole master dataset with DataFusion, print
    /// it, and publish output/batch_view/ atomically.
    Batch {
        /// Dataset files or directories of JSON lines (batch.dataset); repeatable.
        #[arg(long)]
        dataset: Vec<PathBuf>,
    },
    /// Speed layer: consume the topic, keep incremental views, print each micro-batch's table
    /// and keep output/streaming_view/ current. Ctrl-C/SIGTERM saves state and offsets.
    Speed {
        /// Don't print the table after each micro-batch.
        #[arg(long)]
        quiet: bool,
    },
    /// Serving layer: merge the batch view and the speed layer's state (after the batch view's
    /// offsets) into the final view, print it, write output/serving_view.json/, then serve the
    /// HTTP API and dashboard (refreshed from the files every second) until Ctrl-C.
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
    },
    /// Batch, speed and serving in one process: the speed layer consumes, the batch layer
    /// recomputes every batch.interval (and on POST /api/batch), the HTTP API and dashboard
    /// serve the exact merged views.
    Run {
        /// Address of the HTTP API (serving.listen).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Recompute every view from all the data and compare it key by key with the serving
    /// view; exit 1 when they differ.
    Verify,
    /// Kappa mode: rebuild every view from the Kafka topic alone (earliest offset to now), with
    /// the same definitions; nothing on disk changes.
    Replay,
    /// Console producer: send JSON lines from stdin (or --file) to the topic. Lines that do not
    /// match the schema are reported with their line number and not sent.
    Produce {
        /// Read lines from this file instead of stdin.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Stop at the first bad line and send nothing.
        #[arg(long)]
        strict: bool,
    },
    /// Manage topics, like kafka-topics.
    Topic {
        #[command(subcommand)]
        action: TopicAction,
    },
    /// Run the seed workshop end to end: batch, speed (3 messages through Kafka), serving.
    Demo,
}

#[derive(Subcommand)]
enum TopicAction {
    /// Create the topic (--topic, default kafka.topic).
    Create {
        /// Number of partitions.
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        /// Replication factor.
        #[arg(long, default_value_t = 1)]
        replication_factor: i32,
        /// Succeed when the topic already exists.
        #[arg(long)]
        if_not_exists: bool,
    },
    /// List the topics on the cluster.
    List,
    /// Show the topic's partitions, leaders, replicas and offsets.
    Describe,
}

fn overrides(g: &Global, dataset: &[PathBuf], listen: Option<&str>) -> anyhow::Result<Overrides> {
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
    if let Some(v) = &g.output_dir {
        o.push(("output.dir".into(), v.display().to_string().into()));
    }
    for kv in &g.kafka_property {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("-X {kv}: expected KEY=VALUE"))?;
        let mut t = toml::map::Map::new();
        t.insert(k.to_string(), v.into());
        o.push(("kafka.properties".into(), toml::Value::Table(t)));
    }
    if !dataset.is_empty() {
        let list = dataset
            .iter()
            .map(|d| toml::Value::from(d.display().to_string()))
            .collect();
        o.push(("batch.dataset".into(), toml::Value::Array(list)));
    }
    Ok(o)
}

async fn pipeline(g: &Global, dataset: &[PathBuf]) -> anyhow::Result<Arc<Pipeline>> {
    pipeline_listening(g, dataset, None).await
}

async fn pipeline_listening(
    g: &Global,
    dataset: &[PathBuf],
    listen: Option<&str>,
) -> anyhow::Result<Arc<Pipeline>> {
    let cfg = Config::load(g.config.as_deref(), &overrides(g, dataset, listen)?)?;
    Ok(Arc::new(cfg.compile().await?))
}

fn listen_addr(p: &Pipeline) -> anyhow::Result<std::net::SocketAddr> {
    Ok(p.config.serving.listen.parse()?)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Installed before any work, so that a signal during start-up is handled, not fatal.
    let shutdown = runtime::shutdown_signal();
    let g = &cli.global;
    match cli.command {
        Command::Batch { dataset } => {
            let p = pipeline(g, &dataset).await?;
            let run = batch::run(&p, true).await?;
            for (def, _, rows) in &run.views {
                report::view(&p, &def.name, rows);
            }
            report::batch_run(&p, &run.run_id, &run.manifest);
        }
        Command::Speed { quiet } => {
            let p = pipeline(g, &[]).await?;
            let opts = speed::Options {
                print_tables: !quiet,
                ..Default::default()
            };
            speed::run(p, opts, speed::Publish::default(), shutdown).await?;
        }
        Command::Serve {
            once,
            explain,
            listen,
        } => {
            let p = pipeline_listening(g, &[], listen.as_deref()).await?;
            report::served(&p, &serving::serve_once(&p)?, explain)?;
            if !once {
                serving::serve_files(Arc::clone(&p), listen_addr(&p)?, shutdown).await?;
            }
        }
        Command::Run { listen } => {
            let p = pipeline_listening(g, &[], listen.as_deref()).await?;
            let addr = listen_addr(&p)?;
            lambdaflow::run::run(p, addr, shutdown).await?;
        }
        Command::Verify => {
            let p = pipeline(g, &[]).await?;
            let r = verify::verify(&p).await?;
            report::verified(&r);
            if !r.differences.is_empty() {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Replay => {
            let p = pipeline(g, &[]).await?;
            report::replayed(&p, &speed::replay(&p).await?)?;
        }
        Command::Produce { file, strict } => {
            let p = pipeline(g, &[]).await?;
            let mut text = Vec::new();
            match &file {
                Some(f) => {
                    text = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?
                }
                None => {
                    std::io::stdin().lock().read_to_end(&mut text)?;
                }
            }
            let source = file
                .as_ref()
                .map_or("stdin".to_string(), |f| f.display().to_string());
            let r = produce::produce(&p, &text, &source, strict).await?;
            if let Some(n) = r.stopped_at {
                anyhow::bail!("{source}:{n}: bad line (--strict): nothing was sent");
            }
            println!(
                "sent {} message(s) to topic {}; rejected {} line(s)",
                r.sent, p.config.kafka.topic, r.rejected
            );
            if r.rejected > 0 {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Topic { action } => {
            let p = pipeline(g, &[]).await?;
            let k = &p.config.kafka;
            match action {
                TopicAction::Create {
                    partitions,
                    replication_factor,
                    if_not_exists,
                } => {
                    if kafka::create_topic(k, partitions, replication_factor, if_not_exists).await?
                    {
                        kafka::wait_for_topic(k).await?;
                        println!("Created topic {}.", k.topic);
                    } else {
                        println!("Topic {} already exists.", k.topic);
                    }
                }
                TopicAction::List => {
                    for t in kafka::list_topics(k).await? {
                        println!("{t}");
                    }
                }
                TopicAction::Describe => print!("{}", kafka::describe(k).await?),
            }
        }
        Command::Demo => {
            let p = pipeline(g, &[]).await?;
            let msgs: Vec<Vec<u8>> = demo::SEED_MESSAGES
                .iter()
                .map(|m| m.as_bytes().to_vec())
                .collect();
            demo::run(p, &msgs).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    runtime::init_tracing();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
