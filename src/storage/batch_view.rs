//! The batch view: what a batch run publishes and every other layer reads.
//!
//! ```text
//! output/batch_view -> .batch_view.d/<run>/      made current at once per run (see `publication`;
//!                                                on an object store, `.batch_view.d/_published/`)
//!     part-00000-<run>.json  _SUCCESS            the final rows, as Spark writes JSON
//!     _state.json                                the view's mergeable state (state schema)
//!     _manifest.json                             what the run read, down to the offsets
//!     _dead_letter.jsonl                         rejected dataset lines with file and line
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{Layout, Output, segments};
use crate::error::{Error, Result};
use crate::view::{ViewDef, ViewState};

/// One dataset file, as read by a batch run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileReport {
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Non-blank lines.
    pub lines: u64,
    /// Lines rejected (in the run's `_dead_letter.jsonl`).
    pub bad: u64,
}

/// What a batch run covered; written as `_manifest.json` next to the view.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// The run's id (also its directory name).
    pub run_id: String,
    /// The view.
    pub view: String,
    /// The view's SQL.
    pub sql: String,
    /// Every file of the master dataset the run read.
    pub files: Vec<FileReport>,
    /// Events that decoded.
    pub rows: u64,
    /// Lines rejected.
    pub bad: u64,
    /// Segments of the speed layer's archive the run read.
    #[serde(default)]
    pub segments: u64,
    /// The version of the master dataset's Delta table the run read (none before the speed
    /// layer archived anything).
    #[serde(default)]
    pub table_version: Option<u64>,
    /// Per topic and partition: the offset up to which (exclusive) the run read the speed
    /// layer's segments. Serving adds the speed layer's events from there on.
    #[serde(default)]
    pub offsets: segments::Offsets,
    /// The engine that computed the state: `datafusion` (embedded) or `spark`.
    #[serde(default)]
    pub engine: String,
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// How long it took.
    pub duration_ms: u64,
}

impl Manifest {
    /// The offsets the run covered on `topic`, per partition.
    pub fn offsets_of(&self, topic: &str) -> BTreeMap<i32, i64> {
        self.offsets.get(topic).cloned().unwrap_or_default()
    }
}

/// A published batch view, as serving loads it.
#[derive(Debug)]
pub struct PublishedBatch {
    /// Its manifest.
    pub manifest: Manifest,
    /// Its state.
    pub state: ViewState,
}

/// The id of the batch run in service for `def` (cheap: a readlink, or on an object store one
/// short listing and one read).
pub fn published_run(layout: &Layout, def: &ViewDef) -> Result<Option<String>> {
    let current = layout.output(Output::BatchView, &def.name)?.current()?;
    Ok(current.and_then(|v| v.id()))
}

/// Loads the batch view in service for `def`, if any run was published.
pub fn load_published(layout: &Layout, def: &ViewDef) -> Result<Option<PublishedBatch>> {
    let Some(version) = layout.output(Output::BatchView, &def.name)?.current()? else {
        return Ok(None);
    };
    let read = |name: &str| version.read(name);
    let (mpath, mbytes) = read("_manifest.json")?;
    let manifest: Manifest = serde_json::from_slice(&mbytes).map_err(|e| {
        Error::damaged(
            &mpath,
            "batch view manifest",
            "run `lambdaflow batch` again to publish a new batch view",
            e,
        )
    })?;
    if manifest.sql != def.sql {
        warn!(view = %def.name, "the batch view in service was computed with other SQL; run `lambdaflow batch` again");
        return Ok(None);
    }
    let (_, bytes) = read("_state.json")?;
    let mut state = def.new_state();
    state.merge_state_batch(def, &super::read_json_lines(&bytes, def.state_schema())?)?;
    Ok(Some(PublishedBatch { manifest, state }))
}

/// Publishes one view of a batch run atomically: rows, state, manifest and rejected lines in
/// a fresh directory made current at once (see [`super::publication`]); keeps `keep` runs. Returns
/// false when, on an object store, a later run was published meanwhile and stays current.
#[allow(clippy::too_many_arguments)]
pub fn publish(
    layout: &Layout,
    def: &ViewDef,
    run_id: &str,
    keep: usize,
    rows: &datafusion::arrow::array::RecordBatch,
    state: &ViewState,
    manifest: &Manifest,
    bad_lines: &[u8],
) -> Result<bool> {
    let st = state.to_state_batch(def)?;
    let files = vec![
        (
            super::part_name(run_id),
            super::json_lines(std::slice::from_ref(rows))?,
        ),
        ("_state.json".to_string(), super::json_lines(&[st])?),
        ("_dead_letter.jsonl".to_string(), bad_lines.to_vec()),
        (
            "_manifest.json".to_string(),
            serde_json::to_vec_pretty(manifest).map_err(|e| Error::Internal(e.to_string()))?,
        ),
    ];
    layout
        .output(Output::BatchView, &def.name)?
        .publish(run_id, keep, files)
}
