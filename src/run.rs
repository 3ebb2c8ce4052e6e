//! `lambdaflow run`: the three layers in one process — the embedded default.
//!
//! ```text
//!   batch scheduler ── every batch.interval, at start-up, and on POST /api/batch ──► batch::run
//!        │ publishes batch_view/ (state + offsets), then notifies ─┐
//!   speed::run ◄──────────────────────────────────────────────────┘ expires the state the new
//!        │ snapshot per micro-batch (state continuing its batch run)    batch covers
//!        ▼
//!   serving: ServedView per view ──► HTTP API + dashboard, serving_view.json (≤ once a second)
//! ```
//!
//! The serving view stays exact while the batch layer recomputes: the speed layer's snapshot
//! always carries the batch view its state continues, and serving merges exactly that pair.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};

use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::serving::{self, BatchStatus, ServingState, http};
use crate::speed::{self, Snapshot};
use crate::storage::Layout;
use crate::{batch, kafka};

/// Runs batch, speed and serving until `shutdown` resolves, then stops them in order (the
/// speed layer writes a final checkpoint).
pub async fn run(
    p: Arc<Pipeline>,
    listen: SocketAddr,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let layout = Layout::new(&p.config.output.dir, p.views.len());
    layout.check_writable()?;
    kafka::partitions(&p.config.kafka).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Error::config(format!("serving.listen {listen}: cannot listen: {e}")))?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let (snap_tx, snap_rx) = watch::channel(Arc::new(Snapshot::default()));
    let published = Arc::new(Notify::new());
    let trigger = Arc::new(Notify::new());
    let (batch_tx, batch_rx) = watch::channel(BatchStatus::default());
    let (served_tx, served_rx) = watch::channel(Arc::new(ServingState::default()));

    let mut speed_task = tokio::spawn(speed::run(
        Arc::clone(&p),
        speed::Options {
            print_tables: false,
            starting_offsets: None,
            batch_published: Some(Arc::clone(&published)),
        },
        Some(snap_tx),
        stopped(stop_rx.clone()),
    ));

    let batch_task = tokio::spawn(schedule_batches(
        Arc::clone(&p),
        batch_tx,
        Arc::clone(&published),
        Arc::clone(&trigger),
        stopped(stop_rx.clone()),
    ));

    let serving_task = tokio::spawn(serve_snapshots(
        Arc::clone(&p),
        layout,
        snap_rx,
        batch_rx,
        served_tx,
        stopped(stop_rx.clone()),
    ));

    let app = http::router(http::AppState::new(
        Arc::clone(&p),
        served_rx,
        Some(trigger),
    ));
    info!(%listen, "serving layer: HTTP API and dashboard on http://{listen}/");
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
    );

    // Stop on the signal, or as soon as the speed layer fails.
    tokio::pin!(shutdown);
    let early = tokio::select! {
        _ = &mut shutdown => None,
        r = &mut speed_task => Some(r),
    };
    let _ = stop_tx.send(true);
    let joined = match early {
        Some(r) => r,
        None => speed_task.await, // the final checkpoint
    };
    let r = match joined {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(Error::Internal(format!("speed task: {e}"))),
    };
    finish(server, batch_task, serving_task, r).await
}

async fn finish(
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    batch_task: tokio::task::JoinHandle<()>,
    serving_task: tokio::task::JoinHandle<()>,
    r: Result<()>,
) -> Result<()> {
    let _ = batch_task.await;
    let _ = serving_task.await;
    if let Ok(Err(e)) = server.await {
        warn!(cause = %e, "HTTP server stopped with an error");
    }
    r
}

/// Runs the batch layer at start-up, then every `batch.interval` and whenever `trigger` is
/// notified. A failed run leaves the previous views in service; the status says why.
async fn schedule_batches(
    p: Arc<Pipeline>,
    status: watch::Sender<BatchStatus>,
    published: Arc<Notify>,
    trigger: Arc<Notify>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let interval = p.config.batch.interval;
    loop {
        status.send_modify(|s| {
            s.running = true;
            s.next_run_at = None;
        });
        let started = Instant::now();
        let result = tokio::select! {
            r = batch::run(&p, false) => r,
            _ = &mut stop => return,
        };
        let ms = started.elapsed().as_millis() as u64;
        status.send_modify(|s| {
            s.running = false;
            s.runs += 1;
            s.last_duration_ms = Some(ms);
            match &result {
                Ok(run) => {
                    s.last_error = None;
                    s.last_run_id = Some(run.run_id.clone());
                }
                Err(e) => {
                    s.failures += 1;
                    s.last_error = Some(e.to_string());
                }
            }
        });
        match result {
            Ok(run) => {
                info!(run_id = %run.run_id, ms, "batch layer: run published; the speed layer expires what it covers");
                published.notify_one();
            }
            Err(e) => {
                error!(cause = %e, "batch layer: run failed; the previous batch view stays in service")
            }
        }
        let wait = if interval.is_zero() {
            None
        } else {
            status.send_modify(|s| {
                s.next_run_at = Some(
                    (chrono::Utc::now()
                        + chrono::TimeDelta::from_std(interval).unwrap_or_default())
                    .to_rfc3339(),
                );
            });
            Some(interval)
        };
        tokio::select! {
            _ = &mut stop => return,
            _ = trigger.notified() => info!("batch layer: run requested"),
            _ = async {
                match wait {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}

/// Turns each speed snapshot into the served views, and writes `serving_view.json/` at most
/// once a second while they change.
async fn serve_snapshots(
    p: Arc<Pipeline>,
    layout: Layout,
    mut snaps: watch::Receiver<Arc<Snapshot>>,
    mut batch: watch::Receiver<BatchStatus>,
    served: watch::Sender<Arc<ServingState>>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut version = 0u64;
    let mut last_write: Option<Instant> = None;
    let mut unwritten = false;
    loop {
        let snap = snaps.borrow_and_update().clone();
        if snap.views.len() != p.views.len() {
            // The speed layer has not finished its recovery yet: not ready.
            tokio::select! {
                _ = &mut stop => return,
                r = snaps.changed() => if r.is_err() { return },
            }
            continue;
        }
        version += 1;
        let state = ServingState {
            version,
            views: serving::from_snapshot(&p, &snap),
            speed: Some(Arc::clone(&snap)),
            batch: batch.borrow_and_update().clone(),
            live: true,
        };
        if snap
            .views
            .iter()
            .any(|v| !v.parts.is_empty() || v.batch.is_some())
        {
            unwritten = true;
        }
        if unwritten && last_write.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            for v in &state.views {
                if let Err(e) = v
                    .rows()
                    .and_then(|rows| serving::write_serving_view(&layout, &v.def, &rows))
                {
                    warn!(view = %v.def.name, cause = %e, "could not write serving_view.json");
                }
            }
            last_write = Some(Instant::now());
            unwritten = false;
        }
        served.send_replace(Arc::new(state));
        tokio::select! {
            _ = &mut stop => return,
            r = snaps.changed() => if r.is_err() { return },
            r = batch.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(1)), if unwritten => {}
        }
    }
}
