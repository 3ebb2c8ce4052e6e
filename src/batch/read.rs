//! The embedded engine's pass over the master dataset: the JSON-lines files decoded in parallel
//! (one chunk per core, the next block read while one decodes; bad lines become dead-letter
//! records naming file and line) and the archived Parquet segments, each decoded batch folded
//! at once into every view's state — the same fold the speed layer runs, with the view's
//! compiled expressions. Nothing is collected first: memory holds two blocks of input and the
//! states. Each chunk's states are merged into the run's in input order, so groups keep the
//! order in which they first appear (as the seed's output lists them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use tracing::warn;

use super::ROW_COL;
use crate::config::Pipeline;
use crate::error::{Error, IoContext, Result};
use crate::event::{EventDecoder, RowDecoder};
use crate::storage;
use crate::storage::batch_view::FileReport;
use crate::storage::segments::{self as master, Segment};
use crate::view::{PendingRows, RowPlan, ViewState};

/// Rows per decoded record batch (folded while it is in the cache).
const BATCH_ROWS: usize = 16_384;

/// Records decoded before they are folded, for views folded record by record: enough for
/// their key lookups to overlap, few enough to stay in the cache.
const PENDING_ROWS: usize = 256;

/// The master dataset folded into every view's state.
pub struct Folded {
    /// Per view (config order), its state over every event.
    pub states: Vec<ViewState>,
    /// Per-file counts.
    pub files: Vec<FileReport>,
    /// Rejected lines as dead-letter records.
    pub bad: Vec<serde_json::Value>,
    /// Events folded (files and segments).
    pub rows: u64,
}

/// Expands the configured dataset paths: files as given, directories to the files inside them
/// (recursively, sorted, skipping names starting with `.` or `_` as Spark does).
pub fn dataset_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .at(dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                !n.starts_with('.') && !n.starts_with('_')
            })
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out)?
            } else {
                out.push(p)
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out)?;
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(Error::config(format!(
                "batch.dataset: {} does not exist (set batch.dataset in the config or pass --dataset)",
                p.display()
            )));
        }
    }
    Ok(out)
}

/// Folds the dataset files, decoded in parallel (each file read in blocks of whole lines, each
/// block cut into one chunk per core; bad lines become dead-letter records naming file and
/// line), then the archived segments, into every view's state. `progress` counts the bytes.
pub fn fold_dataset(
    p: &Pipeline,
    files: &[PathBuf],
    segments: &[Segment],
    progress: &indicatif::ProgressBar,
) -> Result<Folded> {
    fold_dataset_in_blocks(p, files, segments, progress, READ_BLOCK)
}

/// Bytes of a dataset file read at a time: the next block is read while the current one is
/// decoded, into reused buffers.
const READ_BLOCK: usize = 16 << 20;

/// Logs a file's rejected lines as one line with counts per kind of reason — once per file
/// and count in a process: a scheduler re-reading the same history every run says it once
/// (the records, with their lines, are in each run's dead-letter file).
pub(super) fn warn_rejected(path: &Path, records: &[serde_json::Value]) {
    static WARNED: std::sync::Mutex<BTreeMap<PathBuf, usize>> =
        std::sync::Mutex::new(BTreeMap::new());
    if records.is_empty() {
        return;
    }
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for r in records {
        let reason = r["reason"].as_str().unwrap_or_default();
        *kinds.entry(crate::event::reason_kind(reason)).or_default() += 1;
    }
    let reasons = kinds
        .iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect::<Vec<_>>()
        .join("; ");
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    if warned.insert(path.to_path_buf(), records.len()) == Some(records.len()) {
        tracing::debug!(file = %path.display(), bad = records.len(), reasons = %reasons, "rejected lines of the master dataset (as in the previous run)");
    } else {
        warn!(file = %path.display(), bad = records.len(), reasons = %reasons, "rejected lines of the master dataset (each with its line in the run's dead-letter file; said again only when the count changes)");
    }
}

