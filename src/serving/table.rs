//! A materialized view: the final rows of one view kept indexed by key and updated only for
//! the keys that change — what serving answers from.
//!
//! ```text
//!   batch state B (published, immutable) ─┐   a key's serving id (sid):
//!   speed state S (events after B's       ├─   its group in B, or |B| + its group in S
//!     offsets; deltas merged in)          ┘   (keys are stored once, in B and S themselves)
//!        │ for the keys a micro-batch changed: evaluate(B(k) ⊕ S(k)) → HAVING → SELECT
//!        ▼
//!   rows:   sid → the row as JSON (absent: HAVING dropped it)     a key lookup = hash + copy
//!   order:  (ORDER BY key bytes, sid)  when the view has ORDER BY  maintained per change
//!   columns: (column bytes, sid) per `order_by` column, built on first use, then maintained
//! ```
//!
//! A micro-batch costs what it changed: `S.merge(delta)` and one small evaluation over the
//! changed keys. A batch swap builds a new table off the request path ([`ServingTable::build`])
//! and the caller swaps it in whole. Reads never evaluate DataFusion expressions except
//! `explain`, which evaluates the one or few rows asked for.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::json::WriterBuilder;
use datafusion::arrow::json::writer::LineDelimited;
use datafusion::arrow::row::{RowConverter, SortField};
use hashbrown::{DefaultHashBuilder, HashTable};

use crate::error::{Error, Result};
use crate::storage::PublishedBatch;
use crate::view::{ViewDef, ViewState};

/// Groups evaluated at a time when a whole table is built.
const BUILD_CHUNK: usize = 65_536;

/// Rows as JSON lines with every column (a null is written `null`).
pub fn json_lines_explicit(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut w = WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, LineDelimited>(Vec::new());
    w.write(batch)?;
    w.finish()?;
    Ok(w.into_inner())
}

fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty())
}

/// Final rows by serving id, as JSON text in one buffer.
#[derive(Debug, Default)]
struct RowStore {
    buf: Vec<u8>,
    /// Per sid: the row's offset and length in `buf` (`None`: not in the view).
    at: Vec<Option<(u64, u32)>>,
    live: usize,
    /// The rows decoded into Arrow for SQL scans, by blocks of sids.
    arrow: Mutex<ArrowBlocks>,
}

/// Sids in one block of [`ArrowBlocks`] (a few in tests, so that views of a few keys span
/// blocks).
const ARROW_BLOCK: usize = if cfg!(test) { 8 } else { 4096 };

/// The rows decoded into Arrow, by blocks of [`ARROW_BLOCK`] sids, for the SQL scans of every
/// row: a block is decoded from its rows' JSON when a scan first needs it and kept until one
/// of its rows changes. A scan of a view that changed little since the last one decodes the
/// blocks that changed and shares the others (a full decode of 1M rows costs about 100 ms);
/// a view whose changes touch every block costs what a decode of every row costs. Built only
/// once a scan asks: the HTTP API never pays for it.
#[derive(Debug, Default)]
struct ArrowBlocks {
    /// Per block: its generation (a new one at every change of one of its rows) and its rows
    /// as decoded since, if they were.
    blocks: Vec<(u64, Option<RecordBatch>)>,
}

impl ArrowBlocks {
    /// A generation no block of any table had: a scan's decoded block is kept only by the
    /// block it was read from, unchanged — not by one of a table swapped in meanwhile.
    fn generation() -> u64 {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

/// A scan of every row, taken under the table's lock by [`ServingTable::arrow_scan`]: the
/// blocks decoded and unchanged since, and the JSON lines of the others, to decode after the
/// lock is released ([`ArrowScan::decode`]) and keep ([`ServingTable::keep_arrow`]).
#[derive(Debug)]
pub struct ArrowScan {
    /// Per block in sid order: its index, generation, and rows.
    blocks: Vec<(usize, u64, BlockRows)>,
}

/// A block's rows as a scan copied them.
#[derive(Debug)]
enum BlockRows {
    /// Decoded since its last change.
    Decoded(RecordBatch),
    /// Changed since: its JSON lines, to decode.
    Json(Vec<u8>),
}

/// A block a scan decoded: its index, the generation it was read at, its rows.
pub type DecodedBlock = (usize, u64, RecordBatch);

impl ArrowScan {
    /// Decodes the blocks that need it (with `decode`: JSON lines to rows); returns every
    /// block's rows in sid order, and the blocks decoded, for [`ServingTable::keep_arrow`].
    pub fn decode<E>(
        self,
        decode: impl Fn(&[u8]) -> std::result::Result<RecordBatch, E>,
    ) -> std::result::Result<(Vec<RecordBatch>, Vec<DecodedBlock>), E> {
        let (mut all, mut fresh) = (Vec::new(), Vec::new());
        for (b, generation, rows) in self.blocks {
            match rows {
                BlockRows::Decoded(batch) => all.push(batch),
                BlockRows::Json(json) => {
                    let batch = decode(&json)?;
                    all.push(batch.clone());
                    fresh.push((b, generation, batch));
                }
            }
        }
        Ok((all, fresh))
    }
}

impl RowStore {
    fn get(&self, sid: usize) -> Option<&[u8]> {
        let (off, len) = (*self.at.get(sid)?)?;
        Some(&self.buf[off as usize..off as usize + len as usize])
    }

    fn set(&mut self, sid: usize, row: Option<&[u8]>) {
        if sid >= self.at.len() {
            self.at.resize(sid + 1, None);
        }
        if let Some(old) = self.get(sid) {
            self.live -= old.len();
        }
        let arrow = self.arrow.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some((generation, rows)) = arrow.blocks.get_mut(sid / ARROW_BLOCK) {
            *generation = ArrowBlocks::generation();
            *rows = None;
        }
        self.at[sid] = row.map(|r| {
            let off = self.buf.len() as u64;
            self.buf.extend_from_slice(r);
            self.live += r.len();
            let len = u32::try_from(r.len()).expect("a row of the view is under 4 GiB of JSON");
            (off, len)
        });
        // Replaced rows leave garbage behind: copy the live rows once it dominates.
        if self.buf.len() > 2 * self.live + (1 << 20) {
            self.compact();
        }
    }

    fn compact(&mut self) {
        let mut buf = Vec::with_capacity(self.live + self.live / 4);
        for (off, len) in self.at.iter_mut().flatten() {
            let start = *off as usize;
            *off = buf.len() as u64;
            buf.extend_from_slice(&self.buf[start..start + *len as usize]);
        }
        self.buf = buf;
    }
}

/// An order over the rows, maintained as rows change: `(sort key bytes, sid)`.
#[derive(Debug, Default)]
struct OrderIndex {
    set: BTreeSet<(Box<[u8]>, u32)>,
    /// Each sid's sort key, to find its entry when the row changes.
    key_of: HashMap<u32, Box<[u8]>>,
    /// Rows whose sort value is NULL (column orders only): always listed last.
    nulls: BTreeSet<u32>,
}

impl OrderIndex {
    fn remove(&mut self, sid: u32) {
        if let Some(k) = self.key_of.remove(&sid) {
            self.set.remove(&(k, sid));
        }
        self.nulls.remove(&sid);
    }

    fn insert(&mut self, sid: u32, key: Option<&[u8]>) {
        match key {
            Some(k) => {
                let k: Box<[u8]> = k.into();
                self.set.insert((k.clone(), sid));
                self.key_of.insert(sid, k);
            }
            None => {
                self.nulls.insert(sid);
            }
        }
    }

    /// Sids in order; `desc` walks from the largest value, ties (equal values) in sid order,
    /// NULL values last either way.
    fn iter(&self, desc: bool) -> Box<dyn Iterator<Item = u32> + '_> {
        let nulls = self.nulls.iter().copied();
        if !desc {
            return Box::new(self.set.iter().map(|(_, s)| *s).chain(nulls));
        }
        let mut upper: Option<Box<[u8]>> = None;
        let groups = std::iter::from_fn(move || {
            let last = match &upper {
                None => self.set.iter().next_back(),
                Some(u) => self
                    .set
                    .range((Bound::Unbounded, Bound::Excluded((u.clone(), 0))))
                    .next_back(),
            }?;
            let value = last.0.clone();
            let tie: Vec<u32> = self
                .set
                .range((value.clone(), 0)..=(value.clone(), u32::MAX))
                .map(|(_, s)| *s)
                .collect();
            upper = Some(value);
            Some(tie)
        });
        Box::new(groups.flatten().chain(nulls))
    }
}

/// An order of the rows by one output column (for `?order_by=`).
struct ColumnIndex {
    conv: RowConverter,
    index: OrderIndex,
}

/// How a page of rows is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// The view's own order: its ORDER BY, else the order in which keys first appeared.
    View,
    /// By output column `col`.
    Column {
        /// The column's position in the view's output.
        col: usize,
        /// Largest first.
        desc: bool,
    },
}

