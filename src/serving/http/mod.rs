//! The serving layer over HTTP (axum): the views as JSON, Server-Sent Events per change, the
//! live dashboard, `/health`, Prometheus `/metrics` and the OpenAPI document.
//!
//! Every handler answers from one [`ServingState`]; a view's rows come from its maintained
//! table, read under its lock, so a response never mixes two versions of a view.
//!
//! Files: `error.rs` (the JSON error shape), `auth.rs` (the bearer token), `views.rs` (rows,
//! pages, keys, the stream), `status.rs` (health, status, batch trigger), `metrics.rs`
//! (`/metrics` and request recording), `parse_errors.rs` (JSON for the requests hyper answers
//! itself), `as_of.rs` (views of past table versions). Errors are JSON `{"error", "detail"}` with the
//! right status; with `serving.token` set, every endpoint but `/health` requires
//! `Authorization: Bearer <token>` (or `?access_token=` for the browser's EventSource).

mod as_of;
mod auth;
mod error;
mod metrics;
mod parse_errors;
mod sql;
mod status;
mod views;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::sync::{Notify, watch};

pub use as_of::TimeTravel;
pub use error::{ApiError, ApiResult};
pub use views::DEFAULT_PAGE;

use super::ServingState;
use crate::config::Pipeline;
use crate::speed::Snapshot;

/// The dashboard: one self-contained page (no CDN, no build step).
const DASHBOARD: &str = include_str!("dashboard.html");

/// Events per second over the last minutes, sampled once a second.
#[derive(Default)]
struct Throughput {
    samples: VecDeque<(f64, u64)>,
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pipeline: Arc<Pipeline>,
    served: watch::Receiver<Arc<ServingState>>,
    batch_trigger: Option<Arc<Notify>>,
    history: Option<Arc<as_of::History>>,
    /// The consumer group of speed layers (`lambdaflow serve` with `speed.consumer-group`).
    group: Option<crate::serving::group::GroupWatch>,
    /// This process's speed layer when the served state does not carry it (`run` in a
    /// consumer group serves every partition from the files, and runs one member).
    member: Option<watch::Receiver<Arc<Snapshot>>>,
    /// SQL over the views (`POST /api/sql`).
    sql: Option<Arc<crate::serving::sql::SqlEngine>>,
    metrics: Arc<metrics::Metrics>,
    throughput: Arc<Mutex<Throughput>>,
    started: Instant,
}

impl AppState {
    /// State over `served`; `batch_trigger` enables `POST /api/batch` (`lambdaflow run`).
    /// Starts a sampler task for the throughput chart.
    pub fn new(
        pipeline: Arc<Pipeline>,
        served: watch::Receiver<Arc<ServingState>>,
        batch_trigger: Option<Arc<Notify>>,
    ) -> Self {
        let st = Self {
            pipeline,
            served,
            batch_trigger,
            history: None,
            group: None,
            member: None,
            sql: None,
            metrics: Arc::new(metrics::Metrics::new()),
            throughput: Arc::default(),
            started: Instant::now(),
        };
        let (st2, tp, t0) = (st.clone(), Arc::clone(&st.throughput), st.started);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if st2.served.has_changed().is_err() {
                    return; // the state's sender is gone: the server is stopping
                }
                let consumed = st2.speed(&st2.state()).map_or(0, |s| s.consumed);
                let mut t = tp.lock().unwrap_or_else(|e| e.into_inner());
                t.samples.push_back((t0.elapsed().as_secs_f64(), consumed));
                while t.samples.len() > 301 {
                    t.samples.pop_front();
                }
            }
        });
        st
    }

    /// Enables `?as_of=` on `GET /api/views/{view}`: `travel` computes the views of a past
    /// table version.
    pub fn with_time_travel(mut self, travel: TimeTravel) -> Self {
        self.history = Some(Arc::new(as_of::History::new(travel)));
        self
    }

    /// Shows the consumer group of speed layers on `/api/status` (when there is one).
    pub fn with_group(mut self, group: Option<crate::serving::group::GroupWatch>) -> Self {
        self.group = group;
        self
    }

    /// Shows this process's speed layer, a member of a consumer group, on `/api/status`,
    /// `/health` and `/metrics` while the views are served from the files.
    pub fn with_member(mut self, member: watch::Receiver<Arc<Snapshot>>) -> Self {
        self.member = Some(member);
        self
    }

    /// Answers `POST /api/sql` with `engine`.
    pub fn with_sql(mut self, engine: Arc<crate::serving::sql::SqlEngine>) -> Self {
        self.sql = Some(engine);
        self
    }

    fn state(&self) -> Arc<ServingState> {
        self.served.borrow().clone()
    }

    /// The speed layer of this process: the live one the views are served from, or a group
    /// member's.
    fn speed(&self, s: &ServingState) -> Option<Arc<Snapshot>> {
        s.speed
            .clone()
            .or_else(|| self.member.as_ref().map(|m| m.borrow().clone()))
    }
}

/// The API's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/health", get(status::health))
        .route("/metrics", get(metrics::metrics))
        .route("/api/openapi.json", get(openapi))
        .route("/api/status", get(status::status))
        .route("/api/batch", post(status::run_batch))
        .route("/api/sql", post(sql::query))
        .route("/api/views", get(views::list_views))
        .route("/api/views/{view}", get(views::get_view))
        .route("/api/views/{view}/stream", get(views::stream_view))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::record,
        ))
        .with_state(state)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route {} (see /api/openapi.json)",
        req.uri().path()
    ))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

async fn dashboard() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))],
        Html(DASHBOARD),
    )
}

async fn openapi(axum::extract::State(st): axum::extract::State<AppState>) -> Json<Value> {
    let names: Vec<&str> = st.pipeline.views.iter().map(|v| v.name.as_str()).collect();
    Json(super::openapi::document(&names))
}

/// Serves `state` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(parse_errors::Listener(listener), router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