fn fold_dataset_in_blocks(
    p: &Pipeline,
    files: &[PathBuf],
    segments: &[Segment],
    progress: &indicatif::ProgressBar,
    block: usize,
) -> Result<Folded> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut out = Folded {
        states: p.views.iter().map(|d| d.new_state()).collect(),
        files: Vec::new(),
        bad: Vec::new(),
        rows: 0,
    };
    for path in files {
        let mut file = std::fs::File::open(path).at(path)?;
        let mut report = FileReport {
            path: path.clone(),
            bytes: 0,
            lines: 0,
            bad: 0,
        };
        let (mut cur, mut next, mut carry) = (Vec::new(), Vec::new(), Vec::new());
        let mut eof = read_block(&mut file, block, &mut cur, &mut carry).at(path)?;
        let mut line_base = 0u64;
        while !cur.is_empty() {
            let chunks = split_lines(&cur, threads);
            let (results, next_eof) = std::thread::scope(|s| {
                let handles: Vec<_> = chunks
                    .iter()
                    .map(|range| {
                        let chunk = &cur[range.clone()];
                        s.spawn(move || fold_chunk(chunk, p, progress))
                    })
                    .collect();
                // Read the next block while this one decodes.
                let next_eof = if eof {
                    next.clear();
                    Ok(true)
                } else {
                    read_block(&mut file, block, &mut next, &mut carry)
                };
                let results: Vec<Result<ChunkOut>> = handles
                    .into_iter()
                    .map(|h| h.join().expect("decoder thread panicked"))
                    .collect();
                (results, next_eof)
            });
            report.bytes += cur.len() as u64;
            for r in results {
                let chunk = r?;
                for (line, reason, raw) in chunk.bad {
                    let (k, v) = storage::payload_fields(&raw);
                    let mut rec = serde_json::json!({
                        "file": path.display().to_string(),
                        "line": line_base + line,
                        "reason": reason,
                    });
                    rec[k] = v;
                    out.bad.push(rec);
                    report.bad += 1;
                }
                line_base += chunk.physical_lines;
                report.lines += chunk.lines;
                out.rows += chunk.rows;
                // In input order: groups keep the order of their first appearance.
                for (st, c) in out.states.iter_mut().zip(&chunk.states) {
                    st.merge(c);
                }
            }
            eof = next_eof.at(path)?;
            std::mem::swap(&mut cur, &mut next);
        }
        warn_rejected(path, &out.bad[out.bad.len() - report.bad as usize..]);
        out.files.push(report);
    }
    fold_segments(p, segments, progress, threads, &mut out)?;
    Ok(out)
}

/// Folds the archived segments on `threads` cores — each takes the next segment when it has
/// folded one — and merges their states into `out` in the table's order.
fn fold_segments(
    p: &Pipeline,
    segments: &[Segment],
    progress: &indicatif::ProgressBar,
    threads: usize,
    out: &mut Folded,
) -> Result<()> {
    let next = AtomicUsize::new(0);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        for _ in 0..threads.min(segments.len()) {
            let (tx, next) = (tx.clone(), &next);
            s.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(seg) = segments.get(i) else { break };
                    let folded = fold_segment(seg, p, progress);
                    let failed = folded.is_err();
                    // A closed channel: the run stopped at an earlier segment's error.
                    if tx.send((i, folded)).is_err() || failed {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut done = BTreeMap::new();
        let mut merged = 0;
        for (i, folded) in rx {
            done.insert(i, folded);
            while let Some(folded) = done.remove(&merged) {
                let (states, rows) = folded?;
                out.rows += rows;
                for (st, c) in out.states.iter_mut().zip(&states) {
                    st.merge(c);
                }
                merged += 1;
            }
        }
        Ok(())
    })
}

/// Reads one archived segment and folds it into a fresh state per view.
fn fold_segment(
    seg: &Segment,
    p: &Pipeline,
    progress: &indicatif::ProgressBar,
) -> Result<(Vec<ViewState>, u64)> {
    let mut states: Vec<ViewState> = p.views.iter().map(|d| d.new_state()).collect();
    let mut rows = 0;
    // With row plans only, strings stay dictionaries: each distinct one is looked up once.
    let plans: Option<Vec<&RowPlan>> = p.views.iter().map(|d| d.row_plan()).collect();
    let batches = match plans {
        Some(_) => master::read_dictionary_strings(seg, &p.schema)?,
        None => master::read(seg, &p.schema)?,
    };
    for b in batches {
        rows += b.num_rows() as u64;
        for (k, (def, st)) in p.views.iter().zip(&mut states).enumerate() {
            match &plans {
                Some(plans) => st.fold_columns(plans[k], &b)?,
                None => {
                    st.update(def, &b)?;
                }
            }
        }
    }
    progress.inc(seg.path.metadata().map_or(0, |m| m.len()));
    Ok((states, rows))
}

