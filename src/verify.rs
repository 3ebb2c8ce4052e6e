//! `lambdaflow verify`: recomputes every view from all the data with the batch engine and
//! compares it, key by key, with what the serving layer answers.
//!
//! "All the data" is the historical files plus every event the speed checkpoint covers (the
//! committed segments, pending names included), so the truth and the served view describe the
//! same events even while the pipeline runs. A difference means the incremental path (speed
//! state, handoff, merge) disagrees with a full recompute.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::batch;
use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::serving;
use crate::storage::{self, segments};
use crate::view::{ViewDef, ViewState};

/// One key whose served value is not the recomputed one.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    /// The view.
    pub view: String,
    /// The group key, as `column=value` pairs.
    pub key: String,
    /// The aggregates served (`None`: the key is missing from the served view).
    pub served: Option<serde_json::Value>,
    /// The aggregates recomputed from all the data (`None`: the key should not exist).
    pub truth: Option<serde_json::Value>,
}

/// The outcome of a verification.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Keys compared, over all views.
    pub keys: usize,
    /// Events the recompute read.
    pub events: u64,
    /// The speed layer's offsets the comparison is at.
    pub offsets: BTreeMap<i32, i64>,
    /// Every difference.
    pub differences: Vec<Difference>,
}

/// Recomputes and compares every view.
pub async fn verify(p: &Pipeline) -> Result<Report> {
    let layout = p.layout();
    let topic = &p.config.kafka.topic;
    // The served side first: its checkpoint bounds the events of the truth. A running speed
    // layer may checkpoint in between; then read both again.
    let mut attempt = 0;
    let (served, bound) = loop {
        let served = serving::from_files(p, &layout)?;
        let bound = serving::files::speed_bound(p, &layout)?;
        if served
            .first()
            .is_none_or(|v| *v.read().speed_offsets() == bound)
        {
            break (served, bound);
        }
        attempt += 1;
        if attempt == 20 {
            return Err(Error::Busy(
                "the speed checkpoint kept moving while verifying; run verify again".into(),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let files = batch::dataset_files(&p.config.batch.dataset)?;
    let mut segs: Vec<segments::Segment> = segments::committed(&layout)?
        .segments
        .into_iter()
        .filter(|s| s.topic != *topic)
        .collect();
    segs.extend(segments::covered(&layout, topic, &bound)?);
    let computed = batch::compute(p, &files, &segs, &indicatif::ProgressBar::hidden()).await?;
    let mut report = Report {
        keys: 0,
        events: computed.rows,
        offsets: bound,
        differences: Vec::new(),
    };
    for (v, t) in served.iter().zip(&computed.states) {
        let a = keyed(&v.def, &v.merged())?;
        let b = keyed(&v.def, t)?;
        let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        report.keys += keys.len();
        for k in keys {
            let (x, y) = (a.get(k), b.get(k));
            let same = match (x, y) {
                (Some(x), Some(y)) => values_equal(x, y),
                _ => false,
            };
            if !same {
                report.differences.push(Difference {
                    view: v.def.name.clone(),
                    key: k.clone(),
                    served: x.cloned(),
                    truth: y.cloned(),
                });
            }
        }
    }
    Ok(report)
}

/// The state's groups as `key → {aggregate: value}`.
fn keyed(def: &ViewDef, state: &ViewState) -> Result<BTreeMap<String, serde_json::Value>> {
    let batch = state.evaluate(def)?;
    let glen = def.group_len();
    let names: Vec<String> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    // Keys by column name, values by the names the view's SELECT gives its aggregates.
    let shown = def.aggregate_names();
    let mut out = BTreeMap::new();
    for row in storage::json_rows(&batch)? {
        let key = names[..glen]
            .iter()
            .map(|n| format!("{n}={}", row[n]))
            .collect::<Vec<_>>()
            .join(", ");
        let vals: serde_json::Map<String, serde_json::Value> = names[glen..]
            .iter()
            .zip(shown)
            .map(|(n, s)| (s.clone(), row[n].clone()))
            .collect();
        out.insert(key, serde_json::Value::Object(vals));
    }
    Ok(out)
}

/// Equal, with floating-point values compared to a relative 1e-9 (sums of doubles depend on
/// the order of addition).
fn values_equal(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value::*;
    match (a, b) {
        (Object(x), Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w)))
        }
        (Number(x), Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        _ => a == b,
    }
}
