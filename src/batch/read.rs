//! The embedded engine's pass over the master dataset, folded straight into every view's
//! state — nothing is collected first: the JSON-lines files, each cut into one range per core
//! (`lines`; bad lines become dead-letter records naming file and line), then the archived
//! Parquet segments, one contiguous run of them per core. Each part's states are merged into the run's in
//! input order, so groups keep the order in which they first appear (as the seed's output
//! lists them). Memory holds a block of input per core and the states.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use tracing::warn;

use super::{ROW_COL, lines};
use crate::config::Pipeline;
use crate::error::{Error, IoContext, Result};
use crate::storage;
use crate::storage::batch_view::FileReport;
use crate::storage::segments::{self as master, Segment};
use crate::view::{RowPlan, ViewState};

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

/// Folds the dataset files, decoded in parallel (each file cut into one range per core, read in
/// blocks of whole lines; bad lines become dead-letter records naming file and line), then the
/// archived segments (one contiguous run per core), into every view's state. `progress` counts
/// the bytes.
pub fn fold_dataset(
    p: &Pipeline,
    files: &[PathBuf],
    segments: &[Segment],
    progress: &indicatif::ProgressBar,
) -> Result<Folded> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    fold_dataset_in_blocks(p, files, segments, progress, READ_BLOCK, threads)
}

/// Bytes of a dataset file each core reads at a time, into reused buffers.
const READ_BLOCK: usize = 8 << 20;

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
    threads: usize,
) -> Result<Folded> {
    let mut out = Folded {
        states: p.views.iter().map(|d| d.new_state()).collect(),
        files: Vec::new(),
        bad: Vec::new(),
        rows: 0,
    };
    for path in files {
        let folded = lines::fold_file(p, path, threads, block, progress)?;
        let first_bad = out.bad.len();
        for (line, reason, raw) in folded.bad {
            let (k, v) = storage::payload_fields(&raw);
            let mut rec = serde_json::json!({
                "file": path.display().to_string(),
                "line": line,
                "reason": reason,
            });
            rec[k] = v;
            out.bad.push(rec);
        }
        warn_rejected(path, &out.bad[first_bad..]);
        out.files.push(FileReport {
            path: path.clone(),
            bytes: folded.bytes,
            lines: folded.lines,
            bad: (out.bad.len() - first_bad) as u64,
        });
        out.rows += folded.rows;
        // In input order: groups keep the order of their first appearance.
        for (st, f) in out.states.iter_mut().zip(&folded.states) {
            st.merge(f);
        }
    }
    fold_segments(p, segments, progress, threads, &mut out)?;
    Ok(out)
}

