//! The serving layer: the final view = the batch view's state ⊕ the speed layer's state over
//! the events *after* the batch view's offsets.
//!
//! ```text
//!   batch_view/_state.json + _manifest.json (offsets per partition) ─┐
//!                                                                   ├─► merge ─► finalize
//!   speed state over the events after those offsets              ───┘   (HAVING, SELECT,
//!     live (deltas from the speed layer, `run`) or from the archived      ORDER BY, LIMIT)
//!     segments after the batch's offsets (`serve`, `verify`)
//! ```
//!
//! The merge is on aggregate *state*, never on final values: HAVING runs after it, AVG merges
//! as sum and count. Every answer says what it is made of ([`Freshness`], `explain`).
//!
//! Serving is a key-value store of the final view: [`table::ServingTable`] keeps the final
//! rows indexed by key and updates only the keys a micro-batch changed, so a key lookup costs a
//! hash lookup and the copy of one row whatever the view's size. A new batch view (or a full
//! re-read of the files) builds a new table off the request path and swaps it in whole;
//! readers of the old one finish undisturbed.
//!
//! - [`table`]: the materialized view; [`http`]: the HTTP API, the live dashboard and
//!   `/metrics`; [`openapi`]: its description; [`files`]: `lambdaflow serve`, following what
//!   the layers write.

pub mod files;
pub mod gate;
pub mod group;
pub mod http;
pub mod openapi;
pub mod sql;
pub mod table;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use datafusion::arrow::record_batch::RecordBatch;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::error::Result;
use crate::speed::{EventTime, Snapshot};
use crate::storage::{self, Layout};
use crate::view::{ViewDef, ViewState};
pub use files::{from_files, serve_files, serve_once};
use table::{Change, ServingTable};

/// The batch scheduler's status (`lambdaflow run`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct BatchStatus {
    /// A run is in progress.
    pub running: bool,
    /// Runs finished (published or failed) since start.
    pub runs: u64,
    /// Runs that failed since start.
    pub failures: u64,
    /// Why the last run failed (the previous view stayed in service).
    pub last_error: Option<String>,
    /// The last successful run.
    pub last_run_id: Option<String>,
    /// How long the last run took.
    pub last_duration_ms: Option<u64>,
    /// When the next scheduled run starts (RFC 3339; `None`: on demand only, or running).
    pub next_run_at: Option<String>,
}

/// The fence of [`updating`] and [`reading`].
static UPDATES: RwLock<()> = RwLock::new(());

/// Holds the fence between updates of the served views and SQL queries for an update of views
/// in place; never across `.await`. An update that changes views in place (a micro-batch's
/// deltas into every view, retention cuts) holds it for writing across all of them; a query
/// copies the rows of every table it reads while holding it for reading ([`reading`],
/// [`sql::tables::SnapshotPlanner`]), so a join of two views, or of a view with itself, reads
/// one version of both. A swap to new views (a batch run, a reset) needs no fence: it
/// publishes a new [`ServingState`], and a query reads one state.
pub fn updating() -> RwLockWriteGuard<'static, ()> {
    UPDATES.write().unwrap_or_else(|e| e.into_inner())
}

/// Holds the fence for a query's copy of the rows it reads (see [`updating`]).
pub fn reading() -> RwLockReadGuard<'static, ()> {
    UPDATES.read().unwrap_or_else(|e| e.into_inner())
}

/// Everything the HTTP API answers from. Cheap to clone and replace: the views are shared
/// handles, each with its own lock.
#[derive(Debug, Clone, Default)]
pub struct ServingState {
    /// Increases with every change of what is served.
    pub version: u64,
    /// Per view (config order).
    pub views: Vec<Arc<ServedView>>,
    /// The speed layer's last status (`lambdaflow run` only).
    pub speed: Option<Arc<Snapshot>>,
    /// The batch scheduler (`lambdaflow run` only).
    pub batch: BatchStatus,
    /// True in `lambdaflow run` (live speed state); false when serving from the files.
    pub live: bool,
    /// Serving from the files (`serve`, and `run` in a consumer group): each view's event-time
    /// progress as they record it (`run` alone has the live speed layer's, in `speed`).
    pub event_time: BTreeMap<String, EventTime>,
}

