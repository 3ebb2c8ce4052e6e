//! The serving layer: the final view = the batch view's state ⊕ the speed layer's state.
//!
//! ```text
//!   output/batch_view/_state.json ─┐
//!                                  ├─► merge (ViewState::merge) ─► finalize (HAVING, SELECT,
//!   output/_speed/checkpoint.json ─┘                                ORDER BY) ─► serving_view.json/
//! ```
//!
//! The merge is on aggregate *state*, never on final values: HAVING runs after it, AVG merges
//! as sum and count. [`merge`] is the one place where the two layers meet.

use datafusion::arrow::record_batch::RecordBatch;

use crate::batch;
use crate::config::Pipeline;
use crate::error::Result;
use crate::speed;
use crate::storage::{self, Layout};
use crate::view::{ViewDef, ViewState};

/// Merges the layers' states of one view: `batch ⊕ speed`.
pub fn merge(def: &ViewDef, batch: Option<&ViewState>, speed: Option<&ViewState>) -> ViewState {
    let mut s = def.new_state();
    for part in [batch, speed].into_iter().flatten() {
        s.merge(part);
    }
    s
}

/// The final rows of one view from both layers' states.
pub fn serving_rows(
    def: &ViewDef,
    batch: Option<&ViewState>,
    speed: Option<&ViewState>,
) -> Result<RecordBatch> {
    def.finalize(&merge(def, batch, speed))
}

/// One view's final rows as read from what the layers published.
pub struct Served {
    /// The view.
    pub name: String,
    /// The merged rows.
    pub rows: RecordBatch,
    /// The batch run in service, if any.
    pub batch_run: Option<String>,
    /// The speed layer's offsets, per partition.
    pub speed_offsets: std::collections::BTreeMap<i32, i64>,
}

/// Reads the published batch views and the speed checkpoint, merges them, and writes
/// `serving_view.json/` for every view.
pub fn serve_once(p: &Pipeline) -> Result<Vec<Served>> {
    let layout = Layout::new(&p.config.output.dir, p.views.len());
    layout.check_writable()?;
    let speed = speed::load_checkpoint(p, &layout)?.map(|(s, _)| s);
    let mut out = Vec::new();
    for (i, def) in p.views.iter().enumerate() {
        let b = batch::load_published(&layout, def)?;
        let s = speed.as_ref().map(|s| s.view_state(i, def));
        let rows = serving_rows(def, b.as_ref().map(|b| &b.state), s.as_ref())?;
        write_serving_view(&layout, def, &rows)?;
        out.push(Served {
            name: def.name.clone(),
            rows,
            batch_run: b.map(|b| b.manifest.run_id),
            speed_offsets: speed
                .as_ref()
                .map(|s| s.offsets.clone())
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Publishes the final view the way the seed's `serving_view.write.json(..)` does.
pub fn write_serving_view(layout: &Layout, def: &ViewDef, rows: &RecordBatch) -> Result<()> {
    let version = storage::new_version();
    storage::publish_dir(&layout.serving_view(&def.name), &version, 2, |dir| {
        storage::write_part(dir, &version, rows)
    })?;
    Ok(())
}
