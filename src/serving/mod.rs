//! The serving layer: the final view = the batch view's state ⊕ the speed layer's state over
//! the events *after* the batch view's offsets.
//!
//! ```text
//!   batch_view/_state.json + _manifest.json (offsets per partition) ─┐
//!                                                                   ├─► merge ─► finalize
//!   speed state continuing that batch run (checkpoint, or live)  ───┘   (HAVING, SELECT,
//!     … or, when the speed layer continues another run, its state        ORDER BY, LIMIT)
//!       recomputed from the archived segments after the batch's offsets
//! ```
//!
//! The merge is on aggregate *state*, never on final values: HAVING runs after it, AVG merges
//! as sum and count. [`merge`] is the one place where the two layers meet, and every answer
//! says what it is made of ([`Freshness`], [`ServedView::explain`]).
//!
//! - [`http`]: the HTTP API, the live dashboard and `/metrics`; [`openapi`]: its description.

pub mod http;
pub mod openapi;

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use serde::Serialize;

use crate::batch::{self, PublishedBatch};
use crate::config::Pipeline;
use crate::error::Result;
use crate::master;
use crate::speed::{self, Snapshot};
use crate::storage::{self, Layout};
use crate::view::{ViewDef, ViewState};

/// The batch scheduler's status (`lambdaflow run`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct BatchStatus {
    /// A run is in progress.
    pub running: bool,
    /// Runs finished (published or failed) since start.
    pub runs: u64,
    /// Runs that failed since start.
    pub failures: u64,
    /// Why the last run failed (the previous view stayed in service).
    pub last_error: Option<String>,
    /// The last successful run.
    pub last_run_id: Option<String>,
    /// How long the last run took.
    pub last_duration_ms: Option<u64>,
    /// When the next scheduled run starts (RFC 3339; `None`: on demand only, or running).
    pub next_run_at: Option<String>,
}

/// Everything the HTTP API answers from, replaced as a whole on every change.
#[derive(Debug, Clone, Default)]
pub struct ServingState {
    /// Increases with every change.
    pub version: u64,
    /// Per view (config order).
    pub views: Vec<ServedView>,
    /// The speed layer's last snapshot (`lambdaflow run` only).
    pub speed: Option<Arc<Snapshot>>,
    /// The batch scheduler (`lambdaflow run` only).
    pub batch: BatchStatus,
    /// True in `lambdaflow run` (live speed state); false when serving from the files.
    pub live: bool,
}

/// Merges the layers' states of one view: `batch ⊕ speed`.
pub fn merge(def: &ViewDef, batch: Option<&ViewState>, speed: Option<&ViewState>) -> ViewState {
    let mut s = def.new_state();
    for part in [batch, speed].into_iter().flatten() {
        s.merge(part);
    }
    s
}

/// The final rows of one view from both layers' states.
pub fn serving_rows(
    def: &ViewDef,
    batch: Option<&ViewState>,
    speed: Option<&ViewState>,
) -> Result<RecordBatch> {
    def.finalize(&merge(def, batch, speed))
}

/// What an answer is made of.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Freshness {
    /// The batch run in service (`None`: no batch view yet).
    pub batch_run: Option<String>,
    /// When that run started (RFC 3339).
    pub batch_started_at: Option<String>,
    /// Seconds since that run started: how old the batch view is.
    pub batch_age_seconds: Option<f64>,
    /// Per partition of the topic: the offset up to which the batch view covers events.
    pub batch_offsets: BTreeMap<i32, i64>,
    /// Per partition: the offset up to which the speed layer has consumed; events in between
    /// come from the speed layer.
    pub speed_offsets: BTreeMap<i32, i64>,
    /// Events the speed part holds, over all partitions (offsets covered after the batch).
    pub speed_events_after_batch: i64,
}

/// One view as served: the two parts and their merge.
#[derive(Debug, Clone)]
pub struct ServedView {
    /// The view.
    pub def: Arc<ViewDef>,
    /// The batch view in service.
    pub batch: Option<Arc<PublishedBatch>>,
    /// The speed layer's state over the events after the batch view's offsets.
    pub speed: ViewState,
    /// Where the speed layer is, per partition.
    pub speed_offsets: BTreeMap<i32, i64>,
    /// `batch ⊕ speed`.
    pub merged: ViewState,
}