/// Merges the layers' states of one view: `batch ⊕ speed`.
pub fn merge(def: &ViewDef, batch: Option<&ViewState>, speed: Option<&ViewState>) -> ViewState {
    let mut s = def.new_state();
    for part in [batch, speed].into_iter().flatten() {
        s.merge(part);
    }
    s
}

/// The final rows of one view from both layers' states.
pub fn serving_rows(
    def: &ViewDef,
    batch: Option<&ViewState>,
    speed: Option<&ViewState>,
) -> Result<RecordBatch> {
    def.finalize(&merge(def, batch, speed))
}

/// What an answer is made of.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Freshness {
    /// The batch run in service (`None`: no batch view yet).
    pub batch_run: Option<String>,
    /// When that run started (RFC 3339).
    pub batch_started_at: Option<String>,
    /// Seconds since that run started: how old the batch view is.
    pub batch_age_seconds: Option<f64>,
    /// Per partition of the topic: the offset up to which the batch view covers events.
    pub batch_offsets: BTreeMap<i32, i64>,
    /// Per partition: the offset up to which the speed layer has consumed; events in between
    /// come from the speed layer.
    pub speed_offsets: BTreeMap<i32, i64>,
    /// Events the speed part holds, over all partitions (offsets covered after the batch).
    pub speed_events_after_batch: i64,
    /// A view with a watermark: the watermark (RFC 3339) as the live speed layer has it, or
    /// as the files record it when serving from them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watermark: Option<String>,
}

/// What one change did, serialized once for every subscriber of the view's stream.
#[derive(Debug)]
pub struct ChangeEvent {
    /// The table version after the change.
    pub version: u64,
    /// Rows that changed: `{"view", "version", "rows": [...], "removed": [...], "freshness"}`.
    pub json: Arc<str>,
    /// The serving ids of the rows inserted or updated, sorted (to tell a keyed subscriber).
    pub upserts: Vec<usize>,
    /// Whether rows left the view.
    pub removals: bool,
}

/// One view as served: its maintained table, the stream of its changes, and a cache of the
/// pages that streams with the same parameters share.
#[derive(Debug)]
pub struct ServedView {
    /// The view.
    pub def: Arc<ViewDef>,
    table: RwLock<ServingTable>,
    changes: broadcast::Sender<Arc<ChangeEvent>>,
    /// (parameters, version) → body, so that one change is serialized once per set of
    /// parameters, not once per subscriber.
    pages: Mutex<BTreeMap<String, (u64, Arc<str>)>>,
    /// `"columns":[…]` of every answer, serialized once.
    pub columns_json: String,
}

/// Changes a stream subscriber may fall behind by before it is sent a fresh snapshot.
const CHANGE_BACKLOG: usize = 256;

impl ServedView {
    /// A view served from `table`.
    pub fn new(table: ServingTable) -> Self {
        let columns: serde_json::Value = table
            .def()
            .output_schema()
            .fields()
            .iter()
            .map(|f| serde_json::json!({ "name": f.name(), "type": f.data_type().to_string() }))
            .collect();
        Self {
            columns_json: columns.to_string(),
            def: Arc::clone(table.def()),
            table: RwLock::new(table),
            changes: broadcast::channel(CHANGE_BACKLOG).0,
            pages: Mutex::new(BTreeMap::new()),
        }
    }

    /// Builds the table for `batch ⊕ speed` and serves it.
    pub fn build(
        def: &Arc<ViewDef>,
        batch: Option<Arc<storage::PublishedBatch>>,
        speed: ViewState,
        speed_offsets: BTreeMap<i32, i64>,
    ) -> Result<Self> {
        Ok(Self::new(ServingTable::build(
            def,
            batch,
            speed,
            speed_offsets,
        )?))
    }

    /// The table, for reading (held briefly: a request's worth).
    pub fn read(&self) -> RwLockReadGuard<'_, ServingTable> {
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, ServingTable> {
        self.table.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Builds (once) the order by output column `col` used by `?order_by=`.
    pub fn ensure_column_order(&self, col: usize) -> Result<()> {
        if self.read().has_column_order(col) {
            return Ok(());
        }
        self.write().ensure_column_order(col)
    }

    /// Subscribes to the view's changes.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ChangeEvent>> {
        self.changes.subscribe()
    }

