//! The serving layer over HTTP (axum): the views as JSON, Server-Sent Events per change, the
//! live dashboard, `/health`, Prometheus `/metrics` and the OpenAPI document.
//!
//! Every handler answers from one [`ServingState`] (replaced as a whole on each change), so a
//! response never mixes two versions of a view. Errors are JSON `{"error", "detail"}` with the
//! right status; with `serving.token` set, every endpoint but `/health` requires
//! `Authorization: Bearer <token>` (or `?access_token=` for the browser's EventSource).

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, watch};

use super::{ServedView, ServingState};
use crate::config::Pipeline;
use crate::storage;

/// The dashboard: one self-contained page (no CDN, no build step).
const DASHBOARD: &str = include_str!("dashboard.html");

/// An API error: a status and the JSON body `{"error", "detail"}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    detail: String,
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            error,
            detail: detail.into(),
        }
    }

    fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "error": self.error, "detail": self.detail })),
        )
            .into_response()
    }
}

impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
}

type ApiResult<T> = Result<T, ApiError>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    path: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuantileLabels {
    quantile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabels {
    path: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

struct Metrics {
    registry: Registry,
    consumed: Family<PartitionLabels, Counter>,
    lag: Family<PartitionLabels, Gauge>,
    offset: Family<PartitionLabels, Gauge>,
    dead_letters: Counter,
    microbatch: SnapshotHistogram,
    kafka_up: Gauge,
    kafka_outages: Counter,
    latency: Family<QuantileLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    batch_duration: Gauge<f64, std::sync::atomic::AtomicU64>,
    batch_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    batch_runs: Counter,
    batch_failures: Counter,
    http_requests: Family<HttpLabels, Counter>,
    http_latency: HistogramFamily<PathLabels>,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("lambdaflow");
        let m = Self {
            registry: Registry::default(),
            consumed: Family::default(),
            lag: Family::default(),
            offset: Family::default(),
            dead_letters: Counter::default(),
            microbatch: SnapshotHistogram::default(),
            kafka_up: Gauge::default(),
            kafka_outages: Counter::default(),
            latency: Family::default(),
            batch_duration: Gauge::default(),
            batch_age: Gauge::default(),
            batch_runs: Counter::default(),
            batch_failures: Counter::default(),
            http_requests: Family::default(),
            http_latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 16))
            }),
        };
        registry.register(
            "speed_events_consumed",
            "Messages the speed layer consumed, per partition (since start)",
            m.consumed.clone(),
        );
        registry.register(
            "speed_consumer_lag",
            "Messages behind the partition's high watermark",
            m.lag.clone(),
        );
        registry.register(
            "speed_offset",
            "Next offset the speed layer reads, per partition",
            m.offset.clone(),
        );
        registry.register(
            "speed_dead_letters",
            "Messages sent to the dead-letter file",
            m.dead_letters.clone(),
        );
        registry.register(
            "speed_microbatch_duration_seconds",
            "Duration of the speed layer's micro-batches",
            m.microbatch.clone(),
        );
        registry.register(
            "speed_visible_latency_seconds",
            "Produce-to-visible latency since start (Kafka timestamp to the end of the micro-batch), by quantile",
            m.latency.clone(),
        );
        registry.register(
            "kafka_up",
            "1 when the Kafka brokers answer the speed layer, else 0",
            m.kafka_up.clone(),
        );
        registry.register(
            "kafka_outages",
            "Times the brokers went from reachable to unreachable",
            m.kafka_outages.clone(),
        );
        registry.register(
            "batch_run_duration_seconds",
            "Duration of the last batch run",
            m.batch_duration.clone(),
        );
        registry.register(
            "batch_view_age_seconds",
            "Seconds since the batch run in service started",
            m.batch_age.clone(),
        );
        registry.register(
            "batch_runs",
            "Batch runs finished since start",
            m.batch_runs.clone(),
        );
        registry.register(
            "batch_failures",
            "Batch runs that failed since start",
            m.batch_failures.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            m.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            m.http_latency.clone(),
        );
        Self { registry, ..m }
    }

    /// Brings the counters and gauges up to the state's values.
    fn observe(&self, st: &ServingState) {
        fn catch_up(c: &Counter, total: u64) {
            let now = c.get();
            if total > now {
                c.inc_by(total - now);
            }
        }
        if let Some(s) = &st.speed {
            for (p, n) in &s.consumed_by_partition {
                catch_up(
                    &self.consumed.get_or_create(&PartitionLabels {
                        partition: p.to_string(),
                    }),
                    *n,
                );
            }
            for (p, l) in s.lag() {
                self.lag
                    .get_or_create(&PartitionLabels {
                        partition: p.to_string(),
                    })
                    .set(l);
            }
            for (p, o) in &s.offsets {
                self.offset
                    .get_or_create(&PartitionLabels {
                        partition: p.to_string(),
                    })
                    .set(*o);
            }
            catch_up(&self.dead_letters, s.dead_letters);
            *self.microbatch.0.lock().unwrap_or_else(|e| e.into_inner()) = s.microbatch.clone();
            for q in ["0.5", "0.99", "1"] {
                if let Some(ms) = s.latency.quantile(q.parse().unwrap_or(1.0)) {
                    self.latency
                        .get_or_create(&QuantileLabels { quantile: q.into() })
                        .set(ms as f64 / 1e3);
                }
            }
            self.kafka_up.set(i64::from(s.brokers.up));
            catch_up(&self.kafka_outages, s.brokers.outages);
        }
        catch_up(&self.batch_runs, st.batch.runs);
        catch_up(&self.batch_failures, st.batch.failures);
        if let Some(ms) = st.batch.last_duration_ms.or_else(|| {
            st.views
                .first()
                .and_then(|v| v.batch.as_ref())
                .map(|b| b.manifest.duration_ms)
        }) {
            self.batch_duration.set(ms as f64 / 1e3);
        }
        if let Some(age) = st
            .views
            .first()
            .and_then(|v| v.freshness("").batch_age_seconds)
        {
            self.batch_age.set(age);
        }
    }
}

