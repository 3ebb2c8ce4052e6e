//! The master dataset's Delta Lake log: which archive segments are committed, at which table
//! version, and how far each topic partition is archived.
//!
//! `output/master/` is a Delta table (protocol 1/2, read by Spark, delta-rs, DuckDB). Its data
//! files are the speed layer's segments (see [`super::segments`]). The segments of one speed
//! checkpoint enter the table in one commit — a `STREAMING UPDATE`, as Spark Structured
//! Streaming writes one — carrying a `txn` (SetTransaction) action per topic partition: app id
//! `lambdaflow/<topic>/<partition>`, version = the offset up to which (exclusive) the partition
//! is archived. Before committing, each range is checked against that version:
//!
//! - version ≥ the range's end: the table already holds it (a retried commit after a crash, or
//!   two processes catching up the same files): skipped, never added twice;
//! - version inside the range: someone else archived part of it: refused, naming the partition;
//! - otherwise added. A commit racing another that set the same partitions' versions fails
//!   Delta's conflict check, is re-read, and goes through these checks again.
//!
//! For each view with a watermark the same commit sets `lambdaflow/<topic>/<partition>/
//! event-time/<view>`: the latest event time (µs) of the partition that counts for the view's
//! watermark, up to the range's end. It is how the watermark outlives the instance that had it:
//! a consumer-group instance claiming the partition goes on from it, and `serve` replicas
//! compute the view's watermark from it ([`super::event_time`]).
//!
//! delta-rs is async; the archive's callers are synchronous code on blocking threads, so
//! [`block`] runs a log operation on storage's small runtime (see [`super::store`]).

use std::collections::{BTreeMap, HashMap};

use datafusion::arrow::datatypes::SchemaRef;
use deltalake_core::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake_core::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake_core::kernel::{Action, Add, Remove, StructType, Transaction};
use deltalake_core::protocol::{DeltaOperation, OutputMode, SaveMode};
use deltalake_core::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use url::Url;

use super::segments::{self, Offsets, Segment};
use super::store::{Entry, Store};
use crate::error::{Error, IoContext, Result};

/// How many times a commit that lost a race is re-read and tried again.
const RETRIES: usize = 10;

/// The app id of a topic partition's `txn` action.
pub fn app_id(topic: &str, partition: i32) -> String {
    format!("lambdaflow/{topic}/{partition}")
}

/// The app id of a topic partition's owner epoch (speed layers in a consumer group): its
/// `txn` version is the epoch of the last instance that claimed the partition.
pub fn owner_id(topic: &str, partition: i32) -> String {
    format!("lambdaflow/{topic}/{partition}/owner")
}

/// The app id of a topic partition's latest event time for view `view` (see the module docs).
pub fn event_time_id(topic: &str, partition: i32, view: &str) -> String {
    format!("lambdaflow/{topic}/{partition}/event-time/{view}")
}

pub use super::store::block;

/// An error of delta-rs on the table at `dir`, saying what failed.
pub(crate) fn table_error(dir: &Store, what: &str, e: DeltaTableError) -> Error {
    Error::Table {
        path: dir.path_of(""),
        what: what.to_string(),
        source: Box::new(e),
    }
}

/// A builder of the table at `dir`: delta-rs's own store for a local table; for S3, the
/// bucket's store with delta-rs's default log store, whose commits are create-only puts.
fn builder(dir: &Store) -> Result<DeltaTableBuilder> {
    let url = dir.url().clone();
    if let Some(d) = dir.local_dir() {
        std::fs::create_dir_all(d).at(d)?;
    }
    let b =
        DeltaTableBuilder::from_url(url.clone()).map_err(|e| table_error(dir, "cannot open", e))?;
    Ok(match dir.bucket() {
        None => b,
        Some(bucket) => {
            register_log_store(&url);
            b.with_storage_backend(bucket, url)
        }
    })
}

