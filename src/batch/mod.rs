//! The batch layer: exact views recomputed from the whole master dataset.
//!
//! ```text
//!  dataset files ──► one range per core (lines.rs), each record decoded (event) ──┐
//!        │ bad lines: file + line + reason ─► <run>/_dead_letter.jsonl              ├─► folded into
//!  master segments (the speed layer's archive, Parquet) ─ one run per core ────────┘   the views'
//!                                                                              state (WHERE, GROUP BY)
//!        ▼
//!  ViewState ──finalize──► batch view rows ──► output/batch_view/ (published atomically)
//! ```
//!
//! The view's state (not only its final rows) is published with it, in `_state.json`, so the
//! serving layer can merge it with the speed layer's state exactly; `_manifest.json` records
//! what the run covered, down to the offset per partition up to which it read the speed layer's
//! segments. Serving adds to it only the speed layer's events after those offsets.

//! Two engines compute the state, chosen by `batch.engine`: the embedded one (`embedded.rs`:
//! `read.rs` folds each decoded record into the state — the usual view straight from the
//! decoded values, any other with its compiled DataFusion expressions, the speed layer's fold —
//! in this process, holding a block of input per core) and Apache Spark ([`spark`], through Spark Connect, which reads the same files itself
//! and runs the state query DataFusion plans from the view's SQL). Everything else — the table
//! version pinned, the manifest, the publish — is the same whichever ran.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::cast;
use tracing::info;

use crate::config::{BatchEngine, Pipeline};
use crate::error::{Error, Result};
use crate::storage;
use crate::storage::batch_view::{self, FileReport, Manifest};
use crate::storage::delta::{self, AsOf};
use crate::storage::segments::{self as master, Segment};
use crate::view::{ViewDef, ViewState};

mod embedded;
mod lines;
mod read;
pub mod spark;

pub use embedded::{compute_over, compute_state};
pub use read::{Folded, dataset_files, fold_dataset};

/// Hidden column giving each event's position in the dataset, so that groups keep the order in
/// which they first appear (as the seed's output lists them) rather than hash order.
const ROW_COL: &str = "__lambdaflow_row";
const FIRST_COL: &str = "__lambdaflow_first";

/// What an engine computed over the master dataset.
pub struct Computed {
    /// Per dataset file: bytes, lines, rejected lines.
    pub files: Vec<FileReport>,
    /// Rejected lines as dead-letter records (file, line, reason, payload).
    pub bad: Vec<serde_json::Value>,
    /// Events read (files and segments).
    pub rows: u64,
    /// Per view (config order), its state.
    pub states: Vec<ViewState>,
}

/// A view's state from the state query's result batches: the state columns (the order column
/// after them is dropped), cast to the state schema's types (Spark sends its own).
fn state_from(def: &ViewDef, batches: &[RecordBatch]) -> Result<ViewState> {
    let schema = def.state_schema();
    let mut state = def.new_state();
    for b in batches {
        let cols = schema
            .fields()
            .iter()
            .zip(b.columns())
            .map(|(f, c)| cast(c, f.data_type()))
            .collect::<Result<Vec<_>, _>>()?;
        state.merge_state_batch(def, &RecordBatch::try_new(Arc::clone(&schema), cols)?)?;
    }
    if batches.is_empty() {
        state.merge_state_batch(def, &RecordBatch::new_empty(schema))?;
    }
    Ok(state)
}

/// The result of one batch run.
pub struct BatchRun {
    /// Run id.
    pub run_id: String,
    /// Per view (config order): its definition, state and final rows.
    pub views: Vec<(Arc<ViewDef>, ViewState, RecordBatch)>,
    /// What was read.
    pub manifest: Manifest,
    /// False for a view of the past (`batch --as-of`), which is not published.
    pub published: bool,
}

/// Runs the batch layer once: reads the whole master dataset (the files and the committed
/// segments of the speed layer's archive), computes every view, and publishes each (rows,
/// state, manifest, rejected lines) atomically. A failure before the publish leaves the
/// previous views in service. `progress_bar` draws a bar of bytes read on stderr.
pub async fn run(p: &Pipeline, progress_bar: bool) -> Result<BatchRun> {
    run_as_of(p, progress_bar, AsOf::Latest).await
}

