//! `lambdaflow run`: the three layers in one process — the embedded default.
//!
//! ```text
//!   batch scheduler ── every batch.interval, at start-up, and on POST /api/batch ──► batch::run
//!        │ publishes batch_view/ (state + offsets), then notifies ─┐
//!   speed::run ◄──────────────────────────────────────────────────┘ expires the state the new
//!        │ status (watch) + Reset at a handoff / Delta per micro-batch      batch covers
//!        ▼   (bounded queue: the speed layer waits when serving is behind)
//!   materialize: one ServingTable per view, updated by the keys each delta touched
//!        ▼
//!   HTTP API + dashboard, serving_view.json (rewritten at most every 1 s + 1 s per 100k rows)
//! ```
//!
//! The serving view stays exact while the batch layer recomputes: a `Reset` carries the batch
//! view the speed state continues, and every delta after it continues that pair.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, watch};
use tracing::{error, info, warn};

use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::serving::{self, BatchStatus, ServedView, ServingState, http};
use crate::speed::{self, Snapshot, SpeedUpdate};
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
    if p.config.kafka.fail_fast {
        kafka::partitions(&p.config.kafka).await?;
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Error::config(format!("serving.listen {listen}: cannot listen: {e}")))?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let (snap_tx, snap_rx) = watch::channel(Arc::new(Snapshot::default()));
    let (updates_tx, updates_rx) = tokio::sync::mpsc::channel(speed::UPDATE_QUEUE);
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
        speed::Publish {
            status: Some(snap_tx),
            updates: Some(updates_tx),
        },
        stopped(stop_rx.clone()),
    ));

    let batch_task = tokio::spawn(schedule_batches(
        Arc::clone(&p),
        batch_tx,
        Arc::clone(&published),
        Arc::clone(&trigger),
        stopped(stop_rx.clone()),
    ));

    let serving_task = tokio::spawn(materialize(
        Arc::clone(&p),
        layout,
        snap_rx,
        updates_rx,
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

/// Keeps the served views: builds them whole on a `Reset` (off the async threads, then
/// swapped in), merges each `Delta` into them, and follows the speed status and the batch
/// scheduler. Writes `serving_view.json/` while the views change, at most every
/// [`serving::files::rewrite_interval`].
async fn materialize(
    p: Arc<Pipeline>,
    layout: Layout,
    mut status: watch::Receiver<Arc<Snapshot>>,
    mut updates: mpsc::Receiver<SpeedUpdate>,
    mut batch: watch::Receiver<BatchStatus>,
    served: watch::Sender<Arc<ServingState>>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut state = ServingState {
        live: true,
        ..Default::default()
    };
    let mut last_write: Option<Instant> = None;
    let mut unwritten = false;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            u = updates.recv() => {
                let Some(u) = u else { return };
                match apply(&p, &state.views, u).await {
                    Ok(Some(views)) => state.views = views,
                    Ok(None) => {}
                    Err(e) => error!(cause = %e, "serving: could not apply the speed layer's update"),
                }
                unwritten = true;
            }
            r = status.changed() => {
                if r.is_err() { return }
                state.speed = Some(status.borrow_and_update().clone());
            }
            r = batch.changed() => {
                if r.is_err() { return }
                state.batch = batch.borrow_and_update().clone();
            }
            _ = tokio::time::sleep(Duration::from_secs(1)), if unwritten => {}
        }
        state.version += 1;
        served.send_replace(Arc::new(state.clone()));
        let rows = state
            .views
            .iter()
            .map(|v| v.read().total())
            .max()
            .unwrap_or(0);
        if unwritten
            && last_write.is_none_or(|t| t.elapsed() >= serving::files::rewrite_interval(rows))
        {
            for v in &state.views {
                if let Err(e) = serving::write_served(&layout, v) {
                    warn!(view = %v.def.name, cause = %e, "could not write serving_view.json");
                }
            }
            last_write = Some(Instant::now());
            unwritten = false;
        }
    }
}

/// Applies one speed update on a blocking thread: new views for a reset, or the delta merged
/// into the current ones.
async fn apply(
    p: &Arc<Pipeline>,
    views: &[Arc<ServedView>],
    u: SpeedUpdate,
) -> Result<Option<Vec<Arc<ServedView>>>> {
    let (p, views) = (Arc::clone(p), views.to_vec());
    tokio::task::spawn_blocking(move || match u {
        SpeedUpdate::Reset {
            views: parts,
            offsets,
        } => p
            .views
            .iter()
            .zip(parts)
            .map(|(def, r)| {
                Ok(Arc::new(ServedView::build(
                    def,
                    r.batch,
                    r.speed,
                    offsets.clone(),
                )?))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some),
        SpeedUpdate::Delta {
            views: deltas,
            offsets,
        } => {
            for (v, d) in views.iter().zip(&deltas) {
                v.apply_delta(d, &offsets, &p.config.kafka.topic)?;
            }
            Ok(None)
        }
    })
    .await
    .map_err(|e| Error::Internal(format!("serving task: {e}")))?
}
