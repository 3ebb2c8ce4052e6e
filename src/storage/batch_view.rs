//! The batch view on disk: what a batch run publishes and every other layer reads.
//!
//! ```text
//! output/batch_view -> .batch_view.d/<run>/      swapped atomically per run (see `publish_dir`)
//!     part-00000-<run>.json  _SUCCESS            the final rows, as Spark writes JSON
//!     _state.json                                the view's mergeable state (state schema)
//!     _manifest.json                             what the run read, down to the offsets
//!     _dead_letter.jsonl                         rejected dataset lines with file and line
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{Layout, segments};
use crate::error::{Error, IoContext, Result};
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

/// The id of the batch run in service for `def` (cheap: reads a symlink).
pub fn published_run(layout: &Layout, def: &ViewDef) -> Option<String> {
    super::published(&layout.batch_view(&def.name))
        .and_then(|d| d.file_name()?.to_str().map(String::from))
}

/// Loads the batch view in service for `def`, if any run was published.
pub fn load_published(layout: &Layout, def: &ViewDef) -> Result<Option<PublishedBatch>> {
    let Some(dir) = super::published(&layout.batch_view(&def.name)) else {
        return Ok(None);
    };
    let mpath = dir.join("_manifest.json");
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(&mpath).at(&mpath)?).map_err(|e| {
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
    let spath = dir.join("_state.json");
    let bytes = std::fs::read(&spath).at(&spath)?;
    let mut state = def.new_state();
    state.merge_state_batch(def, &super::read_json_lines(&bytes, def.state_schema())?)?;
    Ok(Some(PublishedBatch { manifest, state }))
}

/// Publishes one view of a batch run atomically: rows, state, manifest and rejected lines in
/// a fresh directory swapped in by renaming the `batch_view` link; keeps `keep` runs.
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
) -> Result<()> {
    super::publish_dir(&layout.batch_view(&def.name), run_id, keep, |dir| {
        super::write_part(dir, run_id, rows)?;
        let st = state.to_state_batch(def)?;
        std::fs::write(dir.join("_state.json"), super::json_lines(&[st])?).at(dir)?;
        std::fs::write(dir.join("_dead_letter.jsonl"), bad_lines).at(dir)?;
        let mj = serde_json::to_vec_pretty(manifest).map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(dir.join("_manifest.json"), mj).at(dir)
    })?;
    Ok(())
}
