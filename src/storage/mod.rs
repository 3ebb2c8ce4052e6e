//! Where each layer writes, and how writes are made atomic.
//!
//! `output.dir` is a local directory or a bucket prefix (`s3://bucket/prefix`): a [`Store`]
//! (see [`store`]), under which every output has the same key on either. Instances on several
//! machines (a consumer group, `serve` replicas, `batch`) share the bucket and nothing else.
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
//! ├─ dead_letter.jsonl                            rejected Kafka messages (local disk only)
//! ├─ dead_letters/topic=<t>/partition=<p>/offsets=<from>-<to>.jsonl
//! │                                               the same, per range: with a consumer group, and
//! │                                               on an object store, which cannot append
//! ├─ master/                                      the master dataset's Delta table (see `delta`)
//! │    _delta_log/   topic=<t>/partition=<p>/offsets=<from>-<to>.parquet
//! │                                               consumed events, archived (see `segments`)
//! └─ _speed/checkpoint.json                       speed-layer positions, one atomic file (see
//!                                                 `checkpoint`: offsets, not state)
//! ```
//!
//! On an object store there are no symlinks: `.batch_view.d/_published/<n>.json` says which
//! run is current (and the same for the two other views).
//!
//! A reader that opens `batch_view/` sees either the previous complete run or the new complete
//! run, never a half-written one: each version is written into its own directory, synced, and
//! only then made current — by a `rename(2)` of a symlink on a local disk, by a create-only
//! pointer on an object store (see [`publication`]).

pub mod aws_profile;
pub mod batch_view;
pub mod checkpoint;
pub mod compact;
pub mod dead_letter_ranges;
pub mod delta;
pub mod event_time;
pub mod publication;
pub mod segments;
pub mod store;

pub use batch_view::{Manifest, PublishedBatch};
pub use publication::Target;
pub use store::Store;

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::json::{LineDelimitedWriter, ReaderBuilder};
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::{Error, IoContext, Result};

/// Where one pipeline's outputs are: a local directory, or a [`Store`] (a bucket).
#[derive(Debug, Clone)]
pub struct Layout {
    root: Root,
    per_view_dirs: bool,
}

#[derive(Debug, Clone)]
enum Root {
    Dir(PathBuf),
    Store(Store),
}

/// A view's Spark-style output directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// `batch_view/`: the batch run in service.
    BatchView,
    /// `streaming_view/`: the speed layer's view, per micro-batch.
    StreamingView,
    /// `serving_view.json/`: the merged view.
    ServingView,
}

impl Output {
    fn name(self) -> &'static str {
        match self {
            Output::BatchView => "batch_view",
            Output::StreamingView => "streaming_view",
            Output::ServingView => "serving_view.json",
        }
    }
}

/// The key of the speed layer's checkpoint in the store.
const CHECKPOINT: &str = "_speed/checkpoint.json";

impl Layout {
    /// The layout under the local directory `root` for `views` views.
    pub fn new(root: impl Into<PathBuf>, views: usize) -> Self {
        Self {
            root: Root::Dir(root.into()),
            per_view_dirs: views > 1,
        }
    }

    /// The layout at `output.dir` (a path, or an `s3://` URL) with `[output.s3]`'s settings.
    pub fn open(output: &crate::config::OutputConfig, views: usize) -> Result<Self> {
        match output.dir.to_str() {
            Some(url) if url.contains("://") => {
                Ok(Layout::on(Store::open(url, &output.s3)?, views))
            }
            _ => Ok(Layout::new(&output.dir, views)),
        }
    }

    /// The layout on `store` (a bucket, or a local directory) for `views` views.
    pub fn on(store: Store, views: usize) -> Self {
        Self {
            root: Root::Store(store),
            per_view_dirs: views > 1,
        }
    }

    /// The root of every output.
    pub fn store(&self) -> Result<Store> {
        match &self.root {
            Root::Dir(d) => Store::local(d),
            Root::Store(s) => Ok(s.clone()),
        }
    }

    /// The root's directory when it is on a local disk.
    pub fn local_dir(&self) -> Option<PathBuf> {
        match &self.root {
            Root::Dir(d) => Some(d.clone()),
            Root::Store(s) => s.local_dir().map(Path::to_path_buf),
        }
    }

    /// The master dataset's Delta table.
    pub fn master(&self) -> Result<Store> {
        Ok(self.store()?.child("master"))
    }

    fn view_prefix(&self, view: &str) -> String {
        if self.per_view_dirs {
            format!("{view}/")
        } else {
            String::new()
        }
    }

    /// Where view `view`'s output `o` is published (see [`publication`]).
    pub fn output(&self, o: Output, view: &str) -> Result<Target> {
        let prefix = self.view_prefix(view);
        Ok(match self.local_dir() {
            Some(d) => Target::Link(d.join(format!("{prefix}{}", o.name()))),
            None => Target::Objects {
                store: self.store()?,
                versions: format!("{prefix}.{}.d", o.name()),
            },
        })
    }

    /// The single speed layer's dead-letter file, on a local disk (on an object store, which
    /// cannot append, its dead letters are kept per range as a consumer group's are).
    pub fn dead_letter(&self) -> Option<PathBuf> {
        self.local_dir().map(|d| d.join("dead_letter.jsonl"))
    }

    /// The dead letters kept per partition and range (speed layers in a consumer group, and
    /// the single speed layer on an object store).
    pub fn dead_letter_ranges(&self) -> Result<Store> {
        Ok(self.store()?.child("dead_letters"))
    }

    /// The speed layer's checkpoint: the store and its key there.
    pub fn speed_checkpoint(&self) -> Result<(Store, &'static str)> {
        Ok((self.store()?, CHECKPOINT))
    }

    /// Fails early, naming the place, when the output root cannot be written.
    pub fn check_writable(&self) -> Result<()> {
        let Some(root) = self.local_dir() else {
            // One create-only put and a delete: credentials, bucket and conditional puts.
            let store = self.store()?;
            let probe = format!(".write-probe-{}", new_version());
            store.put_new(&probe, Vec::new())?;
            return store.delete(&probe);
        };
        fs::create_dir_all(&root).at(&root)?;
        // A uniquely named probe: the layers of `lambdaflow run` check concurrently.
        tempfile::Builder::new()
            .prefix(".write-probe-")
            .tempfile_in(&root)
            .at(&root)?;
        Ok(())
    }
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

/// The name of a Spark-style view's one part file.
pub fn part_name(version: &str) -> String {
    format!("part-00000-{version}.json")
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