/// delta-rs registers a log store for `file://` and `memory://` only: the S3 one, in its
/// `deltalake-aws` crate, brings the AWS SDK and a DynamoDB lock, which S3's create-only puts
/// made unneeded. Its default log store commits with a create-only put on any store.
fn register_log_store(url: &Url) {
    use deltalake_core::logstore::{
        LogStore, LogStoreFactory, ObjectStoreRef, StorageConfig, default_logstore,
        logstore_factories,
    };
    struct CreateOnlyPuts;
    impl LogStoreFactory for CreateOnlyPuts {
        fn with_options(
            &self,
            prefixed: ObjectStoreRef,
            root: ObjectStoreRef,
            location: &Url,
            options: &StorageConfig,
        ) -> deltalake_core::DeltaResult<std::sync::Arc<dyn LogStore>> {
            Ok(default_logstore(prefixed, root, location, options))
        }
    }
    let scheme = Url::parse(&format!("{}://", url.scheme())).expect("a scheme as a URL");
    let registry = logstore_factories();
    if !registry.contains_key(&scheme) {
        registry.insert(scheme, std::sync::Arc::new(CreateOnlyPuts));
    }
}

/// The table at `dir` as of its latest version, or `None` when there is no table there yet.
pub async fn load(dir: Store) -> Result<Option<DeltaTable>> {
    if !has_commits(&dir).await? {
        return Ok(None);
    }
    let mut table = builder(&dir)?
        .build()
        .map_err(|e| table_error(&dir, "cannot open", e))?;
    table
        .load()
        .await
        .map_err(|e| table_error(&dir, "cannot open", e))?;
    Ok(table.version().is_some().then_some(table))
}

/// Tables read as of their latest version, by URL, with what a listing said of the commit file
/// of that version, so that the next read follows the log from there ([`latest`]).
static FOLLOWED: std::sync::LazyLock<std::sync::Mutex<HashMap<Url, Followed>>> =
    std::sync::LazyLock::new(Default::default);

/// A table as of the version read last, and what a listing said of that version's commit file.
type Followed = (DeltaTable, Option<Entry>);

/// The key of version `v`'s commit file.
fn commit_key(v: u64) -> String {
    format!("_delta_log/{v:020}.json")
}

/// The table at `dir` as of its latest version, read from where this process last read it:
/// delta-rs lists the log after that version and replays only the new commits (a `serve`
/// replica following the table every second reads what changed, not the log since its last
/// checkpoint). The commit file of the version read last is checked first (one HEAD): when it
/// is gone or another file (the table removed and made again, or its log cleaned up past it),
/// the table is loaded anew.
async fn latest(dir: &Store) -> Result<Option<DeltaTable>> {
    let version = |t: &DeltaTable| t.version().unwrap_or(0);
    let followed = FOLLOWED.lock().expect("not poisoned").remove(dir.url());
    let mut found = None;
    if let Some((mut t, seen)) = followed {
        let before = version(&t);
        if dir.head_async(&commit_key(before)).await? == seen
            && t.update_incremental(None).await.is_ok()
        {
            let seen = match version(&t) == before {
                true => seen,
                false => dir.head_async(&commit_key(version(&t))).await?,
            };
            found = Some((t, seen));
        }
    }
    let (table, seen) = match found {
        Some(f) => f,
        None => match load(dir.clone()).await? {
            Some(t) => {
                let seen = dir.head_async(&commit_key(version(&t))).await?;
                (t, seen)
            }
            None => return Ok(None),
        },
    };
    FOLLOWED
        .lock()
        .expect("not poisoned")
        .insert(dir.url().clone(), (table.clone(), seen));
    Ok(Some(table))
}

/// Whether the Delta log holds a commit or a checkpoint. Asked before loading, because
/// delta-rs logs an error for a log with no commit (a table another process is creating), and
/// that is no error here: there is no table yet.
async fn has_commits(dir: &Store) -> Result<bool> {
    Ok(dir
        .list_async("_delta_log")
        .await?
        .iter()
        .any(|e| e.key.ends_with(".json") || e.key.ends_with(".parquet")))
}

/// The table at `dir`, created (empty, with the event schema's columns) when there is none.
pub async fn open(dir: Store, schema: SchemaRef) -> Result<DeltaTable> {
    if let Some(t) = load(dir.clone()).await? {
        return Ok(t);
    }
    let columns: StructType = schema
        .as_ref()
        .try_into_kernel()
        .map_err(|e| table_error(&dir, "the event schema has no Delta equivalent", e.into()))?;
    // Not loaded: there is nothing to load yet.
    let table = builder(&dir)?
        .build()
        .map_err(|e| table_error(&dir, "cannot open", e))?;
    let created = table
        .create()
        .with_table_name("master")
        .with_comment("lambdaflow master dataset: the events the speed layer archived")
        .with_columns(columns.fields().cloned())
        .with_save_mode(SaveMode::Ignore)
        // No retry: delta-rs retries a create that lost version 0 as version 1, a second
        // CREATE of the same table. Losing the race is an error here, and the winner's table
        // is loaded below.
        .with_commit_properties(CommitProperties::default().with_max_retries(0))
        .await;
    match created {
        Ok(t) => Ok(t),
        // Another process created it at the same moment (its commit won: the version exists, or
        // Delta's conflict check saw its metadata).
        Err(e) => match load(dir.clone()).await? {
            Some(t) => Ok(t),
            None => Err(table_error(&dir, "cannot create", e)),
        },
    }
}

