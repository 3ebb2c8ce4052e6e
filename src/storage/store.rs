//! Where the outputs live: a directory on a local disk, or a prefix of an S3 bucket (or of any
//! S3-compatible server). One [`Store`] is a root, and everything under it is named by a key
//! relative to it, with `/` separators, whatever the backend.
//!
//! The operations are the ones both backends do atomically, so that the protocols built on
//! them (the Delta log's commits, the archive's segments: see [`super::delta`] and
//! [`super::segments`]) hold on each:
//!
//! - [`Store::put`]: the whole object replaces the old one, or nothing changes (local: a
//!   synced temporary file renamed over the key; S3: one PUT);
//! - [`Store::put_new`]: create-only — of two writers of one key exactly one wins, decided by
//!   the store and never by timing (local: `link(2)` of a synced temporary file, which fails if
//!   the key exists; S3: `If-None-Match: *`, which S3 and s3proxy ≥ 4.0 check atomically);
//! - [`Store::rename`]: local `rename(2)`; on S3 a server-side copy then a delete, so a crash
//!   between the two leaves both keys, which the callers' recovery handles (see
//!   [`super::segments`]);
//! - [`Store::get`], [`Store::list`], [`Store::delete`] (deleting what is not there is no error).
//!
//! S3 credentials and the endpoint come from the AWS environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
//! `AWS_ALLOW_HTTP`, …), then from the AWS shared files' profile for what it does not set
//! (see [`super::aws_profile`]), then web identity and instance metadata when no key is set;
//! `[output.s3]` overrides the endpoint settings. Requests are retried with back-off
//! (object_store's retry policy) before an error reaches the caller. Secrets are never printed:
//! a store shows as its URL.
//!
//! Store calls are synchronous, for the archive's callers (blocking threads): [`block`] runs
//! them on a small runtime of storage's own, the one the Delta log uses too. Code already on
//! that runtime (the Delta log's operations) uses the `_async` forms, never the blocking ones.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use url::Url;

use crate::config::S3Config;
use crate::error::{Error, IoContext, Result};

/// A root under which outputs are written and read (see the module docs).
#[derive(Clone)]
pub struct Store {
    /// The root as a directory URL (`file:///…/`, `s3://bucket/prefix/`).
    url: Url,
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Local(PathBuf),
    Object {
        /// The bucket, rooted at its top (what the Delta log's store is given).
        bucket: Arc<dyn ObjectStore>,
        /// The root's prefix in the bucket.
        prefix: Key,
    },
}

/// What a listing says of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its key, relative to the store's root.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written (ms since the Unix epoch).
    pub modified_ms: i64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL only: the backend holds credentials.
        write!(f, "Store({})", self.url)
    }
}

/// A local store as its path, an object store as its URL.
impl std::fmt::Display for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            Backend::Local(d) => write!(f, "{}", d.display()),
            Backend::Object { .. } => write!(f, "{}", self.url),
        }
    }
}

impl PartialEq for Store {
    fn eq(&self, other: &Self) -> bool {
        self.url == other.url
    }
}

impl Eq for Store {}

/// Runs a storage operation to completion from synchronous code (see the module docs).
pub fn block<T: Send + 'static>(
    fut: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let rt = RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("lambdaflow-storage")
            .enable_all()
            .build()
            .expect("a runtime for storage")
    });
    // Unconstrained: called from a task of another runtime, the wait for the join handle would
    // otherwise draw on that task's cooperative budget, which this blocked thread never gives
    // back — once it is spent, every poll answers "pending, try again" and `block_on` spins.
    futures::executor::block_on(tokio::task::unconstrained(rt.spawn(fut)))
        .map_err(|e| Error::task("storage", e))?
}

impl Store {
    /// A local directory (created when first written to).
    pub fn local(dir: impl Into<PathBuf>) -> Result<Store> {
        let dir = dir.into();
        let abs = std::path::absolute(&dir).at(&dir)?;
        let url = Url::from_directory_path(&abs)
            .map_err(|()| Error::config(format!("{}: not a usable directory", abs.display())))?;
        Ok(Store {
            url,
            backend: Backend::Local(abs),
        })
    }