/// What a change did to the rows: the sids now in the view with a new value, and the rows
/// (as JSON) that left it.
#[derive(Debug, Default)]
pub struct Change {
    /// Rows inserted or updated.
    pub upserts: Vec<usize>,
    /// Rows that left the view (HAVING no longer holds), as they were.
    pub removed: Vec<Vec<u8>>,
}

/// Request values (text; `null` for NULL) as one-row columns of `types`, or which one is not.
fn cast_values(values: &[&str], types: &[DataType]) -> Result<Vec<ArrayRef>> {
    use datafusion::arrow::array::StringArray;
    values
        .iter()
        .zip(types)
        .map(|(v, ty)| {
            let text: ArrayRef = Arc::new(StringArray::from(vec![(*v != "null").then_some(*v)]));
            datafusion::arrow::compute::cast_with_options(
                &text,
                ty,
                &datafusion::arrow::compute::CastOptions {
                    safe: false,
                    ..Default::default()
                },
            )
            .map_err(|_| Error::InvalidValue(format!("`{v}` is not a {ty}")))
        })
        .collect()
}

/// One view's final rows, maintained (see the module docs).
pub struct ServingTable {
    def: Arc<ViewDef>,
    batch: Option<Arc<PublishedBatch>>,
    speed: ViewState,
    speed_offsets: BTreeMap<i32, i64>,
    rows: RowStore,
    order: Option<OrderIndex>,
    columns: HashMap<usize, ColumnIndex>,
    in_view: usize,
    version: u64,
    /// A windowed view: its rows by key and window start, for time-range reads.
    times: Option<TimeIndex>,
    /// A view with a retention: windows that end before this are not served.
    horizon: Option<i64>,
}

/// A windowed view's rows by their other group keys, in their windows' order; and by window
/// start alone. A time range of one key is the key's id found by hash, then a binary search in
/// that key's windows (as many as its retention holds; new windows go at the end and retention
/// takes them from the front); a range of all keys is a range scan of the tree by start.
struct TimeIndex {
    /// Encodes the group keys other than the window (`None`: the window is the only key).
    others: Option<RowConverter>,
    /// Their types.
    other_types: Vec<DataType>,
    /// The other keys' encodings, each held once.
    ids: KeyIds,
    /// Per other keys' id: its windows as `(start, sid)`, in order.
    by_key: Vec<VecDeque<(i64, u32)>>,
    by_time: BTreeSet<(i64, u32)>,
    /// Per sid: its entry (other keys' id, window start).
    at: Vec<Option<(u32, i64)>>,
}

impl TimeIndex {
    fn new(def: &ViewDef) -> Result<Option<Self>> {
        let Some(w) = def.window() else {
            return Ok(None);
        };
        let types: Vec<DataType> = def
            .group_types()
            .into_iter()
            .enumerate()
            .filter(|(k, _)| *k != w.key)
            .map(|(_, t)| t)
            .collect();
        Ok(Some(Self {
            others: if types.is_empty() {
                None
            } else {
                Some(RowConverter::new(
                    types.iter().cloned().map(SortField::new).collect(),
                )?)
            },
            other_types: types,
            ids: KeyIds::default(),
            by_key: Default::default(),
            by_time: Default::default(),
            at: Vec::new(),
        }))
    }