/// The speed layer's own micro-batch histogram, exported as it is at the scrape.
#[derive(Debug, Clone, Default)]
struct SnapshotHistogram(Arc<Mutex<crate::speed::DurationHistogram>>);

impl prometheus_client::metrics::TypedMetric for SnapshotHistogram {
    const TYPE: prometheus_client::metrics::MetricType =
        prometheus_client::metrics::MetricType::Histogram;
}

impl prometheus_client::encoding::EncodeMetric for SnapshotHistogram {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        let h = self.0.lock().unwrap_or_else(|e| e.into_inner());
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            h.sum, h.count, &h.buckets, None,
        )
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Histogram
    }
}

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
    metrics: Arc<Metrics>,
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
            metrics: Arc::new(Metrics::new()),
            throughput: Arc::default(),
            started: Instant::now(),
        };
        let (rx, tp, t0) = (st.served.clone(), Arc::clone(&st.throughput), st.started);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if rx.has_changed().is_err() {
                    return; // the state's sender is gone: the server is stopping
                }
                let consumed = rx.borrow().speed.as_ref().map_or(0, |s| s.consumed);
                let mut t = tp.lock().unwrap_or_else(|e| e.into_inner());
                t.samples.push_back((t0.elapsed().as_secs_f64(), consumed));
                while t.samples.len() > 301 {
                    t.samples.pop_front();
                }
            }
        });
        st
    }

    fn state(&self) -> Arc<ServingState> {
        self.served.borrow().clone()
    }
}

/// The API's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/openapi.json", get(openapi))
        .route("/api/status", get(status))
        .route("/api/batch", post(run_batch))
        .route("/api/views", get(list_views))
        .route("/api/views/{view}", get(get_view))
        .route("/api/views/{view}/stream", get(stream_view))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route {} (see /api/openapi.json)", req.uri().path()),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

