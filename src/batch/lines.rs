//! The JSON-lines files of the master dataset, folded on every core. Each file is cut into one
//! byte range per core, at line boundaries; each core reads its range in blocks of whole lines
//! and folds every record into its own states, with nothing shared until its range is done.
//! The ranges' states are then merged in file order — groups keep the order in which they first
//! appear, as in one pass — and each rejected line gets its number from the lines of the ranges
//! before it.
//!
//! ```text
//!   file:   [ range 0 ............ \n][ range 1 ............ \n]      one per core
//!             read block, fold, …       read block, fold, …          no locks, no barriers
//!             states 0                  states 1
//!   merge:  states 0 ⊕ states 1 (file order); bad lines: range 1's numbers + range 0's lines
//! ```

use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::Path;

use crate::config::Pipeline;
use crate::error::{IoContext, Result};
use crate::event::{EventDecoder, RowDecoder};
use crate::view::{PendingRows, RowPlan, ViewState};

/// Rows per decoded record batch, for views folded through their expressions (folded while it
/// is in the cache).
const BATCH_ROWS: usize = 16_384;

/// Records decoded before they are folded, for views folded record by record: enough for
/// their key lookups to overlap, few enough to stay in the cache.
const PENDING_ROWS: usize = 256;

/// What one range (or a whole file) of JSON lines folds into.
pub(super) struct Lines {
    /// Per view, the state of the range's events.
    pub states: Vec<ViewState>,
    /// Events folded.
    pub rows: u64,
    /// Non-blank lines.
    pub lines: u64,
    /// Lines, blank ones included (what line numbers count).
    pub physical_lines: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Rejected lines: (1-based line number, reason, raw line).
    pub bad: Vec<(u64, String, Vec<u8>)>,
}

/// Folds the JSON-lines file `path`, its ranges on up to `threads` cores, read `block` bytes at
/// a time; `progress` counts the bytes.
pub(super) fn fold_file(
    p: &Pipeline,
    path: &Path,
    threads: usize,
    block: usize,
    progress: &indicatif::ProgressBar,
) -> Result<Lines> {
    let ranges = split(path, threads).at(path)?;
    let folded: Vec<Result<Lines>> = std::thread::scope(|s| {
        let handles: Vec<_> = ranges
            .iter()
            .map(|r| s.spawn(move || fold_range(p, path, r.clone(), block, progress)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("decoder thread panicked"))
            .collect()
    });
    let mut all = Folder::new(p).out;
    for range in folded {
        let range = range?;
        let base = all.physical_lines;
        all.bad.extend(
            range
                .bad
                .into_iter()
                .map(|(line, reason, raw)| (base + line, reason, raw)),
        );
        all.physical_lines += range.physical_lines;
        all.lines += range.lines;
        all.rows += range.rows;
        all.bytes += range.bytes;
        // In file order: groups keep the order of their first appearance.
        for (st, r) in all.states.iter_mut().zip(&range.states) {
            st.merge(r);
        }
    }
    Ok(all)
}

/// Cuts the file into about `n` byte ranges, each starting after a newline.
fn split(path: &Path, n: usize) -> std::io::Result<Vec<Range<u64>>> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut starts = vec![0];
    for k in 1..n.max(1) as u64 {
        let at = line_start_from(&mut file, len * k / n as u64)?;
        if at > *starts.last().expect("one start") && at < len {
            starts.push(at);
        }
    }
    let ends = starts.iter().skip(1).copied().chain([len]);
    Ok(starts.iter().zip(ends).map(|(&a, b)| a..b).collect())
}

/// The start of the first line that begins at or after `at` (the file's length when none).
fn line_start_from(file: &mut std::fs::File, at: u64) -> std::io::Result<u64> {
    if at == 0 {
        return Ok(0);
    }
    // A line starts at `at` when the byte before it ends one.
    file.seek(SeekFrom::Start(at - 1))?;
    let mut buf = vec![0; 64 << 10];
    let mut pos = at - 1;
    loop {
        let got = file.read(&mut buf)?;
        if got == 0 {
            return Ok(pos);
        }
        if let Some(i) = memchr::memchr(b'\n', &buf[..got]) {
            return Ok(pos + i as u64 + 1);
        }
        pos += got as u64;
    }
}

/// Folds the lines of `range` of the file, read `block` bytes at a time.
fn fold_range(
    p: &Pipeline,
    path: &Path,
    range: Range<u64>,
    block: usize,
    progress: &indicatif::ProgressBar,
) -> Result<Lines> {
    let mut file = std::fs::File::open(path).at(path)?;
    file.seek(SeekFrom::Start(range.start)).at(path)?;
    let mut file = file.take(range.end - range.start);
    let mut folder = Folder::new(p);
    let (mut buf, mut carry) = (Vec::new(), Vec::new());
    loop {
        let eof = read_block(&mut file, block, &mut buf, &mut carry).at(path)?;
        folder.lines(&buf)?;
        progress.inc(buf.len() as u64);
        if eof {
            break;
        }
    }
    folder.finish()
}