/// Folds the archived segments on `threads` cores: each core folds one contiguous run of them
/// (about the same bytes each) into its own states, and the runs' states are merged into `out`
/// in the table's order — one merge per core, not per segment.
fn fold_segments(
    p: &Pipeline,
    segments: &[Segment],
    progress: &indicatif::ProgressBar,
    threads: usize,
    out: &mut Folded,
) -> Result<()> {
    let runs = contiguous_runs(segments, threads);
    let folded: Vec<Result<(Vec<ViewState>, u64)>> = std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .iter()
            .map(|run| {
                s.spawn(move || {
                    let mut states: Vec<ViewState> =
                        p.views.iter().map(|d| d.new_state()).collect();
                    let (mut rows, mut gids) = (0, Vec::new());
                    for seg in run.iter() {
                        rows += fold_segment(seg, p, &mut states, &mut gids, progress)?;
                    }
                    Ok((states, rows))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("segment reader panicked"))
            .collect()
    });
    for run in folded {
        let (states, rows) = run?;
        out.rows += rows;
        for (st, c) in out.states.iter_mut().zip(&states) {
            st.merge(c);
        }
    }
    Ok(())
}

/// `segments` cut into at most `n` contiguous runs of about the same size on disk.
fn contiguous_runs(segments: &[Segment], n: usize) -> Vec<&[Segment]> {
    let sizes: Vec<u64> = segments.iter().map(|s| s.size.max(1)).collect();
    let total: u64 = sizes.iter().sum();
    let mut runs = Vec::new();
    let (mut start, mut acc) = (0, 0);
    for (i, size) in sizes.iter().enumerate() {
        acc += size;
        // Close a run once it holds its share of the bytes.
        if acc * n as u64 >= total * (runs.len() as u64 + 1) && runs.len() + 1 < n {
            runs.push(&segments[start..=i]);
            start = i + 1;
        }
    }
    if start < segments.len() {
        runs.push(&segments[start..]);
    }
    runs
}

/// Reads one archived segment and folds it into `states` (one per view); returns its rows.
/// `gids` is the fold's scratch buffer of group ids.
fn fold_segment(
    seg: &Segment,
    p: &Pipeline,
    states: &mut [ViewState],
    gids: &mut Vec<usize>,
    progress: &indicatif::ProgressBar,
) -> Result<u64> {
    let mut rows = 0;
    // With row plans only, strings stay dictionaries: each distinct one is looked up once.
    let plans: Option<Vec<&RowPlan>> = p.views.iter().map(|d| d.row_plan()).collect();
    let batches = match plans {
        Some(_) => master::read_dictionary_strings(seg, &p.schema)?,
        None => master::read(seg, &p.schema)?,
    };
    for b in batches {
        rows += b.num_rows() as u64;
        for (k, (def, st)) in p.views.iter().zip(states.iter_mut()).enumerate() {
            match &plans {
                Some(plans) => st.fold_columns(plans[k], &b, gids)?,
                None => {
                    st.update(def, &b)?;
                }
            }
        }
    }
    progress.inc(seg.size);
    Ok(rows)
}

/// The event schema plus the hidden row-position column.
pub(super) fn with_row_col(events: &Schema) -> Arc<Schema> {
    let mut f: Vec<Field> = events.fields().iter().map(|f| f.as_ref().clone()).collect();
    f.push(Field::new(ROW_COL, DataType::Int64, false));
    Arc::new(Schema::new(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_cut_into_contiguous_runs_covering_them_all() {
        let table = crate::storage::Store::local("/nonexistent").unwrap();
        let segs: Vec<Segment> = (0..7)
            .map(|i| Segment {
                topic: "t".into(),
                partition: 0,
                from: i * 10,
                to: i * 10 + 10,
                table: table.clone(),
                key: format!("topic=t/partition=0/offsets={i}"),
                size: 100,
                modified_ms: 0,
                committed: true,
                owner: None,
            })
            .collect();
        for n in 1..10 {
            let runs = contiguous_runs(&segs, n);
            assert!(runs.len() <= n && !runs.is_empty(), "{n}");
            assert!(runs.iter().all(|r| !r.is_empty()), "{n}");
            let flat: Vec<i64> = runs.iter().flat_map(|r| r.iter().map(|s| s.from)).collect();
            assert_eq!(flat, (0..7).map(|i| i * 10).collect::<Vec<_>>(), "{n}");
        }
        // Equal sizes: runs differ by at most one segment.
        let lens: Vec<usize> = contiguous_runs(&segs, 3).iter().map(|r| r.len()).collect();
        assert!(
            lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1,
            "{lens:?}"
        );
        assert!(contiguous_runs(&[], 2).is_empty());
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
        let whole = fold_dataset_in_blocks(&p, one, &[], &hidden, 1 << 30, 1).unwrap();
        for (block, threads) in [(7, 1), (64, 2), (1000, 3), (1 << 30, 4), (13, 5)] {
            let d = fold_dataset_in_blocks(&p, one, &[], &hidden, block, threads).unwrap();
            let lines = |d: &Folded| {
                d.bad
                    .iter()
                    .map(|b| b["line"].as_u64().unwrap())
                    .collect::<Vec<_>>()
            };
            assert_eq!(lines(&d), lines(&whole), "block {block}, {threads} threads");
            assert_eq!(lines(&d), [6, 103, 200, 297, 394, 491]);
            assert_eq!(d.rows, whole.rows);
            // The same groups, in the same order (of first appearance), with the same totals.
            assert_eq!(
                table(&p, &d),
                table(&p, &whole),
                "block {block}, {threads} threads"
            );
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
    async fn ranges_ending_on_a_block_boundary_count_no_extra_line() {
        let p = pipeline().await;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.json");
        // Lines of one length, read one per block: every range ends exactly with a block.
        let line = |i: usize| format!("{{\"customer\": \"c{i}\", \"amount\": {i}}}\n");
        let mut text: String = (0..9).map(line).collect();
        text.push_str("{\"customer\": \"X\", \"amount\": \"b\"}\n");
        std::fs::write(&f, &text).unwrap();
        let hidden = indicatif::ProgressBar::hidden();
        for threads in 1..5 {
            let one = std::slice::from_ref(&f);
            let d = fold_dataset_in_blocks(&p, one, &[], &hidden, line(0).len(), threads).unwrap();
            assert_eq!(d.bad.len(), 1);
            assert_eq!(d.bad[0]["line"], 10, "{threads} threads");
            assert_eq!((d.rows, d.files[0].lines), (9, 10));
        }
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