    /// A page body for `params` at the current version, computed once per version. `make`
    /// runs with no lock held: it takes the table's locks it needs (building an `order_by`
    /// order takes the write lock).
    pub fn cached_page<E>(
        &self,
        params: &str,
        make: impl FnOnce() -> Result<String, E>,
    ) -> Result<Arc<str>, E> {
        let v = self.read().version();
        {
            let pages = self.pages.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((pv, body)) = pages.get(params)
                && *pv == v
            {
                return Ok(Arc::clone(body));
            }
        }
        let body: Arc<str> = make()?.into();
        let mut pages = self.pages.lock().unwrap_or_else(|e| e.into_inner());
        if pages.len() > 64 {
            pages.clear();
        }
        pages.insert(params.to_string(), (v, Arc::clone(&body)));
        Ok(body)
    }

    /// Merges a speed-layer delta, then tells the view's subscribers what changed (one
    /// serialization for all of them).
    pub fn apply_delta(
        &self,
        delta: &ViewState,
        offsets: &BTreeMap<i32, i64>,
        topic: &str,
    ) -> Result<()> {
        let mut t = self.write();
        let change = t.apply_delta(delta, offsets)?;
        let event = change_event(&t, &change, topic);
        drop(t);
        if self.changes.receiver_count() > 0
            && let Some(e) = event
        {
            let _ = self.changes.send(Arc::new(e));
        }
        Ok(())
    }

    /// Drops the rows beyond the view's retention (`horizon`: where it cuts now), then tells
    /// the view's subscribers which left.
    pub fn expire(&self, horizon: i64, topic: &str) {
        if self.read().horizon().is_some_and(|h| h >= horizon) {
            return;
        }
        let mut t = self.write();
        let change = t.expire(horizon);
        let event = change_event(&t, &change, topic);
        drop(t);
        if self.changes.receiver_count() > 0
            && let Some(e) = event
        {
            let _ = self.changes.send(Arc::new(e));
        }
    }

    /// The final rows, whole, in the view's order (DataFusion's `finalize` over the merged
    /// state: for the console and files, not for requests).
    pub fn rows(&self) -> Result<RecordBatch> {
        self.def.finalize(&self.read().merged())
    }

    /// `batch ⊕ speed` as one state (a full copy).
    pub fn merged(&self) -> ViewState {
        self.read().merged()
    }

    /// One line per final row saying what it is made of, e.g.
    /// `Ali: total_amount = 400 (320 from batch + 80 from speed)`.
    pub fn explain_lines(&self) -> Result<Vec<String>> {
        let t = self.read();
        let sids = t.page(table::Order::View, 0, usize::MAX)?;
        let (b, s) = t.explain(&sids)?;
        let parse = |l: &[u8]| -> serde_json::Map<String, serde_json::Value> {
            serde_json::from_slice(l).unwrap_or_default()
        };
        let names: Vec<String> = self
            .def
            .output_schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let keys = self.def.group_len().min(names.len());
        let show = |v: Option<&serde_json::Value>| match v {
            None | Some(serde_json::Value::Null) => "null".to_string(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
        };
        let rows = sids.iter().filter_map(|&sid| t.row_json(sid).map(parse));
        let parts = b.split(|&c| c == b'\n').zip(s.split(|&c| c == b'\n'));
        Ok(rows
            .zip(parts)
            .map(|(r, (b, s))| {
                let (b, s) = (parse(b), parse(s));
                let key: Vec<String> = names[..keys].iter().map(|n| show(r.get(n))).collect();
                let vals: Vec<String> = names[keys..]
                    .iter()
                    .map(|n| {
                        format!(
                            "{n} = {} ({} from batch + {} from speed)",
                            show(r.get(n)),
                            show(b.get(n)),
                            show(s.get(n))
                        )
                    })
                    .collect();
                if key.is_empty() {
                    vals.join(", ")
                } else {
                    format!("{}: {}", key.join(", "), vals.join(", "))
                }
            })
            .collect())
    }

    /// What the answer is made of.
    pub fn freshness(&self, topic: &str) -> Freshness {
        freshness(&self.read(), topic)
    }
}

/// What `t`'s answers are made of.
pub fn freshness(t: &ServingTable, topic: &str) -> Freshness {
    let batch = t.batch();
    let batch_offsets = batch
        .map(|b| b.manifest.offsets_of(topic))
        .unwrap_or_default();
    let started = batch.map(|b| b.manifest.started_at.clone());
    let age = started.as_deref().and_then(|s| {
        let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
        Some((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).as_seconds_f64())
    });
    let after: i64 = t
        .speed_offsets()
        .iter()
        .map(|(p, o)| (o - batch_offsets.get(p).copied().unwrap_or(0)).max(0))
        .sum();
    Freshness {
        batch_run: batch.map(|b| b.manifest.run_id.clone()),
        batch_started_at: started,
        batch_age_seconds: age,
        batch_offsets,
        speed_offsets: t.speed_offsets().clone(),
        speed_events_after_batch: after,
        watermark: None,
    }
}

impl ServingState {
    /// [`freshness`] of view `v`, with its watermark when it has one.
    pub fn freshness_of(&self, v: &ServedView, t: &ServingTable, topic: &str) -> Freshness {
        let mut f = freshness(t, topic);
        f.watermark = self.watermark_of(v).and_then(crate::speed::rfc3339);
        f
    }