    /// Sets row `sid`'s entry: its other keys' encoding and window start (`None`: a NULL
    /// window, in no time range).
    fn set(&mut self, sid: usize, entry: Option<(&[u8], i64)>) {
        if self.at.len() <= sid {
            self.at.resize(sid + 1, None);
        }
        let s = sid as u32;
        let new = entry.map(|(k, start)| (self.ids.acquire(k), start));
        if let Some((id, start)) = self.at[sid].take() {
            self.by_time.remove(&(start, s));
            let windows = &mut self.by_key[id as usize];
            if let Ok(i) = windows.binary_search(&(start, s)) {
                windows.remove(i);
            }
            self.ids.release(id);
        }
        if let Some((id, start)) = new {
            self.by_time.insert((start, s));
            let id = id as usize;
            if self.by_key.len() <= id {
                self.by_key.resize_with(id + 1, VecDeque::new);
            }
            let windows = &mut self.by_key[id];
            // Usually the key's newest window: at the end.
            let i = windows.partition_point(|e| *e < (start, s));
            windows.insert(i, (start, s));
            self.at[sid] = Some((id as u32, start));
        }
    }

    /// The rows whose window starts in `[from, to)`, in time order, that `keep`: of the other
    /// keys `key`, or of all keys.
    fn range(
        &self,
        key: Option<&[u8]>,
        from: i64,
        to: i64,
        keep: impl Fn(usize) -> bool,
    ) -> Vec<usize> {
        if from >= to {
            return Vec::new();
        }
        match key {
            Some(k) => match self.ids.find(k) {
                Some(id) => {
                    let windows = &self.by_key[id as usize];
                    let lo = windows.partition_point(|e| e.0 < from);
                    let hi = windows.partition_point(|e| e.0 < to).max(lo);
                    windows
                        .range(lo..hi)
                        .map(|e| e.1 as usize)
                        .filter(|&s| keep(s))
                        .collect()
                }
                None => Vec::new(),
            },
            None => self
                .by_time
                .range((from, 0)..(to, 0))
                .map(|e| e.1 as usize)
                .filter(|&s| keep(s))
                .collect(),
        }
    }
}

/// Byte strings behind small ids, each held once while some entry uses it (an id whose last
/// user leaves is given back, so the ids stay as many as the keys in the view).
#[derive(Default)]
struct KeyIds {
    table: HashTable<u32>,
    hasher: DefaultHashBuilder,
    keys: Vec<Box<[u8]>>,
    users: Vec<u32>,
    free: Vec<u32>,
}

impl KeyIds {
    fn find(&self, key: &[u8]) -> Option<u32> {
        self.find_hashed(self.hasher.hash_one(key), key)
    }

    fn find_hashed(&self, h: u64, key: &[u8]) -> Option<u32> {
        self.table
            .find(h, |&i| *self.keys[i as usize] == *key)
            .copied()
    }

    /// The id of `key`, with one more user.
    fn acquire(&mut self, key: &[u8]) -> u32 {
        let h = self.hasher.hash_one(key);
        if let Some(i) = self.find_hashed(h, key) {
            self.users[i as usize] += 1;
            return i;
        }
        let i = match self.free.pop() {
            Some(i) => {
                self.keys[i as usize] = key.into();
                self.users[i as usize] = 1;
                i
            }
            None => {
                self.keys.push(key.into());
                self.users.push(1);
                (self.keys.len() - 1) as u32
            }
        };
        let Self {
            table,
            hasher,
            keys,
            ..
        } = self;
        table.insert_unique(h, i, |&j| hasher.hash_one(&*keys[j as usize]));
        i
    }

    /// One user less of id `i`; the last one gives it back.
    fn release(&mut self, i: u32) {
        let users = &mut self.users[i as usize];
        *users -= 1;
        if *users > 0 {
            return;
        }
        let h = self.hasher.hash_one(&*self.keys[i as usize]);
        if let Ok(e) = self.table.find_entry(h, |&j| j == i) {
            e.remove();
        }
        self.keys[i as usize] = Box::default();
        self.free.push(i);
    }
}

/// How far a windowed row can be trusted, against the view's watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowState {
    /// The watermark has not passed the window's end: events for it are still expected.
    Open,
    /// The watermark has passed it: complete unless late events come.
    Closed,
    /// Closed, and the batch view holds every event of it (none has arrived since the batch
    /// run's offsets): exact.
    Exact,
}

impl WindowState {
    /// The name answers use.
    pub fn name(self) -> &'static str {
        match self {
            WindowState::Open => "open",
            WindowState::Closed => "closed",
            WindowState::Exact => "exact",
        }
    }
}

impl std::fmt::Debug for ServingTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingTable")
            .field("view", &self.def.name)
            .field("rows", &self.in_view)
            .field("version", &self.version)
            .finish()
    }
}

impl ServingTable {
    /// Builds the table for `batch ⊕ speed` (every row evaluated once, in chunks).
    pub fn build(
        def: &Arc<ViewDef>,
        batch: Option<Arc<PublishedBatch>>,
        speed: ViewState,
        speed_offsets: BTreeMap<i32, i64>,
    ) -> Result<Self> {
        let mut t = Self {
            def: Arc::clone(def),
            batch,
            speed,
            speed_offsets,
            rows: RowStore::default(),
            order: def.has_order().then(OrderIndex::default),
            columns: HashMap::new(),
            in_view: 0,
            version: 1,
            times: TimeIndex::new(def)?,
            horizon: None,
        };
        let nb = t.nb();
        let mut sids: Vec<usize> = (0..nb).collect();
        sids.extend((0..t.speed.len()).filter_map(|sg| {
            let sid = t.sid_of_speed(sg);
            (sid >= nb).then_some(sid)
        }));
        t.rows.at.reserve(sids.len());
        for chunk in sids.chunks(BUILD_CHUNK) {
            t.recompute(chunk)?;
        }
        if def.group_len() == 0 && sids.is_empty() {
            // A global aggregate over no rows is one row (SUM NULL, COUNT 0).
            let g = t.speed.group_of(&[]);
            let sid = t.sid_of_speed(g);
            t.recompute(&[sid])?;
        }
        Ok(t)
    }

