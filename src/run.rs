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
//!
//! With `speed.consumer-group`, the speed layer is one member of a group and holds only its
//! partitions: serving then follows the master dataset for every partition, as `serve` does.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, watch};
use tracing::{error, info, warn};

use crate::config::{Isolation, Pipeline};
use crate::error::{Error, Result};
use crate::serving::gate::CommitGate;
use crate::serving::{self, BatchStatus, ServedView, ServingState, http};
use crate::speed::{self, Snapshot, SpeedUpdate};
use crate::storage::delta::AsOf;
use crate::storage::{Layout, Manifest, PublishedBatch};
use crate::supervisor::{SHUTDOWN_LIMIT, Supervisor};
use crate::{batch, kafka, runtime};

/// Runs batch, speed and serving until `shutdown` resolves or one of them fails, then stops
/// them all (the speed layer writes a final checkpoint) within [`SHUTDOWN_LIMIT`].
pub async fn run(
    p: Arc<Pipeline>,
    listen: SocketAddr,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let layout = p.layout();
    layout.check_writable()?;
    if p.config.kafka.fail_fast {
        kafka::partitions(&p.config.kafka).await?;
    }
    let listener = crate::serving::bind(listen).await?;
    // Batch runs are CPU-bound DataFusion plans: on a runtime of their own they cannot delay
    // the consumer's polls or the HTTP answers (DataFusion's `thread_pools` example).
    let batch_rt = runtime::batch_runtime()?;

    let tasks = Supervisor::new();
    let (snap_tx, snap_rx) = watch::channel(Arc::new(Snapshot::default()));
    let (updates_tx, updates_rx) = mpsc::channel(speed::UPDATE_QUEUE);
    let published = Arc::new(Notify::new());
    let trigger = Arc::new(Notify::new());
    let (batch_tx, batch_rx) = watch::channel(BatchStatus::default());
    // In a consumer group this instance's speed state holds only its partitions: it serves
    // every partition from the master dataset, as `serve` replicas do.
    let group = p.config.speed.consumer_group;

    let speed = speed::run(
        Arc::clone(&p),
        speed::Options {
            print_tables: false,
            starting_offsets: None,
            batch_published: Some(Arc::clone(&published)),
        },
        speed::Publish {
            status: Some(snap_tx),
            updates: (!group).then_some(updates_tx),
        },
        tasks.stopping(),
    );
    tasks.spawn("speed layer", async move { speed.await.map(drop) });
    tasks.spawn(
        "batch scheduler",
        schedule_batches(
            Arc::clone(&p),
            batch_rt.handle().clone(),
            batch_tx,
            published,
            Arc::clone(&trigger),
            tasks.stopping(),
        ),
    );
    let member = group.then(|| snap_rx.clone());
    let served_rx = if group {
        serving::files::follow_files(&p, &tasks)?
    } else {
        let (served_tx, served_rx) = watch::channel(Arc::new(ServingState::default()));
        let feeds = Feeds {
            status: snap_rx,
            updates: updates_rx,
            batch: batch_rx,
        };
        tasks.spawn(
            "serving",
            materialize(Arc::clone(&p), layout, feeds, served_tx, tasks.stopping()),
        );
        served_rx
    };
    let sql = serving::sql::start(&p, served_rx.clone(), &tasks).await?;
    let mut app = http::AppState::new(Arc::clone(&p), served_rx, Some(trigger))
        .with_sql(sql)
        .with_time_travel(time_travel(Arc::clone(&p), Some(batch_rt.handle().clone())))
        .with_group(serving::files::follow_group(&p, &tasks));
    if let Some(member) = member {
        app = app.with_member(member);
    }
    info!(%listen, "serving layer: HTTP API and dashboard on http://{listen}/");
    let server = http::serve(listener, app, tasks.stopping());
    tasks.spawn("HTTP server", async move {
        server
            .await
            .map_err(|e| Error::io(format!("HTTP server on {listen}"), e))
    });

    let r = tasks.run_until(shutdown, SHUTDOWN_LIMIT).await;
    batch_rt.shutdown_background();
    r
}

/// `?as_of=` for the HTTP API: the batch layer computes the views over a past table version
/// (on `rt`, the batch runtime, when given). Serving does not import the batch layer; this
/// wiring hands it the computation.
pub fn time_travel(p: Arc<Pipeline>, rt: Option<tokio::runtime::Handle>) -> http::TimeTravel {
    Arc::new(move |version| {
        let p = Arc::clone(&p);
        let job = async move {
            let run = batch::run_as_of(&p, false, AsOf::Version(version)).await?;
            Ok(run
                .views
                .into_iter()
                .map(|(def, state, _)| PublishedBatch {
                    manifest: Manifest {
                        view: def.name.clone(),
                        sql: def.sql.clone(),
                        ..run.manifest.clone()
                    },
                    state,
                })
                .collect())
        };
        let rt = rt.clone();
        Box::pin(async move {
            match rt {
                Some(rt) => rt
                    .spawn(job)
                    .await
                    .map_err(|e| Error::task("batch run as of a table version", e))?,
                None => job.await,
            }
        })
    })
}