/// The committed segments of one table version.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The table version (`None`: no table yet).
    pub version: Option<u64>,
    /// Its data files, ordered by topic, partition and offset.
    pub segments: Vec<Segment>,
}

impl Snapshot {
    /// Per topic and partition, the end of the archived ranges.
    pub fn offsets(&self) -> Offsets {
        segments::ends(&self.segments)
    }
}

/// What a table version holds. Files that are not segments (not named by offsets) are an error
/// naming them: the offset handoff needs every file's range.
pub fn snapshot_of(dir: &Store, table: &DeltaTable) -> Result<Snapshot> {
    let state = table
        .snapshot()
        .map_err(|e| table_error(dir, "cannot read", e))?;
    let mut out = Vec::new();
    for f in state.log_data().iter() {
        let rel = f.path();
        let (size, modified) = (f.size().max(0) as u64, f.modification_time());
        let seg = segments::parse_key(dir, &rel, size, modified)
            .filter(|s| s.committed)
            .ok_or_else(|| {
                Error::config(format!(
                    "{dir}: the Delta log of the master dataset lists `{rel}`, which is not an \
                     archive segment (topic=<t>/partition=<p>/offsets=<from>-<to>.parquet); \
                     only lambdaflow writes this table"
                ))
            })?;
        out.push(seg);
    }
    segments::sort(&mut out);
    Ok(Snapshot {
        version: Some(state.version()),
        segments: out,
    })
}

/// What the table records of one partition, from its `txn` versions (`None`: never set).
#[derive(Debug, Clone, Default)]
pub struct PartitionTxns {
    /// Where its archive ends.
    pub archived: Option<i64>,
    /// Its owner epoch (consumer group): how many times an instance claimed it.
    pub owner_epoch: Option<i64>,
    /// Per view asked for, the partition's latest event time (µs; views without one left out).
    pub event_times: BTreeMap<String, i64>,
}

/// [`PartitionTxns`] of each of `partitions` of `topic`, with the event times of `views`.
pub fn partition_txns(
    dir: &Store,
    topic: &str,
    partitions: &[i32],
    views: &[String],
) -> Result<BTreeMap<i32, PartitionTxns>> {
    let (d, topic, parts) = (dir.clone(), topic.to_string(), partitions.to_vec());
    let views = views.to_vec();
    block(async move {
        let mut out = BTreeMap::new();
        let Some(table) = latest(&d).await? else {
            return Ok(out);
        };
        let state = table
            .snapshot()
            .map_err(|e| table_error(&d, "cannot read", e))?;
        for p in parts {
            let t = read_txns(&d, &table, state, &topic, p, &views).await?;
            out.insert(p, t);
        }
        Ok(out)
    })
}

/// [`PartitionTxns`] of partition `p` in `state`.
async fn read_txns(
    dir: &Store,
    table: &DeltaTable,
    state: &deltalake_core::table::state::DeltaTableState,
    topic: &str,
    p: i32,
    views: &[String],
) -> Result<PartitionTxns> {
    let mut event_times = BTreeMap::new();
    for v in views {
        if let Some(t) = txn_version(dir, table, state, &event_time_id(topic, p, v)).await? {
            event_times.insert(v.clone(), t);
        }
    }
    Ok(PartitionTxns {
        archived: txn_version(dir, table, state, &app_id(topic, p)).await?,
        owner_epoch: txn_version(dir, table, state, &owner_id(topic, p)).await?,
        event_times,
    })
}

/// The data files the table lists at its latest version, read anew (not from the followed
/// state): for a decision to delete a file, which must never remove one the log lists.
pub fn listed_anew(dir: &Store) -> Result<std::collections::HashSet<String>> {
    let d = dir.clone();
    block(async move {
        let Some(table) = load(d.clone()).await? else {
            return Ok(Default::default());
        };
        let state = table
            .snapshot()
            .map_err(|e| table_error(&d, "cannot read", e))?;
        Ok(state
            .log_data()
            .iter()
            .map(|f| f.path().to_string())
            .collect())
    })
}