impl ServedView {
    fn new(
        def: &Arc<ViewDef>,
        batch: Option<Arc<PublishedBatch>>,
        speed: ViewState,
        speed_offsets: BTreeMap<i32, i64>,
    ) -> Self {
        let merged = merge(def, batch.as_ref().map(|b| &b.state), Some(&speed));
        Self {
            def: Arc::clone(def),
            batch,
            speed,
            speed_offsets,
            merged,
        }
    }

    /// The final rows.
    pub fn rows(&self) -> Result<RecordBatch> {
        self.def.finalize(&self.merged)
    }

    /// The final rows, with each row's batch part and speed part (same columns, same order).
    pub fn explain(&self) -> Result<(RecordBatch, RecordBatch, RecordBatch)> {
        let empty = self.def.new_state();
        let b = self.batch.as_ref().map_or(&empty, |b| &b.state);
        let (rows, mut parts) = self
            .def
            .finalize_explained(&self.merged, &[b, &self.speed])?;
        let speed = parts.pop().expect("two parts");
        let batch = parts.pop().expect("two parts");
        Ok((rows, batch, speed))
    }

    /// One line per final row saying what it is made of, e.g.
    /// `Ali: total_amount = 400 (320 from batch + 80 from speed)`. The row is named by its
    /// first GROUP BY-many columns.
    pub fn explain_lines(&self) -> Result<Vec<String>> {
        use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
        let (rows, batch, speed) = self.explain()?;
        let opts = FormatOptions::default().with_null("null");
        fn fmt<'a>(
            b: &'a RecordBatch,
            opts: &'a FormatOptions<'a>,
        ) -> Result<Vec<ArrayFormatter<'a>>> {
            b.columns()
                .iter()
                .map(|c| Ok(ArrayFormatter::try_new(c.as_ref(), opts)?))
                .collect()
        }
        let (fr, fb, fs) = (fmt(&rows, &opts)?, fmt(&batch, &opts)?, fmt(&speed, &opts)?);
        let names: Vec<String> = rows
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let keys = self.def.group_len().min(names.len());
        Ok((0..rows.num_rows())
            .map(|r| {
                let key: Vec<String> = (0..keys).map(|c| fr[c].value(r).to_string()).collect();
                let parts: Vec<String> = (keys..names.len())
                    .map(|c| {
                        format!(
                            "{} = {} ({} from batch + {} from speed)",
                            names[c],
                            fr[c].value(r),
                            fb[c].value(r),
                            fs[c].value(r)
                        )
                    })
                    .collect();
                if key.is_empty() {
                    parts.join(", ")
                } else {
                    format!("{}: {}", key.join(", "), parts.join(", "))
                }
            })
            .collect())
    }

    /// What the answer is made of.
    pub fn freshness(&self, topic: &str) -> Freshness {
        let batch_offsets = self
            .batch
            .as_ref()
            .map(|b| b.manifest.offsets_of(topic))
            .unwrap_or_default();
        let started = self.batch.as_ref().map(|b| b.manifest.started_at.clone());
        let age = started.as_deref().and_then(|s| {
            let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
            Some((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).as_seconds_f64())
        });
        let after: i64 = self
            .speed_offsets
            .iter()
            .map(|(p, o)| (o - batch_offsets.get(p).copied().unwrap_or(0)).max(0))
            .sum();
        Freshness {
            batch_run: self.batch.as_ref().map(|b| b.manifest.run_id.clone()),
            batch_started_at: started,
            batch_age_seconds: age,
            batch_offsets,
            speed_offsets: self.speed_offsets.clone(),
            speed_events_after_batch: after,
        }
    }
}

/// Every view as served from a live speed-layer snapshot (one process: `lambdaflow run`). The
/// snapshot's state continues the batch view it carries, so the pair is consistent.
pub fn from_snapshot(p: &Pipeline, snap: &Snapshot) -> Vec<ServedView> {
    p.views
        .iter()
        .enumerate()
        .map(|(i, def)| {
            let v = &snap.views[i];
            ServedView::new(def, v.batch.clone(), v.state(def), snap.offsets.clone())
        })
        .collect()
}

