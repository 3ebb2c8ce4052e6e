//! `/metrics`: the pipeline's counters and gauges in Prometheus/OpenMetrics text, and the
//! middleware that records every HTTP request.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::AppState;
use super::error::{ApiError, ApiResult};
use crate::serving::ServingState;
use crate::speed::Snapshot;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViewLabels {
    view: String,
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

pub(super) struct Metrics {
    registry: Registry,
    consumed: Family<PartitionLabels, Counter>,
    lag: Family<PartitionLabels, Gauge>,
    offset: Family<PartitionLabels, Gauge>,
    dead_letters: Counter,
    watermark: Family<ViewLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    late: Family<ViewLabels, Counter>,
    ahead: Family<ViewLabels, Counter>,
    microbatch: SnapshotHistogram,
    kafka_up: Gauge,
    kafka_outages: Counter,
    storage_up: Gauge,
    storage_outages: Counter,
    latency: Family<QuantileLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    batch_duration: Gauge<f64, std::sync::atomic::AtomicU64>,
    batch_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    batch_runs: Counter,
    batch_failures: Counter,
    http_requests: Family<HttpLabels, Counter>,
    http_latency: HistogramFamily<PathLabels>,
}

impl Metrics {
    pub(super) fn new() -> Self {
        let mut registry = Registry::with_prefix("lambdaflow");
        let m = Self {
            registry: Registry::default(),
            consumed: Family::default(),
            lag: Family::default(),
            offset: Family::default(),
            dead_letters: Counter::default(),
            watermark: Family::default(),
            late: Family::default(),
            ahead: Family::default(),
            microbatch: SnapshotHistogram::default(),
            kafka_up: Gauge::default(),
            kafka_outages: Counter::default(),
            storage_up: Gauge::default(),
            storage_outages: Counter::default(),
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
            "speed_watermark_seconds",
            "A view's event-time watermark, in seconds since the epoch",
            m.watermark.clone(),
        );
        registry.register(
            "speed_late_events",
            "Events that arrived after the watermark passed one of their windows (kept)",
            m.late.clone(),
        );
        registry.register(
            "speed_ahead_events",
            "Events further ahead of the clock than max-ahead (kept; they did not move the watermark)",
            m.ahead.clone(),
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
            "storage_up",
            "1 when the output root (disk or bucket) takes writes, 0 while one waits for it",
            m.storage_up.clone(),
        );
        registry.register(
            "storage_outages",
            "Times the output root went from taking writes to not (unreachable, or full)",
            m.storage_outages.clone(),
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
    pub(super) fn observe(&self, st: &ServingState, speed: Option<&Snapshot>) {
        fn catch_up(c: &Counter, total: u64) {
            let now = c.get();
            if total > now {
                c.inc_by(total - now);
            }
        }
        if let Some(s) = speed {
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
        for (view, et) in st.event_times() {
            let l = ViewLabels { view: view.clone() };
            if let Some(wm) = et.watermark {
                self.watermark.get_or_create(&l).set(wm as f64 / 1e6);
            }
            catch_up(&self.late.get_or_create(&l), et.late);
            catch_up(&self.ahead.get_or_create(&l), et.ahead);
        }
        let storage = crate::storage::store::health();
        self.storage_up.set(i64::from(storage.up));
        catch_up(&self.storage_outages, storage.outages);
        catch_up(&self.batch_runs, st.batch.runs);
        catch_up(&self.batch_failures, st.batch.failures);
        if let Some(ms) = st.batch.last_duration_ms.or_else(|| {
            st.views
                .first()
                .and_then(|v| v.read().batch().map(|b| b.manifest.duration_ms))
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

/// Records each request's route, status and latency.
pub(super) async fn record(State(st): State<AppState>, req: Request, next: Next) -> Response {
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

/// `GET /metrics`.
pub(super) async fn metrics(State(st): State<AppState>) -> ApiResult<Response> {
    let s = st.state();
    st.metrics.observe(&s, st.speed(&s).as_deref());
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &st.metrics.registry)
        .map_err(ApiError::internal)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        out,
    )
        .into_response())
}
