//! Process-wide plumbing: logging and the shutdown signal.

use tracing_subscriber::EnvFilter;

/// Libraries whose `info` is a debug dump (delta-rs's kernel logs every snapshot it loads):
/// held at `warn` unless the filter names them.
const QUIET: [&str; 3] = ["buoyant_kernel", "buoyant_kernel_engine", "deltalake_core"];

/// Logs to stderr; `LAMBDAFLOW_LOG` (or `RUST_LOG`) sets the filter, e.g. `debug` or
/// `lambdaflow=debug,rdkafka=info`. Colours only on a terminal (and never with `NO_COLOR`), so
/// a log written to a file or a pipe is plain text.
pub fn init_tracing() {
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let spec = std::env::var("LAMBDAFLOW_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info,rdkafka=warn,librdkafka=warn".into());
    let mut filter = EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new("info"));
    for target in QUIET.iter().filter(|t| !spec.contains(*t)) {
        if let Ok(d) = format!("{target}=warn").parse() {
            filter = filter.add_directive(d);
        }
    }
    // Several writers of the master dataset (a consumer group, `compact`, instances creating
    // the table together) race all the time: delta-rs logs each commit checked against a newer
    // version, and each conflict at `error`. Every conflict comes back to lambdaflow, which
    // re-reads, fences or reports it under its own name: an ERROR line means something broke.
    if !spec.contains("deltalake_core")
        && let Ok(d) = "deltalake_core::kernel::transaction=off".parse()
    {
        filter = filter.add_directive(d);
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .try_init();
}

/// Resolves on the first Ctrl-C or SIGTERM. The handlers are installed when this is called
/// (not when the future is first polled), so a signal during start-up is not lost. A second
/// signal exits the process at once.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let int = signal(SignalKind::interrupt()).ok();
    let term = signal(SignalKind::terminate()).ok();
    async move {
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! { _ = wait(int) => {}, _ = wait(term) => {} }
        tracing::info!("shutdown requested: finishing the current work (signal again to exit now)");
        tokio::spawn(async {
            let _ = tokio::signal::ctrl_c().await;
            std::process::exit(130);
        });
    }
}

/// The runtime batch runs execute on in `lambdaflow run`: CPU-bound DataFusion plans there
/// cannot delay the consumer's polls or the HTTP answers on the main runtime (the OS shares the
/// cores between the two).
pub fn batch_runtime() -> crate::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .thread_name("lambdaflow-batch")
        .enable_all()
        .build()
        .map_err(|e| crate::Error::io("the batch runtime's threads", e))
}
