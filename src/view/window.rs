//! Event-time windows in GROUP BY, spelled as in Spark: `window(ts, '1 hour')` (tumbling),
//! `window(ts, '1 hour', '15 minutes')` (hopping: each event in every window that holds it),
//! `window(ts, '1 day', '1 day', '2 hours')` (windows starting at 02:00). The group key is a
//! struct `{start, end}` of timestamps, named `window`, so `window.start` and `window.end` are
//! selectable as in Spark; the windows are `[start, end)`, aligned on the epoch plus the start
//! offset, and an event whose time is NULL is in no window (Spark drops it too).
//!
//! A hopping window is not a function of one row (an event lands in `size / slide` windows), so
//! the folds do not evaluate it as one: [`Window::expand`] gives each event's windows and the
//! rows they come from, and the state folds those. The `window` function registered with
//! DataFusion types the plan (and writes Spark's `window()` for the Spark engine); evaluated by
//! DataFusion itself, it computes tumbling windows only.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, StructArray, TimestampMicrosecondArray, UInt32Array,
};
use datafusion::arrow::compute::{cast, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Fields, TimestampMicrosecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_expr::PhysicalExpr;

use crate::error::{Error, Result};
use crate::event::{UTC, timestamp_type};

/// The name of the function, and of its group column.
pub const NAME: &str = "window";

/// The `window` struct's type: `{start, end}`, timestamps in UTC.
pub fn struct_type() -> DataType {
    DataType::Struct(fields())
}

fn fields() -> Fields {
    Fields::from(vec![
        Field::new("start", timestamp_type(), true),
        Field::new("end", timestamp_type(), true),
    ])
}

/// The `window` function, for planning (see the module docs).
pub fn udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(WindowFn {
        signature: Signature::user_defined(Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct WindowFn {
    signature: Signature,
}

impl ScalarUDFImpl for WindowFn {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> datafusion::common::Result<Vec<DataType>> {
        if !(2..=4).contains(&args.len()) {
            return plan_err!(
                "window() takes a time column and 1 to 3 durations: window(ts, '1 hour'[, \
                 '15 minutes'[, '5 minutes']]), found {} arguments",
                args.len()
            );
        }
        if !matches!(args[0], DataType::Timestamp(..) | DataType::Null) {
            return plan_err!(
                "window()'s first argument must be a timestamp, found {}; declare the field \
                 with type = \"timestamp\"",
                args[0]
            );
        }
        let mut out = vec![timestamp_type()];
        out.extend(std::iter::repeat_n(DataType::Utf8, args.len() - 1));
        Ok(out)
    }

    fn return_type(&self, _: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(struct_type())
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let spec = |i: usize| match args.args.get(i) {
            Some(ColumnarValue::Scalar(ScalarValue::Utf8(Some(s)))) => Ok(Some(s.clone())),
            Some(_) => exec_err!("window()'s durations must be string literals"),
            None => Ok(None),
        };
        let durations = (1..4)
            .map(spec)
            .collect::<datafusion::common::Result<Vec<_>>>()?;
        let shape = Shape::parse(
            durations[0].as_deref().unwrap_or_default(),
            durations[1].as_deref(),
            durations[2].as_deref(),
        )
        .map_err(|e| datafusion::common::DataFusionError::Execution(e.to_string()))?;
        if shape.slide != shape.size {
            return exec_err!(
                "a hopping window() is computed by lambdaflow's fold, not as a function"
            );
        }
        let ts = args.args[0].to_array(args.number_rows)?;
        let ts = cast(&ts, &timestamp_type())?;
        let ts = ts.as_primitive::<TimestampMicrosecondType>();
        let starts: TimestampMicrosecondArray = ts.unary_opt(|t| Some(shape.last_start(t)));
        Ok(ColumnarValue::Array(shape.column(starts)))
    }
}

/// A window's size, slide and start offset, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// The window's length.
    pub size: i64,
    /// How far apart windows start (`size` for tumbling windows).
    pub slide: i64,
    /// Where windows start, after the epoch (Spark's `startTime`), below `slide`.
    pub offset: i64,
}

impl Shape {
    /// Spark's arguments: the window's duration, the slide (default: the duration) and the
    /// start offset (default: none), each as `'1 hour'`, `'15 minutes'`, `'90s'`.
    pub fn parse(size: &str, slide: Option<&str>, offset: Option<&str>) -> Result<Self> {
        let size = duration("window duration", size)?;
        let slide = slide.map_or(Ok(size), |s| duration("slide duration", s))?;
        let offset = match offset {
            Some(s) => duration_or_zero("start time", s)?,
            None => 0,
        };
        if slide > size {
            return Err(Error::config(format!(
                "window(): the slide duration ({slide} µs) is longer than the window duration \
                 ({size} µs); events between windows would be in none"
            )));
        }
        if offset >= slide {
            return Err(Error::config(format!(
                "window(): the start time ({offset} µs) must be less than the slide duration ({slide} µs)"
            )));
        }
        Ok(Shape {
            size,
            slide,
            offset,
        })
    }

    /// The start of the last window that holds time `t`.
    pub fn last_start(&self, t: i64) -> i64 {
        t - (t - self.offset).rem_euclid(self.slide)
    }

    /// The starts of every window that holds `t`, latest first.
    pub fn starts(&self, t: i64) -> impl Iterator<Item = i64> + '_ {
        let last = self.last_start(t);
        (0..)
            .map(move |k| last - k * self.slide)
            .take_while(move |&s| s > t - self.size)
    }

    /// The `{start, end}` column of windows starting at `starts`.
    pub fn column(&self, starts: TimestampMicrosecondArray) -> ArrayRef {
        let ends: TimestampMicrosecondArray = starts.unary_opt(|s| s.checked_add(self.size));
        let nulls = starts.nulls().cloned();
        Arc::new(StructArray::new(
            fields(),
            vec![
                Arc::new(starts.with_timezone(UTC)),
                Arc::new(ends.with_timezone(UTC)),
            ],
            nulls,
        ))
    }
}

fn duration(what: &str, s: &str) -> Result<i64> {
    match duration_or_zero(what, s)? {
        0 => Err(Error::config(format!("window(): the {what} `{s}` is zero"))),
        us => Ok(us),
    }
}

/// A duration as Spark writes one (`'1 hour'`, `'10 minutes'`, `'interval 2 days'`), in µs.
fn duration_or_zero(what: &str, s: &str) -> Result<i64> {
    let text = s.trim();
    let text = text
        .strip_prefix("interval ")
        .or_else(|| text.strip_prefix("INTERVAL "))
        .unwrap_or(text);
    let d = humantime::parse_duration(text).map_err(|e| {
        Error::config(format!(
            "window(): the {what} `{s}` is not a duration such as '1 hour' or '15 minutes': {e}"
        ))
    })?;
    i64::try_from(d.as_micros())
        .map_err(|_| Error::config(format!("window(): the {what} `{s}` is too long")))
}

/// How a view's watermark follows its event times (config `[[views]] watermark`,
/// `idle-timeout`, `max-ahead`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatermarkPolicy {
    /// The watermark is the latest event time minus this.
    pub delay: std::time::Duration,
    /// A partition without events for this long no longer holds the watermark back.
    pub idle_timeout: std::time::Duration,
    /// Event times further ahead of the clock than this do not move the watermark.
    pub max_ahead: std::time::Duration,
    /// Windows that end before the watermark minus this are dropped.
    pub retention: Option<std::time::Duration>,
}

impl WatermarkPolicy {
    /// The watermark that event time `latest` (µs) puts: `latest` less the delay.
    pub fn watermark_at(&self, latest: i64) -> i64 {
        latest.saturating_sub(i64::try_from(self.delay.as_micros()).unwrap_or(i64::MAX))
    }

    /// Where retention cuts at watermark `wm`: windows that end before it are gone.
    pub fn horizon(&self, wm: i64) -> Option<i64> {
        let r = i64::try_from(self.retention?.as_micros()).unwrap_or(i64::MAX);
        Some(wm.saturating_sub(r))
    }
}

/// A view's window: which group key it is, the time it is computed from, and its shape.
#[derive(Debug)]
pub struct Window {
    /// The position of the window among the GROUP BY keys.
    pub key: usize,
    /// The event time (the function's first argument), compiled.
    pub time: Arc<dyn PhysicalExpr>,
    /// Its size, slide and offset.
    pub shape: Shape,
}

impl Window {
    /// The window of a GROUP BY key, if it is a call of `window`: its shape from the literal
    /// arguments (the time expression is compiled by the caller).
    pub fn shape_of(e: &Expr) -> Result<Option<(Expr, Shape)>> {
        let e = match e {
            Expr::Alias(a) => a.expr.as_ref(),
            e => e,
        };
        let Expr::ScalarFunction(f) = e else {
            return Ok(None);
        };
        if f.name() != NAME {
            return Ok(None);
        }
        let mut lits = Vec::new();
        for a in &f.args[1..] {
            let a = match a {
                Expr::Cast(c) => c.expr.as_ref(),
                a => a,
            };
            match a {
                Expr::Literal(ScalarValue::Utf8(Some(s)), _) => lits.push(s.as_str()),
                other => {
                    return Err(Error::config(format!(
                        "window(): durations must be string literals such as '1 hour', found `{other}`"
                    )));
                }
            }
        }
        let shape = Shape::parse(lits[0], lits.get(1).copied(), lits.get(2).copied())?;
        Ok(Some((f.args[0].clone(), shape)))
    }

    /// The window starts of groups, from their key columns (as [`KeyIndex::columns`] gives
    /// them; `None` when the window column is not among them).
    ///
    /// [`KeyIndex::columns`]: crate::view::state::KeyIndex::columns
    pub fn starts_of<'a>(&self, keys: &'a [ArrayRef]) -> Option<&'a TimestampMicrosecondArray> {
        keys.get(self.key)?
            .as_struct_opt()?
            .column(0)
            .as_primitive_opt::<TimestampMicrosecondType>()
    }

    /// The event time of each row of `batch`, in µs.
    pub fn times(&self, batch: &RecordBatch) -> Result<TimestampMicrosecondArray> {
        let ts = self.time.evaluate(batch)?.into_array(batch.num_rows())?;
        let ts = cast(&ts, &timestamp_type())?;
        Ok(ts.as_primitive::<TimestampMicrosecondType>().clone())
    }

    /// Whether an event at `t` comes after the watermark `wm` has passed the end of one of its
    /// windows (the earliest one that holds it): a late event.
    pub fn is_late(&self, t: i64, wm: i64) -> bool {
        self.shape
            .starts(t)
            .last()
            .is_some_and(|s| s.saturating_add(self.shape.size) <= wm)
    }

    /// Each row of `batch` once per window that holds its time (rows with a NULL time in
    /// none; windows ending before `horizon` left out: beyond retention), and the window
    /// column for those rows.
    pub fn expand(
        &self,
        batch: &RecordBatch,
        horizon: Option<i64>,
    ) -> Result<(RecordBatch, ArrayRef)> {
        let n = batch.num_rows();
        let ts = self.times(batch)?;
        let mut rows = Vec::with_capacity(n);
        let mut starts = Vec::with_capacity(n);
        let min_start = horizon.map_or(i64::MIN, |h| h.saturating_sub(self.shape.size));
        for (i, t) in ts.iter().enumerate() {
            let Some(t) = t else { continue };
            for s in self.shape.starts(t).take_while(|&s| s >= min_start) {
                rows.push(i as u32);
                starts.push(s);
            }
        }
        let taken = if rows.len() == n && self.shape.slide == self.shape.size {
            batch.clone()
        } else {
            take_record_batch(batch, &UInt32Array::from(rows))?
        };
        let col = self.shape.column(TimestampMicrosecondArray::from(starts));
        Ok((taken, col))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EpochUnit, EventDecoder, EventSchema, FieldDef, FieldType};
    use crate::show::show;
    use crate::view::ViewDef;

    fn schema() -> EventSchema {
        let mut fields = crate::config::default_fields();
        fields.push(FieldDef {
            name: "ts".into(),
            ty: FieldType::Timestamp,
            nullable: true,
            unit: Some(EpochUnit::Millis),
        });
        EventSchema::new(fields).unwrap()
    }

    async fn fold(sql: &str, lines: &[&str]) -> String {
        let schema = schema();
        let def = ViewDef::compile("v", sql, "events", &schema).await.unwrap();
        let mut d = EventDecoder::new(&schema);
        for l in lines {
            d.push(l.as_bytes()).unwrap();
        }
        let mut s = def.new_state();
        s.update(&def, &d.finish()).unwrap();
        show(&def.finalize(&s).unwrap(), 50)
    }

    const EVENTS: &[&str] = &[
        r#"{"customer": "Ali", "amount": 1, "ts": "2026-12-01T10:05:00Z"}"#,
        r#"{"customer": "Ali", "amount": 2, "ts": "2026-12-01T10:59:59.999999Z"}"#,
        r#"{"customer": "Ali", "amount": 4, "ts": "2026-12-01T12:00:00+01:00"}"#,
        r#"{"customer": "Sara", "amount": 8, "ts": 1796122800000}"#,
        r#"{"customer": "Sara", "amount": 16, "ts": null}"#,
    ];

    #[tokio::test]
    async fn a_tumbling_window_groups_by_hour_with_spark_names() {
        let out = fold(
            "SELECT window.start, window.end, customer, SUM(amount) AS total FROM events \
             GROUP BY window(ts, '1 hour'), customer ORDER BY start, customer",
            EVENTS,
        )
        .await;
        // 12:00+01:00 is 11:00 UTC; 1796122800000 ms is 2026-12-01T11:00:00Z; a NULL time is
        // in no window.
        assert!(out.contains("|start"), "{out}");
        let rows: Vec<&str> = out.lines().filter(|l| l.contains("2026")).collect();
        assert_eq!(rows.len(), 3, "{out}");
        assert!(
            rows[0].contains("10:00:00") && rows[0].contains("Ali") && rows[0].contains("|3 "),
            "{out}"
        );
        assert!(
            rows[1].contains("11:00:00") && rows[1].contains("Ali") && rows[1].contains("|4 "),
            "{out}"
        );
        assert!(
            rows[2].contains("11:00:00") && rows[2].contains("Sara") && rows[2].contains("|8 "),
            "{out}"
        );
    }

    #[tokio::test]
    async fn a_hopping_window_counts_each_event_in_every_window_holding_it() {
        let out = fold(
            "SELECT window, COUNT(*) AS n FROM events GROUP BY window(ts, '1 hour', '30 minutes') \
             ORDER BY window",
            EVENTS,
        )
        .await;
        // 10:05 is in [09:30, 10:30) and [10:00, 11:00); 10:59 in [10:00, 11:00) and
        // [10:30, 11:30); the two at 11:00 in [10:30, 11:30) and [11:00, 12:00).
        let counts: Vec<&str> = out
            .lines()
            .filter(|l| l.contains("2026"))
            .map(|l| l.rsplit('|').nth(1).unwrap().trim())
            .collect();
        assert_eq!(counts, ["1", "2", "3", "2"], "{out}");
    }

    #[tokio::test]
    async fn retention_leaves_out_windows_that_end_before_the_horizon() {
        let schema = schema();
        let sql =
            "SELECT window, COUNT(*) AS n FROM events GROUP BY window(ts, '1 hour', '30 minutes')";
        let def = ViewDef::compile("v", sql, "events", &schema).await.unwrap();
        let mut d = EventDecoder::new(&schema);
        for l in EVENTS {
            d.push(l.as_bytes()).unwrap();
        }
        let events = d.finish();
        // 2026-12-01T11:00:00Z: windows ending before it are beyond retention.
        let h = 1_796_122_800_000_000;
        let mut cut = def.new_state();
        cut.update_within(&def, &events, Some(h)).unwrap();
        let mut all = def.new_state();
        all.update(&def, &events).unwrap();
        assert_eq!((all.len(), cut.len()), (4, 3), "[09:30, 10:30) is out");
        assert!(all.retain_windows(&def, h).unwrap(), "a window is cut");
        assert!(!all.retain_windows(&def, h).unwrap(), "and only once");
        assert_eq!(all.len(), 3);
        // The kept groups are found by key after the cut, and fold on.
        all.update_within(&def, &events, Some(h)).unwrap();
        cut.update_within(&def, &events, Some(h)).unwrap();
        assert_eq!(
            show(&def.finalize(&all).unwrap(), 10),
            show(&def.finalize(&cut).unwrap(), 10)
        );
    }

    #[tokio::test]
    async fn date_bin_and_date_trunc_are_group_keys_too() {
        let out = fold(
            "SELECT date_trunc('day', ts) AS day, SUM(amount) AS total FROM events \
             WHERE ts IS NOT NULL GROUP BY date_trunc('day', ts)",
            EVENTS,
        )
        .await;
        assert!(
            out.contains("2026-12-01T00:00:00") && out.contains("|15 "),
            "{out}"
        );
        let out = fold(
            "SELECT date_bin(INTERVAL '2 hours', ts) AS slot, COUNT(*) AS n FROM events \
             WHERE ts IS NOT NULL GROUP BY date_bin(INTERVAL '2 hours', ts)",
            EVENTS,
        )
        .await;
        assert!(
            out.contains("2026-12-01T10:00:00") && out.contains("|4 "),
            "{out}"
        );
    }

    #[tokio::test]
    async fn a_views_key_is_its_group_keys_and_its_windows_start() {
        let key = |sql: &'static str| async move {
            ViewDef::compile("v", sql, "events", &schema())
                .await
                .unwrap()
                .primary_key()
        };
        let windowed = "SELECT window.start, window.end, customer, SUM(amount) AS total \
                        FROM events GROUP BY window(ts, '1 hour'), customer";
        assert_eq!(key(windowed).await, Some(vec![0, 2]));
        let seed = "SELECT customer, SUM(amount) AS t FROM events GROUP BY customer";
        assert_eq!(key(seed).await, Some(vec![0]));
        // A key computed on, or left out, tells no row apart; nor is one row keyed.
        for sql in [
            "SELECT upper(customer) AS c, SUM(amount) AS t FROM events GROUP BY customer",
            "SELECT window.end, SUM(amount) AS t FROM events GROUP BY window(ts, '1 hour')",
            "SELECT SUM(amount) AS t FROM events",
        ] {
            assert_eq!(key(sql).await, None, "{sql}");
        }
    }

    const MIN: i64 = 60_000_000;

    #[test]
    fn windows_are_aligned_half_open_and_hop_as_in_spark() {
        let tumbling = Shape::parse("1 hour", None, None).unwrap();
        assert_eq!(tumbling.starts(61 * MIN).collect::<Vec<_>>(), [60 * MIN]);
        assert_eq!(tumbling.starts(60 * MIN).collect::<Vec<_>>(), [60 * MIN]);
        // Before the epoch too.
        assert_eq!(tumbling.starts(-1).collect::<Vec<_>>(), [-60 * MIN]);
        let hopping = Shape::parse("1 hour", Some("15 minutes"), None).unwrap();
        assert_eq!(
            hopping.starts(61 * MIN).collect::<Vec<_>>(),
            [60 * MIN, 45 * MIN, 30 * MIN, 15 * MIN]
        );
        let offset = Shape::parse("10 minutes", Some("10 minutes"), Some("3 minutes")).unwrap();
        assert_eq!(offset.starts(12 * MIN).collect::<Vec<_>>(), [3 * MIN]);
        assert_eq!(
            Shape::parse("interval 2 days", None, None).unwrap().size,
            2 * 24 * 60 * MIN
        );
    }

    #[tokio::test]
    async fn a_watermark_needs_a_window_and_one_window_per_view() {
        let schema = schema();
        let mut plain = ViewDef::compile(
            "v",
            "SELECT customer, COUNT(*) FROM events GROUP BY customer",
            "events",
            &schema,
        )
        .await
        .unwrap();
        let policy = WatermarkPolicy {
            delay: std::time::Duration::from_secs(60),
            idle_timeout: std::time::Duration::from_secs(60),
            max_ahead: std::time::Duration::from_secs(60),
            retention: None,
        };
        let e = plain.set_watermark(policy).unwrap_err().to_string();
        assert!(e.contains("needs an event-time window"), "{e}");
        for (sql, why) in [
            (
                "SELECT COUNT(*) FROM events GROUP BY window(ts, '1 hour'), window(ts, '1 day')",
                "more than one window()",
            ),
            (
                "SELECT COUNT(*) FROM events GROUP BY window(customer, '1 hour')",
                "must be a timestamp",
            ),
            (
                "SELECT COUNT(*) FROM events GROUP BY window(ts, '1 fortnight')",
                "not a duration",
            ),
        ] {
            let e = ViewDef::compile("v", sql, "events", &schema)
                .await
                .unwrap_err()
                .to_string();
            assert!(e.contains(why) && e.contains("view `v`"), "{e}");
        }
    }

    #[test]
    fn bad_durations_are_named() {
        for (size, slide, offset, word) in [
            ("one hour", None, None, "window duration `one hour`"),
            ("0s", None, None, "is zero"),
            ("1 hour", Some("2 hours"), None, "longer than the window"),
            (
                "1 hour",
                Some("10 minutes"),
                Some("10 minutes"),
                "start time",
            ),
        ] {
            let e = Shape::parse(size, slide, offset).unwrap_err().to_string();
            assert!(e.contains(word), "{e}");
        }
    }
}
