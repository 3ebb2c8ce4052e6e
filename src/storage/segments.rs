//! The master dataset: the historical files (`batch.dataset`) plus the immutable segments in
//! which the speed layer archives every good event it consumes — the data files of a Delta Lake
//! table (see [`super::delta`]).
//!
//! ```text
//! output/master/                              a Delta table
//!     _delta_log/<version>.json               which segments are committed, per-partition txn
//!     topic=<topic>/partition=<p>/
//!         offsets=<from>-<to>[.owner=<epoch>].parquet   committed: in the log (or about to be)
//!         .pending.offsets=<from>-<to>[…].parquet      written, not yet covered by a checkpoint
//! ```
//!
//! In a consumer group a segment's name carries its writer's claim epoch (`.owner=<epoch>`):
//! a zombie that consumed the same offsets as the partition's new owner writes, renames and,
//! once fenced, deletes its own file, never the owner's (a rename replaces what it lands on,
//! on a disk as on S3).
//!
//! A segment holds the good events of offsets `[from, to)` of one partition, in the declared
//! event schema (Parquet). The speed layer writes it under the pending name, then writes its
//! checkpoint (positions only: see [`super::checkpoint`]), then renames it and commits it to the
//! Delta log: a segment is committed exactly when a checkpoint covers its range. After a crash,
//! pending segments the checkpoint covers are renamed and the others deleted, and renamed
//! segments the log lacks are committed (the same step migrates an `output/` written before the
//! Delta log existed), so a restart never archives an event twice, and the batch layer never
//! reads an event the speed layer could consume again.
//!
//! The table is on a [`Store`]: a local directory, or a bucket. Each segment is encoded in
//! memory and written in one put; a rename on S3 is a copy and a delete, and a crash between
//! them leaves both names, the pending one deleted by the next [`recover`]. Nothing here asks
//! the store for more than one listing per restart or per recovery step, and commits read only
//! the Delta log entries written since the writer's last one.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{ArrayRef, new_null_array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::errors::{ParquetError, Result as ParquetResult};
use datafusion::parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use datafusion::parquet::file::properties::WriterProperties;
use futures::future::BoxFuture;

use super::store::Store;
use super::{Layout, delta};
use crate::error::{BoxError, Error, IoContext, Result};
use crate::event::EventSchema;

const PENDING: &str = ".pending.";

/// The size from which a segment on an object store is read by ranges rather than with one
/// GET: below it one request costs less than a footer's and a row group's, and the whole
/// object is small next to its decoded rows.
pub const RANGES_FROM: u64 = 8 << 20;

/// One archived segment of a topic partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// First offset of the range.
    pub from: i64,
    /// One past the last offset of the range.
    pub to: i64,
    /// The table it belongs to.
    pub table: Store,
    /// Its key in the table (`topic=<t>/partition=<p>/[.pending.]offsets=<from>-<to>.parquet`),
    /// as the Delta log records it.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was written (ms since the Unix epoch).
    pub modified_ms: i64,
    /// False while the segment still has its pending name.
    pub committed: bool,
    /// The claim epoch of the consumer-group instance that wrote it (`None`: the partition had
    /// a single writer).
    pub owner: Option<i64>,
}

impl Segment {
    /// Where the segment is, for messages: a path, or an `s3://` URL.
    pub fn shown(&self) -> std::path::PathBuf {
        self.table.path_of(&self.key)
    }

    /// The key it has once committed.
    fn committed_key(&self) -> String {
        format!(
            "{}/{}",
            partition_dir(&self.topic, self.partition),
            file_name(self.from, self.to, self.owner)
        )
    }

    /// Deletes the segment's file (deleted already by another process: no error).
    pub fn remove(&self) -> Result<()> {
        self.table.delete(&self.key)
    }
}

/// Per topic, per partition: the offset up to which (exclusive) events are covered.
pub type Offsets = BTreeMap<String, BTreeMap<i32, i64>>;

fn partition_dir(topic: &str, partition: i32) -> String {
    format!("topic={topic}/partition={partition}")
}

fn file_name(from: i64, to: i64, owner: Option<i64>) -> String {
    match owner {
        None => format!("offsets={from:020}-{to:020}.parquet"),
        Some(e) => format!("offsets={from:020}-{to:020}.owner={e}.parquet"),
    }
}

/// A segment file's name: its range, whether it is committed, and its writer's epoch.
struct Name {
    from: i64,
    to: i64,
    committed: bool,
    owner: Option<i64>,
}

fn parse_name(name: &str) -> Option<Name> {
    let (committed, rest) = match name.strip_prefix(PENDING) {
        Some(r) => (false, r),
        None => (true, name),
    };
    let rest = rest.strip_prefix("offsets=")?.strip_suffix(".parquet")?;
    let (range, owner) = match rest.split_once(".owner=") {
        Some((r, e)) => (r, Some(e.parse().ok()?)),
        None => (rest, None),
    };
    let (a, b) = range.split_once('-')?;
    Some(Name {
        from: a.parse().ok()?,
        to: b.parse().ok()?,
        committed,
        owner,
    })
}

