//! How a new version of a directory of files becomes visible at once: a reader sees the
//! previous complete version or the new complete one, never a part of one.
//!
//! Every version is written into its own directory, `.<name>.d/<version>/`, ending with
//! `_SUCCESS`; nothing there is rewritten afterwards. What changes is which version is current:
//!
//! - On a local disk, `<name>` is a symlink to `.<name>.d/<version>`, replaced by a `rename(2)`
//!   once the version's files are synced. Readers that open `<name>/` (Spark, `jq`, the
//!   seed's instructions) see a plain directory.
//! - On an object store there is neither a symlink nor a rename. A version becomes current
//!   when its pointer is created: `.<name>.d/_published/<n>.json` (`n` zero-padded, one more
//!   than the highest pointer listed), holding the version's id, written with a create-only
//!   put after every file of the version ([`publish_objects`]). The current version is the one
//!   the highest pointer names ([`current_object`]): one short listing and one read.
//!
//!   Two publishers that race for pointer `n` are decided by the store: one put creates it,
//!   the other is refused and looks again. A publisher whose version sorts before the current
//!   one's stands down (versions are ids that sort by start time: the later run read at least
//!   as much), its files left for pruning; otherwise it tries the pointer after the current.
//!   Whatever the timing, the version current in the end is the latest one. A publisher that dies before its pointer leaves an unreferenced directory and
//!   nothing visible. Pointers and versions beyond the `keep` newest are deleted after each
//!   publication, so listings stay short.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::store::{self, Store};
use crate::error::{Error, IoContext, Result};