/// The event schema plus the hidden row-position column.
pub(super) fn with_row_col(events: &Schema) -> Arc<Schema> {
    let mut f: Vec<Field> = events.fields().iter().map(|f| f.as_ref().clone()).collect();
    f.push(Field::new(ROW_COL, DataType::Int64, false));
    Arc::new(Schema::new(f))
}

struct ChunkOut {
    /// Per view, the state of this chunk's events.
    states: Vec<ViewState>,
    rows: u64,
    lines: u64,
    physical_lines: u64,
    /// (1-based line number within the chunk, reason, raw line)
    bad: Vec<(u64, String, Vec<u8>)>,
}

/// Reads the next block of whole lines into `buf`: `carry` (the unfinished line of the previous
/// block) and then about `block` bytes, up to the last newline; what follows it becomes the new
/// `carry`. Returns true at the end of the file (then `buf` holds everything left).
fn read_block(
    file: &mut std::fs::File,
    block: usize,
    buf: &mut Vec<u8>,
    carry: &mut Vec<u8>,
) -> std::io::Result<bool> {
    use std::io::Read;
    buf.clear();
    buf.append(carry);
    loop {
        let want = block.max(1);
        let got = (&mut *file).take(want as u64).read_to_end(buf)?;
        if got < want {
            return Ok(true);
        }
        if let Some(i) = memchr::memrchr(b'\n', buf) {
            carry.extend_from_slice(&buf[i + 1..]);
            buf.truncate(i + 1);
            return Ok(false);
        }
        // A line longer than a block: read on.
    }
}

/// Cuts `data` into about `n` ranges that each end after a newline.
fn split_lines(data: &[u8], n: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let step = data.len().div_ceil(n.max(1)).max(1);
    while start < data.len() {
        let mut end = (start + step).min(data.len());
        if end < data.len() {
            end = match memchr::memchr(b'\n', &data[end..]) {
                Some(i) => end + i + 1,
                None => data.len(),
            };
        }
        out.push(start..end);
        start = end;
    }
    out
}