    fn nb(&self) -> usize {
        self.batch.as_ref().map_or(0, |b| b.state.len())
    }

    fn sid_of_speed(&self, sg: usize) -> usize {
        let keys = self.speed.keys();
        let (h, key) = (keys.hash_of(sg), keys.key(sg));
        match self
            .batch
            .as_ref()
            .and_then(|b| b.state.keys().find_hashed(h, key))
        {
            Some(bg) => bg,
            None => self.nb() + sg,
        }
    }

    fn key(&self, sid: usize) -> &[u8] {
        match &self.batch {
            Some(b) if sid < b.state.len() => b.state.keys().key(sid),
            _ => self.speed.keys().key(sid - self.nb()),
        }
    }

    /// The row's batch group and speed group.
    fn parts(&self, sid: usize) -> (Option<usize>, Option<usize>) {
        let nb = self.nb();
        if sid < nb {
            let batch = self.batch.as_ref().expect("sids below nb are batch groups");
            let h = batch.state.keys().hash_of(sid);
            (Some(sid), self.speed.keys().find_hashed(h, self.key(sid)))
        } else {
            (None, Some(sid - nb))
        }
    }

    /// A state holding `batch ⊕ speed` for the rows `sids` (group i = sids[i]).
    fn merged_groups(&self, sids: &[usize]) -> ViewState {
        let mut m = self.speed.empty_like();
        for &sid in sids {
            let g = m.group_of(self.key(sid));
            let (bg, sg) = self.parts(sid);
            if let (Some(bg), Some(b)) = (bg, &self.batch) {
                m.merge_group(g, &b.state, bg);
            }
            if let Some(sg) = sg {
                m.merge_group(g, &self.speed, sg);
            }
        }
        m
    }

    /// The state of row `sid`'s window against the watermark `wm` (`None`: not a windowed
    /// row, or no watermark).
    pub fn window_state(&self, sid: usize, wm: Option<i64>) -> Option<WindowState> {
        let wm = wm?;
        let end = self.window_end(sid)?;
        if end > wm {
            return Some(WindowState::Open);
        }
        Some(match self.parts(sid) {
            (Some(_), None) => WindowState::Exact,
            _ => WindowState::Closed,
        })
    }

    /// Enters the rows `sids` (groups `0..` of `merged`) in the time index: their other keys
    /// and window start.
    fn note_windows(&mut self, merged: &ViewState, sids: &[usize]) -> Result<()> {
        let (Some(w), Some(ix)) = (self.def.window(), &mut self.times) else {
            return Ok(());
        };
        let gids: Vec<usize> = (0..sids.len()).collect();
        let cols = merged.keys().columns(&gids)?;
        let Some(starts) = w.starts_of(&cols) else {
            return Ok(());
        };
        let others: Vec<ArrayRef> = cols
            .iter()
            .enumerate()
            .filter(|(k, _)| *k != w.key)
            .map(|(_, c)| Arc::clone(c))
            .collect();
        let rows = match &ix.others {
            Some(conv) => Some(conv.convert_columns(&others)?),
            None => None,
        };
        for (pos, &sid) in sids.iter().enumerate() {
            let key: &[u8] = rows.as_ref().map_or(&[], |r| r.row(pos).data());
            ix.set(sid, starts.is_valid(pos).then(|| (key, starts.value(pos))));
        }
        Ok(())
    }

    /// Moves the retention horizon to `horizon` and drops the rows whose window ends before
    /// it: a range scan of the time index, so it costs the rows it drops.
    pub fn expire(&mut self, horizon: i64) -> Change {
        let mut change = Change::default();
        let (Some(w), Some(ix)) = (self.def.window(), &self.times) else {
            return change;
        };
        if self.horizon.is_some_and(|h| h >= horizon) {
            return change;
        }
        self.horizon = Some(horizon);
        let cut = horizon.saturating_sub(w.shape.size);
        let gone: Vec<usize> = ix.by_time.range(..(cut, 0)).map(|e| e.1 as usize).collect();
        for sid in gone {
            let s = sid as u32;
            if let Some(o) = &mut self.order {
                o.remove(s);
            }
            for c in self.columns.values_mut() {
                c.index.remove(s);
            }
            if let Some(row) = self.rows.get(sid) {
                change.removed.push(row.to_vec());
                self.in_view -= 1;
                self.rows.set(sid, None);
            }
            if let Some(ix) = &mut self.times {
                ix.set(sid, None);
            }
        }
        if !change.removed.is_empty() {
            self.version += 1;
        }
        change
    }

    /// The rows (in the view) whose window ends in `(after, upto]`: those that close when the
    /// watermark moves from `after` to `upto`, in time order. A range scan of the time index.
    pub fn closing(&self, after: i64, upto: i64) -> Vec<usize> {
        let (Some(w), Some(ix)) = (self.def.window(), &self.times) else {
            return Vec::new();
        };
        let size = w.shape.size;
        let from = after.saturating_sub(size).saturating_add(1);
        let to = upto.saturating_sub(size).saturating_add(1);
        ix.range(None, from, to, |s| self.rows.get(s).is_some())
    }

    /// The end of row `sid`'s window (µs), in a windowed view (`None`: a NULL window, or a
    /// row retention dropped).
    pub fn window_end(&self, sid: usize) -> Option<i64> {
        let start = self.times.as_ref()?.at.get(sid)?.as_ref()?.1;
        Some(start.saturating_add(self.def.window()?.shape.size))
    }

    /// Where the view's retention cuts (`None`: it does not, yet).
    pub fn horizon(&self) -> Option<i64> {
        self.horizon
    }

    /// Whether the view has a window (and so time-range reads).
    pub fn has_times(&self) -> bool {
        self.times.is_some()
    }

