//! Files on disk: where each layer writes, and how writes are made atomic.
//!
//! Layout under `output.dir` (the seed's paths when there is one view; with several views each
//! gets its own `<dir>/<view>/` holding the same three outputs):
//!
//! ```text
//! output/
//! ├─ batch_view        -> .batch_view.d/<run>/   symlink, swapped atomically per batch run
//! │    part-00000-<run>.json  _SUCCESS           Spark-style JSON output (what users read)
//! │    _state.json  _manifest.json  _dead_letter.jsonl
//! ├─ streaming_view    -> .streaming_view.d/<n>/ the speed layer's view, rewritten per micro-batch
//! ├─ serving_view.json -> .serving_view.json.d/<n>/  the merged final view (a directory, as Spark's
//! │                                               `.json("serving_view.json")` writes it)
//! ├─ dead_letter.jsonl                            rejected Kafka messages
//! ├─ dead_letters/topic=<t>/partition=<p>/offsets=<from>-<to>.jsonl
//! │                                               the same, per range, with a consumer group
//! ├─ master/                                      the master dataset's Delta table (see `delta`)
//! │    _delta_log/   topic=<t>/partition=<p>/offsets=<from>-<to>.parquet
//! │                                               consumed events, archived (see `segments`)
//! └─ _speed/checkpoint.json                       speed-layer positions, one atomic file (see
//!                                                 `checkpoint`: offsets, not state)
//! ```
//!
//! A reader that opens `batch_view/` sees either the previous complete run or the new complete
//! run, never a half-written one: each version is written into its own directory, synced, and
//! only then does a `rename(2)` of a symlink make it current.

pub mod batch_view;
pub mod checkpoint;
pub mod compact;
pub mod dead_letter_ranges;
pub mod delta;
pub mod event_time;
pub mod segments;

pub use batch_view::{Manifest, PublishedBatch};

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::json::{LineDelimitedWriter, ReaderBuilder};
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::{Error, IoContext, Result};

/// Paths of one pipeline's outputs.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
    per_view_dirs: bool,
}

impl Layout {
    /// The layout under `root` for `views` views.
    pub fn new(root: impl Into<PathBuf>, views: usize) -> Self {
        Self {
            root: root.into(),
            per_view_dirs: views > 1,
        }
    }

    fn view_dir(&self, view: &str) -> PathBuf {
        if self.per_view_dirs {
            self.root.join(view)
        } else {
            self.root.clone()
        }
    }

    /// The batch view directory (a symlink to the run in service).
    pub fn batch_view(&self, view: &str) -> PathBuf {
        self.view_dir(view).join("batch_view")
    }

    /// The streaming (speed-layer) view directory.
    pub fn streaming_view(&self, view: &str) -> PathBuf {
        self.view_dir(view).join("streaming_view")
    }

    /// The final serving view directory.
    pub fn serving_view(&self, view: &str) -> PathBuf {
        self.view_dir(view).join("serving_view.json")
    }

    /// The speed layer's dead-letter file.
    pub fn dead_letter(&self) -> PathBuf {
        self.root.join("dead_letter.jsonl")
    }

    /// The dead letters of speed layers in a consumer group, per partition and range.
    pub fn dead_letter_ranges(&self) -> PathBuf {
        self.root.join("dead_letters")
    }

    /// The speed layer's archive of consumed events: part of the master dataset.
    pub fn master_dir(&self) -> PathBuf {
        self.root.join("master")
    }

    /// The speed layer's checkpoint.
    pub fn speed_checkpoint(&self) -> PathBuf {
        self.root.join("_speed").join("checkpoint.json")
    }

