//! Each view's event-time progress as the files record it, for the readers that have no live
//! speed layer at hand: `serve` replicas, `run` in a consumer group (it serves from the files)
//! and the batch layer's retention cut.
//!
//! - One speed layer over all partitions: its checkpoint's [`EventTimeMark`] per view, the
//!   watermark exactly as the layer had it at the checkpoint's offsets.
//! - Speed layers in a consumer group write no checkpoint: each archive commit records, per
//!   partition and view, the latest event time archived (a `txn` of the Delta log, see
//!   [`super::delta`]). The view's watermark is then the lowest of those less the delay:
//!   every partition counts, idle or not, so it is never ahead of any instance's.

use std::collections::BTreeMap;

use super::checkpoint::{self, EventTimeMark};
use super::{Layout, delta};
use crate::config::Pipeline;
use crate::error::Result;

/// Per view with a watermark, its progress as recorded (see the module docs); `partitions`:
/// the partitions to read in a consumer group (those with anything archived).
pub fn marks(
    p: &Pipeline,
    layout: &Layout,
    partitions: &[i32],
) -> Result<BTreeMap<String, EventTimeMark>> {
    let views = p.watermarked_views();
    let topic = &p.config.kafka.topic;
    if views.is_empty() {
        return Ok(BTreeMap::new());
    }
    if !p.config.speed.consumer_group {
        let cp = checkpoint::load(layout, topic)?;
        return Ok(cp
            .into_iter()
            .flat_map(|c| c.views)
            .filter_map(|(name, v)| Some((name, v.event_time?)))
            .collect());
    }
    let txns = delta::partition_txns(&layout.master()?, topic, partitions, &views)?;
    let mut out = BTreeMap::new();
    for def in &p.views {
        let Some(policy) = def.watermark() else {
            continue;
        };
        let latest: BTreeMap<i32, i64> = txns
            .iter()
            .filter_map(|(&part, t)| Some((part, *t.event_times.get(&def.name)?)))
            .collect();
        let watermark = latest.values().min().map(|&t| policy.watermark_at(t));
        let mark = EventTimeMark {
            watermark,
            latest,
            ..Default::default()
        };
        out.insert(def.name.clone(), mark);
    }
    Ok(out)
}