    /// The rows of a windowed view whose window starts in `[from, to)`, in time order, of the
    /// other group keys `key` (values as text, one per key column but the window) or of all:
    /// a range scan of the time index. Rows HAVING leaves out are not among them.
    pub fn time_range(
        &self,
        key: Option<&[&str]>,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Result<Vec<usize>> {
        let Some(ix) = &self.times else {
            return Err(Error::InvalidValue(format!(
                "view `{}` has no window() in GROUP BY, so no time ranges",
                self.def.name
            )));
        };
        let bytes = match (key, &ix.others) {
            (Some(values), Some(conv)) => {
                let cols = cast_values(values, &ix.other_types)?;
                Some(conv.convert_columns(&cols)?.row(0).as_ref().to_vec())
            }
            (Some(_), None) => {
                return Err(Error::InvalidValue(format!(
                    "view `{}` has no group key besides its window",
                    self.def.name
                )));
            }
            (None, _) => None,
        };
        Ok(ix.range(
            bytes.as_deref(),
            from.unwrap_or(i64::MIN),
            to.unwrap_or(i64::MAX),
            |s| self.rows.get(s).is_some(),
        ))
    }

    /// Evaluates the rows `sids` again and updates the store and the orders.
    fn recompute(&mut self, sids: &[usize]) -> Result<Change> {
        let merged = self.merged_groups(sids);
        self.note_windows(&merged, sids)?;
        let gids: Vec<usize> = (0..sids.len()).collect();
        let m = self.def.materialize(&merged, &gids)?;
        let text = json_lines_explicit(&m.rows)?;
        let mut new: Vec<Option<usize>> = vec![None; sids.len()];
        for (row, &pos) in m.picked.iter().enumerate() {
            new[pos as usize] = Some(row);
        }
        // A window beyond retention is not served, whatever part of it is still here.
        if let Some(h) = self.horizon {
            for (pos, &sid) in sids.iter().enumerate() {
                if self.window_end(sid).is_some_and(|end| end < h) {
                    new[pos] = None;
                }
            }
        }
        let rows: Vec<&[u8]> = lines(&text).collect();
        let col_keys: HashMap<usize, Vec<Option<Vec<u8>>>> = self
            .columns
            .iter()
            .map(|(&c, ix)| Ok((c, column_keys(&ix.conv, &m.rows, c)?)))
            .collect::<Result<_>>()?;
        let mut change = Change::default();
        for (pos, &sid) in sids.iter().enumerate() {
            let s = sid as u32;
            let was = self.rows.get(sid).is_some();
            if let Some(o) = &mut self.order {
                o.remove(s);
            }
            for ix in self.columns.values_mut() {
                ix.index.remove(s);
            }
            match new[pos] {
                Some(row) => {
                    if !was {
                        self.in_view += 1;
                    }
                    self.rows.set(sid, Some(rows[row]));
                    if let (Some(o), Some(keys)) = (&mut self.order, &m.order) {
                        o.insert(s, Some(&keys[row]));
                    }
                    for (c, ix) in &mut self.columns {
                        ix.index.insert(s, col_keys[c][row].as_deref());
                    }
                    change.upserts.push(sid);
                }
                None if was => {
                    change
                        .removed
                        .extend(self.rows.get(sid).map(<[u8]>::to_vec));
                    self.in_view -= 1;
                    self.rows.set(sid, None);
                }
                None => {}
            }
        }
        Ok(change)
    }

    /// Merges a speed-layer delta (the state of the events of one micro-batch) and updates
    /// the rows of the keys it touched. Costs what the delta holds.
    pub fn apply_delta(
        &mut self,
        delta: &ViewState,
        offsets: &BTreeMap<i32, i64>,
    ) -> Result<Change> {
        let touched = self.speed.merge(delta);
        let sids: Vec<usize> = touched
            .into_iter()
            .map(|sg| self.sid_of_speed(sg))
            .collect();
        let change = self.recompute(&sids)?;
        self.speed_offsets.clone_from(offsets);
        self.version += 1;
        Ok(change)
    }

    /// Builds (once) the order by output column `col`; later changes maintain it.
    pub fn ensure_column_order(&mut self, col: usize) -> Result<()> {
        if self.columns.contains_key(&col) {
            return Ok(());
        }
        let ty = self.def.output_schema().field(col).data_type().clone();
        let conv = RowConverter::new(vec![SortField::new(ty)])?;
        let mut index = OrderIndex::default();
        let sids: Vec<usize> = (0..self.rows.at.len())
            .filter(|&s| self.rows.get(s).is_some())
            .collect();
        for chunk in sids.chunks(BUILD_CHUNK) {
            let merged = self.merged_groups(chunk);
            let gids: Vec<usize> = (0..chunk.len()).collect();
            let m = self.def.materialize(&merged, &gids)?;
            let keys = column_keys(&conv, &m.rows, col)?;
            for (row, &pos) in m.picked.iter().enumerate() {
                index.insert(chunk[pos as usize] as u32, keys[row].as_deref());
            }
        }
        self.columns.insert(col, ColumnIndex { conv, index });
        Ok(())
    }

    /// True when the order by `col` exists (see [`ServingTable::ensure_column_order`]).
    pub fn has_column_order(&self, col: usize) -> bool {
        self.columns.contains_key(&col)
    }

    /// The rows visible in the view, in its order (its ORDER BY, else first appearance), with
    /// its own OFFSET/LIMIT applied.
    fn view_rows(&self) -> Box<dyn Iterator<Item = usize> + '_> {
        let (skip, fetch) = self.def.limit();
        let it: Box<dyn Iterator<Item = usize>> = match &self.order {
            Some(o) => Box::new(o.iter(false).map(|s| s as usize)),
            None => Box::new((0..self.rows.at.len()).filter(|&s| self.rows.get(s).is_some())),
        };
        Box::new(it.skip(skip).take(fetch.unwrap_or(usize::MAX)))
    }

    /// Rows in the view (after its own LIMIT).
    pub fn total(&self) -> usize {
        let (skip, fetch) = self.def.limit();
        self.in_view
            .saturating_sub(skip)
            .min(fetch.unwrap_or(usize::MAX))
    }