    /// The root that `location` names: a local path, a `file://` URL, or `s3://bucket/prefix`
    /// (`s3a://`, Spark's spelling, is the same), with `s3`'s endpoint settings.
    pub fn open(location: &str, s3: &S3Config) -> Result<Store> {
        let Some((scheme, _)) = location.split_once("://") else {
            return Store::local(location);
        };
        let url = Url::parse(location)
            .map_err(|e| Error::config(format!("`{location}`: not a URL ({e})")))?;
        match scheme.to_ascii_lowercase().as_str() {
            "file" => Store::local(url.to_file_path().map_err(|()| {
                Error::config(format!("`{location}`: not a file URL of an absolute path"))
            })?),
            "s3" | "s3a" => Store::s3(&url, s3),
            other => Err(Error::config(format!(
                "`{location}`: `{other}://` is not a storage lambdaflow knows (a local path, \
                 file:// or s3://)"
            ))),
        }
    }

    fn s3(url: &Url, s3: &S3Config) -> Result<Store> {
        let bucket = url
            .host_str()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| Error::config(format!("`{url}`: no bucket (s3://bucket/prefix)")))?;
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            // Create-only puts (`If-None-Match: *`): the Delta log's commits rely on them.
            .with_config(
                object_store::aws::AmazonS3ConfigKey::ConditionalPut,
                "etag".to_string(),
            );
        // What the environment lacks, from the AWS shared files' profile; `[output.s3]` below
        // wins over both.
        if let Some(p) = super::aws_profile::resolve(|k| std::env::var(k).ok())? {
            tracing::debug!(settings = ?p, "S3 settings from the AWS shared files");
            if let Some((id, secret)) = p.keys {
                b = b.with_access_key_id(id).with_secret_access_key(secret);
                if let Some(t) = p.session_token {
                    b = b.with_token(t);
                }
            }
            if let Some(r) = p.region {
                b = b.with_region(r);
            }
            if let Some(e) = p.endpoint {
                b = b.with_endpoint(e);
            }
            if let Some(path_style) = p.path_style {
                b = b.with_virtual_hosted_style_request(!path_style);
            }
        }
        if let Some(e) = &s3.endpoint {
            b = b.with_endpoint(e);
        }
        if let Some(r) = &s3.region {
            b = b.with_region(r);
        }
        if let Some(h) = s3.allow_http {
            b = b.with_allow_http(h);
        }
        if let Some(p) = s3.path_style {
            b = b.with_virtual_hosted_style_request(!p);
        }
        let bucket_store = b.build().map_err(|e| {
            Error::config(format!(
                "`{url}`: cannot reach the bucket with the AWS settings given ({e})"
            ))
        })?;
        let prefix = Key::from(url.path().trim_matches('/'));
        let mut root = Url::parse(&format!("s3://{bucket}/")).expect("an s3 URL");
        if !prefix.as_ref().is_empty() {
            root.set_path(&format!("{}/", prefix.as_ref()));
        }
        Ok(Store {
            url: root,
            backend: Backend::Object {
                bucket: Arc::new(bucket_store),
                prefix,
            },
        })
    }

    /// The root as a directory URL, with a trailing `/`.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The local directory of a local store.
    pub fn local_dir(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Local(d) => Some(d),
            Backend::Object { .. } => None,
        }
    }

    /// The bucket's store, rooted at the bucket (not at this root), for an object store.
    pub fn bucket(&self) -> Option<Arc<dyn ObjectStore>> {
        match &self.backend {
            Backend::Local(_) => None,
            Backend::Object { bucket, .. } => Some(Arc::clone(bucket)),
        }
    }

    /// The bucket's store and `key`'s full path in it, for an object store (what readers that
    /// fetch ranges themselves, such as parquet's, are given).
    pub fn object(&self, key: &str) -> Option<(Arc<dyn ObjectStore>, Key)> {
        match &self.backend {
            Backend::Local(_) => None,
            Backend::Object { bucket, prefix } => Some((Arc::clone(bucket), join(prefix, key))),
        }
    }

    /// The store rooted at `rel` under this one.
    pub fn child(&self, rel: &str) -> Store {
        let rel = rel.trim_matches('/');
        let url = self.url.join(&format!("{rel}/")).expect("a relative key");
        let backend = match &self.backend {
            Backend::Local(d) => Backend::Local(d.join(rel)),
            Backend::Object { bucket, prefix } => Backend::Object {
                bucket: Arc::clone(bucket),
                prefix: join(prefix, rel),
            },
        };
        Store { url, backend }
    }

    /// Where `key` is, for messages: a local path, or an `s3://` URL. As an [`Error::Io`] path.
    pub fn path_of(&self, key: &str) -> PathBuf {
        match &self.backend {
            Backend::Local(d) => d.join(key),
            Backend::Object { .. } => PathBuf::from(self.url_of(key).to_string()),
        }
    }

    /// `key` as a URL (`file:///…`, `s3://…`).
    pub fn url_of(&self, key: &str) -> Url {
        self.url.join(key).expect("a relative key")
    }

    /// Writes `bytes` as `key`, replacing what is there, atomically.
    pub fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        match &self.backend {
            Backend::Local(d) => {
                let path = d.join(key);
                let tmp = synced_temp(&path, &bytes)?;
                tmp.persist(&path).map_err(|e| Error::io(&path, e.error))?;
                sync_parent(&path);
                Ok(())
            }
            Backend::Object { bucket, prefix } => {
                let (b, k) = (Arc::clone(bucket), join(prefix, key));
                let shown = self.path_of(key);
                block(async move {
                    b.put(&k, PutPayload::from(bytes))
                        .await
                        .map(drop)
                        .map_err(|e| object_error(&shown, e))
                })
            }
        }
    }

    /// Writes `bytes` as `key` unless `key` exists: `Ok(false)` when it does (another writer
    /// won), and then nothing was written.
    pub fn put_new(&self, key: &str, bytes: Vec<u8>) -> Result<bool> {
        match &self.backend {
            Backend::Local(d) => {
                let path = d.join(key);
                let tmp = synced_temp(&path, &bytes)?;
                match std::fs::hard_link(tmp.path(), &path) {
                    Ok(()) => {
                        sync_parent(&path);
                        Ok(true)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(Error::io(&path, e)),
                }
            }
            Backend::Object { bucket, prefix } => {
                let (b, k) = (Arc::clone(bucket), join(prefix, key));
                let shown = self.path_of(key);
                block(async move {
                    let opts = PutOptions::from(PutMode::Create);
                    match b.put_opts(&k, PutPayload::from(bytes), opts).await {
                        Ok(_) => Ok(true),
                        Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
                        Err(e) => Err(object_error(&shown, e)),
                    }
                })
            }
        }
    }

    /// The bytes of `key` (an [`Error::Io`] of kind `NotFound` when there is none).
    pub fn get(&self, key: &str) -> Result<Bytes> {
        match &self.backend {
            Backend::Local(d) => {
                let path = d.join(key);
                std::fs::read(&path).map(Bytes::from).at(path)
            }
            Backend::Object { bucket, prefix } => {
                let (b, k) = (Arc::clone(bucket), join(prefix, key));
                let shown = self.path_of(key);
                block(async move {
                    let r = b.get(&k).await.map_err(|e| object_error(&shown, e))?;
                    r.bytes().await.map_err(|e| object_error(&shown, e))
                })
            }
        }
    }

    /// Every object under `dir` (a key prefix ending at a `/`; `""`: the whole root), with
    /// keys relative to the root, in no particular order. Temporary files of local writes in
    /// progress are left out.
    pub fn list(&self, dir: &str) -> Result<Vec<Entry>> {
        match &self.backend {
            Backend::Local(_) => futures::executor::block_on(self.list_async(dir)),
            Backend::Object { .. } => {
                let (s, dir) = (self.clone(), dir.to_string());
                block(async move { s.list_async(&dir).await })
            }
        }
    }

    /// [`Store::list`], for callers already on storage's runtime (the Delta log's operations:
    /// a blocking call there would wait for the thread it blocks).
    pub async fn list_async(&self, dir: &str) -> Result<Vec<Entry>> {
        let dir = dir.trim_matches('/');
        match &self.backend {
            Backend::Local(root) => {
                let mut out = Vec::new();
                list_local(root, &root.join(dir), &mut out)?;
                Ok(out)
            }
            Backend::Object { bucket, prefix } => {
                let p = join(prefix, dir);
                let metas: Vec<object_store::ObjectMeta> = bucket
                    .list(Some(&p))
                    .try_collect()
                    .await
                    .map_err(|e| object_error(&self.path_of(dir), e))?;
                Ok(metas
                    .into_iter()
                    .filter_map(|m| {
                        let key = m.location.as_ref().strip_prefix(prefix.as_ref())?;
                        Some(Entry {
                            key: key.trim_start_matches('/').to_string(),
                            size: m.size,
                            modified_ms: m.last_modified.timestamp_millis(),
                        })
                    })
                    .collect())
            }
        }
    }

    /// What a listing would say of `key`, or `None` when there is no such object; one HEAD on
    /// an object store.
    pub async fn head_async(&self, key: &str) -> Result<Option<Entry>> {
        match &self.backend {
            Backend::Local(d) => {
                let path = d.join(key);
                match std::fs::metadata(&path) {
                    Ok(m) => Ok(Some(Entry {
                        key: key.to_string(),
                        size: m.len(),
                        modified_ms: m
                            .modified()
                            .ok()
                            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                            .map_or(0, |d| d.as_millis() as i64),
                    })),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(Error::io(path, e)),
                }
            }
            Backend::Object { bucket, prefix } => match bucket.head(&join(prefix, key)).await {
                Ok(m) => Ok(Some(Entry {
                    key: key.to_string(),
                    size: m.size,
                    modified_ms: m.last_modified.timestamp_millis(),
                })),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(object_error(&self.path_of(key), e)),
            },
        }
    }

    /// Gives `from` the key `to` (replacing what `to` held).
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        match &self.backend {
            Backend::Local(d) => {
                let (a, b) = (d.join(from), d.join(to));
                std::fs::rename(&a, &b).at(&a)?;
                sync_parent(&b);
                Ok(())
            }
            Backend::Object { bucket, prefix } => {
                let store = Arc::clone(bucket);
                let (a, b) = (join(prefix, from), join(prefix, to));
                let shown = self.path_of(from);
                block(async move {
                    store
                        .rename(&a, &b)
                        .await
                        .map_err(|e| object_error(&shown, e))
                })
            }
        }
    }

    /// Deletes `key`; deleting what is not there (any more) is no error.
    pub fn delete(&self, key: &str) -> Result<()> {
        match &self.backend {
            Backend::Local(d) => {
                let path = d.join(key);
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    r => r.at(path),
                }
            }
            Backend::Object { bucket, prefix } => {
                let (b, k) = (Arc::clone(bucket), join(prefix, key));
                let shown = self.path_of(key);
                block(async move {
                    match b.delete(&k).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                        Err(e) => Err(object_error(&shown, e)),
                    }
                })
            }
        }
    }

    /// Deletes everything under the root.
    pub fn remove_all(&self) -> Result<()> {
        match &self.backend {
            Backend::Local(d) => match std::fs::remove_dir_all(d) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                r => r.at(d),
            },
            Backend::Object { .. } => {
                for e in self.list("")? {
                    self.delete(&e.key)?;
                }
                Ok(())
            }
        }
    }
}