/// The segment a key of `table` names
/// (`topic=<t>/partition=<p>/[.pending.]offsets=<a>-<b>[.owner=<e>].parquet`).
pub fn parse_key(table: &Store, key: &str, size: u64, modified_ms: i64) -> Option<Segment> {
    let mut parts = key.split('/');
    let topic = parts.next()?.strip_prefix("topic=")?;
    let partition = parts.next()?.strip_prefix("partition=")?.parse().ok()?;
    let Name {
        from,
        to,
        committed,
        owner,
    } = parse_name(parts.next()?)?;
    parts.next().is_none().then(|| Segment {
        topic: topic.to_string(),
        partition,
        from,
        to,
        table: table.clone(),
        key: key.to_string(),
        size,
        modified_ms,
        committed,
        owner,
    })
}

/// Every segment file in the master dataset's table (all topics, pending ones and ones the
/// Delta log no longer lists included), ordered by topic, partition and offset. What is
/// committed is what the log lists: [`committed`].
pub fn on_disk(layout: &Layout) -> Result<Vec<Segment>> {
    on_disk_of(layout, None)
}

/// [`on_disk`], of one topic when given (a listing of that topic's files only).
fn on_disk_of(layout: &Layout, topic: Option<&str>) -> Result<Vec<Segment>> {
    let mut out = listed(layout, topic)?;
    // A segment seen under both names (renamed while listing, or on S3 copied and not yet
    // deleted: see [`recover`]) counts once, under its committed name.
    out.dedup_by(|b, a| a.topic == b.topic && a.partition == b.partition && a.from == b.from);
    Ok(out)
}

/// Every segment file (of `topic` when given), sorted, a segment seen under both names listed
/// twice. The Delta log is not listed with them.
fn listed(layout: &Layout, topic: Option<&str>) -> Result<Vec<Segment>> {
    let table = layout.master()?;
    let entries = match topic {
        Some(t) => table.list(&format!("topic={t}"))?,
        None => table.list("")?,
    };
    let mut out: Vec<Segment> = entries
        .into_iter()
        .filter(|e| !e.key.starts_with("_delta_log/"))
        .filter_map(|e| parse_key(&table, &e.key, e.size, e.modified_ms))
        .collect();
    sort(&mut out);
    Ok(out)
}

/// Orders segments by topic, partition and offset (a committed name before a pending one).
pub fn sort(segs: &mut [Segment]) {
    segs.sort_by(|a, b| {
        (&a.topic, a.partition, a.from, !a.committed).cmp(&(
            &b.topic,
            b.partition,
            b.from,
            !b.committed,
        ))
    });
}

/// The latest version of the master dataset's Delta log: its committed segments.
pub fn committed(layout: &Layout) -> Result<delta::Snapshot> {
    delta::snapshot(&layout.master()?, delta::AsOf::Latest)
}

/// The segments of `topic` whose range lies within `bound` (per partition, an exclusive upper
/// offset: what a speed checkpoint covers): those the Delta log lists, and those after them on
/// disk that the checkpoint covers but that are not committed to the log yet (the speed layer
/// is between writing its checkpoint and committing; pending names included).
pub fn covered(layout: &Layout, topic: &str, bound: &BTreeMap<i32, i64>) -> Result<Vec<Segment>> {
    let within =
        |s: &Segment| s.topic == topic && bound.get(&s.partition).is_some_and(|&b| s.to <= b);
    let logged = committed(layout)?.segments;
    let ends = archived_until(&logged, topic);
    let mut out: Vec<Segment> = logged.into_iter().filter(within).collect();
    out.extend(
        on_disk_of(layout, Some(topic))?
            .into_iter()
            .filter(within)
            .filter(|s| ends.get(&s.partition).is_none_or(|&e| s.from >= e)),
    );
    sort(&mut out);
    Ok(out)
}

/// One partition's pending events, as [`write_pending_all`] takes them: `(partition, owner)`,
/// the offsets `from..to`, the events.
pub type PendingRange<'a> = ((i32, Option<i64>), i64, i64, &'a [RecordBatch]);

/// [`write_pending`] for several partitions at once, on up to one thread per core: a
/// checkpoint then takes as long as its largest segment, not as the sum of them (encoding is
/// CPU-bound; on a bucket, each put waits on the network). Results in the order given.
pub fn write_pending_all(
    layout: &Layout,
    topic: &str,
    ranges: &[PendingRange<'_>],
) -> Vec<Result<Segment>> {
    let write = |&(at, from, to, batches): &PendingRange<'_>| {
        write_pending(layout, topic, at, from, to, batches)
    };
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    if ranges.len() < 2 || threads < 2 {
        return ranges.iter().map(write).collect();
    }
    let workers = threads.min(ranges.len());
    let mut out: Vec<Option<Result<Segment>>> = (0..ranges.len()).map(|_| None).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                s.spawn(move || {
                    (w..ranges.len())
                        .step_by(workers)
                        .map(|i| (i, write(&ranges[i])))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (i, r) in h.join().expect("segment writer panicked") {
                out[i] = Some(r);
            }
        }
    });
    out.into_iter()
        .map(|r| r.expect("every range written"))
        .collect()
}