async fn record(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let resp = next.run(req).await;
    st.metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method,
            path: path.clone(),
            status: resp.status().as_u16().to_string(),
        })
        .inc();
    st.metrics
        .http_latency
        .get_or_create(&PathLabels { path })
        .observe(started.elapsed().as_secs_f64());
    resp
}

async fn authorize(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = st.pipeline.config.serving.token.as_deref() else {
        return next.run(req).await;
    };
    if req.uri().path() == "/health" {
        return next.run(req).await;
    }
    let header_ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == token);
    let query_ok = req
        .uri()
        .query()
        .is_some_and(|q| form_pairs(q).any(|(k, v)| k == "access_token" && v == token));
    if header_ok || query_ok {
        return next.run(req).await;
    }
    let mut resp = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this endpoint requires `Authorization: Bearer <serving.token>`",
    )
    .into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

fn form_pairs(q: &str) -> impl Iterator<Item = (String, String)> + '_ {
    q.split('&').filter(|s| !s.is_empty()).map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k.to_string(), v.to_string())
    })
}

async fn dashboard() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))],
        Html(DASHBOARD),
    )
}

async fn health(State(st): State<AppState>) -> Response {
    let s = st.state();
    if s.version == 0 || s.views.is_empty() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the views are not loaded yet",
        )
        .into_response();
    }
    // Under `run`, a view without a batch view is partial until the first batch run has been
    // published and taken up by the speed layer (or has failed: the status then says why).
    let waiting = s.live && s.batch.failures == 0 && s.views.iter().any(|v| v.batch.is_none());
    if waiting {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the first batch run is in progress",
        )
        .into_response();
    }
    Json(json!({
        "status": "ready",
        "views": s.views.len(),
        "kafka_up": s.speed.as_ref().map(|sp| sp.brokers.up),
        "uptime_seconds": st.started.elapsed().as_secs_f64(),
    }))
    .into_response()
}

async fn metrics(State(st): State<AppState>) -> ApiResult<Response> {
    st.metrics.observe(&st.state());
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &st.metrics.registry)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        out,
    )
        .into_response())
}

fn view<'a>(s: &'a ServingState, name: &str) -> ApiResult<&'a ServedView> {
    s.views.iter().find(|v| v.def.name == name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no view `{name}`; views: {}",
                s.views
                    .iter()
                    .map(|v| v.def.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })
}

fn columns(v: &ServedView) -> Value {
    v.def
        .output_schema()
        .fields()
        .iter()
        .map(|f| json!({ "name": f.name(), "type": f.data_type().to_string() }))
        .collect()
}

async fn list_views(State(st): State<AppState>) -> Json<Value> {
    let s = st.state();
    let topic = &st.pipeline.config.kafka.topic;
    Json(
        s.views
            .iter()
            .map(|v| {
                json!({
                    "name": v.def.name,
                    "sql": v.def.sql,
                    "columns": columns(v),
                    "freshness": v.freshness(topic),
                })
            })
            .collect(),
    )
}

/// The parameters of `GET /api/views/{view}`.
#[derive(Debug, Default)]
struct ViewParams {
    key: Option<String>,
    limit: Option<usize>,
    order_by: Option<(String, bool)>,
    explain: bool,
}