/// Whether storage answers, as the layers last found it (for `/health`, `/api/status` and
/// `/metrics`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Health {
    /// False while a write is being retried because the storage is unreachable or full.
    pub up: bool,
    /// Since when it is not (RFC 3339).
    pub down_since: Option<String>,
    /// The last error while it is not.
    pub error: Option<String>,
    /// Times it went from up to down.
    pub outages: u64,
}

static HEALTH: std::sync::Mutex<Health> = std::sync::Mutex::new(Health {
    up: true,
    down_since: None,
    error: None,
    outages: 0,
});

/// Storage's health as last found.
pub fn health() -> Health {
    HEALTH.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Records what a layer found of storage: `None`, it answered; `Some(cause)`, it is away.
pub fn set_health(error: Option<String>) {
    let mut now = HEALTH.lock().unwrap_or_else(|e| e.into_inner());
    match error {
        None => {
            now.up = true;
            now.down_since = None;
            now.error = None;
        }
        Some(e) => {
            if now.up {
                now.outages += 1;
                now.down_since = Some(chrono::Utc::now().to_rfc3339());
            }
            now.up = false;
            now.error = Some(e);
        }
    }
}

/// Whether `e` is storage being away rather than wrong: an S3 server unreachable or failing
/// past object_store's own retries, a connection refused or reset, a full disk. Such a write
/// succeeds once the storage is back.
pub fn is_transient(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        // The object store's own error: itself, inside an io::Error (whose source() skips
        // it), or inside the Delta kernel's error (which keeps it without making it a source).
        let from_store = err
            .downcast_ref::<object_store::Error>()
            .or_else(|| {
                let io = err.downcast_ref::<std::io::Error>()?;
                io.get_ref()?.downcast_ref::<object_store::Error>()
            })
            .or_else(|| match err.downcast_ref::<delta_kernel::Error>()? {
                delta_kernel::Error::ObjectStore(o) => Some(o),
                _ => None,
            });
        if let Some(o) = from_store {
            return matches!(o, object_store::Error::Generic { .. });
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                ErrorKind::StorageFull
                    | ErrorKind::ConnectionRefused
                    | ErrorKind::ConnectionReset
                    | ErrorKind::TimedOut
            )
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Runs `op` until it succeeds or fails for a reason other than storage being away; while it
/// is away, waits with back-off (0.5 s doubling to 10 s), logs why, and reports it in
/// [`health`] — for as long as it takes (`limit` `None`: the speed layer, whose events wait in
/// Kafka) or up to `limit`, then fails with the last error. For work that can be done again
/// from the start. Storage is away when the error says so ([`is_transient`]), or when `root`
/// itself does not answer a listing right after it: delta-rs keeps some object-store errors
/// only as text.
pub fn patiently<T>(
    what: &str,
    root: &Store,
    limit: Option<Duration>,
    mut op: impl FnMut() -> Result<T>,
) -> Result<T> {
    let mut p = Patience::new(what, root, limit);
    loop {
        match op() {
            Ok(v) => return Ok(p.answered(v)),
            Err(e) => std::thread::sleep(p.away(e)?),
        }
    }
}

/// [`patiently`] for async work (`op` makes each try).
pub async fn patiently_async<T, F: Future<Output = Result<T>>>(
    what: &str,
    root: &Store,
    limit: Option<Duration>,
    mut op: impl FnMut() -> F,
) -> Result<T> {
    let mut p = Patience::new(what, root, limit);
    loop {
        match op().await {
            Ok(v) => return Ok(p.answered(v)),
            Err(e) => tokio::time::sleep(p.away(e)?).await,
        }
    }
}

/// The waiting of [`patiently`]: its back-off, its deadline and what it reports.
struct Patience<'a> {
    what: &'a str,
    root: &'a Store,
    wait: Duration,
    started: std::time::Instant,
    limit: Option<Duration>,
}

impl<'a> Patience<'a> {
    fn new(what: &'a str, root: &'a Store, limit: Option<Duration>) -> Self {
        Self {
            what,
            root,
            wait: Duration::from_millis(500),
            started: std::time::Instant::now(),
            limit,
        }
    }

    /// How long to wait before the next try after `e`, logged and reported; `Err(e)` when `e`
    /// is not storage being away, or it has been away past the limit.
    fn away(&mut self, e: Error) -> Result<Duration> {
        let away = is_transient(&e)
            || matches!(e, Error::Table { .. })
                && self
                    .root
                    .list("_speed")
                    .err()
                    .is_some_and(|p| is_transient(&p));
        if !away {
            return Err(e);
        }
        let cause = crate::error::Report(&e).to_string();
        if let Some(limit) = self.limit.filter(|&l| self.started.elapsed() >= l) {
            let limit = humantime::format_duration(limit);
            tracing::error!(cause = %cause, "{}: storage still away after {limit} (output.storage-wait); giving up", self.what);
            return Err(e);
        }
        tracing::warn!(cause = %cause, retry_in_ms = self.wait.as_millis() as u64, "{}: storage unreachable or full; waiting (nothing written so far is visible: the work starts again once it answers)", self.what);
        set_health(Some(cause));
        let w = self.wait;
        self.wait = (self.wait * 2).min(Duration::from_secs(10));
        Ok(w)
    }

    /// Storage answered: reported, and said when it had been away.
    fn answered<T>(&self, v: T) -> T {
        if !health().up {
            tracing::info!("{}: storage answers again; going on", self.what);
        }
        set_health(None);
        v
    }
}

fn join(prefix: &Key, rel: &str) -> Key {
    rel.split('/')
        .filter(|p| !p.is_empty())
        .fold(prefix.clone(), |k, part| k.clone().join(part))
}

/// A temporary file next to `path` holding `bytes`, synced.
fn synced_temp(path: &Path, bytes: &[u8]) -> Result<tempfile::NamedTempFile> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).at(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .at(dir)?;
    tmp.write_all(bytes).at(tmp.path())?;
    tmp.as_file().sync_all().at(tmp.path())?;
    Ok(tmp)
}