/// Which version to read: the latest, a version number, or the latest at or before a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// The latest version.
    Latest,
    /// This version.
    Version(u64),
    /// The last version committed at or before this time.
    Time(chrono::DateTime<chrono::Utc>),
}

impl AsOf {
    /// A table version (a number) or an RFC 3339 time, as `--as-of` and `?as_of=` take it.
    pub fn parse(s: &str) -> std::result::Result<AsOf, String> {
        if let Ok(v) = s.parse::<u64>() {
            return Ok(AsOf::Version(v));
        }
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| AsOf::Time(t.with_timezone(&chrono::Utc)))
            .map_err(|e| format!("neither a table version nor an RFC 3339 time ({e})"))
    }
}

impl std::fmt::Display for AsOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AsOf::Latest => write!(f, "the latest version"),
            AsOf::Version(v) => write!(f, "version {v}"),
            AsOf::Time(t) => write!(f, "{}", t.to_rfc3339()),
        }
    }
}

/// What the table at `dir` holds as of `as_of` (empty when there is no table yet).
pub fn snapshot(dir: &Store, as_of: AsOf) -> Result<Snapshot> {
    let d = dir.clone();
    block(async move {
        let found = match as_of {
            AsOf::Latest => latest(&d).await?,
            _ => load(d.clone()).await?,
        };
        let Some(mut table) = found else {
            if as_of != AsOf::Latest {
                return Err(Error::config(format!(
                    "{d}: no Delta table there yet, so nothing to read as of {as_of}"
                )));
            }
            return Ok(Snapshot::default());
        };
        let at = match as_of {
            AsOf::Latest => Ok(()),
            AsOf::Version(v) => table.load_version(v).await,
            AsOf::Time(t) => table.load_with_datetime(t).await,
        };
        at.map_err(|e| table_error(&d, &format!("cannot read it as of {as_of}"), e))?;
        if let AsOf::Time(t) = as_of {
            before(&d, &table, t)?;
        }
        snapshot_of(&d, &table)
    })
}

/// Checks that `table`, loaded as of `t`, was committed at or before `t`: delta-rs loads the
/// first version for a time before it, where Delta (and `--as-of`'s promise) has none.
fn before(dir: &Store, table: &DeltaTable, t: chrono::DateTime<chrono::Utc>) -> Result<()> {
    let Some(v) = table.version() else {
        return Ok(());
    };
    let committed = table
        .snapshot()
        .ok()
        .and_then(|s| s.version_timestamp(v))
        .and_then(chrono::DateTime::from_timestamp_millis);
    match committed {
        Some(c) if c > t => Err(Error::config(format!(
            "{dir}: no version was committed at or before {} (the first one readable, version {v}, was committed at {})",
            t.to_rfc3339(),
            c.to_rfc3339()
        ))),
        _ => Ok(()),
    }
}

/// One range of a partition to archive: its events' segment, if any had a good event.
#[derive(Debug, Clone)]
pub struct Range {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// First offset.
    pub from: i64,
    /// One past the last offset.
    pub to: i64,
    /// The segment holding its good events (none when the range held only bad messages).
    pub segment: Option<Segment>,
    /// Who may archive it.
    pub fence: Fence,
    /// Per view with a watermark, the partition's latest event time (µs) up to `to`.
    pub event_times: BTreeMap<String, i64>,
}

/// Who may archive a range, besides the offset check every range gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// Anyone (the partition has a single writer: one speed layer over all partitions).
    None,
    /// Only the owner of this epoch (a speed layer in a consumer group): once another instance
    /// claimed the partition, the range is refused (reported in [`Committed::fenced`]).
    Owner(i64),
    /// Only while no consumer-group instance owns the partition (catching up files found on
    /// disk: in a group, each owner commits its own).
    Unowned,
}

/// What a commit did.
#[derive(Debug, Clone, Default)]
pub struct Committed {
    /// The new table version (`None`: nothing to commit; the table held every range).
    pub version: Option<u64>,
    /// Partitions whose ranges were refused because another instance owns them now: (partition,
    /// its owner's epoch).
    pub fenced: Vec<(i32, i64)>,
}

