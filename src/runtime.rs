//! Process-wide plumbing: logging and the shutdown signal.

use tracing_subscriber::EnvFilter;

/// Logs to stderr; `LAMBDAFLOW_LOG` (or `RUST_LOG`) sets the filter, e.g. `debug` or
/// `lambdaflow=debug,rdkafka=info`.
pub fn init_tracing() {
    let filter = EnvFilter::try_from_env("LAMBDAFLOW_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn,librdkafka=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Resolves on the first Ctrl-C or SIGTERM. A second signal exits the process at once.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown requested: finishing the current work (signal again to exit now)");
    tokio::spawn(async {
        let _ = tokio::signal::ctrl_c().await;
        std::process::exit(130);
    });
}