/// Publishes a new version of the directory `link` on a local disk: `fill` writes the files
/// into a fresh directory, which is synced, marked with `_SUCCESS`, and swapped in atomically.
/// Keeps the `keep` newest versions. Returns the version's directory.
fn publish_dir(
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
    store::sync_dir(&dir);
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
    store::sync_dir(parent);
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

/// The directory a published `link` points at, if one was published (local disk).
fn published(link: &Path) -> Option<PathBuf> {
    let dir = fs::canonicalize(link).ok()?;
    dir.join("_SUCCESS").exists().then_some(dir)
}

/// What a pointer object holds.
#[derive(Debug, Serialize, Deserialize)]
struct Pointer {
    version: String,
}

fn pointers_dir(versions: &str) -> String {
    format!("{versions}/_published")
}

fn pointer_seq(key: &str) -> Option<u64> {
    key.rsplit('/').next()?.strip_suffix(".json")?.parse().ok()
}

/// The pointers under `versions`, highest first.
fn pointers(store: &Store, versions: &str) -> Result<Vec<(u64, String)>> {
    let mut out: Vec<(u64, String)> = store
        .list(&pointers_dir(versions))?
        .into_iter()
        .filter_map(|e| Some((pointer_seq(&e.key)?, e.key)))
        .collect();
    out.sort_unstable_by(|a, b| b.cmp(a));
    Ok(out)
}

fn read_pointer(store: &Store, key: &str) -> Result<String> {
    let bytes = store.get(key)?;
    let p: Pointer = serde_json::from_slice(&bytes).map_err(|e| {
        Error::damaged(
            store.path_of(key),
            "publication pointer",
            "delete it: the pointer before it names the version in service",
            e,
        )
    })?;
    Ok(p.version)
}

/// The version current under the directory of versions `versions` (a key of `store`, such as
/// `.batch_view.d`), if one was published (see the module docs).
pub fn current_object(store: &Store, versions: &str) -> Result<Option<String>> {
    match pointers(store, versions)?.first() {
        None => Ok(None),
        Some((_, key)) => read_pointer(store, key).map(Some),
    }
}

/// Publishes `version` of the directory of versions `versions` on an object store: `files`
/// (name, bytes), then `_SUCCESS`, then its pointer (see the module docs). Returns false when
/// a publisher of a later version won the race, and this version was not made current.
pub fn publish_objects(
    store: &Store,
    versions: &str,
    version: &str,
    keep: usize,
    files: Vec<(String, Vec<u8>)>,
) -> Result<bool> {
    let dir = format!("{versions}/{version}");
    for (name, bytes) in files {
        store.put(&format!("{dir}/{name}"), bytes)?;
    }
    store.put(&format!("{dir}/_SUCCESS"), Vec::new())?;
    let body = serde_json::to_vec(&Pointer {
        version: version.to_string(),
    })
    .map_err(|e| Error::Internal(e.to_string()))?;
    loop {
        let next = match pointers(store, versions)?.first() {
            None => 0,
            Some((n, key)) => {
                let current = read_pointer(store, key)?;
                if current.as_str() > version {
                    tracing::info!(%version, %current, "a later version was published meanwhile; this one stands down");
                    return Ok(false);
                }
                n + 1
            }
        };
        let key = format!("{}/{next:020}.json", pointers_dir(versions));
        if store.put_new(&key, body.clone())? {
            break;
        }
        // Another publisher created that pointer first: look again.
    }
    prune_objects(store, versions, keep)?;
    Ok(true)
}

/// Deletes the pointers beyond the `keep` newest, and the versions no kept pointer names that
/// sort before the oldest kept one (a version sorting after it may be being written).
fn prune_objects(store: &Store, versions: &str, keep: usize) -> Result<()> {
    let ptrs = pointers(store, versions)?;
    let keep = keep.max(1);
    let kept: Vec<String> = ptrs
        .iter()
        .take(keep)
        .map(|(_, k)| read_pointer(store, k))
        .collect::<Result<_>>()?;
    for (_, k) in ptrs.iter().skip(keep) {
        store.delete(k)?;
    }
    let Some(oldest) = kept.iter().min() else {
        return Ok(());
    };
    let prefix = format!("{versions}/");
    for e in store.list(versions)? {
        let Some(v) = e
            .key
            .strip_prefix(&prefix)
            .and_then(|r| r.split('/').next())
        else {
            continue;
        };
        if v != "_published" && v < oldest.as_str() && !kept.iter().any(|k| k == v) {
            store.delete(&e.key)?;
        }
    }
    Ok(())
}

/// Where a directory of versions is published: a symlink on a local disk, pointers on an
/// object store (see the module docs).
#[derive(Debug, Clone)]
pub enum Target {
    /// The symlink (`output/batch_view`).
    Link(PathBuf),
    /// The directory of versions on an object store (`.batch_view.d`).
    Objects {
        /// The store.
        store: Store,
        /// The key of the directory of versions.
        versions: String,
    },
}

impl Target {
    /// Publishes `files` (name, bytes) as `version`, keeping the `keep` newest versions.
    /// Returns false when, on an object store, a later version won the race and stays
    /// current.
    pub fn publish(
        &self,
        version: &str,
        keep: usize,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<bool> {
        match self {
            Target::Link(link) => {
                publish_dir(link, version, keep, |dir| {
                    for (name, bytes) in &files {
                        let path = dir.join(name);
                        fs::write(&path, bytes).at(path)?;
                    }
                    Ok(())
                })?;
                Ok(true)
            }
            Target::Objects { store, versions } => {
                publish_objects(store, versions, version, keep, files)
            }
        }
    }

    /// The version in service, if one was published.
    pub fn current(&self) -> Result<Option<Version>> {
        Ok(match self {
            Target::Link(link) => published(link).map(Version::Dir),
            Target::Objects { store, versions } => current_object(store, versions)?
                .map(|v| Version::Object(store.clone(), format!("{versions}/{v}"))),
        })
    }

    /// Where file `name` of `version` is, for messages (through the link on a local disk).
    pub fn shown_file(&self, version: &str, name: &str) -> String {
        match self {
            Target::Link(link) => link.join(name).display().to_string(),
            Target::Objects { store, versions } => store
                .url_of(&format!("{versions}/{version}/{name}"))
                .to_string(),
        }
    }

    /// Where it is, for messages: the link's path, or the versions' URL.
    pub fn shown(&self) -> String {
        match self {
            Target::Link(link) => link.display().to_string(),
            Target::Objects { store, versions } => store.url_of(versions).to_string(),
        }
    }
}

/// A published version, to read its files.
#[derive(Debug, Clone)]
pub enum Version {
    /// Its directory on a local disk.
    Dir(PathBuf),
    /// Its directory (a key prefix) on an object store.
    Object(Store, String),
}

impl Version {
    /// The version's id.
    pub fn id(&self) -> Option<String> {
        match self {
            Version::Dir(d) => d.file_name()?.to_str().map(String::from),
            Version::Object(_, dir) => dir.rsplit('/').next().map(String::from),
        }
    }

    /// A file of the version: where it is (for messages), and its bytes.
    pub fn read(&self, name: &str) -> Result<(PathBuf, bytes::Bytes)> {
        match self {
            Version::Dir(d) => {
                let path = d.join(name);
                let bytes = fs::read(&path).at(&path)?;
                Ok((path, bytes.into()))
            }
            Version::Object(store, dir) => {
                let key = format!("{dir}/{name}");
                Ok((store.path_of(&key), store.get(&key)?))
            }
        }
    }
}