/// Reads the next block of whole lines into `buf`: `carry` (the unfinished line of the previous
/// block) and then about `block` bytes, up to the last newline; what follows it becomes the new
/// `carry`. Returns true at the end of the input (then `buf` holds everything left).
fn read_block(
    input: &mut impl Read,
    block: usize,
    buf: &mut Vec<u8>,
    carry: &mut Vec<u8>,
) -> std::io::Result<bool> {
    buf.clear();
    buf.append(carry);
    loop {
        let want = block.max(1);
        let got = input.by_ref().take(want as u64).read_to_end(buf)?;
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

/// Decodes lines and folds them into fresh states, one per view: record by record when every
/// view has a row plan (the usual view), else a block of decoded events at a time.
struct Folder<'p> {
    p: &'p Pipeline,
    plans: Option<Vec<&'p RowPlan>>,
    decoder: EventDecoder<'p>,
    rows: RowDecoder<'p>,
    pending: Vec<PendingRows>,
    out: Lines,
}

impl<'p> Folder<'p> {
    fn new(p: &'p Pipeline) -> Self {
        Self {
            p,
            plans: p.views.iter().map(|d| d.row_plan()).collect(),
            decoder: EventDecoder::with_capacity(&p.schema, BATCH_ROWS),
            rows: RowDecoder::new(&p.schema),
            pending: p.views.iter().map(|_| PendingRows::default()).collect(),
            out: Lines {
                states: p.views.iter().map(|d| d.new_state()).collect(),
                rows: 0,
                lines: 0,
                physical_lines: 0,
                bytes: 0,
                bad: Vec::new(),
            },
        }
    }

    /// Decodes and folds `data`, whole lines (the last one may lack its newline).
    fn lines(&mut self, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            // The end of a range that ended with its last block: no line (not an empty one).
            return Ok(());
        }
        self.out.bytes += data.len() as u64;
        let mut start = 0;
        let ends =
            memchr::memchr_iter(b'\n', data).chain((!data.ends_with(b"\n")).then_some(data.len()));
        for end in ends {
            let line = &data[start..end];
            start = end + 1;
            self.out.physical_lines += 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.out.lines += 1;
            let decoded = match &self.plans {
                Some(plans) => self.rows.decode(line, |row| {
                    for (plan, p) in plans.iter().zip(&mut self.pending) {
                        p.push(plan, row);
                    }
                }),
                None => self.decoder.push(line),
            };
            match decoded {
                Err(e) => self
                    .out
                    .bad
                    .push((self.out.physical_lines, e.0, line.to_vec())),
                Ok(()) if self.decoder.len() >= BATCH_ROWS => self.fold_decoded()?,
                Ok(())
                    if self
                        .pending
                        .first()
                        .is_some_and(|p| p.len() >= PENDING_ROWS) =>
                {
                    self.fold_pending()
                }
                Ok(()) => {}
            }
        }
        Ok(())
    }

    /// Folds the events decoded into Arrow so far.
    fn fold_decoded(&mut self) -> Result<()> {
        let b = self.decoder.finish();
        self.out.rows += b.num_rows() as u64;
        for (def, st) in self.p.views.iter().zip(&mut self.out.states) {
            st.update(def, &b)?;
        }
        Ok(())
    }

    /// Folds the records waiting for their views' row plans.
    fn fold_pending(&mut self) {
        let Some(plans) = &self.plans else { return };
        self.out.rows += self.pending.first().map_or(0, |p| p.len() as u64);
        let states = self.out.states.iter_mut().zip(&mut self.pending);
        for ((st, rows), plan) in states.zip(plans) {
            st.fold_rows(plan, rows);
        }
    }

    fn finish(mut self) -> Result<Lines> {
        if !self.decoder.is_empty() {
            self.fold_decoded()?;
        }
        self.fold_pending();
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_start_after_newlines_and_cover_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.json");
        let data = b"a\nbb\nccc\ndddd\n\n\neeeee";
        std::fs::write(&f, data).unwrap();
        for n in 1..9 {
            let ranges = split(&f, n).unwrap();
            assert_eq!(ranges.first().unwrap().start, 0);
            assert_eq!(ranges.last().unwrap().end, data.len() as u64);
            for w in ranges.windows(2) {
                assert_eq!(w[0].end, w[1].start);
                assert_eq!(data[w[1].start as usize - 1], b'\n', "{n}: {ranges:?}");
            }
            assert!(ranges.iter().all(|r| r.start < r.end), "{n}: {ranges:?}");
        }
    }
}