    /// A page of rows in `order`: `offset` rows skipped, at most `limit` returned (sids).
    /// With [`Order::Column`] the column order must exist unless the view has its own LIMIT
    /// (then its few rows are sorted here).
    pub fn page(&self, order: Order, offset: usize, limit: usize) -> Result<Vec<usize>> {
        let limited = self.def.limit() != (0, None);
        match order {
            Order::View => Ok(self.view_rows().skip(offset).take(limit).collect()),
            Order::Column { col, desc } if limited => {
                let mut rows: Vec<usize> = self.view_rows().collect();
                let conv = RowConverter::new(vec![SortField::new(
                    self.def.output_schema().field(col).data_type().clone(),
                )])?;
                let merged = self.merged_groups(&rows);
                let gids: Vec<usize> = (0..rows.len()).collect();
                let m = self.def.materialize(&merged, &gids)?;
                let keys = column_keys(&conv, &m.rows, col)?;
                let mut by: HashMap<usize, Option<Vec<u8>>> = HashMap::new();
                for (row, &pos) in m.picked.iter().enumerate() {
                    by.insert(rows[pos as usize], keys[row].clone());
                }
                rows.sort_by(|a, b| {
                    let (x, y) = (&by[a], &by[b]);
                    match (x, y) {
                        (None, None) => std::cmp::Ordering::Equal,
                        (None, _) => std::cmp::Ordering::Greater,
                        (_, None) => std::cmp::Ordering::Less,
                        (Some(x), Some(y)) if desc => y.cmp(x),
                        (Some(x), Some(y)) => x.cmp(y),
                    }
                });
                Ok(rows.into_iter().skip(offset).take(limit).collect())
            }
            Order::Column { col, desc } => {
                let ix = self.columns.get(&col).ok_or_else(|| {
                    Error::Internal(format!("no order by column {col} was built"))
                })?;
                Ok(ix
                    .index
                    .iter(desc)
                    .skip(offset)
                    .take(limit)
                    .map(|s| s as usize)
                    .collect())
            }
        }
    }

    /// The serving id of `key` (key bytes), whether or not its row is in the view.
    pub fn sid(&self, key: &[u8]) -> Option<usize> {
        match self.batch.as_ref().and_then(|b| b.state.keys().find(key)) {
            Some(bg) => Some(bg),
            None => Some(self.nb() + self.speed.keys().find(key)?),
        }
    }

    /// The row of `key` (key bytes), if the key is in the view.
    pub fn lookup(&self, key: &[u8]) -> Option<usize> {
        let sid = self.sid(key)?;
        self.rows.get(sid)?;
        if self.def.limit() != (0, None) {
            // Only a key among the view's few rows is in it.
            return self.view_rows().any(|s| s == sid).then_some(sid);
        }
        Some(sid)
    }

    /// The row `sid` as JSON (every column, nulls as `null`).
    pub fn row_json(&self, sid: usize) -> Option<&[u8]> {
        self.rows.get(sid)
    }

    /// The batch part and the speed part of rows `sids` (each as the view's columns, a part
    /// that has no events for the key evaluated over none), as JSON lines.
    pub fn explain(&self, sids: &[usize]) -> Result<(Vec<u8>, Vec<u8>)> {
        let mut b = self.speed.empty_like();
        let mut s = self.speed.empty_like();
        for &sid in sids {
            let key = self.key(sid);
            let (gb, gs) = (b.group_of(key), s.group_of(key));
            let (bg, sg) = self.parts(sid);
            if let (Some(bg), Some(batch)) = (bg, &self.batch) {
                b.merge_group(gb, &batch.state, bg);
            }
            if let Some(sg) = sg {
                s.merge_group(gs, &self.speed, sg);
            }
        }
        let gids: Vec<usize> = (0..sids.len()).collect();
        Ok((
            json_lines_explicit(&self.def.project_parts(&b, &gids)?)?,
            json_lines_explicit(&self.def.project_parts(&s, &gids)?)?,
        ))
    }

    /// The view's key bytes of request values (one per GROUP BY column, as text), or why not.
    pub fn encode_key(&self, values: &[&str]) -> Result<Vec<u8>> {
        let cols = cast_values(values, self.speed.keys().types())?;
        Ok(self.speed.keys().encode(&cols)?.remove(0))
    }

    /// The view.
    pub fn def(&self) -> &Arc<ViewDef> {
        &self.def
    }

    /// The batch view in service.
    pub fn batch(&self) -> Option<&Arc<PublishedBatch>> {
        self.batch.as_ref()
    }

    /// The speed part.
    pub fn speed(&self) -> &ViewState {
        &self.speed
    }

    /// Where the speed part is, per partition.
    pub fn speed_offsets(&self) -> &BTreeMap<i32, i64> {
        &self.speed_offsets
    }

    /// Increases with every change.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// `batch ⊕ speed` as one state (a full copy: for `verify` and the files, not requests).
    pub fn merged(&self) -> ViewState {
        let mut m = self.speed.empty_like();
        if let Some(b) = &self.batch {
            m.merge(&b.state);
        }
        m.merge(&self.speed);
        m
    }

    /// Every row in the view's order, as JSON lines (for `serving_view.json/`).
    pub fn all_rows_json(&self) -> Vec<u8> {
        self.rows_json_lines(self.view_rows())
    }

    /// Every row, for an SQL scan of the view, from its Arrow blocks (its rows decoded by
    /// blocks of sids, each decoded again only once one of its rows changed); `None` for a
    /// view with an ORDER BY, OFFSET or LIMIT of its own, whose rows are read in its order
    /// ([`Self::all_rows_json`]).
    pub fn arrow_scan(&self) -> Option<ArrowScan> {
        if self.order.is_some() || self.def.limit() != (0, None) {
            return None;
        }
        let mut arrow = self.rows.arrow.lock().unwrap_or_else(|e| e.into_inner());
        let n = self.rows.at.len().div_ceil(ARROW_BLOCK);
        if arrow.blocks.len() < n {
            arrow
                .blocks
                .resize_with(n, || (ArrowBlocks::generation(), None));
        }
        let blocks = arrow.blocks[..n]
            .iter()
            .enumerate()
            .map(|(b, (generation, rows))| {
                let rows = match rows {
                    Some(batch) => BlockRows::Decoded(batch.clone()),
                    None => {
                        let end = ((b + 1) * ARROW_BLOCK).min(self.rows.at.len());
                        BlockRows::Json(self.rows_json_lines(b * ARROW_BLOCK..end))
                    }
                };
                (b, *generation, rows)
            })
            .collect();
        Some(ArrowScan { blocks })
    }

