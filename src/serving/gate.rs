//! `serving.isolation = "read-committed"`: the speed layer's deltas are held back until a
//! checkpoint covers them, so a served value never includes events that a crash would make
//! the restarted layer count again later — a read never goes back.
//!
//! The speed layer checkpoints at micro-batch boundaries, so each checkpoint's offsets are
//! those of some delta: the held deltas are released in order, merged into one per view.

use std::collections::{BTreeMap, VecDeque};

use crate::view::ViewState;

/// The deltas not yet covered by a checkpoint, oldest first.
#[derive(Debug, Default)]
pub struct CommitGate {
    held: VecDeque<(BTreeMap<i32, i64>, Vec<ViewState>)>,
}

impl CommitGate {
    /// Holds one micro-batch's deltas (one per view), which reach `offsets`.
    pub fn hold(&mut self, offsets: BTreeMap<i32, i64>, views: Vec<ViewState>) {
        self.held.push_back((offsets, views));
    }

    /// Forgets what is held: a reset carries a whole state that includes it.
    pub fn clear(&mut self) {
        self.held.clear();
    }

    /// Micro-batches held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The held deltas that the checkpoint at `checkpointed` covers, merged into one per view,
    /// and the offsets they reach; `None` when it covers none.
    pub fn release(
        &mut self,
        checkpointed: &BTreeMap<i32, i64>,
    ) -> Option<(Vec<ViewState>, BTreeMap<i32, i64>)> {
        let covered = |offsets: &BTreeMap<i32, i64>| {
            offsets
                .iter()
                .all(|(p, o)| checkpointed.get(p).is_some_and(|c| c >= o))
        };
        let mut out: Option<(Vec<ViewState>, BTreeMap<i32, i64>)> = None;
        while self.held.front().is_some_and(|(o, _)| covered(o)) {
            let (offsets, views) = self.held.pop_front()?;
            out = Some(match out {
                None => (views, offsets),
                Some((mut merged, _)) => {
                    for (m, v) in merged.iter_mut().zip(&views) {
                        m.merge(v);
                    }
                    (merged, offsets)
                }
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::default_fields;
    use crate::event::{EventDecoder, EventSchema};
    use crate::view::ViewDef;

    #[tokio::test]
    async fn releases_in_order_what_each_checkpoint_covers_merged() {
        let schema = EventSchema::new(default_fields()).unwrap();
        let sql = "SELECT customer, SUM(amount) AS t FROM events GROUP BY customer";
        let def = Arc::new(ViewDef::compile("v", sql, "events", &schema).await.unwrap());
        let delta = |rows: &[&str]| {
            let mut d = EventDecoder::new(&schema);
            for r in rows {
                d.push(r.as_bytes()).unwrap();
            }
            let mut s = def.new_state();
            s.update(&def, &d.finish()).unwrap();
            vec![s]
        };
        let at = |p0: i64, p1: i64| BTreeMap::from([(0, p0), (1, p1)]);
        let mut g = CommitGate::default();
        g.hold(at(1, 0), delta(&[r#"{"customer":"Ali","amount":80}"#]));
        g.hold(at(1, 2), delta(&[r#"{"customer":"Ali","amount":20}"#]));
        g.hold(at(3, 2), delta(&[r#"{"customer":"Sara","amount":5}"#]));
        // A checkpoint behind everything releases nothing.
        assert!(g.release(&at(0, 0)).is_none());
        // A checkpoint at the second micro-batch releases the first two, merged.
        let (views, offsets) = g.release(&at(1, 2)).unwrap();
        assert_eq!(offsets, at(1, 2));
        let rows = crate::storage::json_rows(&def.finalize(&views[0]).unwrap()).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["t"], 100);
        assert_eq!(g.len(), 1);
        // The same checkpoint again releases nothing more; the next one the rest.
        assert!(g.release(&at(1, 2)).is_none());
        let (_, offsets) = g.release(&at(3, 2)).unwrap();
        assert_eq!(offsets, at(3, 2));
        assert!(g.is_empty());
        g.hold(at(4, 2), delta(&[]));
        g.clear();
        assert!(g.is_empty());
    }
}