/// [`run`] over the archive as the Delta table held it at `as_of` (the files of
/// `batch.dataset` as they are now). A view of the past is computed and returned, not
/// published: the batch view in service stays the latest.
pub async fn run_as_of(p: &Pipeline, progress_bar: bool, as_of: AsOf) -> Result<BatchRun> {
    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339();
    let cfg = &p.config;
    let layout = p.layout();
    let files = dataset_files(&cfg.batch.dataset)?;
    layout.check_writable()?;
    let latest = as_of == AsOf::Latest;
    let table = if latest {
        // An archive written before the Delta log existed (or a crash's leftovers) enters it.
        master::catch_up(&layout, &p.schema)?
    } else {
        delta::snapshot(&layout.master()?, as_of)?
    };
    let offsets = table.offsets();
    let segments: Vec<Segment> = table.segments;
    let total: u64 = files
        .iter()
        .filter_map(|f| f.metadata().ok())
        .map(|m| m.len())
        .chain(segments.iter().map(|s| s.size))
        .sum();
    info!(
        files = files.len(),
        segments = segments.len(),
        table_version = table.version,
        bytes = total,
        "batch layer: reading the master dataset"
    );
    // A bar on a terminal; otherwise a log line every 5 s, from the same counter.
    // The bar counts the bytes this process reads: with the Spark engine, Spark reads them (its
    // steps are logged instead).
    let local = cfg.batch.engine == BatchEngine::Datafusion;
    let tty =
        local && progress_bar && std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let bar = if tty {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "batch {bar:40.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .map_err(|e| Error::Internal(e.to_string()))?,
        );
        bar
    } else {
        indicatif::ProgressBar::with_draw_target(
            Some(total),
            indicatif::ProgressDrawTarget::hidden(),
        )
    };
    let ticker = (local && !tty).then(|| {
        let bar = bar.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                info!(
                    read_bytes = bar.position(),
                    total_bytes = total,
                    "batch layer: reading"
                );
            }
        })
    });
    let computed = compute(p, &files, &segments, &bar).await;
    if let Some(t) = ticker {
        t.abort();
    }
    let Computed {
        files: file_reports,
        bad,
        rows,
        states,
    } = computed?;
    let run_id = storage::new_version();
    let mut views = Vec::new();
    // Windows beyond retention are not published. The horizon comes from the watermark the
    // files record (the speed checkpoint's, or a consumer group's lowest partition), never ahead
    // of the one serving cuts at: serving never keeps a window the batch view has dropped.
    let cut = latest && p.views.iter().any(|d| d.has_retention());
    let marks = if cut {
        let parts: Vec<i32> = offsets
            .get(&cfg.kafka.topic)
            .map(|o| o.keys().copied().collect())
            .unwrap_or_default();
        storage::event_time::marks(p, &layout, &parts)?
    } else {
        Default::default()
    };
    for (def, mut state) in p.views.iter().zip(states) {
        let horizon = marks
            .get(&def.name)
            .and_then(|m| m.watermark)
            .and_then(|wm| def.horizon(wm));
        if let Some(h) = horizon {
            state.retain_windows(def, h)?;
        }
        let rows_out = def.finalize(&state)?;
        views.push((Arc::clone(def), state, rows_out));
    }
    let manifest = Manifest {
        run_id: run_id.clone(),
        view: String::new(),
        sql: String::new(),
        files: file_reports,
        rows,
        bad: bad.len() as u64,
        segments: segments.len() as u64,
        table_version: table.version,
        offsets,
        engine: cfg.batch.engine.name().into(),
        started_at,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    let bad_lines = storage::json_lines_values(&bad);
    let mut published = latest;
    for (def, state, out) in views.iter().filter(|_| latest) {
        let m = Manifest {
            view: def.name.clone(),
            sql: def.sql.clone(),
            ..manifest.clone()
        };
        let current = batch_view::publish(
            &layout,
            def,
            &run_id,
            cfg.batch.keep_runs,
            out,
            state,
            &m,
            &bad_lines,
        )?;
        if !current {
            tracing::warn!(view = %def.name, run_id = %run_id, "batch layer: a later batch run published this view meanwhile; it stays in service");
            published = false;
        }
    }
    info!(run_id = %run_id, rows, bad = manifest.bad, segments = manifest.segments, offsets = ?manifest.offsets, ms = manifest.duration_ms, published, "batch layer: views computed");
    Ok(BatchRun {
        run_id,
        views,
        manifest,
        published,
    })
}

/// Reads `files` and `segments` and computes every view's state over them, on the configured
/// engine.
pub async fn compute(
    p: &Pipeline,
    files: &[PathBuf],
    segments: &[Segment],
    bar: &indicatif::ProgressBar,
) -> Result<Computed> {
    match p.config.batch.engine {
        BatchEngine::Datafusion => embedded::compute(p, files, segments, bar).await,
        BatchEngine::Spark => {
            bar.finish_and_clear();
            spark::compute(p, files, segments).await
        }
    }
}
