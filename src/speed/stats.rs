//! What the speed layer reports: per micro-batch progress (like Spark's query progress), the
//! micro-batch duration and produce-to-visible latency histograms, and the status snapshot
//! handed to serving and `/metrics` after every micro-batch.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::kafka::BrokerHealth;

/// One micro-batch, as Spark reports a streaming query's progress.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    /// Micro-batch number since start.
    pub batch_id: u64,
    /// Messages in the micro-batch.
    pub input_rows: u64,
    /// Messages per second arriving (since the previous micro-batch).
    pub input_rows_per_second: f64,
    /// Messages per second processed (over this micro-batch's duration).
    pub processed_rows_per_second: f64,
    /// How long the micro-batch took.
    pub duration_ms: f64,
    /// Messages behind the high watermarks, over all partitions (as last seen).
    pub lag: i64,
    /// 99th percentile over the micro-batch's messages of the time from their Kafka timestamp
    /// (when they were produced) to the end of the micro-batch (when serving sees them).
    pub visible_latency_p99_ms: Option<i64>,
}

/// Micro-batch durations since start, in the buckets `/metrics` exports: 0.5 ms doubling up
/// to 16 s, then +Inf. Cumulative in the layer, so a reader that skips snapshots loses nothing.
#[derive(Debug, Clone)]
pub struct DurationHistogram {
    /// (upper bound in seconds, observations in this bucket only).
    pub buckets: Vec<(f64, u64)>,
    /// Sum of the observations, in seconds.
    pub sum: f64,
    /// Observations.
    pub count: u64,
}

impl Default for DurationHistogram {
    fn default() -> Self {
        let bounds = (0..16).map(|i| 0.0005 * f64::from(1u32 << i));
        Self {
            buckets: bounds
                .chain([f64::MAX]) // f64::MAX is how the encoder writes +Inf
                .map(|b| (b, 0))
                .collect(),
            sum: 0.0,
            count: 0,
        }
    }
}

impl DurationHistogram {
    pub(crate) fn observe(&mut self, secs: f64) {
        if let Some(b) = self.buckets.iter_mut().find(|(upper, _)| secs <= *upper) {
            b.1 += 1;
        }
        self.sum += secs;
        self.count += 1;
    }
}

/// Produce-to-visible latencies since start, in ms: an HDR histogram (2 significant digits,
/// so any quantile is within 1%) from 1 ms to [`LatencyHistogram::MAX_MS`].
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    hist: hdrhistogram::Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            hist: hdrhistogram::Histogram::new_with_bounds(1, Self::MAX_MS, 2)
                .expect("valid histogram bounds"),
        }
    }
}

impl LatencyHistogram {
    /// The largest latency told apart: a day. Longer ones count as a day.
    pub const MAX_MS: u64 = 86_400_000;

    pub(crate) fn record(&mut self, ms: i64) {
        self.hist
            .saturating_record((ms.max(1) as u64).min(Self::MAX_MS));
    }

    /// Messages recorded.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The latency (ms) that a fraction `q` of the messages did not exceed (within 1%; a
    /// latency under 1 ms counts as 1 ms); `None` before any message.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        (self.count() > 0).then(|| {
            if q >= 1.0 {
                self.hist.max()
            } else {
                self.hist.value_at_quantile(q)
            }
        })
    }
}

/// The speed layer's status at the end of a micro-batch: positions, counters and health. It
/// holds no view state (serving gets that as deltas), so handing it over costs the same at any
/// number of keys.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Micro-batches processed since the layer started from its checkpoint.
    pub batch_id: u64,
    /// Next offset to read, per partition.
    pub offsets: BTreeMap<i32, i64>,
    /// Next offset per partition that the last completed checkpoint covers: the position a
    /// crash resumes from (behind `offsets` by at most `speed.checkpoint-interval`).
    pub checkpointed: BTreeMap<i32, i64>,
    /// Messages consumed, in total.
    pub consumed: u64,
    /// Messages consumed since this process started, per partition.
    pub consumed_by_partition: BTreeMap<i32, u64>,
    /// Messages sent to the dead-letter file, in total.
    pub dead_letters: u64,
    /// The last micro-batch.
    pub progress: Option<Progress>,
    /// Reachability of the brokers and their high watermarks.
    pub brokers: BrokerHealth,
    /// Micro-batch durations since start.
    pub microbatch: DurationHistogram,
    /// Produce-to-visible latency of every message since start.
    pub latency: LatencyHistogram,
    /// In a consumer group: the partitions this instance owns (`None`: every partition).
    pub owned: Option<Vec<i32>>,
}

impl Snapshot {
    /// Messages behind the high watermark, per partition (owned, in a consumer group).
    pub fn lag(&self) -> BTreeMap<i32, i64> {
        self.brokers
            .high
            .iter()
            .filter(|(p, _)| self.owned.as_ref().is_none_or(|o| o.contains(p)))
            .map(|(p, hi)| (*p, (hi - self.offsets.get(p).copied().unwrap_or(0)).max(0)))
            .collect()
    }
}
