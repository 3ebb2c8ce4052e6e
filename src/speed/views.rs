//! The speed layer's view state and the handoff to each new batch run.
//!
//! Each view's speed state holds exactly the events *after* the offsets of the batch view it
//! continues (per partition; all events when there is none). When a batch run publishes a view
//! that covers more, `Handoff::sync` rebuilds that view's state from the archived segments
//! after the new offsets: the realtime view "expires" by offsets, never by time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tracing::info;

use crate::config::Pipeline;
use crate::error::Result;
use crate::storage::{Layout, PublishedBatch, batch_view};
use crate::view::state::rebuild;
use crate::view::{ViewDef, ViewState};

/// One view's part in the speed layer.
#[derive(Debug, Clone, Default)]
pub struct SpeedView {
    /// The id of the batch run this state continues (`None`: there was none in service).
    pub batch_run: Option<String>,
    /// That batch view, once loaded: the state covers the events after its offsets.
    pub batch: Option<Arc<PublishedBatch>>,
    /// The state, per partition.
    pub parts: BTreeMap<i32, ViewState>,
}

impl SpeedView {
    /// The state over all partitions (a copy: for the console, the files and handoffs).
    pub fn state(&self, def: &ViewDef) -> ViewState {
        let mut s = def.new_state();
        for part in self.parts.values() {
            s.merge(part);
        }
        s
    }

    /// The id of the batch run this state continues.
    pub fn batch_run(&self) -> Option<&str> {
        self.batch_run.as_deref()
    }

    /// Groups held over all partitions (a key seen on two partitions counts twice).
    pub fn groups(&self) -> usize {
        self.parts.values().map(ViewState::len).sum()
    }
}

/// Which batch run each view's state continues, and the switch to a newer one.
pub(super) struct Handoff {
    /// Per view: the batch run last seen in service (`Some("")`: not looked at yet).
    seen: Vec<Option<String>>,
}

impl Handoff {
    pub fn new(views: usize) -> Self {
        Self {
            seen: vec![Some(String::new()); views],
        }
    }

    /// True when some view has a batch run in service that its state does not continue yet
    /// (a readlink per view).
    pub fn newer(&self, p: &Pipeline, layout: &Layout) -> bool {
        p.views
            .iter()
            .zip(&self.seen)
            .any(|(d, s)| batch_view::published_run(layout, d).ok().as_ref() != Some(s))
    }

