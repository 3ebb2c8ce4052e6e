//! The `lambdaflow` binary: parses arguments, loads the configuration, calls one command, and
//! maps the result to an exit code (0 done, 1 a difference or a rejected line, 2 an error).

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use lambdaflow::cli::{Cli, Command};
use lambdaflow::storage::delta::AsOf;
use lambdaflow::storage::{compact, store};
use lambdaflow::{batch, demo, kafka, produce, report, runtime, serving, speed, verify};

/// jemalloc: memory freed by a retention cut or a batch swap goes back to the system and is
/// reused, where glibc's per-thread arenas stay at their high-water mark (BENCHMARKS.md,
/// "Windowed views" E).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Installed before any work, so that a signal during start-up is handled, not fatal.
    let shutdown = runtime::shutdown_signal();
    let g = &cli.global;
    match cli.command {
        Command::Batch { dataset, as_of } => {
            let p = g.pipeline(&dataset, None).await?;
            let as_of = as_of.unwrap_or(AsOf::Latest);
            let root = p.layout().store()?;
            let wait = Some(p.config.output.storage_wait);
            let run =
                store::patiently_async("batch", &root, wait, || batch::run_as_of(&p, true, as_of))
                    .await?;
            report::batch_run(&p, &run);
        }
        Command::Speed {
            quiet,
            consumer_group,
        } => {
            let p = g.speed_pipeline(consumer_group).await?;
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
            pg_listen,
        } => {
            let p = g
                .serving_pipeline(&[], listen.as_deref(), pg_listen.as_deref())
                .await?;
            report::served(&p, &serving::serve_once(&p)?, explain)?;
            if !once {
                let addr = p.config.serving.listen_addr()?;
                let travel = lambdaflow::run::time_travel(Arc::clone(&p), None);
                serving::serve_files(p, addr, travel, shutdown).await?;
            }
        }
        Command::Run { listen, pg_listen } => {
            let p = g
                .serving_pipeline(&[], listen.as_deref(), pg_listen.as_deref())
                .await?;
            let addr = p.config.serving.listen_addr()?;
            lambdaflow::run::run(p, addr, shutdown).await?;
        }
        Command::Compact { retention } => {
            let p = g.pipeline(&[], None).await?;
            let c = tokio::task::spawn_blocking(move || {
                let root = p.layout().store()?;
                let wait = Some(p.config.output.storage_wait);
                store::patiently("compact", &root, wait, || compact::compact(&p, retention))
            })
            .await??;
            report::compacted(&c);
        }
        Command::Verify => {
            let p = g.pipeline(&[], None).await?;
            let r = verify::verify(&p).await?;
            report::verified(&r);
            return Ok(ExitCode::from(u8::from(!r.differences.is_empty())));
        }
        Command::Replay => {
            let p = g.pipeline(&[], None).await?;
            report::replayed(&p, &speed::replay(&p).await?)?;
        }
        Command::Produce { file, strict } => {
            let p = g.pipeline(&[], None).await?;
            let (r, source) = produce::produce_input(&p, file.as_deref(), strict).await?;
            return Ok(report::produced(&p, &r, &source));
        }
        Command::Topic { action } => {
            let p = g.pipeline(&[], None).await?;
            kafka::topic_command(&p.config.kafka, &action).await?;
        }
        Command::Demo => {
            let p = g.pipeline(&[], None).await?;
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