/// A partition claimed by a consumer-group instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The owner epoch the instance now holds.
    pub epoch: i64,
    /// Where the archive of the partition ends (`None`: nothing archived yet).
    pub archived: Option<i64>,
    /// Per view with a watermark, the partition's latest event time archived (µs).
    pub event_times: BTreeMap<String, i64>,
}

impl From<&Segment> for Range {
    fn from(s: &Segment) -> Self {
        Range {
            topic: s.topic.clone(),
            partition: s.partition,
            from: s.from,
            to: s.to,
            segment: Some(s.clone()),
            fence: Fence::None,
            event_times: BTreeMap::new(),
        }
    }
}

/// Whether `state` lists the data file at `key` (relative to the table's root).
fn lists(state: &deltalake_core::table::state::DeltaTableState, key: &str) -> bool {
    state.log_data().iter().any(|f| f.path() == key)
}

fn add_action(seg: &Segment) -> Action {
    Action::Add(Add {
        path: seg.key.clone(),
        size: seg.size as i64,
        modification_time: seg.modified_ms,
        data_change: true,
        ..Default::default()
    })
}

/// A writer of the table that keeps the table's state between commits, so that each commit
/// reads only the log entries written since the previous one (not the whole table again).
pub struct Writer {
    dir: Store,
    schema: SchemaRef,
    table: Option<DeltaTable>,
}

impl Writer {
    /// A writer of the table at `dir` (created with `schema`'s columns when there is none).
    pub fn new(dir: Store, schema: SchemaRef) -> Self {
        Writer {
            dir,
            schema,
            table: None,
        }
    }

    /// Commits `ranges` (the segments must have their committed names) in one Delta commit
    /// with their partitions' `txn` versions; `epoch`: the speed layer's micro-batch id.
    pub fn commit(&mut self, ranges: Vec<Range>, epoch: u64) -> Result<Committed> {
        self.with_table(move |dir, table| Box::pin(commit(dir, table, ranges, epoch)))
    }

    /// Claims `partitions` of `topic` for a consumer-group instance: one commit raises each
    /// one's owner epoch, which fences every earlier owner's later commits (see [`Fence`]).
    /// `views`: the views whose event times the claims carry.
    pub fn claim(
        &mut self,
        topic: &str,
        partitions: Vec<i32>,
        views: Vec<String>,
    ) -> Result<BTreeMap<i32, Claim>> {
        let topic = topic.to_string();
        self.with_table(move |dir, table| Box::pin(claim(dir, table, topic, partitions, views)))
    }

    /// Runs `op` on the table brought up to date (read incrementally since the last call).
    fn with_table<T: Send + 'static>(
        &mut self,
        op: impl for<'a> FnOnce(
            &'a Store,
            &'a mut DeltaTable,
        ) -> futures::future::BoxFuture<'a, Result<T>>
        + Send
        + 'static,
    ) -> Result<T> {
        let (dir, schema, table) = (
            self.dir.clone(),
            std::sync::Arc::clone(&self.schema),
            self.table.take(),
        );
        let (table, done) = block(async move {
            let mut table = match table {
                Some(mut t) => match t.update_incremental(None).await {
                    Ok(()) => t,
                    Err(e) => return Ok((None, Err(table_error(&dir, "cannot read", e)))),
                },
                None => open(dir.clone(), schema).await?,
            };
            let done = op(&dir, &mut table).await;
            Ok((Some(table), done))
        })?;
        self.table = table;
        done
    }
}

/// A `txn` version of the table (`None`: never set).
async fn txn_version(
    dir: &Store,
    table: &DeltaTable,
    state: &deltalake_core::table::state::DeltaTableState,
    id: &str,
) -> Result<Option<i64>> {
    state
        .transaction_version(table.log_store().as_ref(), id)
        .await
        .map_err(|e| table_error(dir, "cannot read", e))
}

/// How many times a compaction's commit tries the next version of the log before giving up.
const COMPACT_ATTEMPTS: usize = 1_000;