    /// Aligns each view with the batch view in service: when another run was published since
    /// the state was built (or `force`), loads it and rebuilds the state from the segments
    /// after its offsets up to `offsets`. Must be called with no unarchived events. Returns
    /// whether anything changed.
    pub fn sync(
        &mut self,
        p: &Pipeline,
        layout: &Layout,
        views: &mut [SpeedView],
        offsets: &BTreeMap<i32, i64>,
        force: bool,
    ) -> Result<bool> {
        let mut todo = Vec::new();
        let mut changed = false;
        for (i, def) in p.views.iter().enumerate() {
            let current = batch_view::published_run(layout, def)?;
            if current == self.seen[i] && !force {
                continue;
            }
            let loaded = batch_view::load_published(layout, def)?.map(Arc::new);
            self.seen[i] = current;
            let run = loaded.as_ref().map(|b| b.manifest.run_id.clone());
            let same = run == views[i].batch_run;
            views[i].batch = loaded;
            views[i].batch_run = run;
            changed = true;
            if !same || force {
                let after = views[i]
                    .batch
                    .as_ref()
                    .map(|b| b.manifest.offsets_of(&p.config.kafka.topic))
                    .unwrap_or_default();
                todo.push((i, after));
            }
        }
        if todo.is_empty() {
            return Ok(changed);
        }
        let started = Instant::now();
        let states = rebuild(p, layout, &todo, offsets)?;
        for ((i, after), parts) in todo.into_iter().zip(states) {
            info!(view = %p.views[i].name, batch_run = ?views[i].batch_run(), after = ?after,
                  ms = started.elapsed().as_millis() as u64,
                  "speed layer: now continues the batch view in service (state before its offsets expired)");
            views[i].parts = parts;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::event::EventDecoder;
    use crate::storage::{Manifest, segments};

    fn events(p: &Pipeline, rows: &[(&str, i64)]) -> datafusion::arrow::array::RecordBatch {
        let mut d = EventDecoder::new(&p.schema);
        for (c, a) in rows {
            d.push(format!(r#"{{"customer":"{c}","amount":{a}}}"#).as_bytes())
                .unwrap();
        }
        d.finish()
    }

    fn publish(p: &Pipeline, layout: &Layout, run: &str, upto: i64, state: &ViewState) {
        let def = &p.views[0];
        let m = Manifest {
            run_id: run.into(),
            view: def.name.clone(),
            sql: def.sql.clone(),
            files: Vec::new(),
            rows: 0,
            bad: 0,
            segments: 1,
            table_version: None,
            offsets: [(p.config.kafka.topic.clone(), BTreeMap::from([(0, upto)]))].into(),
            engine: "datafusion".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            duration_ms: 0,
        };
        let rows = def.finalize(state).unwrap();
        batch_view::publish(layout, def, run, 2, &rows, state, &m, b"").unwrap();
    }

    fn totals(p: &Pipeline, v: &SpeedView) -> String {
        let def = &p.views[0];
        crate::show::show(&def.finalize(&v.state(def)).unwrap(), 20)
    }

    #[tokio::test]
    async fn the_state_continues_the_batch_view_in_service_and_expires_with_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let p = Config::load(None, &vec![])
            .unwrap()
            .compile()
            .await
            .unwrap();
        let layout = Layout::new(dir.path(), 1);
        let topic = p.config.kafka.topic.clone();
        let first = events(&p, &[("Ali", 320), ("Sara", 140)]);
        let second = events(&p, &[("Ali", 80), ("Mounir", 200)]);
        for (from, to, b) in [(0, 2, &first), (2, 4, &second)] {
            let s = segments::write_pending(
                &layout,
                &topic,
                (0, None),
                from,
                to,
                std::slice::from_ref(b),
            );
            let range = crate::storage::delta::Range::from(&s.unwrap());
            segments::commit(&layout, &p.schema, vec![range], 0).unwrap();
        }
        let mut v = vec![SpeedView::default()];
        let mut h = Handoff::new(1);
        let upto = BTreeMap::from([(0, 4)]);
        // No batch view: the state is every archived event (recovery rebuilds it so).
        assert!(h.sync(&p, &layout, &mut v, &upto, true).unwrap());
        assert!(
            totals(&p, &v[0]).contains("|Ali     |400"),
            "{}",
            totals(&p, &v[0])
        );
        // A batch view covering offsets [0, 2): the state holds only what comes after.
        let mut b = p.views[0].new_state();
        b.update(&p.views[0], &first).unwrap();
        publish(&p, &layout, "run-1", 2, &b);
        assert!(h.newer(&p, &layout));
        assert!(h.sync(&p, &layout, &mut v, &upto, false).unwrap());
        assert_eq!(v[0].batch_run(), Some("run-1"));
        let t = totals(&p, &v[0]);
        assert!(
            t.contains("|Ali     |80 ") && t.contains("|Mounir  |200") && !t.contains("Sara"),
            "{t}"
        );
        assert!(!h.newer(&p, &layout));
        // The next run covers everything: the realtime view expires, by offsets.
        b.update(&p.views[0], &second).unwrap();
        publish(&p, &layout, "run-2", 4, &b);
        assert!(h.sync(&p, &layout, &mut v, &upto, false).unwrap());
        assert_eq!(v[0].batch_run(), Some("run-2"));
        assert_eq!(v[0].groups(), 0);
    }
}