/// Names of local temporary files (left out of listings).
const TEMP_PREFIX: &str = ".tmp-";

/// Makes a rename or link in `path`'s directory durable.
fn sync_parent(path: &Path) {
    if let Some(d) = path.parent() {
        sync_dir(d);
    }
}

/// Syncs a directory (its entries: renames, links); not all file systems allow opening a
/// directory, so best effort.
pub(super) fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

fn list_local(root: &Path, dir: &Path, out: &mut Vec<Entry>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        r => r.at(dir)?,
    };
    for e in entries {
        let e = e.at(dir)?;
        let path = e.path();
        // Gone since the listing began: another process renamed or deleted it.
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_dir() {
            list_local(root, &path, out)?;
            continue;
        }
        if e.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let rel = path.strip_prefix(root).unwrap_or(&path);
        let key = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let modified_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
        out.push(Entry {
            key,
            size: meta.len(),
            modified_ms,
        });
    }
    Ok(())
}

/// An object store's error as an [`Error::Io`] on `shown`, keeping the kinds callers match on
/// (`NotFound`, `AlreadyExists`).
pub(crate) fn object_error(shown: &Path, e: object_store::Error) -> Error {
    use std::io::ErrorKind;
    let kind = match &e {
        object_store::Error::NotFound { .. } => ErrorKind::NotFound,
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            ErrorKind::AlreadyExists
        }
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => ErrorKind::PermissionDenied,
        _ => ErrorKind::Other,
    };
    Error::io(shown, std::io::Error::new(kind, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `serve --once` on a bucket with 500 segments spun at 100% CPU for good: each storage call
    /// from async code drew on the task's cooperative budget, and once it was spent the wait
    /// for the join handle never ended.
    #[test]
    fn many_storage_calls_from_one_async_task_all_complete() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let sum = rt.block_on(async {
                let mut sum = 0u64;
                for i in 0..1_000u64 {
                    sum += block(async move { Ok(i) }).unwrap();
                }
                sum
            });
            let _ = tx.send(sum);
        });
        let sum = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("1,000 storage calls from one task complete");
        assert_eq!(sum, 999 * 1_000 / 2);
    }

    #[test]
    fn a_local_store_puts_creates_once_lists_renames_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::local(dir.path()).unwrap().child("master");
        assert_eq!(s.local_dir(), Some(dir.path().join("master").as_path()));
        s.put("a/b.txt", b"one".to_vec()).unwrap();
        s.put("a/b.txt", b"two".to_vec()).unwrap();
        assert_eq!(&s.get("a/b.txt").unwrap()[..], b"two");
        assert!(s.put_new("a/c.txt", b"first".to_vec()).unwrap());
        assert!(!s.put_new("a/c.txt", b"second".to_vec()).unwrap());
        assert_eq!(&s.get("a/c.txt").unwrap()[..], b"first");
        s.rename("a/c.txt", "a/d.txt").unwrap();
        let mut keys: Vec<String> = s.list("a").unwrap().into_iter().map(|e| e.key).collect();
        keys.sort();
        assert_eq!(keys, ["a/b.txt", "a/d.txt"]);
        assert_eq!(s.list("").unwrap().len(), 2);
        assert!(s.list("nothing/here").unwrap().is_empty());
        s.delete("a/d.txt").unwrap();
        s.delete("a/d.txt").unwrap();
        let e = s.get("a/d.txt").unwrap_err();
        assert!(
            matches!(&e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
            "{e:?}"
        );
    }

    #[test]
    fn locations_are_paths_file_urls_or_buckets_and_others_are_named() {
        let none = S3Config::default();
        let s = Store::open("file:///var/lib/lambdaflow", &none).unwrap();
        assert_eq!(s.local_dir(), Some(Path::new("/var/lib/lambdaflow")));
        let s = Store::open("s3a://bucket/some/prefix", &none).unwrap();
        assert_eq!(s.url().as_str(), "s3://bucket/some/prefix/");
        let m = s.child("master");
        assert_eq!(
            m.url_of("topic=t/x.parquet").as_str(),
            "s3://bucket/some/prefix/master/topic=t/x.parquet"
        );
        assert_eq!(format!("{m:?}"), "Store(s3://bucket/some/prefix/master/)");
        assert_eq!(
            Store::open("s3://b", &none).unwrap().url().as_str(),
            "s3://b/"
        );
        let e = Store::open("gopher://x/y", &none).unwrap_err().to_string();
        assert!(e.contains("`gopher://` is not a storage"), "{e}");
        let e = Store::open("s3:///p", &none).unwrap_err().to_string();
        assert!(e.contains("no bucket"), "{e}");
    }
}