    /// Fails early, naming the directory, when the output root cannot be written.
    pub fn check_writable(&self) -> Result<()> {
        fs::create_dir_all(&self.root).at(&self.root)?;
        // A uniquely named probe: the layers of `lambdaflow run` check concurrently.
        tempfile::Builder::new()
            .prefix(".write-probe-")
            .tempfile_in(&self.root)
            .at(&self.root)?;
        Ok(())
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, synced, then
/// renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).at(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).at(dir)?;
    tmp.write_all(bytes).at(tmp.path())?;
    tmp.as_file().sync_all().at(tmp.path())?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    sync_dir(dir);
    Ok(())
}

fn sync_dir(dir: &Path) {
    // Makes the rename durable; not all file systems allow opening a directory, so best effort.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Publishes a new version of the directory `link`: `fill` writes the files into a fresh
/// directory, which is synced, marked with `_SUCCESS`, and swapped in atomically. Keeps the
/// `keep` newest versions. Returns the version's directory.
pub fn publish_dir(
    link: &Path,
    version: &str,
    keep: usize,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let parent = link.parent().unwrap_or(Path::new("."));
    let name = link.file_name().and_then(|n| n.to_str()).unwrap_or("view");
    let versions = parent.join(format!(".{name}.d"));
    let dir = versions.join(version);
    if dir.exists() {
        fs::remove_dir_all(&dir).at(&dir)?;
    }
    fs::create_dir_all(&dir).at(&dir)?;
    fill(&dir)?;
    File::create(dir.join("_SUCCESS")).at(&dir)?;
    for entry in fs::read_dir(&dir).at(&dir)? {
        let p = entry.at(&dir)?.path();
        File::open(&p).and_then(|f| f.sync_all()).at(&p)?;
    }
    sync_dir(&dir);
    // A plain directory left by an older tool or by hand is moved aside once.
    if let Ok(meta) = fs::symlink_metadata(link)
        && !meta.file_type().is_symlink()
    {
        let aside = versions.join(format!("replaced-{version}"));
        fs::rename(link, &aside).at(link)?;
    }
    let tmp_link = parent.join(format!(".{name}.link-{}", std::process::id()));
    let _ = fs::remove_file(&tmp_link);
    let target = PathBuf::from(format!(".{name}.d")).join(version);
    std::os::unix::fs::symlink(&target, &tmp_link).at(&tmp_link)?;
    fs::rename(&tmp_link, link).at(link)?;
    sync_dir(parent);
    prune_versions(&versions, version, keep);
    Ok(dir)
}

fn prune_versions(versions: &Path, current: &str, keep: usize) {
    let Ok(entries) = fs::read_dir(versions) else {
        return;
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n != current)
        .collect();
    names.sort();
    let drop = names.len().saturating_sub(keep.saturating_sub(1));
    for n in &names[..drop] {
        let _ = fs::remove_dir_all(versions.join(n));
    }
}

/// The directory a published `link` points at, if one was published.
pub fn published(link: &Path) -> Option<PathBuf> {
    let dir = fs::canonicalize(link).ok()?;
    dir.join("_SUCCESS").exists().then_some(dir)
}

/// Rows as JSON lines, the way Spark's `write.json` writes them (null fields left out).
pub fn json_lines(batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut w = LineDelimitedWriter::new(Vec::new());
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    Ok(w.into_inner())
}

/// Rows as JSON objects with every column (a null is `null`, not left out as in the files).
pub fn json_rows(batch: &RecordBatch) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    let text = json_lines(std::slice::from_ref(batch))?;
    let mut rows = Vec::with_capacity(batch.num_rows());
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let mut row: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(line).map_err(|e| Error::Internal(e.to_string()))?;
        for f in batch.schema().fields() {
            row.entry(f.name().clone())
                .or_insert(serde_json::Value::Null);
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Reads JSON lines written by [`json_lines`] back into one batch of `schema`.
pub fn read_json_lines(bytes: &[u8], schema: SchemaRef) -> Result<RecordBatch> {
    let reader = ReaderBuilder::new(Arc::clone(&schema)).build(bytes)?;
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    Ok(datafusion::arrow::compute::concat_batches(
        &schema, &batches,
    )?)
}

/// Writes a Spark-style JSON view: `part-00000-<version>.json` with one row a line.
pub fn write_part(dir: &Path, version: &str, batch: &RecordBatch) -> Result<()> {
    let path = dir.join(format!("part-00000-{version}.json"));
    fs::write(&path, json_lines(std::slice::from_ref(batch))?).at(path)
}

/// An append-only JSON-lines file whose length is recorded in checkpoints, so that a restart
/// can cut off records written after the last checkpoint (they will be written again).
#[derive(Debug)]
pub struct DeadLetterFile {
    path: PathBuf,
    file: File,
    len: u64,
    count: u64,
}

impl DeadLetterFile {
    /// Opens `path`, truncated to `keep_len` bytes when it is longer (records past the last
    /// checkpoint are about to be produced again).
    pub fn open(path: &Path, keep_len: Option<u64>) -> Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).at(dir)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(path)
            .at(path)?;
        let mut len = file.metadata().at(path)?.len();
        if let Some(keep) = keep_len
            && keep < len
        {
            file.set_len(keep).at(path)?;
            len = keep;
        }
        file.seek(SeekFrom::Start(len)).at(path)?;
        let count = if len == 0 {
            0
        } else {
            fs::read(path)
                .at(path)?
                .iter()
                .filter(|&&b| b == b'\n')
                .count() as u64
        };
        Ok(Self {
            path: path.to_path_buf(),
            file,
            len,
            count,
        })
    }

    /// Appends one record.
    pub fn append(&mut self, record: &serde_json::Value) -> Result<()> {
        let mut line = serde_json::to_vec(record).map_err(|e| Error::Internal(e.to_string()))?;
        line.push(b'\n');
        self.file.write_all(&line).at(&self.path)?;
        self.len += line.len() as u64;
        self.count += 1;
        Ok(())
    }

    /// Syncs what was appended; returns the file length to record in a checkpoint.
    pub fn sync(&mut self) -> Result<u64> {
        self.file.sync_data().at(&self.path)?;
        Ok(self.len)
    }

    /// Records in the file.
    pub fn count(&self) -> u64 {
        self.count
    }
}

/// A dead-letter record's payload: the text when it is UTF-8, else base64.
pub fn payload_fields(raw: &[u8]) -> (&'static str, serde_json::Value) {
    use base64::Engine;
    match std::str::from_utf8(raw) {
        Ok(s) => ("payload", s.into()),
        Err(_) => (
            "payload_base64",
            base64::engine::general_purpose::STANDARD.encode(raw).into(),
        ),
    }
}

/// A fresh, sortable version id: UTC time to the millisecond, the process id, and a counter
/// (two versions in the same millisecond differ).
pub fn new_version() -> String {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "{}-{}-{:06}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 1_000_000
    )
}

/// JSON values as JSON lines.
pub fn json_lines_values(values: &[serde_json::Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        out.extend_from_slice(v.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}