/// Commits `txns` (and `actions`) built on `state`; `Ok(None)` when another commit won the
/// race in a way that conflicts (the caller re-reads and checks again).
async fn try_commit(
    dir: &Store,
    table: &mut DeltaTable,
    state: deltalake_core::table::state::DeltaTableState,
    txns: BTreeMap<String, i64>,
    actions: Vec<Action>,
    epoch: u64,
) -> Result<Option<u64>> {
    let props = CommitProperties::default().with_application_transactions(
        txns.into_iter()
            .map(|(id, v)| Transaction::new(id, v))
            .collect(),
    );
    let op = DeltaOperation::StreamingUpdate {
        output_mode: OutputMode::Append,
        query_id: "lambdaflow-speed".into(),
        epoch_id: epoch as i64,
    };
    match CommitBuilder::from(props)
        .with_actions(actions)
        .build(Some(&state), table.log_store(), op)
        .await
    {
        Ok(done) => Ok(Some(done.version())),
        Err(DeltaTableError::Transaction { .. } | DeltaTableError::VersionAlreadyExists(_)) => {
            table
                .update_state()
                .await
                .map_err(|e| table_error(dir, "cannot read", e))?;
            Ok(None)
        }
        Err(e) => Err(table_error(dir, "cannot commit", e)),
    }
}

fn busy(dir: &Store) -> Error {
    Error::Busy(format!(
        "{dir}: other writers kept committing to the master dataset; try again"
    ))
}

async fn claim(
    dir: &Store,
    table: &mut DeltaTable,
    topic: String,
    partitions: Vec<i32>,
    views: Vec<String>,
) -> Result<BTreeMap<i32, Claim>> {
    for _ in 0..RETRIES {
        // Read anew, not brought up to date: what a claim reads decides where the partition
        // resumes and which files go as uncommitted (in a consumer group on a bucket, a claim
        // from the followed state once resumed behind the archive and removed a committed
        // segment). Claims come with rebalances, rarely.
        if let Some(t) = load(dir.clone()).await? {
            *table = t;
        }
        let state = table
            .snapshot()
            .map_err(|e| table_error(dir, "cannot read", e))?
            .clone();
        let mut out = BTreeMap::new();
        let mut txns = BTreeMap::new();
        for &p in &partitions {
            let t = read_txns(dir, table, &state, &topic, p, &views).await?;
            let epoch = t.owner_epoch.unwrap_or(0) + 1;
            txns.insert(owner_id(&topic, p), epoch);
            let (archived, event_times) = (t.archived, t.event_times);
            out.insert(
                p,
                Claim {
                    epoch,
                    archived,
                    event_times,
                },
            );
        }
        if txns.is_empty()
            || try_commit(dir, table, state, txns, Vec::new(), 0)
                .await?
                .is_some()
        {
            return Ok(out);
        }
    }
    Err(busy(dir))
}

async fn commit(
    dir: &Store,
    table: &mut DeltaTable,
    ranges: Vec<Range>,
    epoch: u64,
) -> Result<Committed> {
    for _ in 0..RETRIES {
        let state = table
            .snapshot()
            .map_err(|e| table_error(dir, "cannot read", e))?
            .clone();
        let mut actions = Vec::new();
        let mut txns: BTreeMap<String, i64> = BTreeMap::new();
        let mut fenced = Vec::new();
        // Whether any range moves an archived offset (owner epochs alone are not a commit).
        let mut archives = false;
        for r in &ranges {
            if fenced.iter().any(|&(p, _)| p == r.partition) {
                continue;
            }
            let owner = txn_version(dir, table, &state, &owner_id(&r.topic, r.partition)).await?;
            match (r.fence, owner) {
                // This writer's own segment is in the table already: an earlier try of this
                // commit went through though its answer was lost, and another instance has
                // claimed the partition since. Committed, not fenced: its file stays.
                (Fence::Owner(e), o)
                    if o != Some(e)
                        && r.segment.as_ref().is_some_and(|s| lists(&state, &s.key)) =>
                {
                    continue;
                }
                (Fence::Owner(e), o) if o != Some(e) => {
                    fenced.push((r.partition, o.unwrap_or(0)));
                    continue;
                }
                (Fence::Owner(e), _) => {
                    // Read and written: a claim racing this commit makes it conflict.
                    txns.insert(owner_id(&r.topic, r.partition), e);
                }
                (Fence::Unowned, Some(_)) => continue,
                _ => {}
            }
            let id = app_id(&r.topic, r.partition);
            match txn_version(dir, table, &state, &id).await? {
                Some(v) if v >= r.to => continue, // already archived
                Some(v) if v > r.from => {
                    return Err(Error::Conflict(format!(
                        "topic {} partition {}: the master dataset is archived up to offset {v}, \
                         inside the range {}..{} this process is archiving (another process \
                         archived part of it); nothing of the range was added",
                        r.topic, r.partition, r.from, r.to
                    )));
                }
                _ => {}
            }
            // A segment an instance that claimed the partition since deleted: that claim
            // raised the owner epoch, so this commit is fenced above, or conflicts with the
            // claim and is fenced when re-checked.
            if let Some(s) = &r.segment {
                actions.push(add_action(s));
            }
            let e = txns.entry(id).or_insert(r.to);
            *e = (*e).max(r.to);
            for (view, &t) in &r.event_times {
                let e = txns
                    .entry(event_time_id(&r.topic, r.partition, view))
                    .or_insert(t);
                *e = (*e).max(t);
            }
            archives = true;
        }
        if !archives {
            return Ok(Committed {
                version: None,
                fenced,
            });
        }
        if let Some(version) = try_commit(dir, table, state, txns, actions, epoch).await? {
            return Ok(Committed {
                version: Some(version),
                fenced,
            });
        }
    }
    Err(busy(dir))
}

