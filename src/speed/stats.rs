//! What the speed layer reports: per micro-batch progress (like Spark's query progress), the
//! micro-batch duration and produce-to-visible latency histograms, and the status snapshot
//! handed to serving and `/metrics` after every micro-batch.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;
use serde::Serialize;

use crate::error::Result;
use crate::kafka::BrokerHealth;
use crate::storage::checkpoint::EventTimeMark;
use crate::view::window::{WatermarkPolicy, Window};

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

/// Event-time progress of one view with a watermark, as the speed layer has seen it since it
/// started.
#[derive(Debug, Clone, Default)]
pub struct EventTime {
    /// The view's watermark, µs since the epoch: the lowest over the partitions (idle ones
    /// left out) of their latest event time minus the view's delay. It never goes back; `None`
    /// until an event time is seen.
    pub watermark: Option<i64>,
    /// Per partition: its latest event time that counts (µs).
    pub latest: BTreeMap<i32, i64>,
    /// Events that arrived after the watermark had passed the end of one of their windows.
    /// Kept: folded into their window like any other (Spark drops these and counts them as
    /// `numRowsDroppedByWatermark`).
    pub late: u64,
    /// Events whose time was further ahead of the speed layer's clock than `max-ahead`: kept,
    /// but they did not move the watermark.
    pub ahead: u64,
    /// Per partition: when it last had an event time.
    heard: BTreeMap<i32, Instant>,
}

impl EventTime {
    /// Counts the events of `batch` (of `part`) against the watermark as it stands, and takes
    /// their times (`clock`: the present, µs).
    pub(crate) fn observe(
        &mut self,
        w: &Window,
        policy: &WatermarkPolicy,
        part: i32,
        batch: &RecordBatch,
        now: Instant,
        clock: i64,
    ) -> Result<()> {
        let limit = clock.saturating_add(micros(policy.max_ahead));
        let mut latest = None;
        for t in w.times(batch)?.iter().flatten() {
            if self.watermark.is_some_and(|wm| w.is_late(t, wm)) {
                self.late += 1;
            }
            if t > limit {
                self.ahead += 1;
                continue;
            }
            latest = latest.max(Some(t));
        }
        if let Some(t) = latest {
            let e = self.latest.entry(part).or_insert(t);
            *e = (*e).max(t);
            self.heard.insert(part, now);
        }
        Ok(())
    }

    /// The progress as a checkpoint keeps it.
    pub(crate) fn mark(&self) -> EventTimeMark {
        EventTimeMark {
            watermark: self.watermark,
            latest: self.latest.clone(),
            late: self.late,
            ahead: self.ahead,
        }
    }

    /// Progress resumed from a checkpoint: every partition counts as just heard from (it holds
    /// the watermark back until its idle timeout, as at the first start).
    pub(crate) fn resume(m: &EventTimeMark) -> Self {
        let now = Instant::now();
        Self {
            watermark: m.watermark,
            latest: m.latest.clone(),
            late: m.late,
            ahead: m.ahead,
            heard: m.latest.keys().map(|p| (*p, now)).collect(),
        }
    }

    /// A partition claimed in a consumer group, going on from `latest`, the latest event time
    /// its earlier owners archived (it counts as just heard from, as after a restart).
    pub(crate) fn claim(&mut self, part: i32, latest: Option<i64>, now: Instant) {
        match latest {
            Some(t) => {
                self.latest.insert(part, t);
                self.heard.insert(part, now);
            }
            None => self.forget(part),
        }
    }

    /// A partition this instance no longer owns: it stops holding the watermark back here.
    pub(crate) fn forget(&mut self, part: i32) {
        self.latest.remove(&part);
        self.heard.remove(&part);
    }

    /// Follows what the files record of the partitions' latest times (`serve` replicas): a
    /// partition counts as heard from when its time moves on, so one that stops moving for
    /// `idle_timeout` no longer holds the watermark back. Returns whether it moved.
    pub fn follow(&mut self, m: &EventTimeMark, policy: &WatermarkPolicy, now: Instant) -> bool {
        for (&p, &t) in &m.latest {
            if self.latest.get(&p).is_none_or(|&l| t > l) {
                self.latest.insert(p, t);
                self.heard.insert(p, now);
            }
        }
        (self.late, self.ahead) = (self.late.max(m.late), self.ahead.max(m.ahead));
        let mut moved = self.advance(policy, now);
        if m.watermark > self.watermark {
            self.watermark = m.watermark;
            moved = true;
        }
        moved
    }