    /// Keeps the blocks a scan decoded, those whose rows have not changed since.
    pub fn keep_arrow(&self, decoded: Vec<DecodedBlock>) {
        let mut arrow = self.rows.arrow.lock().unwrap_or_else(|e| e.into_inner());
        for (b, generation, batch) in decoded {
            if let Some((g, rows)) = arrow.blocks.get_mut(b)
                && *g == generation
            {
                *rows = Some(batch);
            }
        }
    }

    /// The rows `sids` (those in the view) as JSON lines.
    pub fn rows_json_lines(&self, sids: impl IntoIterator<Item = usize>) -> Vec<u8> {
        let mut out = Vec::new();
        for sid in sids {
            if let Some(r) = self.rows.get(sid) {
                out.extend_from_slice(r);
                out.push(b'\n');
            }
        }
        out
    }
}

/// Column `col` of `rows` as comparable bytes per row (`None` for NULL).
fn column_keys(
    conv: &RowConverter,
    rows: &RecordBatch,
    col: usize,
) -> Result<Vec<Option<Vec<u8>>>> {
    let c = rows.column(col);
    let enc = conv.convert_columns(std::slice::from_ref(c))?;
    Ok((0..rows.num_rows())
        .map(|i| c.is_valid(i).then(|| enc.row(i).as_ref().to_vec()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_fields;
    use crate::event::{EventDecoder, EventSchema};
    use crate::storage::Manifest;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const VIEWS: [&str; 5] = [
        "SELECT customer, SUM(amount) AS t FROM events GROUP BY customer HAVING t > 50",
        "SELECT customer, SUM(amount) AS t, COUNT(*) AS n FROM events GROUP BY customer \
         ORDER BY t DESC, customer LIMIT 5",
        "SELECT customer, MIN(amount) AS lo, MAX(amount) AS hi, AVG(amount) AS a FROM events \
         WHERE amount > -20 GROUP BY customer HAVING MAX(amount) - MIN(amount) > 10 ORDER BY customer",
        "SELECT COUNT(*) AS n, SUM(amount) AS s FROM events",
        "SELECT customer, SUM(amount) AS t FROM events GROUP BY customer ORDER BY t, customer LIMIT 3 OFFSET 2",
    ];

    /// The time index's key ids: one per key in use, found again, given back with the last
    /// window of a key, and reused; a range names the key's windows in time order.
    #[test]
    fn a_key_id_lives_as_long_as_the_keys_windows() {
        let mut ids = KeyIds::default();
        let (ali, sara) = (ids.acquire(b"ali"), ids.acquire(b"sara"));
        assert_ne!(ali, sara);
        assert_eq!(ids.acquire(b"ali"), ali);
        assert_eq!(ids.find(b"ali"), Some(ali));
        ids.release(ali);
        assert_eq!(ids.find(b"ali"), Some(ali), "one window of ali is left");
        ids.release(ali);
        assert_eq!(ids.find(b"ali"), None);
        let mounir = ids.acquire(b"mounir");
        assert_eq!(mounir, ali, "the id is reused");
        assert_eq!(ids.find(b"mounir"), Some(mounir));
        assert_eq!(ids.find(b"sara"), Some(sara));

        let mut ix = TimeIndex {
            others: None,
            other_types: Vec::new(),
            ids: KeyIds::default(),
            by_key: Default::default(),
            by_time: Default::default(),
            at: Vec::new(),
        };
        for (sid, key, start) in [(0, "b", 30), (1, "a", 20), (2, "a", 10), (3, "b", 10)] {
            ix.set(sid, Some((key.as_bytes(), start)));
        }
        let all = |_| true;
        assert_eq!(ix.range(Some(b"a"), 0, 100, all), [2, 1]);
        assert_eq!(ix.range(Some(b"b"), 10, 30, all), [3]);
        assert_eq!(ix.range(Some(b"b"), 10, 31, |s| s != 3), [0]);
        assert_eq!(ix.range(None, 10, 21, all), [2, 3, 1]);
        // Row 2 moves to key `b`; row 1 leaves: `a` has no window left.
        ix.set(2, Some((b"b", 15)));
        ix.set(1, None);
        assert_eq!(ix.range(Some(b"a"), 0, 100, all), Vec::<usize>::new());
        assert_eq!(ix.ids.find(b"a"), None);
        assert_eq!(ix.range(Some(b"b"), 0, 100, all), [3, 2, 0]);
        // A late window goes between the others; retention takes the oldest first.
        ix.set(4, Some((b"b", 12)));
        assert_eq!(ix.range(Some(b"b"), 0, 100, all), [3, 4, 2, 0]);
        ix.set(3, None);
        assert_eq!(ix.range(Some(b"b"), 11, 30, all), [4, 2]);
    }

    fn published(def: &ViewDef, state: ViewState) -> Arc<PublishedBatch> {
        Arc::new(PublishedBatch {
            manifest: Manifest {
                run_id: "r".into(),
                view: def.name.clone(),
                sql: def.sql.clone(),
                files: Vec::new(),
                rows: 0,
                bad: 0,
                segments: 0,
                table_version: None,
                offsets: Default::default(),
                engine: "datafusion".into(),
                started_at: "2026-01-01T00:00:00Z".into(),
                duration_ms: 0,
            },
            state,
        })
    }

    /// The view recomputed from scratch: DataFusion's post-aggregate steps over one state of
    /// every event, as JSON lines.
    fn truth(def: &ViewDef, all: &ViewState) -> Vec<String> {
        let rows = def.finalize(all).unwrap();
        String::from_utf8(json_lines_explicit(&rows).unwrap())
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    fn decode_rows(def: &ViewDef, json: &[u8]) -> Result<RecordBatch> {
        let schema = def.output_schema();
        let mut d =
            datafusion::arrow::json::ReaderBuilder::new(Arc::clone(&schema)).build_decoder()?;
        d.decode(json)?;
        Ok(d.flush()?.unwrap_or_else(|| RecordBatch::new_empty(schema)))
    }

    fn lines_of(b: &RecordBatch) -> Vec<String> {
        String::from_utf8(json_lines_explicit(b).unwrap())
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    fn served(t: &ServingTable) -> Vec<String> {
        t.page(Order::View, 0, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|s| String::from_utf8(t.row_json(s).unwrap().to_vec()).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn the_maintained_view_equals_the_view_recomputed_after_every_step() {
        let schema = EventSchema::new(default_fields()).unwrap();
        for sql in VIEWS {
            let def = Arc::new(ViewDef::compile("v", sql, "events", &schema).await.unwrap());
            for seed in 0..12u64 {
                let mut rng = StdRng::seed_from_u64(seed);
                let mut all = def.new_state();
                let mut table =
                    ServingTable::build(&def, None, def.new_state(), BTreeMap::new()).unwrap();
                let by_total = def.output_schema().index_of("t").ok();
                for step in 0..40 {
                    if rng.random_bool(0.2) {
                        // A batch swap: the batch view now covers everything so far.
                        table = ServingTable::build(
                            &def,
                            Some(published(&def, all.clone())),
                            def.new_state(),
                            BTreeMap::new(),
                        )
                        .unwrap();
                    } else {
                        let mut d = EventDecoder::new(&schema);
                        for _ in 0..rng.random_range(1..30) {
                            let c = rng.random_range(0..40);
                            let a = rng.random_range(-30..100);
                            d.push(format!(r#"{{"customer":"c{c}","amount":{a}}}"#).as_bytes())
                                .unwrap();
                        }
                        let events = d.finish();
                        let mut delta = def.new_state();
                        delta.update(&def, &events).unwrap();
                        all.update(&def, &events).unwrap();
                        table.apply_delta(&delta, &BTreeMap::new()).unwrap();
                    }
                    let want = truth(&def, &all);
                    assert_eq!(served(&table), want, "{sql} seed {seed} step {step}");
                    // An SQL scan's rows from the Arrow blocks: the same rows; a second scan
                    // with nothing changed in between decodes no block.
                    if let Some(scan) = table.arrow_scan() {
                        let (rows, decoded) = scan.decode(|json| decode_rows(&def, json)).unwrap();
                        table.keep_arrow(decoded);
                        let got: Vec<String> = rows.iter().flat_map(lines_of).collect();
                        assert_eq!(got, want, "{sql} seed {seed} step {step}: arrow scan");
                        let again = table.arrow_scan().unwrap();
                        let (_, decoded) = again.decode(|json| decode_rows(&def, json)).unwrap();
                        assert!(decoded.is_empty(), "{sql} seed {seed} step {step}");
                    }
                    assert_eq!(table.total(), want.len(), "{sql} seed {seed} step {step}");
                    // Every key looked up answers its row, or nothing when it is not in the view.
                    if def.group_len() == 1 {
                        for c in 0..40 {
                            let key = format!("c{c}");
                            let got = table.lookup(&table.encode_key(&[&key]).unwrap()).map(|s| {
                                String::from_utf8(table.row_json(s).unwrap().to_vec()).unwrap()
                            });
                            let expect = want
                                .iter()
                                .find(|r| r.contains(&format!("\"customer\":\"{key}\"")))
                                .cloned();
                            assert_eq!(got, expect, "{sql} seed {seed} step {step} key {key}");
                        }
                    }
                    // The order by a column, built once, then maintained: same values in order.
                    if let Some(c) = by_total {
                        table.ensure_column_order(c).unwrap();
                        let value = |r: &str| -> i64 {
                            serde_json::from_str::<serde_json::Value>(r).unwrap()["t"]
                                .as_i64()
                                .unwrap()
                        };
                        let got: Vec<i64> = table
                            .page(Order::Column { col: c, desc: true }, 0, usize::MAX)
                            .unwrap()
                            .into_iter()
                            .map(|s| {
                                value(std::str::from_utf8(table.row_json(s).unwrap()).unwrap())
                            })
                            .collect();
                        let mut expect: Vec<i64> = want.iter().map(|r| value(r)).collect();
                        expect.sort_unstable_by(|a, b| b.cmp(a));
                        assert_eq!(
                            got, expect,
                            "{sql} seed {seed} step {step}: order_by t desc"
                        );
                    }
                }
            }
        }
    }

    #[tokio::test]
    async fn explain_splits_a_row_into_its_batch_and_speed_parts() {
        let schema = EventSchema::new(default_fields()).unwrap();
        let def = Arc::new(
            ViewDef::compile(
                "v",
                "SELECT customer, SUM(amount) AS t FROM events GROUP BY customer",
                "events",
                &schema,
            )
            .await
            .unwrap(),
        );
        let state = |rows: &[&str]| {
            let mut d = EventDecoder::new(&schema);
            for r in rows {
                d.push(r.as_bytes()).unwrap();
            }
            let mut s = def.new_state();
            s.update(&def, &d.finish()).unwrap();
            s
        };
        let b = state(&[
            r#"{"customer":"Ali","amount":320}"#,
            r#"{"customer":"Sara","amount":140}"#,
        ]);
        let s = state(&[
            r#"{"customer":"Ali","amount":80}"#,
            r#"{"customer":"Nour","amount":5}"#,
        ]);
        let t = ServingTable::build(&def, Some(published(&def, b)), s, BTreeMap::new()).unwrap();
        let ali = t.lookup(&t.encode_key(&["Ali"]).unwrap()).unwrap();
        let nour = t.lookup(&t.encode_key(&["Nour"]).unwrap()).unwrap();
        assert_eq!(t.row_json(ali).unwrap(), br#"{"customer":"Ali","t":400}"#);
        let (bp, sp) = t.explain(&[ali, nour]).unwrap();
        assert_eq!(
            String::from_utf8(bp).unwrap(),
            "{\"customer\":\"Ali\",\"t\":320}\n{\"customer\":\"Nour\",\"t\":null}\n"
        );
        assert_eq!(
            String::from_utf8(sp).unwrap(),
            "{\"customer\":\"Ali\",\"t\":80}\n{\"customer\":\"Nour\",\"t\":5}\n"
        );
    }
}