/// Writes the events of `[from, to)` of a partition as a pending segment (`owner`: the
/// writer's claim epoch, in a consumer group).
pub fn write_pending(
    layout: &Layout,
    topic: &str,
    (partition, owner): (i32, Option<i64>),
    from: i64,
    to: i64,
    batches: &[RecordBatch],
) -> Result<Segment> {
    let table = layout.master()?;
    let key = format!(
        "{}/{PENDING}{}",
        partition_dir(topic, partition),
        file_name(from, to, owner)
    );
    let shown = table.path_of(&key);
    let schema = batches
        .first()
        .map(|b| b.schema())
        .ok_or_else(|| Error::Internal("empty segment".into()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_key_value_metadata(Some(vec![
            kv("lambdaflow.topic", topic),
            kv("lambdaflow.partition", &partition.to_string()),
            kv("lambdaflow.from-offset", &from.to_string()),
            kv("lambdaflow.to-offset", &to.to_string()),
        ]))
        .build();
    // Encoded in memory, then written in one put: a segment is one partition's events of
    // one checkpoint interval.
    let mut w = ArrowWriter::try_new(Vec::new(), schema, Some(props))
        .map_err(|e| Error::write(&shown, e))?;
    for b in batches {
        w.write(b).map_err(|e| Error::write(&shown, e))?;
    }
    let bytes = w.into_inner().map_err(|e| Error::write(&shown, e))?;
    let size = bytes.len() as u64;
    table.put(&key, bytes)?;
    Ok(Segment {
        topic: topic.into(),
        partition,
        from,
        to,
        table,
        key,
        size,
        modified_ms: chrono::Utc::now().timestamp_millis(),
        committed: false,
        owner,
    })
}

fn kv(k: &str, v: &str) -> datafusion::parquet::file::metadata::KeyValue {
    datafusion::parquet::file::metadata::KeyValue::new(k.into(), v.to_string())
}

/// Gives a pending segment its committed name (a checkpoint now covers it).
pub fn rename(seg: &Segment) -> Result<Segment> {
    if seg.committed {
        return Ok(seg.clone());
    }
    let key = seg.committed_key();
    seg.table.rename(&seg.key, &key)?;
    Ok(Segment {
        key,
        committed: true,
        ..seg.clone()
    })
}

/// Commits the ranges a checkpoint covers: renames their pending segments, then adds them to
/// the Delta log in one commit with their partitions' offsets (`epoch`: the micro-batch id).
/// The segments of fenced ranges (another instance owns their partition now) are deleted.
pub fn commit_with(
    w: &mut delta::Writer,
    ranges: Vec<delta::Range>,
    epoch: u64,
) -> Result<delta::Committed> {
    let mut ranges = ranges;
    // An owner's pending segment deleted under it: another instance claimed the partition
    // meanwhile and removed what was not committed (see [`remove_uncommitted`]).
    let mut gone = Vec::new();
    for r in &mut ranges {
        if let Some(s) = &r.segment {
            match rename(s) {
                Ok(s) => r.segment = Some(s),
                Err(Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound
                        && matches!(r.fence, delta::Fence::Owner(_)) =>
                {
                    gone.push(r.partition)
                }
                Err(e) => return Err(e),
            }
        }
    }
    ranges.retain(|r| !gone.contains(&r.partition));
    let mut done = w.commit(ranges.clone(), epoch)?;
    // A fenced range's file goes, unless the log (read anew) lists it.
    let fenced: Vec<&Segment> = ranges
        .iter()
        .filter(|r| done.fenced.iter().any(|&(p, _)| p == r.partition))
        .filter_map(|r| r.segment.as_ref())
        .collect();
    if let Some(first) = fenced.first() {
        let listed = delta::listed_anew(&first.table)?;
        for s in fenced {
            if !listed.contains(&s.key) {
                s.remove()?;
            }
        }
    }
    gone.dedup();
    done.fenced.extend(gone.into_iter().map(|p| (p, 0)));
    Ok(done)
}

/// Deletes the segment files of a partition from offset `from` on, which the Delta log does not
/// list when its archive ends at `from`: what an earlier owner wrote and did not commit (a
/// consumer-group instance claiming the partition at owner epoch `epoch`; those events are
/// consumed again). Only an earlier owner's files go (see `remove_ranges_from`), and a file
/// the Delta log lists (read anew) is never removed.
pub fn remove_uncommitted(
    layout: &Layout,
    topic: &str,
    partition: i32,
    from: i64,
    epoch: i64,
) -> Result<()> {
    let table = layout.master()?;
    let dir = partition_dir(topic, partition);
    let listed = delta::listed_anew(&table)?;
    remove_ranges_from(
        &table,
        &dir,
        (from, epoch),
        |name| parse_name(name).map(|n| (n.from, n.owner)),
        |key| listed.contains(key),
    )
}

/// Deletes the objects in `dir` of `store` that an owner before `epoch` wrote from offset
/// `from` on: `start_and_owner` reads both from a name (no owner: a single speed layer's, an
/// epoch of 0); `listed` keeps a key the Delta log lists whatever its name says.
///
/// A later owner's files always stay: a claim can be applied late (an instance suspended
/// between its claim and this call comes back after a later owner has written, and is
/// committing, files that are not this claim's to remove).
pub(crate) fn remove_ranges_from(
    store: &Store,
    dir: &str,
    (from, epoch): (i64, i64),
    start_and_owner: impl Fn(&str) -> Option<(i64, Option<i64>)>,
    listed: impl Fn(&str) -> bool,
) -> Result<()> {
    for e in store.list(dir)? {
        let name = e.key.rsplit('/').next().unwrap_or("");
        let Some((start, owner)) = start_and_owner(name).filter(|&(a, _)| a >= from) else {
            continue;
        };
        let shown = store.path_of(&e.key);
        if owner.unwrap_or(0) >= epoch {
            tracing::warn!(file = %shown.display(), epoch, "a file of this owner epoch or a later one: kept (this claim is not the partition's latest)");
        } else if listed(&e.key) {
            tracing::warn!(file = %shown.display(), from, start, "a file past the claimed archive end is in the Delta log: kept");
        } else {
            tracing::info!(file = %shown.display(), "removing what an earlier owner of the partition did not commit (it is consumed again)");
            store.delete(&e.key)?;
        }
    }
    Ok(())
}

/// [`commit_with`] a writer for this one commit.
pub fn commit(
    layout: &Layout,
    schema: &EventSchema,
    ranges: Vec<delta::Range>,
    epoch: u64,
) -> Result<()> {
    commit_with(&mut writer(layout, schema)?, ranges, epoch).map(drop)
}

/// A writer of the master dataset's Delta table.
pub fn writer(layout: &Layout, schema: &EventSchema) -> Result<delta::Writer> {
    Ok(delta::Writer::new(layout.master()?, schema.arrow_schema()))
}

/// After a restart: commits the pending segments of `topic` that the checkpoint's offsets
/// cover, and deletes the others (their events will be consumed and archived again); then
/// commits to the Delta log every renamed segment it lacks (a crash between the rename and the
/// log commit, or an `output/` written before the log existed).
pub fn recover(
    layout: &Layout,
    schema: &EventSchema,
    topic: &str,
    checkpoint: &BTreeMap<i32, i64>,
) -> Result<()> {
    let all = listed(layout, Some(topic))?;
    for (i, s) in all.iter().enumerate() {
        if s.committed {
            continue;
        }
        // On S3 a rename is a copy then a delete: a crash between them leaves both names.
        let renamed = i > 0 && {
            let c = &all[i - 1];
            c.committed
                && (&c.topic, c.partition, c.from, c.owner)
                    == (&s.topic, s.partition, s.from, s.owner)
        };
        if renamed {
            s.remove()?;
        } else if checkpoint.get(&s.partition).is_some_and(|&c| s.to <= c) {
            rename(s)?;
        } else {
            tracing::info!(segment = %s.shown().display(), "removing a segment no checkpoint covers (it is consumed again)");
            s.remove()?;
        }
    }
    catch_up(layout, schema).map(drop)
}

/// Commits to the Delta log the renamed segments it does not list yet (see [`recover`]).
/// Returns the latest version afterwards (read once when there was nothing to commit).
pub fn catch_up(layout: &Layout, schema: &EventSchema) -> Result<delta::Snapshot> {
    let table = committed(layout)?;
    let ends = table.offsets();
    let missing: Vec<delta::Range> = on_disk(layout)?
        .iter()
        .filter(|s| s.committed)
        .filter(|s| {
            ends.get(&s.topic)
                .and_then(|t| t.get(&s.partition))
                .is_none_or(|&e| s.from >= e)
        })
        .map(|s| delta::Range {
            fence: delta::Fence::Unowned,
            ..delta::Range::from(s)
        })
        .collect();
    if missing.is_empty() {
        return Ok(table);
    }
    tracing::info!(
        segments = missing.len(),
        "committing archived segments the Delta log lacks"
    );
    writer(layout, schema)?.commit(missing, 0)?;
    committed(layout)
}

/// Per topic and partition, the end of the committed `segments`.
pub fn ends(segments: &[Segment]) -> Offsets {
    let mut out = Offsets::new();
    for s in segments.iter().filter(|s| s.committed) {
        let e = out
            .entry(s.topic.clone())
            .or_default()
            .entry(s.partition)
            .or_insert(s.to);
        *e = (*e).max(s.to);
    }
    out
}

/// Per partition, the end of the committed segments of `topic`.
pub fn archived_until(segments: &[Segment], topic: &str) -> BTreeMap<i32, i64> {
    ends(segments).remove(topic).unwrap_or_default()
}

/// Reads a segment's events in the declared schema. Fields the segment lacks are null when
/// nullable; otherwise the error names the segment and the field.
pub fn read(seg: &Segment, schema: &EventSchema) -> Result<Vec<RecordBatch>> {
    read_columns(seg, schema, false)
}

/// [`read`], with string fields dictionary-encoded as they are stored (each distinct string of
/// a row group decoded once, not once per row): for folding into views
/// ([`crate::view::ViewState::fold_columns`]), which look each distinct string up once.
pub fn read_dictionary_strings(seg: &Segment, schema: &EventSchema) -> Result<Vec<RecordBatch>> {
    read_columns(seg, schema, true)
}

/// A string type read as dictionaries.
fn dictionary_strings() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

fn read_columns(
    seg: &Segment,
    schema: &EventSchema,
    dictionaries: bool,
) -> Result<Vec<RecordBatch>> {
    match seg.table.local_dir() {
        // On a disk the reader reads the row groups it needs, not the whole file at once.
        Some(dir) => {
            let file = open_segment(seg, |key| {
                let path = dir.join(key);
                std::fs::File::open(&path).at(path)
            })?;
            decode(file, seg, schema, dictionaries)
        }
        // On an object store a small segment is one GET; a larger one is read by ranges.
        None if seg.size >= RANGES_FROM => decode_ranges(seg, schema, dictionaries),
        None => decode(
            open_segment(seg, |key| seg.table.get(key))?,
            seg,
            schema,
            dictionaries,
        ),
    }
}

/// `open` of the segment's key, or of its committed name when a pending segment listed a
/// moment ago was renamed since.
fn open_segment<R>(seg: &Segment, open: impl Fn(&str) -> Result<R>) -> Result<R> {
    match open(&seg.key) {
        Err(Error::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound && !seg.committed =>
        {
            open(&seg.committed_key())
        }
        r => r,
    }
}

/// Reads a segment's Parquet from `reader` in the declared schema (see [`read_columns`]).
fn decode<R: datafusion::parquet::file::reader::ChunkReader + 'static>(
    reader: R,
    seg: &Segment,
    schema: &EventSchema,
    dictionaries: bool,
) -> Result<Vec<RecordBatch>> {
    let meta = ArrowReaderMetadata::load(&reader, ArrowReaderOptions::new())
        .map_err(|e| damaged(seg, e))?;
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(
        reader,
        hinted(seg, meta, dictionaries)?,
    )
    .with_batch_size(batch_rows(dictionaries))
    .build()
    .map_err(|e| damaged(seg, e))?;
    reader
        .map(|b| conform(seg, schema, dictionaries, b.map_err(|e| damaged(seg, e))?))
        .collect()
}

/// [`decode`] for a segment on an object store read by ranges: its footer, then per row group
/// the column chunks (parquet's async reader over [`Ranges`], which merges nearby ranges into
/// one request), so a large segment (a compacted one is up to 256 MiB) is never held whole. A
/// pending segment renamed since it was listed is read under its committed name.
fn decode_ranges(
    seg: &Segment,
    schema: &EventSchema,
    dictionaries: bool,
) -> Result<Vec<RecordBatch>> {
    use datafusion::parquet::arrow::ParquetRecordBatchStreamBuilder;
    use futures::TryStreamExt;
    let read = |key: &str| {
        let Some((bucket, path)) = seg.table.object(key) else {
            return Err(Error::Internal(format!(
                "{}: not on an object store",
                seg.shown().display()
            )));
        };
        let seg = seg.clone();
        super::store::block(async move {
            let mut reader = Ranges {
                bucket,
                path,
                size: seg.size,
            };
            let meta = ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new())
                .await
                .map_err(|e| parquet_error(&seg, e))?;
            ParquetRecordBatchStreamBuilder::new_with_metadata(
                reader,
                hinted(&seg, meta, dictionaries)?,
            )
            .with_batch_size(batch_rows(dictionaries))
            .build()
            .map_err(|e| parquet_error(&seg, e))?
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| parquet_error(&seg, e))
        })
    };
    open_segment(seg, read)?
        .into_iter()
        .map(|b| conform(seg, schema, dictionaries, b))
        .collect()
}

/// One object as parquet's async reader reads it: byte ranges, and several ranges at once
/// through object_store's `get_ranges`, which merges nearby ones into one request.
struct Ranges {
    bucket: Arc<dyn object_store::ObjectStore>,
    path: object_store::path::Path,
    /// The object's size (from the listing or the Delta log): the footer is read without a
    /// HEAD.
    size: u64,
}

impl AsyncFileReader for Ranges {
    fn get_bytes(&mut self, range: std::ops::Range<u64>) -> BoxFuture<'_, ParquetResult<Bytes>> {
        use object_store::ObjectStoreExt;
        Box::pin(async move {
            self.bucket
                .get_range(&self.path, range)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        })
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, ParquetResult<Vec<Bytes>>> {
        Box::pin(async move {
            self.bucket
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        })
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, ParquetResult<Arc<ParquetMetaData>>> {
        Box::pin(async move {
            let size = self.size;
            let meta = ParquetMetaDataReader::new()
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(meta))
        })
    }
}

/// A Parquet error reading `seg`: the store's own error when the bytes could not be had (so
/// that storage away is recognised as such), else the segment is damaged.
fn parquet_error(seg: &Segment, e: ParquetError) -> Error {
    match e {
        ParquetError::External(inner) => match inner.downcast::<object_store::Error>() {
            Ok(o) => super::store::object_error(&seg.shown(), *o),
            Err(other) => damaged(seg, ParquetError::External(other)),
        },
        other => damaged(seg, other),
    }
}

/// The error of a segment whose Parquet cannot be read.
fn damaged(seg: &Segment, e: impl Into<BoxError>) -> Error {
    Error::damaged(
        seg.shown(),
        "archive segment",
        "restore it from a backup (while the topic still holds its offsets, `lambdaflow \
         replay` recomputes the views from Kafka)",
        e.into(),
    )
}

/// `meta` with string columns read as dictionaries when `dictionaries` (see
/// [`read_dictionary_strings`]).
fn hinted(
    seg: &Segment,
    meta: ArrowReaderMetadata,
    dictionaries: bool,
) -> Result<ArrowReaderMetadata> {
    if !dictionaries {
        return Ok(meta);
    }
    let hint: Vec<Field> = meta
        .schema()
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 => f.as_ref().clone().with_data_type(dictionary_strings()),
            _ => f.as_ref().clone(),
        })
        .collect();
    let options = ArrowReaderOptions::new().with_schema(Arc::new(Schema::new(hint)));
    ArrowReaderMetadata::try_new(Arc::clone(meta.metadata()), options).map_err(|e| damaged(seg, e))
}