fn parse_params(q: &BTreeMap<String, String>) -> ApiResult<ViewParams> {
    let mut p = ViewParams::default();
    for (k, v) in q {
        match k.as_str() {
            "key" => p.key = Some(v.clone()),
            "limit" => {
                p.limit = Some(v.parse().map_err(|_| {
                    ApiError::bad_request(format!("limit `{v}`: expected a number of rows ≥ 0"))
                })?)
            }
            "order_by" => {
                let (col, desc) = match v.split_once(':') {
                    Some((c, "desc")) => (c, true),
                    Some((c, "asc")) => (c, false),
                    Some((_, d)) => {
                        return Err(ApiError::bad_request(format!(
                            "order_by `{v}`: direction `{d}` is not `asc` or `desc`"
                        )));
                    }
                    None => match v.strip_prefix('-') {
                        Some(c) => (c, true),
                        None => (v.as_str(), false),
                    },
                };
                p.order_by = Some((col.to_string(), desc));
            }
            "explain" => {
                p.explain = match v.as_str() {
                    "true" | "1" | "" => true,
                    "false" | "0" => false,
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "explain `{v}`: expected true or false"
                        )));
                    }
                }
            }
            "access_token" => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter `{other}`; expected key, limit, order_by, explain"
                )));
            }
        }
    }
    Ok(p)
}