/// Runs the batch layer at start-up, then every `batch.interval` and whenever `trigger` is
/// notified, each run on the batch runtime `rt`. A failed run leaves the previous views in
/// service; the status says why.
async fn schedule_batches(
    p: Arc<Pipeline>,
    rt: tokio::runtime::Handle,
    status: watch::Sender<BatchStatus>,
    published: Arc<Notify>,
    trigger: Arc<Notify>,
    stop: impl Future<Output = ()>,
) -> Result<()> {
    tokio::pin!(stop);
    let interval = p.config.batch.interval;
    loop {
        status.send_modify(|s| {
            s.running = true;
            s.next_run_at = None;
        });
        let started = Instant::now();
        let mut job = rt.spawn({
            let p = Arc::clone(&p);
            async move { batch::run(&p, false).await }
        });
        let result = tokio::select! {
            r = &mut job => r.map_err(|e| Error::task("batch run", e)).and_then(|r| r),
            _ = &mut stop => {
                job.abort();
                return Ok(());
            }
        };
        record_batch_run(&status, &result, started.elapsed());
        if result.is_ok() {
            published.notify_one();
        }
        let wait = (!interval.is_zero()).then(|| {
            status.send_modify(|s| {
                s.next_run_at = Some(
                    (chrono::Utc::now()
                        + chrono::TimeDelta::from_std(interval).unwrap_or_default())
                    .to_rfc3339(),
                );
            });
            interval
        });
        tokio::select! {
            _ = &mut stop => return Ok(()),
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

/// Logs a batch run's outcome and records it in the status `/api/status` shows.
fn record_batch_run(
    status: &watch::Sender<BatchStatus>,
    result: &Result<batch::BatchRun>,
    took: Duration,
) {
    let ms = took.as_millis() as u64;
    status.send_modify(|s| {
        s.running = false;
        s.runs += 1;
        s.last_duration_ms = Some(ms);
        match result {
            Ok(run) => {
                s.last_error = None;
                s.last_run_id = Some(run.run_id.clone());
            }
            Err(e) => {
                s.failures += 1;
                s.last_error = Some(e.report().to_string());
            }
        }
    });
    match result {
        Ok(run) => {
            info!(run_id = %run.run_id, ms, "batch layer: run published; the speed layer expires what it covers")
        }
        Err(e) => {
            error!(cause = %e.report(), "batch layer: run failed; the previous batch view stays in service")
        }
    }
}

/// What serving follows in `lambdaflow run`.
struct Feeds {
    /// The speed layer's status.
    status: watch::Receiver<Arc<Snapshot>>,
    /// The speed layer's resets and deltas.
    updates: mpsc::Receiver<SpeedUpdate>,
    /// The batch scheduler's status.
    batch: watch::Receiver<BatchStatus>,
}

/// Keeps the served views: builds them whole on a `Reset` (off the async threads, then
/// swapped in), merges each `Delta` into them, and follows the speed status and the batch
/// scheduler. Writes `serving_view.json/` while the views change, at most every
/// [`serving::files::rewrite_interval`]. With `serving.isolation = "read-committed"` a delta
/// waits in a [`CommitGate`] until the speed status says a checkpoint covers it. An update
/// that cannot be applied is an error: the served views would miss events (a restart rebuilds
/// them exactly).
async fn materialize(
    p: Arc<Pipeline>,
    layout: Layout,
    mut feeds: Feeds,
    served: watch::Sender<Arc<ServingState>>,
    stop: impl Future<Output = ()>,
) -> Result<()> {
    tokio::pin!(stop);
    let mut state = ServingState {
        live: true,
        ..Default::default()
    };
    let mut last_write: Option<Instant> = None;
    let mut unwritten = false;
    let mut gate =
        (p.config.serving.isolation == Isolation::ReadCommitted).then(CommitGate::default);
    loop {
        let update = tokio::select! {
            _ = &mut stop => return Ok(()),
            u = feeds.updates.recv() => {
                let Some(u) = u else { return Ok(()) };
                match (&mut gate, u) {
                    (Some(g), SpeedUpdate::Delta { views, offsets }) => {
                        g.hold(offsets, views);
                        release(g, &state)
                    }
                    (g, u) => {
                        if let Some(g) = g { g.clear() } // a reset includes what is held
                        Some(u)
                    }
                }
            }
            r = feeds.status.changed() => {
                if r.is_err() { return Ok(()) }
                state.speed = Some(feeds.status.borrow_and_update().clone());
                gate.as_mut().and_then(|g| release(g, &state))
            }
            r = feeds.batch.changed() => {
                if r.is_err() { return Ok(()) }
                state.batch = feeds.batch.borrow_and_update().clone();
                None
            }
            _ = tokio::time::sleep(Duration::from_secs(1)), if unwritten => None,
        };
        if let Some(u) = update {
            if let Some(views) = apply(&p, &state.views, u).await? {
                state.views = views;
            }
            unwritten = true;
        }
        // Windows beyond retention leave as the watermark moves (a new table too).
        {
            let _fence = serving::updating();
            for v in &state.views {
                if let Some(h) = state.horizon_of(v) {
                    v.expire(h, &p.config.kafka.topic);
                }
            }
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
                    warn!(view = %v.def.name, cause = %e.report(), "could not write serving_view.json");
                }
            }
            last_write = Some(Instant::now());
            unwritten = false;
        }
    }
}

/// The held deltas the speed layer's last checkpoint covers, as one update.
fn release(gate: &mut CommitGate, state: &ServingState) -> Option<SpeedUpdate> {
    let checkpointed = &state.speed.as_ref()?.checkpointed;
    let (views, offsets) = gate.release(checkpointed)?;
    Some(SpeedUpdate::Delta { views, offsets })
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
            let _fence = serving::updating();
            for (v, d) in views.iter().zip(&deltas) {
                v.apply_delta(d, &offsets, &p.config.kafka.topic)?;
            }
            Ok(None)
        }
    })
    .await
    .map_err(|e| Error::task("serving update", e))?
}