/// Replaces `old` by `merged` (the same events, in one file) in one commit that changes no
/// data (`dataChange = false`, Delta's OPTIMIZE): readers of any version see the same events.
pub async fn replace(dir: Store, old: Vec<Segment>, merged: Segment) -> Result<u64> {
    let table = load(dir.clone())
        .await?
        .ok_or_else(|| Error::Internal(format!("{dir}: no table to compact")))?;
    let state = table
        .snapshot()
        .map_err(|e| table_error(&dir, "cannot read", e))?;
    // Each file replaced must still be in the version the commit is checked against: another
    // compaction may have replaced it since `old` was listed.
    let active: std::collections::HashSet<String> = state
        .log_data()
        .iter()
        .map(|f| f.path().into_owned())
        .collect();
    for s in &old {
        if !active.contains(&s.key) {
            return Err(Error::Busy(format!(
                "{dir}: another compaction replaced {} meanwhile; run compact again",
                s.shown().display()
            )));
        }
    }
    let now = chrono::Utc::now().timestamp_millis();
    let mut actions = vec![match add_action(&merged) {
        Action::Add(a) => Action::Add(Add {
            data_change: false,
            ..a
        }),
        other => other,
    }];
    for s in &old {
        actions.push(Action::Remove(Remove {
            path: s.key.clone(),
            data_change: false,
            deletion_timestamp: Some(now),
            extended_file_metadata: Some(false),
            partition_values: Some(HashMap::new()),
            size: Some(s.size as i64),
            ..Default::default()
        }));
    }
    let op = DeltaOperation::Optimize {
        predicate: None,
        target_size: 0,
    };
    // Two compactions racing would both replace the same files (Delta lets `dataChange =
    // false` removes pass each other): a `txn` of their own makes the second one conflict.
    let fence = Transaction::new("lambdaflow/compact", state.version() as i64);
    // Each attempt checks the commits that won since against this one (appends never conflict
    // with it) and tries the next version; while the speed layer commits every few
    // milliseconds, delta-rs's default of 15 attempts can all lose on a busy machine.
    let props = CommitProperties::default()
        .with_application_transaction(fence)
        .with_max_retries(COMPACT_ATTEMPTS);
    let done = CommitBuilder::from(props)
        .with_actions(actions)
        .build(Some(state), table.log_store(), op)
        .await
        .map_err(|e| table_error(&dir, "cannot commit the compaction", e))?;
    Ok(done.version())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    /// Speed instances of a consumer group start together on a fresh `output.dir`: each one
    /// creates the table, one of them wins, and every one gets the same table.
    #[test]
    fn instances_creating_the_table_together_all_get_it() {
        let dir = tempfile::tempdir().unwrap();
        let master = Store::local(dir.path().join("master")).unwrap();
        assert!(
            block(load(master.clone())).unwrap().is_none(),
            "no table yet"
        );
        let schema = Arc::new(Schema::new(vec![Field::new(
            "amount",
            DataType::Int64,
            true,
        )]));
        let racers: Vec<_> = (0..4)
            .map(|_| {
                let (m, s) = (master.clone(), Arc::clone(&schema));
                std::thread::spawn(move || block(async move { Ok(open(m, s).await?.version()) }))
            })
            .collect();
        for r in racers {
            assert_eq!(r.join().unwrap().unwrap(), Some(0), "each gets version 0");
        }
        let t = block(load(master)).unwrap().expect("the table");
        assert_eq!(t.version(), Some(0));
    }
}