/// The body of a view: rows (filtered, ordered, limited), freshness, and explanations.
fn view_body(st: &AppState, s: &ServingState, name: &str, p: &ViewParams) -> ApiResult<Value> {
    let v = view(s, name)?;
    let (rows, parts) = if p.explain {
        let (rows, b, sp) = v.explain()?;
        (
            storage::json_rows(&rows)?,
            Some((storage::json_rows(&b)?, storage::json_rows(&sp)?)),
        )
    } else {
        (storage::json_rows(&v.rows()?)?, None)
    };
    let mut rows: Vec<(Map<String, Value>, Option<Value>)> = match parts {
        Some((b, sp)) => rows
            .into_iter()
            .zip(b.into_iter().zip(sp))
            .map(|(r, (b, sp))| {
                let e = json!({ "batch": b, "speed": sp });
                (r, Some(e))
            })
            .collect(),
        None => rows.into_iter().map(|r| (r, None)).collect(),
    };
    let schema = v.def.output_schema();
    let names: Vec<&String> = schema.fields().iter().map(|f| f.name()).collect();
    if let Some(key) = &p.key {
        let glen = v.def.group_len();
        let key_cols: Vec<&String> = names.iter().take(glen).copied().collect();
        if glen == 0 {
            return Err(ApiError::bad_request(format!(
                "view `{name}` has no GROUP BY key to select with `key`"
            )));
        }
        let parts: Vec<&str> = if glen == 1 {
            vec![key.as_str()]
        } else {
            key.split(',').collect()
        };
        if parts.len() != glen {
            return Err(ApiError::bad_request(format!(
                "key `{key}`: view `{name}` has {glen} key columns ({}); separate their values with `,`",
                key_cols
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        rows.retain(|(r, _)| {
            key_cols
                .iter()
                .zip(&parts)
                .all(|(c, want)| match r.get(*c) {
                    Some(Value::String(s)) => s == want,
                    Some(Value::Null) | None => *want == "null",
                    Some(other) => other.to_string().as_str() == *want,
                })
        });
    }
    if let Some((col, desc)) = &p.order_by {
        if !names.contains(&col) {
            return Err(ApiError::bad_request(format!(
                "order_by `{col}`: view `{name}` has no such column; columns: {}",
                names
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        rows.sort_by(|(a, _), (b, _)| {
            let o = cmp_json(a.get(col), b.get(col));
            if *desc { o.reverse() } else { o }
        });
    }
    if let Some(n) = p.limit {
        rows.truncate(n);
    }
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|(mut r, e)| {
            if let Some(e) = e {
                r.insert("_explain".into(), e);
            }
            Value::Object(r)
        })
        .collect();
    Ok(json!({
        "view": name,
        "columns": columns(v),
        "rows": rows,
        "freshness": v.freshness(&st.pipeline.config.kafka.topic),
        "version": s.version,
    }))
}

fn cmp_json(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (None | Some(Value::Null), None | Some(Value::Null)) => Ordering::Equal,
        (None | Some(Value::Null), _) => Ordering::Greater, // nulls last
        (_, None | Some(Value::Null)) => Ordering::Less,
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
    }
}

async fn get_view(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Path(name) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let params = parse_params(&q)?;
    Ok(Json(view_body(&st, &st.state(), &name, &params)?))
}

async fn stream_view(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let Path(name) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let params = parse_params(&q)?;
    view(&st.state(), &name)?;
    let rx = st.served.clone();
    let stream = futures::stream::unfold(
        (st, rx, name, params, String::new(), true),
        |(st, mut rx, name, params, last, first)| async move {
            loop {
                if !first && rx.changed().await.is_err() {
                    return None;
                }
                let s = rx.borrow_and_update().clone();
                // A change is a change of rows or of what they are made of — not of the
                // version counter or of the batch view's age.
                let (body, sig) = match view_body(&st, &s, &name, &params) {
                    Ok(mut b) => {
                        b.as_object_mut().map(|o| o.remove("version"));
                        let mut sig = b.clone();
                        sig["freshness"]
                            .as_object_mut()
                            .map(|f| f.remove("batch_age_seconds"));
                        (b.to_string(), sig.to_string())
                    }
                    Err(e) => {
                        let b = json!({ "error": e.error, "detail": e.detail }).to_string();
                        (b.clone(), b)
                    }
                };
                if sig != last || first {
                    let ev = Event::default().event("view").data(&body);
                    return Some((Ok(ev), (st, rx, name, params, sig, false)));
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

async fn status(State(st): State<AppState>) -> Json<Value> {
    let s = st.state();
    let topic = &st.pipeline.config.kafka.topic;
    let speed = s.speed.as_ref().map(|sp| {
        json!({
            "progress": sp.progress,
            "offsets": sp.offsets,
            "lag": sp.lag(),
            "consumed": sp.consumed,
            "dead_letters": sp.dead_letters,
            "kafka_up": sp.brokers.up,
            "kafka_outages": sp.brokers.outages,
            "visible_latency_ms": {
                "p50": sp.latency.quantile(0.5),
                "p99": sp.latency.quantile(0.99),
                "max": sp.latency.quantile(1.0),
            },
        })
    });
    let tp = st.throughput.lock().unwrap_or_else(|e| e.into_inner());
    let rate: Vec<Value> = tp
        .samples
        .iter()
        .zip(tp.samples.iter().skip(1))
        .map(|((t0, c0), (t1, c1))| {
            json!({ "t": t1, "events_per_second": (c1.saturating_sub(*c0)) as f64 / (t1 - t0).max(1e-3) })
        })
        .collect();
    let last_batch = s.views.first().and_then(|v| v.batch.as_ref()).map(|b| {
        json!({
            "run_id": b.manifest.run_id,
            "started_at": b.manifest.started_at,
            "duration_ms": b.manifest.duration_ms,
            "events": b.manifest.rows,
            "rejected_lines": b.manifest.bad,
            "segments": b.manifest.segments,
            "offsets": b.manifest.offsets_of(topic),
        })
    });
    Json(json!({
        "live": s.live,
        "topic": topic,
        "speed": speed,
        "batch": { "last_run": last_batch, "scheduler": s.batch },
        "events_per_second": rate,
    }))
}

async fn run_batch(State(st): State<AppState>) -> ApiResult<(StatusCode, Json<Value>)> {
    match &st.batch_trigger {
        Some(t) => {
            t.notify_one();
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({ "status": "accepted", "detail": "a batch run will start now" })),
            ))
        }
        None => Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "batch runs are scheduled by `lambdaflow run`; this is `lambdaflow serve` (run `lambdaflow batch`)",
        )),
    }
}

async fn openapi(State(st): State<AppState>) -> Json<Value> {
    let names: Vec<&str> = st.pipeline.views.iter().map(|v| v.name.as_str()).collect();
    Json(super::openapi::document(&names))
}

/// Serves `state` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
