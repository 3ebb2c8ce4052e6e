//! A view's speed state recomputed from the master dataset's archived segments: what recovery,
//! a batch handoff, a partition's new owner and a serving replica build, next to the state
//! it builds (storage only lists and reads the segments).

use std::collections::BTreeMap;

use super::ViewState;
use crate::config::Pipeline;
use crate::error::Result;
use crate::storage::Layout;
use crate::storage::segments::{covered, read};

/// Recomputes views' speed state from the archived segments of the configured topic: per
/// view, the events of segments that start at or after `after[view]` (per partition; all when
/// absent) and end at or before `bound` (what a checkpoint covers). Each segment is read once.
pub fn rebuild(
    p: &Pipeline,
    layout: &Layout,
    views: &[(usize, BTreeMap<i32, i64>)],
    bound: &BTreeMap<i32, i64>,
) -> Result<Vec<BTreeMap<i32, ViewState>>> {
    let mut out = vec![BTreeMap::new(); views.len()];
    for seg in covered(layout, &p.config.kafka.topic, bound)? {
        let wanted: Vec<usize> = views
            .iter()
            .enumerate()
            .filter(|(_, (_, after))| after.get(&seg.partition).is_none_or(|&a| seg.from >= a))
            .map(|(k, _)| k)
            .collect();
        if wanted.is_empty() {
            continue;
        }
        for b in read(&seg, &p.schema)? {
            for &k in &wanted {
                let def = &p.views[views[k].0];
                out[k]
                    .entry(seg.partition)
                    .or_insert_with(|| def.new_state())
                    .update(def, &b)?;
            }
        }
    }
    Ok(out)
}
