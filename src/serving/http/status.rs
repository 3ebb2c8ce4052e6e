//! `/health`, `/api/status` and `POST /api/batch`: the pipeline's state for operators.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, ApiResult};

/// `GET /health`.
pub(super) async fn health(State(st): State<AppState>) -> Response {
    let s = st.state();
    let speed = st.speed(&s);
    if s.version == 0 || s.views.is_empty() {
        let detail = if speed.is_none() && st.batch_trigger.is_some() {
            format!(
                "the speed layer has not started: it waits for the Kafka brokers at {} (see the log)",
                st.pipeline.config.kafka.bootstrap_servers
            )
        } else {
            "the views are not loaded yet".to_string()
        };
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", detail).into_response();
    }
    // Under `run`, a view without a batch view is partial until the first batch run has been
    // published and taken up by the speed layer (or has failed: the status then says why).
    let waiting =
        s.live && s.batch.failures == 0 && s.views.iter().any(|v| v.read().batch().is_none());
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
        "kafka_up": speed.as_ref().map(|sp| sp.brokers.up),
        "storage_up": crate::storage::store::health().up,
        "uptime_seconds": st.started.elapsed().as_secs_f64(),
    }))
    .into_response()
}

/// `GET /api/status`.
pub(super) async fn status(State(st): State<AppState>) -> Json<Value> {
    let s = st.state();
    let topic = &st.pipeline.config.kafka.topic;
    let speed = st.speed(&s).map(|sp| {
        json!({
            "owned_partitions": sp.owned,
            "progress": sp.progress,
            "offsets": sp.offsets,
            "checkpointed": sp.checkpointed,
            "isolation": st.pipeline.config.serving.isolation,
            "lag": sp.lag(),
            "consumed": sp.consumed,
            "dead_letters": sp.dead_letters,
            "event_time": sp.event_time,
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
    let first = s.views.first().map(|v| v.read());
    let last_batch = first.as_ref().and_then(|t| t.batch()).map(|b| {
        json!({
            "run_id": b.manifest.run_id,
            "started_at": b.manifest.started_at,
            "duration_ms": b.manifest.duration_ms,
            "engine": b.manifest.engine,
            "events": b.manifest.rows,
            "rejected_lines": b.manifest.bad,
            "segments": b.manifest.segments,
            "offsets": b.manifest.offsets_of(topic),
        })
    });
    let group = st.group.as_ref().and_then(|g| g.borrow().clone());
    Json(json!({
        "live": s.live,
        "topic": topic,
        "speed": speed,
        "consumer_group": group,
        // Serving from the files: the views' event time as they record it.
        "event_time": (s.speed.is_none() && !s.event_time.is_empty()).then_some(&s.event_time),
        "batch": { "last_run": last_batch, "scheduler": s.batch },
        // The output root: down while a write waits for it (unreachable, or a full disk).
        "storage": crate::storage::store::health(),
        "events_per_second": rate,
    }))
}

/// `POST /api/batch`.
pub(super) async fn run_batch(State(st): State<AppState>) -> ApiResult<(StatusCode, Json<Value>)> {
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