    /// Moves the watermark to where the partitions' latest times put it; returns whether it
    /// moved. When every partition is idle, the most advanced one sets it.
    pub(crate) fn advance(&mut self, policy: &WatermarkPolicy, now: Instant) -> bool {
        let active = self
            .latest
            .iter()
            .filter(|(p, _)| {
                self.heard
                    .get(p)
                    .is_some_and(|h| now.duration_since(*h) < policy.idle_timeout)
            })
            .map(|(_, t)| *t)
            .min();
        let Some(t) = active.or_else(|| self.latest.values().copied().max()) else {
            return false;
        };
        let wm = policy.watermark_at(t);
        let moved = self.watermark.is_none_or(|w| wm > w);
        if moved {
            self.watermark = Some(wm);
        }
        moved
    }
}

impl Serialize for EventTime {
    /// `{"watermark", "latest": {partition: time}, "late", "ahead"}`, times in RFC 3339.
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let latest: BTreeMap<i32, Option<String>> =
            self.latest.iter().map(|(p, t)| (*p, rfc3339(*t))).collect();
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("watermark", &self.watermark.and_then(rfc3339))?;
        m.serialize_entry("latest", &latest)?;
        m.serialize_entry("late", &self.late)?;
        m.serialize_entry("ahead", &self.ahead)?;
        m.end()
    }
}

/// A time in µs since the epoch as RFC 3339, in UTC.
pub fn rfc3339(us: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
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
    /// Per view with a watermark (by name): its event-time progress.
    pub event_time: BTreeMap<String, EventTime>,
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::event::{EpochUnit, EventDecoder, EventSchema, FieldDef, FieldType};
    use crate::view::ViewDef;

    const MIN: i64 = 60_000_000;

    async fn view() -> (ViewDef, EventSchema) {
        let mut fields = crate::config::default_fields();
        fields.push(FieldDef {
            name: "ts".into(),
            ty: FieldType::Timestamp,
            nullable: true,
            unit: Some(EpochUnit::Micros),
        });
        let schema = EventSchema::new(fields).unwrap();
        let sql = "SELECT window, COUNT(*) AS n FROM events GROUP BY window(ts, '10 minutes')";
        let mut def = ViewDef::compile("v", sql, "events", &schema).await.unwrap();
        def.set_watermark(WatermarkPolicy {
            delay: Duration::from_secs(5 * 60),
            idle_timeout: Duration::from_secs(60),
            max_ahead: Duration::from_secs(3600),
            retention: None,
        })
        .unwrap();
        (def, schema)
    }

    fn batch(schema: &EventSchema, times: &[i64]) -> RecordBatch {
        let mut d = EventDecoder::new(schema);
        for t in times {
            d.push(format!(r#"{{"customer": "a", "amount": 1, "ts": {t}}}"#).as_bytes())
                .unwrap();
        }
        d.finish()
    }

    #[tokio::test]
    async fn the_watermark_is_the_slowest_partition_less_the_delay_and_late_events_are_counted() {
        let (def, schema) = view().await;
        let (w, policy) = (def.window().unwrap(), *def.watermark().unwrap());
        let clock = 1_000 * MIN;
        let t0 = Instant::now();
        let mut et = EventTime::default();
        let obs = |et: &mut EventTime, part: i32, times: &[i64], secs: u64| {
            let at = t0 + Duration::from_secs(secs);
            et.observe(w, &policy, part, &batch(&schema, times), at, clock)
                .unwrap();
        };
        obs(&mut et, 0, &[30 * MIN, 31 * MIN], 0);
        obs(&mut et, 1, &[20 * MIN], 0);
        assert!(et.advance(&policy, t0));
        assert_eq!(et.watermark, Some(15 * MIN), "partition 1 holds it back");
        // [0, 10) has closed; an event in it is late, one in [10, 20) is not. Both are kept
        // (the caller folds them), and neither moves partition 1 back.
        obs(&mut et, 1, &[5 * MIN, 12 * MIN], 0);
        assert_eq!((et.late, et.latest[&1]), (1, 20 * MIN));
        assert!(!et.advance(&policy, t0), "nothing moved");
        // A time far ahead of the clock is counted and does not move the watermark.
        obs(&mut et, 1, &[clock + 2 * 60 * MIN], 0);
        assert_eq!((et.ahead, et.latest[&1]), (1, 20 * MIN));
        // Partition 1 idle past the timeout: partition 0 alone sets it.
        obs(&mut et, 0, &[40 * MIN], 90);
        assert!(et.advance(&policy, t0 + Duration::from_secs(90)));
        assert_eq!(et.watermark, Some(35 * MIN));
        // It never goes back, even when the slow partition wakes up.
        obs(&mut et, 1, &[21 * MIN], 91);
        assert!(!et.advance(&policy, t0 + Duration::from_secs(91)));
        assert_eq!(et.watermark, Some(35 * MIN));
        let json = serde_json::to_value(&et).unwrap();
        assert_eq!(json["watermark"], "1970-01-01T00:35:00Z", "{json}");
        assert_eq!(json["late"], 2, "{json}");
    }
}
