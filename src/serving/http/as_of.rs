//! `GET /api/views/{view}?as_of=<table version | RFC 3339 time>`: the view as the master
//! dataset was then — the batch layer's computation over the Delta table's version (and the
//! dataset files as they are now), the same answer `lambdaflow batch --as-of` prints.
//!
//! Serving does not compute views; the command that serves hands it a [`TimeTravel`] (the
//! batch layer, on its own runtime under `run`). A time resolves to the table version
//! committed at or before it; a version is immutable, so the last [`KEPT`] answers are kept
//! and a repeated question costs a page, not a batch run. One computation runs at a time;
//! a request for a version being computed waits for it.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::http::StatusCode;
use futures::future::BoxFuture;

use super::error::{ApiError, ApiResult};
use crate::config::Pipeline;
use crate::serving::ServedView;
use crate::storage::PublishedBatch;
use crate::storage::delta::{self, AsOf, Snapshot};

/// Computes every view's batch state over table version `v` (in the pipeline's view order).
pub type TimeTravel =
    Arc<dyn Fn(u64) -> BoxFuture<'static, crate::Result<Vec<PublishedBatch>>> + Send + Sync>;

/// Every view as of one table version.
type PastViews = Arc<Vec<Arc<ServedView>>>;

/// Answers kept, most recent first.
const KEPT: usize = 2;

/// The views of past table versions computed so far.
pub(super) struct History {
    travel: TimeTravel,
    kept: tokio::sync::Mutex<VecDeque<(u64, PastViews)>>,
}

impl History {
    pub(super) fn new(travel: TimeTravel) -> Self {
        Self {
            travel,
            kept: tokio::sync::Mutex::new(VecDeque::new()),
        }
    }

    /// Every view as of `as_of`, and the table version that is.
    pub(super) async fn views(&self, p: &Pipeline, as_of: AsOf) -> ApiResult<(u64, PastViews)> {
        let (version, table) = resolve(p, as_of).await?;
        let mut kept = self.kept.lock().await;
        if let Some(i) = kept.iter().position(|(v, _)| *v == version) {
            let hit = kept.remove(i).expect("a kept version");
            kept.push_front(hit.clone());
            return Ok((version, hit.1));
        }
        readable(version, &table).await?;
        tracing::info!(
            table_version = version,
            "serving layer: computing the views as of a past table version"
        );
        let batches = (self.travel)(version).await?;
        let views = p
            .views
            .iter()
            .zip(batches)
            .map(|(def, batch)| {
                ServedView::build(
                    def,
                    Some(Arc::new(batch)),
                    def.new_state(),
                    Default::default(),
                )
                .map(Arc::new)
            })
            .collect::<crate::Result<Vec<_>>>()?;
        let views = Arc::new(views);
        kept.push_front((version, Arc::clone(&views)));
        kept.truncate(KEPT);
        Ok((version, views))
    }
}

/// The table as of `as_of` and its version: 404 when the table has no such version (the
/// latest one is read only then, to say what there is).
async fn resolve(p: &Pipeline, as_of: AsOf) -> ApiResult<(u64, Snapshot)> {
    let dir = p.layout().master().map_err(ApiError::internal)?;
    let (at, latest) = tokio::task::spawn_blocking(move || {
        let at = delta::snapshot(&dir, as_of);
        let latest = at.is_err().then(|| delta::snapshot(&dir, AsOf::Latest));
        (at, latest)
    })
    .await
    .map_err(|e| ApiError::internal(crate::Error::task("reading the Delta log", e)))?;
    match at {
        Ok(table) => {
            if let Some(v) = table.version {
                return Ok((v, table));
            }
        }
        Err(e) => {
            tracing::debug!(cause = %e.report(), %as_of, "serving layer: no table version as of")
        }
    }
    Err(ApiError::not_found(
        match latest.and_then(|l| l.ok()).and_then(|l| l.version) {
            None => "the master dataset has no Delta table yet (the speed layer creates it at its first checkpoint)".to_string(),
            Some(l) => format!("the master dataset has no version as of {as_of} (its latest is version {l})"),
        },
    ))
}

/// 410 when a data file of `table` was removed by `lambdaflow compact` (VACUUM).
async fn readable(version: u64, table: &Snapshot) -> ApiResult<()> {
    let Some(first) = table.segments.first() else {
        return Ok(());
    };
    // One listing of the table, not one request per file.
    let store = first.table.clone();
    let present: std::collections::HashSet<String> =
        tokio::task::spawn_blocking(move || store.list(""))
            .await
            .map_err(|e| ApiError::internal(crate::Error::task("listing the master dataset", e)))?
            .map_err(ApiError::internal)?
            .into_iter()
            .map(|e| e.key)
            .collect();
    match table.segments.iter().find(|s| !present.contains(&s.key)) {
        None => Ok(()),
        Some(gone) => Err(ApiError::new(
            StatusCode::GONE,
            "gone",
            format!(
                "version {version} of the master dataset can no longer be read: its file {} was removed by `lambdaflow compact` (VACUUM)",
                gone.key.rsplit('/').next().unwrap_or_default()
            ),
        )),
    }
}