/// Every view as served from what the layers wrote: the batch views in service and the speed
/// checkpoint. When the checkpoint's state continues another batch run than the one in service
/// (a run was published since), the speed part is recomputed from the archived segments after
/// the batch view's offsets, up to the checkpoint's: the answer is exact either way.
pub fn from_files(p: &Pipeline, layout: &Layout) -> Result<Vec<ServedView>> {
    let topic = &p.config.kafka.topic;
    let ck = speed::load_checkpoint(p, layout)?;
    let bound = match &ck {
        Some(c) => c.snapshot.offsets.clone(),
        None => master::archived_until(&master::list(layout)?, topic),
    };
    let mut out = Vec::new();
    for (i, def) in p.views.iter().enumerate() {
        let b = batch::load_published(layout, def)?.map(Arc::new);
        let run = b.as_ref().map(|b| b.manifest.run_id.clone());
        let continues = ck
            .as_ref()
            .and_then(|c| c.batch_runs[i].as_ref())
            .is_some_and(|r| *r == run);
        let speed = if continues {
            ck.as_ref()
                .map(|c| c.snapshot.view_state(i, def))
                .unwrap_or_else(|| def.new_state())
        } else {
            let after = b
                .as_ref()
                .map(|b| b.manifest.offsets_of(topic))
                .unwrap_or_default();
            let parts = speed::rebuild(p, layout, &[(i, after)], &bound)?;
            let mut s = def.new_state();
            for st in parts[0].values() {
                s.merge(st);
            }
            s
        };
        out.push(ServedView::new(def, b, speed, bound.clone()));
    }
    Ok(out)
}

/// Reads what the layers published, merges, and writes `serving_view.json/` for every view.
pub fn serve_once(p: &Pipeline) -> Result<Vec<ServedView>> {
    let layout = Layout::new(&p.config.output.dir, p.views.len());
    layout.check_writable()?;
    let views = from_files(p, &layout)?;
    for v in &views {
        write_serving_view(&layout, &v.def, &v.rows()?)?;
    }
    Ok(views)
}

/// Publishes the final view the way the seed's `serving_view.write.json(..)` does.
pub fn write_serving_view(layout: &Layout, def: &ViewDef, rows: &RecordBatch) -> Result<()> {
    let version = storage::new_version();
    storage::publish_dir(&layout.serving_view(&def.name), &version, 2, |dir| {
        storage::write_part(dir, &version, rows)
    })?;
    Ok(())
}

/// `lambdaflow serve`: the HTTP API over what the layers wrote, re-read every second, until
/// `shutdown`. `serving_view.json/` is rewritten whenever the answer changes.
pub async fn serve_files(
    p: Arc<Pipeline>,
    listen: std::net::SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let layout = Layout::new(&p.config.output.dir, p.views.len());
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        crate::Error::config(format!("serving.listen {listen}: cannot listen: {e}"))
    })?;
    let first = ServingState {
        version: 1,
        views: from_files(&p, &layout)?,
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(first));
    let p2 = Arc::clone(&p);
    let refresher = tokio::spawn(async move {
        let mut version = 1;
        // What the answer depends on: the speed checkpoint and each view's batch run. The
        // files are read again only when one of them changed.
        let signature = |p: &Pipeline,
                         layout: &Layout|
         -> (Option<std::time::SystemTime>, Vec<Option<String>>) {
            let ck = std::fs::metadata(layout.speed_checkpoint())
                .and_then(|m| m.modified())
                .ok();
            let runs = p
                .views
                .iter()
                .map(|d| batch::published_run(layout, d))
                .collect();
            (ck, runs)
        };
        let mut last = (None, Vec::new()); // read again on the first tick
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let sig = signature(&p2, &layout);
            if sig == last {
                continue;
            }
            let (p3, l2) = (Arc::clone(&p2), layout.clone());
            let views = match tokio::task::spawn_blocking(move || from_files(&p3, &l2)).await {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    tracing::warn!(cause = %e, "serving: could not read the views (keeping the last ones)");
                    continue;
                }
                Err(_) => return,
            };
            last = sig;
            for v in &views {
                if let Err(e) = v
                    .rows()
                    .and_then(|r| write_serving_view(&layout, &v.def, &r))
                {
                    tracing::warn!(view = %v.def.name, cause = %e, "could not write serving_view.json");
                }
            }
            version += 1;
            if tx
                .send(Arc::new(ServingState {
                    version,
                    views,
                    ..Default::default()
                }))
                .is_err()
            {
                return;
            }
        }
    });
    tracing::info!(%listen, "serving layer: HTTP API and dashboard on http://{listen}/");
    let r = http::serve(listener, http::AppState::new(p, rx, None), shutdown).await;
    refresher.abort();
    r.map_err(|e| crate::Error::Internal(format!("HTTP server: {e}")))
}
