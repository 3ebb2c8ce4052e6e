//! The embedded engine: each view's state folded over the master dataset as it is decoded
//! (`read.rs`), in this process. DataFusion plans the view (the Spark engine runs that plan)
//! and computes it over in-memory events for the batch/speed agreement test.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::catalog::MemTable;
use datafusion::common::Column;
use datafusion::functions_aggregate::expr_fn::min;
use datafusion::logical_expr::Expr;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};

use super::Computed;
use super::read::{fold_dataset, with_row_col};
use super::{FIRST_COL, ROW_COL};
use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::event::EventSchema;
use crate::storage::segments::Segment;
use crate::view::state::state_exprs;
use crate::view::{ViewDef, ViewState};

/// A DataFusion session sized for this machine, with `partitions` (events with the row column)
/// registered as the events table.
pub(super) fn session(
    table: &str,
    partitions: Vec<Vec<RecordBatch>>,
    schema: &EventSchema,
) -> Result<SessionContext> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(threads));
    let arrow = partitions
        .iter()
        .flatten()
        .next()
        .map(|b| b.schema())
        .unwrap_or_else(|| with_row_col(&schema.arrow_schema()));
    let mem = MemTable::try_new(arrow, partitions)?;
    ctx.register_table(table, Arc::new(mem))?;
    Ok(ctx)
}

/// The state query of one view over the registered events: `SELECT keys, <state columns>,
/// MIN(row) FROM events WHERE .. GROUP BY keys ORDER BY MIN(row)` — groups in order of first
/// appearance. The Spark engine runs the same plan, unparsed to Spark SQL.
pub(super) async fn state_query(
    ctx: &SessionContext,
    table: &str,
    def: &ViewDef,
) -> Result<DataFrame> {
    let mut df = ctx.table(table).await?;
    if let Some(f) = &def.filter {
        df = df.filter(f.clone())?;
    }
    let mut aggs = state_exprs(def);
    aggs.push(min(Expr::Column(Column::from_name(ROW_COL))).alias(FIRST_COL));
    let df = df.aggregate(def.group_exprs.clone(), aggs)?;
    // Keys, then state columns, then the order column: spelled out, so that the SQL the
    // unparser writes for Spark keeps this order too.
    let columns = df.schema().columns().into_iter().map(Expr::Column);
    Ok(df.select(columns)?.sort(vec![
        Expr::Column(Column::from_name(FIRST_COL)).sort(true, false),
    ])?)
}

/// Computes one view's state over the registered events with DataFusion, groups in order of
/// first appearance.
pub async fn compute_state(ctx: &SessionContext, table: &str, def: &ViewDef) -> Result<ViewState> {
    let batches = state_query(ctx, table, def).await?.collect().await?;
    super::state_from(def, &batches)
}

/// A session whose events table is empty: for planning the state query.
pub(super) fn planning_session(table: &str, schema: &EventSchema) -> Result<SessionContext> {
    session(table, vec![Vec::new()], schema)
}

/// Computes one view's state with DataFusion over in-memory event batches (declared schema).
/// The same DataFusion path as a batch run, without the files; the batch/speed agreement
/// test (`tests/fuzz.rs`) compares the speed layer against it.
pub async fn compute_over(
    p: &Pipeline,
    def: &ViewDef,
    events: &[RecordBatch],
) -> Result<ViewState> {
    let mut partitions = vec![Vec::new()];
    let mut row = 0i64;
    for b in events {
        let mut cols = b.columns().to_vec();
        let n = b.num_rows() as i64;
        cols.push(Arc::new(Int64Array::from_iter_values(row..row + n)));
        row += n;
        partitions[0].push(RecordBatch::try_new(with_row_col(&b.schema()), cols)?);
    }
    let ctx = session(&p.config.schema.table, partitions, &p.schema)?;
    compute_state(&ctx, &p.config.schema.table, def).await
}

/// Folds `files` and `segments` into every view's state (on blocking threads, counting bytes
/// on `bar`).
pub(super) async fn compute(
    p: &Pipeline,
    files: &[PathBuf],
    segments: &[Segment],
    bar: &indicatif::ProgressBar,
) -> Result<Computed> {
    let p2 = Arc::new(p.clone());
    let (files2, segs2, bar2) = (files.to_vec(), segments.to_vec(), bar.clone());
    let folded = tokio::task::spawn_blocking(move || fold_dataset(&p2, &files2, &segs2, &bar2))
        .await
        .map_err(|e| Error::task("batch decoder", e))?;
    bar.finish_and_clear();
    let f = folded?;
    Ok(Computed {
        files: f.files,
        bad: f.bad,
        rows: f.rows,
        states: f.states,
    })
}