    /// Where view `v`'s retention cuts now, under `run` (`None`: no retention or no watermark).
    pub fn horizon_of(&self, v: &ServedView) -> Option<i64> {
        v.def.horizon(self.watermark_of(v)?)
    }

    /// Each view's event-time progress: the live speed layer's, or the files' (see
    /// [`Self::event_time`]).
    pub fn event_times(&self) -> &BTreeMap<String, EventTime> {
        match &self.speed {
            Some(s) => &s.event_time,
            None => &self.event_time,
        }
    }

    /// View `v`'s watermark (µs), when it has one and its events have been seen.
    pub fn watermark_of(&self, v: &ServedView) -> Option<i64> {
        self.event_times()
            .get(&v.def.name)
            .and_then(|e| e.watermark)
    }
}

fn change_event(t: &ServingTable, change: &Change, topic: &str) -> Option<ChangeEvent> {
    if change.upserts.is_empty() && change.removed.is_empty() {
        return None;
    }
    let mut json = String::with_capacity(64 + change.upserts.len() * 48);
    json.push_str(&format!(
        "{{\"view\":{},\"version\":{},\"rows\":[",
        serde_json::Value::from(t.def().name.as_str()),
        t.version()
    ));
    let mut first = true;
    for &sid in &change.upserts {
        if let Some(r) = t.row_json(sid) {
            if !first {
                json.push(',');
            }
            first = false;
            json.push_str(&String::from_utf8_lossy(r));
        }
    }
    json.push_str("],\"removed\":[");
    for (i, r) in change.removed.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&String::from_utf8_lossy(r));
    }
    json.push_str("],\"freshness\":");
    json.push_str(&serde_json::to_string(&freshness(t, topic)).unwrap_or_else(|_| "null".into()));
    json.push('}');
    let mut upserts = change.upserts.clone();
    upserts.sort_unstable();
    Some(ChangeEvent {
        version: t.version(),
        json: json.into(),
        upserts,
        removals: !change.removed.is_empty(),
    })
}

/// Publishes the final view the way the seed's `serving_view.write.json(..)` does.
pub fn write_serving_view(layout: &Layout, def: &ViewDef, rows: &RecordBatch) -> Result<()> {
    let part = storage::json_lines(std::slice::from_ref(rows))?;
    publish_serving(layout, &def.name, part)
}

/// Publishes a served view's rows (already JSON) as `serving_view.json/`.
pub fn write_served(layout: &Layout, v: &ServedView) -> Result<()> {
    let text = v.read().all_rows_json();
    publish_serving(layout, &v.def.name, text)
}

fn publish_serving(layout: &Layout, view: &str, part: Vec<u8>) -> Result<()> {
    let version = storage::new_version();
    layout
        .output(storage::Output::ServingView, view)?
        .publish(&version, 2, vec![(storage::part_name(&version), part)])
        .map(drop)
}

/// The HTTP API's listener on `addr` (`serving.listen`), or an error that names the address and
/// keeps the OS's reason as its source.
pub async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| crate::Error::Bind { addr, source })
}