/// Rows per batch read. Dictionaries are per row group: a batch of a whole one looks each
/// string up once.
fn batch_rows(dictionaries: bool) -> usize {
    if dictionaries { 1 << 20 } else { 65_536 }
}

/// One batch as read from `seg`, in the declared schema: fields the segment lacks are null
/// when nullable (else an error naming the segment and the field), other types cast.
fn conform(
    seg: &Segment,
    schema: &EventSchema,
    dictionaries: bool,
    b: RecordBatch,
) -> Result<RecordBatch> {
    let target = schema.arrow_schema();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for f in target.fields() {
        let keep = |c: &ArrayRef| {
            c.data_type() == f.data_type()
                || (dictionaries
                    && f.data_type() == &DataType::Utf8
                    && c.data_type() == &dictionary_strings())
        };
        match b.column_by_name(f.name()) {
            Some(c) if keep(c) => cols.push(Arc::clone(c)),
            Some(c) => cols.push(cast(c, f.data_type())?),
            None if f.is_nullable() => cols.push(new_null_array(f.data_type(), b.num_rows())),
            None => {
                return Err(Error::config(format!(
                    "segment {} has no field `{}`, which the schema declares non-nullable; \
                     declare it `nullable = true` or move the segment out of the master dataset",
                    seg.shown().display(),
                    f.name()
                )));
            }
        }
    }
    let schema = if dictionaries {
        // The declared schema, with the types the columns kept.
        let fields: Vec<Field> = target
            .fields()
            .iter()
            .zip(&cols)
            .map(|(f, c)| f.as_ref().clone().with_data_type(c.data_type().clone()))
            .collect();
        Arc::new(Schema::new(fields))
    } else {
        target
    };
    Ok(RecordBatch::try_new(schema, cols)?)
}