/// Decodes one chunk of whole lines and folds it into a fresh state per view: record by record
/// when every view has a row plan (the usual view), else a block of decoded events at a time.
fn fold_chunk(chunk: &[u8], p: &Pipeline, progress: &indicatif::ProgressBar) -> Result<ChunkOut> {
    let plans: Option<Vec<&RowPlan>> = p.views.iter().map(|d| d.row_plan()).collect();
    let mut dec = EventDecoder::with_capacity(&p.schema, BATCH_ROWS);
    let mut rows = RowDecoder::new(&p.schema);
    let mut out = ChunkOut {
        states: p.views.iter().map(|d| d.new_state()).collect(),
        rows: 0,
        lines: 0,
        physical_lines: 0,
        bad: Vec::new(),
    };
    let mut pending: Vec<PendingRows> = p.views.iter().map(|_| PendingRows::default()).collect();
    let fold_pending = |pending: &mut [PendingRows], out: &mut ChunkOut| {
        out.rows += pending.first().map_or(0, |p| p.len() as u64);
        for ((def, st), rows) in p.views.iter().zip(&mut out.states).zip(pending) {
            let plan = def.row_plan().expect("folded by rows only with a row plan");
            st.fold_rows(plan, rows);
        }
    };
    let fold = |dec: &mut EventDecoder<'_>, out: &mut ChunkOut| -> Result<()> {
        let b = dec.finish();
        out.rows += b.num_rows() as u64;
        for (def, st) in p.views.iter().zip(&mut out.states) {
            st.update(def, &b)?;
        }
        Ok(())
    };
    let mut reported = 0usize;
    let mut start = 0;
    let ends =
        memchr::memchr_iter(b'\n', chunk).chain((!chunk.ends_with(b"\n")).then_some(chunk.len()));
    for end in ends {
        let line = &chunk[start..end];
        start = end + 1;
        out.physical_lines += 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        out.lines += 1;
        let decoded = match &plans {
            Some(plans) => rows.decode(line, |row| {
                for (plan, p) in plans.iter().zip(&mut pending) {
                    p.push(plan, row);
                }
            }),
            None => dec.push(line),
        };
        match decoded {
            Err(e) => out.bad.push((out.physical_lines, e.0, line.to_vec())),
            Ok(()) if dec.len() >= BATCH_ROWS => fold(&mut dec, &mut out)?,
            Ok(()) if pending.first().is_some_and(|p| p.len() >= PENDING_ROWS) => {
                fold_pending(&mut pending, &mut out)
            }
            Ok(()) => {}
        }
        if out.lines.is_multiple_of(BATCH_ROWS as u64) {
            progress.inc((end - reported) as u64);
            reported = end;
        }
    }
    if !dec.is_empty() {
        fold(&mut dec, &mut out)?;
    }
    fold_pending(&mut pending, &mut out);
    progress.inc((chunk.len() - reported) as u64);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_lines_cuts_after_newlines_and_covers_everything() {
        let data = b"a\nbb\nccc\ndddd\n";
        for n in 1..6 {
            let parts = split_lines(data, n);
            let joined: Vec<u8> = parts
                .iter()
                .flat_map(|r| data[r.clone()].to_vec())
                .collect();
            assert_eq!(joined, data);
            for r in &parts[..parts.len() - 1] {
                assert_eq!(data[r.end - 1], b'\n');
            }
        }
    }

    async fn pipeline() -> Pipeline {
        crate::config::Config::load(None, &vec![])
            .unwrap()
            .compile()
            .await
            .unwrap()
    }

    fn table(p: &Pipeline, f: &Folded) -> String {
        let def = &p.views[0];
        crate::show::show(&def.finalize(&f.states[0]).unwrap(), 100)
    }

    #[tokio::test]
    async fn reading_in_small_blocks_gives_the_same_view_and_line_numbers() {
        let p = pipeline().await;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.json");
        let mut text = String::new();
        for i in 0..500 {
            match i % 97 {
                5 => text.push_str("{\"customer\": \"X\", \"amount\": \"bad\"}\n"),
                9 => text.push_str("\r\n"),
                _ => text.push_str(&format!(
                    "{{\"customer\": \"c{}\", \"amount\": {i}}}\r\n",
                    (i * 7) % 11
                )),
            }
        }
        text.push_str("{\"customer\": \"last\", \"amount\": 1}"); // no final newline
        std::fs::write(&f, &text).unwrap();
        let hidden = indicatif::ProgressBar::hidden();
        let one = std::slice::from_ref(&f);
        let whole = fold_dataset_in_blocks(&p, one, &[], &hidden, 1 << 30).unwrap();
        for block in [7, 64, 1000] {
            let d = fold_dataset_in_blocks(&p, one, &[], &hidden, block).unwrap();
            let lines = |d: &Folded| {
                d.bad
                    .iter()
                    .map(|b| b["line"].as_u64().unwrap())
                    .collect::<Vec<_>>()
            };
            assert_eq!(lines(&d), lines(&whole), "block {block}");
            assert_eq!(lines(&d), [6, 103, 200, 297, 394, 491]);
            assert_eq!(d.rows, whole.rows);
            // The same groups, in the same order (of first appearance), with the same totals.
            assert_eq!(table(&p, &d), table(&p, &whole), "block {block}");
            assert_eq!(d.files[0].bytes, text.len() as u64);
            assert_eq!(d.files[0].lines, whole.files[0].lines);
        }
        assert_eq!(whole.files[0].lines, 495);
        assert_eq!(whole.rows, 489);
        let t = table(&p, &whole);
        let first: Vec<&str> = t.lines().skip(3).take(3).collect();
        assert!(
            first[0].contains("|c0 ") && first[1].contains("|c7 ") && first[2].contains("|c3 "),
            "{t}"
        );
    }

    #[tokio::test]
    async fn bad_lines_are_reported_with_their_file_line_number() {
        let p = pipeline().await;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.json");
        let mut text = String::new();
        for i in 0..1000 {
            if i == 500 {
                text.push_str("{\"customer\": \"X\", \"amount\": \"abc\"}\n");
            } else if i == 700 {
                text.push('\n');
            } else {
                text.push_str(&format!(
                    "{{\"customer\": \"c{}\", \"amount\": {i}}}\n",
                    i % 7
                ));
            }
        }
        std::fs::write(&f, text).unwrap();
        let d = fold_dataset(&p, &[f], &[], &indicatif::ProgressBar::hidden()).unwrap();
        assert_eq!(d.bad.len(), 1);
        assert_eq!(d.bad[0]["line"], 501);
        assert!(d.bad[0]["reason"].as_str().unwrap().contains("amount"));
        assert_eq!(d.rows, 998);
        assert_eq!(d.files[0].lines, 999);
    }
}