/// `n` events of the default schema (customers `c0`.., amounts `0`..), for unit tests.
#[cfg(test)]
pub(crate) fn test_events(n: i64) -> RecordBatch {
    use datafusion::arrow::array::{Int64Array, StringArray};
    test_batch(vec![
        Arc::new(StringArray::from_iter_values(
            (0..n).map(|i| format!("c{i}")),
        )),
        Arc::new(Int64Array::from_iter_values(0..n)),
    ])
}

/// Events of the default schema from its two columns, the Kafka record's columns NULL (as
/// for events that came from a file), for unit tests.
#[cfg(test)]
pub(crate) fn test_batch(mut cols: Vec<ArrayRef>) -> RecordBatch {
    let schema = EventSchema::new(crate::config::default_fields()).unwrap();
    let arrow = schema.arrow_schema();
    let n = cols[0].len();
    for f in &arrow.fields()[cols.len()..] {
        cols.push(new_null_array(f.data_type(), n));
    }
    RecordBatch::try_new(arrow, cols).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn range(seg: &Segment) -> delta::Range {
        delta::Range::from(seg)
    }

    /// An empty output directory, its layout and the default event schema.
    fn fresh() -> (tempfile::TempDir, Layout, EventSchema) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), 1);
        (
            dir,
            layout,
            EventSchema::new(crate::config::default_fields()).unwrap(),
        )
    }

    #[test]
    fn strings_read_as_dictionaries_equal_the_plain_read_past_the_dictionary_limit() {
        use datafusion::arrow::array::{Int64Array, StringArray};
        use datafusion::arrow::compute::concat_batches;
        let (_dir, layout, schema) = fresh();
        // More distinct strings than a Parquet dictionary page holds: the writer falls back to
        // plain pages part of the way, and the dictionary read still gives every string.
        let n = 300_000;
        let events = test_batch(vec![
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("a customer with a long name {}", i % 250_000)),
            )),
            Arc::new(Int64Array::from_iter_values(0..n)),
        ]);
        let seg = write_pending(&layout, "t", (0, None), 0, n, &[events]).unwrap();
        let plain = read(&seg, &schema).unwrap();
        let dict = read_dictionary_strings(&seg, &schema).unwrap();
        assert!(matches!(
            dict[0].column(0).data_type(),
            DataType::Dictionary(..)
        ));
        let plain = concat_batches(&schema.arrow_schema(), &plain).unwrap();
        let dict = concat_batches(&dict[0].schema(), &dict).unwrap();
        assert_eq!(dict.num_rows(), n as usize);
        assert_eq!(
            &cast(dict.column(0), &DataType::Utf8).unwrap(),
            plain.column(0)
        );
        assert_eq!(dict.column(1), plain.column(1));
    }

    #[test]
    fn pending_segments_commit_only_when_a_checkpoint_covers_them() {
        let (_dir, layout, schema) = fresh();
        let a = write_pending(&layout, "t", (0, None), 0, 10, &[test_events(10)]).unwrap();
        commit(&layout, &schema, vec![range(&a)], 1).unwrap();
        write_pending(&layout, "t", (0, None), 10, 25, &[test_events(15)]).unwrap();
        write_pending(&layout, "t", (0, None), 25, 30, &[test_events(5)]).unwrap();
        write_pending(&layout, "t", (1, None), 0, 4, &[test_events(4)]).unwrap();
        // The checkpoint covers partition 0 up to 25, nothing of partition 1.
        recover(&layout, &schema, "t", &BTreeMap::from([(0, 25)])).unwrap();
        let snap = committed(&layout).unwrap();
        let ranges: Vec<_> = snap
            .segments
            .iter()
            .map(|s| (s.partition, s.from, s.to, s.committed))
            .collect();
        assert_eq!(ranges, vec![(0, 0, 10, true), (0, 10, 25, true)]);
        assert_eq!(snap.version, Some(2), "created, then one commit per step");
        assert_eq!(
            on_disk(&layout).unwrap().len(),
            2,
            "the uncovered ones are gone"
        );
        assert_eq!(
            archived_until(&snap.segments, "t"),
            BTreeMap::from([(0, 25)])
        );
        let back = read(&snap.segments[1], &schema).unwrap();
        assert_eq!(back.iter().map(|b| b.num_rows()).sum::<usize>(), 15);
    }

    /// A claim applied late (its instance suspended between the claim and the removal of what
    /// earlier owners left) keeps the files of the later owner, which is between giving its
    /// segment its committed name and committing it: that commit then lands on a file that
    /// is there.
    #[test]
    fn a_late_claim_keeps_a_later_owners_files() {
        let (_dir, layout, schema) = fresh();
        let late = writer(&layout, &schema)
            .unwrap()
            .claim("t", vec![0], vec![])
            .unwrap()[&0]
            .clone();
        let mut w = writer(&layout, &schema).unwrap();
        assert_eq!(
            w.claim("t", vec![0], vec![]).unwrap()[&0].epoch,
            late.epoch + 1
        );
        let b = write_pending(&layout, "t", (0, Some(2)), 0, 10, &[test_events(10)]).unwrap();
        let b = rename(&b).unwrap();
        // The late claim's removal: from its archived end (none), at its epoch.
        remove_uncommitted(&layout, "t", 0, late.archived.unwrap_or(0), late.epoch).unwrap();
        let range = delta::Range {
            fence: delta::Fence::Owner(2),
            ..range(&b)
        };
        let done = commit_with(&mut w, vec![range], 1).unwrap();
        assert!(done.version.is_some() && done.fenced.is_empty(), "{done:?}");
        let table = committed(&layout).unwrap().segments;
        assert_eq!(read(&table[0], &schema).unwrap()[0].num_rows(), 10);
    }

    /// A commit that went through but whose answer was lost, tried again after another
    /// instance claimed the partition: the range is in the table, so it is committed, not
    /// fenced, and its file (which the table lists) is not deleted.
    #[test]
    fn a_commit_tried_again_after_a_claim_keeps_the_file_the_table_lists() {
        let (_dir, layout, schema) = fresh();
        let mut w = writer(&layout, &schema).unwrap();
        assert_eq!(w.claim("t", vec![0], vec![]).unwrap()[&0].epoch, 1);
        let a = write_pending(&layout, "t", (0, Some(1)), 0, 10, &[test_events(10)]).unwrap();
        let owned = |seg: &Segment| delta::Range {
            fence: delta::Fence::Owner(1),
            ..range(seg)
        };
        let done = commit_with(&mut w, vec![owned(&a)], 1).unwrap();
        assert!(done.version.is_some() && done.fenced.is_empty());
        let second = writer(&layout, &schema)
            .unwrap()
            .claim("t", vec![0], vec![])
            .unwrap()[&0]
            .clone();
        assert_eq!((second.epoch, second.archived), (2, Some(10)));
        // The same commit again (its segment already under its committed name).
        let a = Segment {
            key: a.committed_key(),
            committed: true,
            ..a.clone()
        };
        let done = commit_with(&mut w, vec![owned(&a)], 1).unwrap();
        assert_eq!((done.version, done.fenced), (None, vec![]));
        let table = committed(&layout).unwrap().segments;
        assert_eq!(table.len(), 1);
        assert_eq!(
            read(&table[0], &schema).unwrap()[0].num_rows(),
            10,
            "the file the table lists is still there"
        );
    }

    #[test]
    fn a_claim_fences_the_previous_owner_and_catch_up_leaves_owned_partitions_alone() {
        let (_dir, layout, schema) = fresh();
        let mut w = writer(&layout, &schema).unwrap();
        let owned = |seg: &Segment, e: i64| delta::Range {
            fence: delta::Fence::Owner(e),
            ..range(seg)
        };
        let views = || vec!["hourly".to_string()];
        let first = w.claim("t", vec![0], views()).unwrap()[&0].clone();
        assert_eq!((first.epoch, first.archived), (1, None));
        assert!(first.event_times.is_empty());
        let a = write_pending(&layout, "t", (0, Some(1)), 0, 10, &[test_events(10)]).unwrap();
        let with_time = delta::Range {
            event_times: [("hourly".to_string(), 7_000_000)].into(),
            ..owned(&a, 1)
        };
        let done = commit_with(&mut w, vec![with_time], 1).unwrap();
        assert!(done.version.is_some() && done.fenced.is_empty());
        // Another instance claims the partition: it starts where the archive ends, with the
        // latest event time archived.
        let second = writer(&layout, &schema)
            .unwrap()
            .claim("t", vec![0], views())
            .unwrap()[&0]
            .clone();
        assert_eq!((second.epoch, second.archived), (2, Some(10)));
        assert_eq!(
            second.event_times,
            [("hourly".to_string(), 7_000_000)].into()
        );
        // The first owner's next range is refused, its file deleted, the table unchanged.
        let b = write_pending(&layout, "t", (0, Some(1)), 10, 20, &[test_events(10)]).unwrap();
        let version = committed(&layout).unwrap().version;
        let done = commit_with(&mut w, vec![owned(&b, 1)], 2).unwrap();
        assert_eq!((done.version, done.fenced), (None, vec![(0, 2)]));
        assert_eq!(committed(&layout).unwrap().version, version);
        assert_eq!(
            on_disk(&layout).unwrap().len(),
            1,
            "the refused segment is gone"
        );
        // A pending segment the new owner removed before the old one renamed it: refused too.
        let c = write_pending(&layout, "t", (0, Some(1)), 10, 15, &[test_events(5)]).unwrap();
        remove_uncommitted(&layout, "t", 0, 10, 2).unwrap();
        let done = commit_with(&mut w, vec![owned(&c, 1)], 3).unwrap();
        assert_eq!(done.fenced, vec![(0, 0)]);
        // The owner of epoch 2 archives; files found on disk are not caught up into a
        // partition a group instance owns.
        let d = write_pending(&layout, "t", (0, Some(2)), 10, 20, &[test_events(10)]).unwrap();
        commit_with(&mut w, vec![owned(&d, 2)], 4).unwrap();
        // The old owner consumed the same offsets as the new one: its segment has a name of
        // its own, so the file it deletes once fenced is its own, not the one committed.
        let z = write_pending(&layout, "t", (0, Some(1)), 10, 20, &[test_events(10)]).unwrap();
        assert_ne!(z.committed_key(), d.committed_key());
        let done = commit_with(&mut w, vec![owned(&z, 1)], 5).unwrap();
        assert_eq!(done.fenced, vec![(0, 2)]);
        let kept = committed(&layout).unwrap().segments;
        assert_eq!(kept[1].owner, Some(2));
        let rows: usize = read(&kept[1], &schema)
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, 10, "the owner's segment is whole");
        let stray =
            rename(&write_pending(&layout, "t", (0, None), 20, 30, &[test_events(10)]).unwrap())
                .unwrap();
        catch_up(&layout, &schema).unwrap();
        let snap = committed(&layout).unwrap();
        let ranges: Vec<_> = snap.segments.iter().map(|s| (s.from, s.to)).collect();
        assert_eq!(ranges, vec![(0, 10), (10, 20)], "{stray:?} stays out");
    }

    #[test]
    fn a_retried_commit_adds_nothing_and_an_overlapping_one_is_refused() {
        let (_dir, layout, schema) = fresh();
        // One writer throughout: each commit reads only what the log gained since the last.
        let mut w = writer(&layout, &schema).unwrap();
        let a = write_pending(&layout, "t", (0, None), 0, 10, &[test_events(10)]).unwrap();
        commit_with(&mut w, vec![range(&a)], 1).unwrap();
        let version = committed(&layout).unwrap().version;
        // The same range again (a retry after a crash): the table already holds it.
        let again = on_disk(&layout).unwrap()[0].clone();
        w.commit(vec![range(&again)], 2).unwrap();
        assert_eq!(
            committed(&layout).unwrap().version,
            version,
            "nothing committed"
        );
        // A range overlapping what is archived (a second writer of the partition): refused.
        let b = write_pending(&layout, "t", (0, None), 5, 20, &[test_events(15)]).unwrap();
        let err = commit_with(&mut w, vec![range(&b)], 3).unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err:?}");
        let err = err.to_string();
        assert!(
            err.contains("partition 0") && err.contains("archived up to offset 10"),
            "{err}"
        );
        assert_eq!(committed(&layout).unwrap().segments.len(), 1);
        // A range with only bad messages moves the partition's txn version without a file.
        let only_bad = delta::Range {
            topic: "t".into(),
            partition: 0,
            from: 10,
            to: 12,
            segment: None,
            fence: delta::Fence::None,
            event_times: BTreeMap::new(),
        };
        w.commit(vec![only_bad], 4).unwrap();
        let c = write_pending(&layout, "t", (0, None), 12, 20, &[test_events(8)]).unwrap();
        commit_with(&mut w, vec![range(&c)], 5).unwrap();
        let snap = committed(&layout).unwrap();
        let ranges: Vec<_> = snap.segments.iter().map(|s| (s.from, s.to)).collect();
        assert_eq!(ranges, vec![(0, 10), (12, 20)]);
    }
}
