//! The one view definition that the batch and speed layers share.
//!
//! A view is one SQL query over the events, written once in the config:
//!
//! ```sql
//! SELECT customer, SUM(amount) AS total_amount FROM events WHERE amount >= 100
//! GROUP BY customer HAVING total_amount > 200
//! ```
//!
//! DataFusion plans and type-checks it. [`ViewDef::compile`] then splits the plan at its
//! aggregate into three parts that both layers execute the same way:
//!
//! ```text
//!   events ──► WHERE ──► GROUP BY keys + aggregate *state* ──► merge ──► evaluate ──► HAVING,
//!             (pre)      (AggState: sum+count, min, max…)     (⊕)                    SELECT, ORDER BY,
//!                                                                                    LIMIT (post)
//!   batch layer: DataFusion computes the state columns over the master dataset
//!   speed layer: the same WHERE/key/argument expressions, evaluated by DataFusion's physical
//!                expressions on each micro-batch, update the state incrementally
//!   serving:     evaluate(merge(batch state, speed state)), then the post part
//! ```
//!
//! Everything after the aggregate (HAVING, the projection, ORDER BY, LIMIT) runs only after the
//! merge: a HAVING on a partial sum would be wrong (150 in batch and 100 in speed is 250 > 200).
//! A query the speed layer cannot maintain incrementally (a join, a window function,
//! `COUNT(DISTINCT ..)`, a query without aggregation) is rejected here, at start-up, by name.

pub mod event;
pub mod state;

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::compute::{filter_record_batch, lexsort_to_indices, take_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::MemTable;
use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::logical_expr::{Expr, ExprSchemable, FetchType, LogicalPlan, SkipType, SortExpr};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};
use event::EventSchema;
pub use state::{AggKind, ViewState};

/// A view, compiled: the SQL split into the parts both layers run.
#[derive(Debug)]
pub struct ViewDef {
    /// The view's name (config `views[].name`), used in paths and the API.
    pub name: String,
    /// The SQL as written in the config.
    pub sql: String,
    pub(crate) filter: Option<Expr>,
    pub(crate) group_exprs: Vec<Expr>,
    pub(crate) aggs: Vec<AggSpec>,
    /// Schema of the aggregate's output: the group columns, then one column per aggregate.
    pub(crate) agg_schema: DFSchemaRef,
    /// Schema of the state the layers exchange: the group columns, then each aggregate's state.
    pub(crate) state_schema: SchemaRef,
    output_schema: SchemaRef,
    phys: Physical,
}

/// One aggregate of the view, e.g. `sum(events.amount)`.
#[derive(Debug, Clone)]
pub(crate) struct AggSpec {
    pub kind: AggKind,
    /// The argument (`Int64(1)` for `COUNT(*)`).
    pub arg: Expr,
}

#[derive(Debug)]
enum PostStep {
    Filter(Expr, DFSchemaRef),
    Project(Vec<Expr>, DFSchemaRef),
    Sort(Vec<SortExpr>, DFSchemaRef),
    Limit { skip: usize, fetch: Option<usize> },
}

#[derive(Debug)]
enum PhysStep {
    Filter(Arc<dyn PhysicalExpr>),
    Project(Vec<Arc<dyn PhysicalExpr>>, SchemaRef),
    Sort(
        Vec<(
            Arc<dyn PhysicalExpr>,
            datafusion::arrow::compute::SortOptions,
        )>,
    ),
    Limit {
        skip: usize,
        fetch: Option<usize>,
    },
}

/// Final rows of some groups, as [`ViewDef::materialize`] makes them.
#[derive(Debug)]
pub struct Materialized {
    /// The rows that pass HAVING, projected to the view's output columns.
    pub rows: RecordBatch,
    /// For each row, the position (in the `gids` given) of the group it comes from.
    pub picked: Vec<u32>,
    /// For each row, its ORDER BY key as comparable bytes (`None`: the view has no ORDER BY).
    pub order: Option<Vec<Vec<u8>>>,
}

/// The compiled physical expressions, built once at start-up.
#[derive(Debug)]
pub(crate) struct Physical {
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    pub groups: Vec<Arc<dyn PhysicalExpr>>,
    pub args: Vec<Arc<dyn PhysicalExpr>>,
    post: Vec<PhysStep>,
}

fn unsupported(view: &str, what: impl std::fmt::Display) -> Error {
    Error::View {
        view: view.to_string(),
        msg: format!(
            "{what} cannot be maintained incrementally by the speed layer; supported: \
             WHERE, GROUP BY, SUM, COUNT, MIN, MAX, AVG, HAVING, ORDER BY, LIMIT"
        ),
    }
}

/// A DataFusion session whose catalog holds one empty table with the event schema, under the
/// configured table name. Used to plan views; the batch layer registers real data the same way.
pub fn planning_context(table: &str, schema: &EventSchema) -> Result<SessionContext> {
    let ctx = SessionContext::new();
    let empty = MemTable::try_new(schema.arrow_schema(), vec![vec![]])?;
    ctx.register_table(table, Arc::new(empty))?;
    Ok(ctx)
}

impl ViewDef {
    /// Plans `sql` against the event table and splits it for both layers. Errors name the view
    /// and what is wrong: a parse error, a missing column, or an unsupported construct.
    pub async fn compile(name: &str, sql: &str, table: &str, schema: &EventSchema) -> Result<Self> {
        let ctx = planning_context(table, schema)?;
        let state = ctx.state();
        let view_err = |e: datafusion::error::DataFusionError| Error::View {
            view: name.to_string(),
            msg: e.strip_backtrace().to_string(),
        };
        let plan = state.create_logical_plan(sql).await.map_err(view_err)?;
        let plan = state
            .analyzer()
            .execute_and_check(plan, state.config_options(), |_, _| {})
            .map_err(view_err)?;
        let output_schema = Arc::new(plan.schema().as_arrow().clone());

        // Walk down from the top: the post-aggregate steps, then the aggregate, then below it.
        let mut post_rev = Vec::new();
        let mut node = &plan;
        let agg = loop {
            match node {
                LogicalPlan::Limit(l) => {
                    let skip = match l.get_skip_type().map_err(view_err)? {
                        SkipType::Literal(n) => n,
                        SkipType::UnsupportedExpr => {
                            return Err(unsupported(name, "a computed OFFSET"));
                        }
                    };
                    let fetch = match l.get_fetch_type().map_err(view_err)? {
                        FetchType::Literal(n) => n,
                        FetchType::UnsupportedExpr => {
                            return Err(unsupported(name, "a computed LIMIT"));
                        }
                    };
                    post_rev.push(PostStep::Limit { skip, fetch });
                    node = &l.input;
                }
                LogicalPlan::Sort(s) => {
                    if s.fetch.is_some() {
                        post_rev.push(PostStep::Limit {
                            skip: 0,
                            fetch: s.fetch,
                        });
                    }
                    post_rev.push(PostStep::Sort(s.expr.clone(), Arc::clone(s.input.schema())));
                    node = &s.input;
                }
                LogicalPlan::Projection(p) => {
                    post_rev.push(PostStep::Project(
                        p.expr.clone(),
                        Arc::clone(p.input.schema()),
                    ));
                    node = &p.input;
                }
                LogicalPlan::Filter(f) => {
                    post_rev.push(PostStep::Filter(
                        f.predicate.clone(),
                        Arc::clone(f.input.schema()),
                    ));
                    node = &f.input;
                }
                LogicalPlan::Aggregate(a) => break a,
                LogicalPlan::TableScan(_) => {
                    return Err(Error::View {
                        view: name.to_string(),
                        msg: "a view must aggregate (GROUP BY and/or SUM, COUNT, MIN, MAX, AVG): \
                              a plain projection has no state to merge between layers"
                            .into(),
                    });
                }
                other => return Err(unsupported(name, describe(other))),
            }
        };

        // Below the aggregate: WHERE filters over a scan of the event table.
        let mut filters = Vec::new();
        let mut below: &LogicalPlan = &agg.input;
        loop {
            match below {
                LogicalPlan::Filter(f) => {
                    filters.push(f.predicate.clone());
                    below = &f.input;
                }
                LogicalPlan::TableScan(t) if t.table_name.table() == table => break,
                other => return Err(unsupported(name, describe(other))),
            }
        }
        let filter = filters.into_iter().reduce(Expr::and);

        let mut aggs = Vec::new();
        for e in &agg.aggr_expr {
            let e = match e {
                Expr::Alias(a) => a.expr.as_ref(),
                e => e,
            };
            let Expr::AggregateFunction(f) = e else {
                return Err(unsupported(name, format!("aggregate expression `{e}`")));
            };
            let fname = f.func.name().to_ascii_lowercase();
            if f.params.distinct {
                return Err(unsupported(
                    name,
                    format!("{}(DISTINCT ..)", fname.to_uppercase()),
                ));
            }
            if f.params.filter.is_some() || !f.params.order_by.is_empty() {
                return Err(unsupported(
                    name,
                    format!("{} with FILTER or ORDER BY", fname.to_uppercase()),
                ));
            }
            let arg = match f.params.args.as_slice() {
                [a] => a.clone(),
                _ => {
                    return Err(unsupported(
                        name,
                        format!("{fname} with {} arguments", f.params.args.len()),
                    ));
                }
            };
            let input_schema = agg.input.schema();
            let arg_type = arg.get_type(input_schema).map_err(view_err)?;
            let kind = AggKind::new(&fname, &arg_type)
                .ok_or_else(|| unsupported(name, format!("aggregate `{fname}` over {arg_type}")))?;
            aggs.push(AggSpec { kind, arg });
        }

        let agg_schema = Arc::clone(&agg.schema);
        let state_schema = state::state_schema(&agg_schema, agg.group_expr.len(), &aggs);
        let input_schema = agg.input.schema();
        let phys_of =
            |e: &Expr, s: &DFSchema| state.create_physical_expr(e.clone(), s).map_err(view_err);
        let mut post_phys = Vec::new();
        for step in post_rev.into_iter().rev() {
            let ps = match &step {
                PostStep::Filter(e, s) => PhysStep::Filter(phys_of(e, s)?),
                PostStep::Project(es, s) => {
                    let exprs = es
                        .iter()
                        .map(|e| phys_of(e, s))
                        .collect::<Result<Vec<_>>>()?;
                    let names = es
                        .iter()
                        .map(|e| e.schema_name().to_string())
                        .collect::<Vec<_>>();
                    let fields = exprs
                        .iter()
                        .zip(&names)
                        .map(|(p, n)| {
                            let f = p.return_field(&s.as_arrow().clone())?;
                            Ok(f.as_ref().clone().with_name(n))
                        })
                        .collect::<Result<Vec<_>, datafusion::error::DataFusionError>>()
                        .map_err(view_err)?;
                    PhysStep::Project(
                        exprs,
                        Arc::new(datafusion::arrow::datatypes::Schema::new(fields)),
                    )
                }
                PostStep::Sort(es, s) => PhysStep::Sort(
                    es.iter()
                        .map(|se| {
                            let opts = datafusion::arrow::compute::SortOptions {
                                descending: !se.asc,
                                nulls_first: se.nulls_first,
                            };
                            Ok((phys_of(&se.expr, s)?, opts))
                        })
                        .collect::<Result<Vec<_>>>()?,
                ),
                PostStep::Limit { skip, fetch } => PhysStep::Limit {
                    skip: *skip,
                    fetch: *fetch,
                },
            };
            post_phys.push(ps);
        }
        let phys = Physical {
            filter: filter
                .as_ref()
                .map(|f| phys_of(f, input_schema))
                .transpose()?,
            groups: agg
                .group_expr
                .iter()
                .map(|e| phys_of(e, input_schema))
                .collect::<Result<_>>()?,
            args: aggs
                .iter()
                .map(|a| phys_of(&a.arg, input_schema))
                .collect::<Result<_>>()?,
            post: post_phys,
        };
        Ok(ViewDef {
            name: name.to_string(),
            sql: sql.to_string(),
            filter,
            group_exprs: agg.group_expr.clone(),
            aggs,
            agg_schema,
            state_schema,
            output_schema,
            phys,
        })
    }

    /// The schema of the view's final rows (what `SELECT` names).
    pub fn output_schema(&self) -> SchemaRef {
        Arc::clone(&self.output_schema)
    }

    /// The schema of the state columns the batch layer writes and the speed layer checkpoints.
    pub fn state_schema(&self) -> SchemaRef {
        Arc::clone(&self.state_schema)
    }

    /// Number of GROUP BY columns.
    pub fn group_len(&self) -> usize {
        self.group_exprs.len()
    }

    pub(crate) fn physical(&self) -> &Physical {
        &self.phys
    }

    /// An empty state for this view.
    pub fn new_state(&self) -> ViewState {
        ViewState::new(self)
    }

    /// The final rows of `state`: evaluate each aggregate, then run HAVING, the projection,
    /// ORDER BY and LIMIT. Serving calls this on the merged state; the batch and streaming views
    /// shown on their own are the same call on one layer's state.
    pub fn finalize(&self, state: &ViewState) -> Result<RecordBatch> {
        Ok(self.post(state.evaluate(self)?, true)?.0)
    }

    /// Runs the steps after the aggregate on `batch` (one row per group); with `all` false
    /// only the projections, keeping every group in order. Returns the rows and, for each, the
    /// group it comes from.
    fn post(&self, mut batch: RecordBatch, all: bool) -> Result<(RecordBatch, Vec<u32>)> {
        let mut picked: Vec<u32> = (0..batch.num_rows() as u32).collect();
        for step in &self.phys.post {
            batch = match step {
                PhysStep::Project(..) => self.project(step, &batch)?,
                _ if !all => batch,
                PhysStep::Filter(p) => {
                    let mask = having(p, &batch)?;
                    picked = picked
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| {
                            datafusion::arrow::array::Array::is_valid(&mask, *i) && mask.value(*i)
                        })
                        .map(|(_, g)| *g)
                        .collect();
                    filter_record_batch(&batch, &mask)?
                }
                PhysStep::Sort(keys) => {
                    let cols = keys
                        .iter()
                        .map(|(p, o)| {
                            Ok(datafusion::arrow::compute::SortColumn {
                                values: p.evaluate(&batch)?.into_array(batch.num_rows())?,
                                options: Some(*o),
                            })
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let idx = lexsort_to_indices(&cols, None)?;
                    picked = idx.values().iter().map(|&i| picked[i as usize]).collect();
                    take_record_batch(&batch, &idx)?
                }
                PhysStep::Limit { skip, fetch } => {
                    let start = (*skip).min(batch.num_rows());
                    let len = fetch.unwrap_or(usize::MAX).min(batch.num_rows() - start);
                    picked = picked[start..start + len].to_vec();
                    batch.slice(start, len)
                }
            };
        }
        // Rename to the SQL's output names (a projection's aliases are already applied).
        let batch = RecordBatch::try_new_with_options(
            self.output_schema(),
            batch.columns().to_vec(),
            &datafusion::arrow::array::RecordBatchOptions::new()
                .with_row_count(Some(batch.num_rows())),
        )?;
        Ok((batch, picked))
    }

    /// The view's own LIMIT/OFFSET as `(skip, fetch)`, applied by whoever reads the rows in
    /// the view's order (`(0, None)` without one).
    pub fn limit(&self) -> (usize, Option<usize>) {
        self.phys
            .post
            .iter()
            .find_map(|s| match s {
                PhysStep::Limit { skip, fetch } => Some((*skip, *fetch)),
                _ => None,
            })
            .unwrap_or((0, None))
    }

    /// True when the view has its own ORDER BY.
    pub fn has_order(&self) -> bool {
        self.phys
            .post
            .iter()
            .any(|s| matches!(s, PhysStep::Sort(_)))
    }

    /// The steps after the aggregate for a *materialized* view, on the groups `gids` of
    /// `state` only: HAVING and the projection, plus each row's ORDER BY key as comparable
    /// bytes (Arrow's row format, so `a < b` byte-wise exactly when `a` sorts first). LIMIT is
    /// left to the reader of the maintained order ([`ViewDef::limit`]). Serving calls this for
    /// the keys a micro-batch changed, so its cost is that of the changed keys.
    pub fn materialize(&self, state: &ViewState, gids: &[usize]) -> Result<Materialized> {
        let mut batch = state.evaluate_groups(self, gids)?;
        let mut picked: Vec<u32> = (0..gids.len() as u32).collect();
        let mut order: Option<Vec<Vec<u8>>> = None;
        for step in &self.phys.post {
            match step {
                PhysStep::Project(..) => batch = self.project(step, &batch)?,
                PhysStep::Filter(p) => {
                    let mask = having(p, &batch)?;
                    let keep = |i: usize| {
                        datafusion::arrow::array::Array::is_valid(&mask, i) && mask.value(i)
                    };
                    picked = picked
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| keep(*i))
                        .map(|(_, g)| *g)
                        .collect();
                    if let Some(o) = order.take() {
                        order = Some(
                            o.into_iter()
                                .enumerate()
                                .filter(|(i, _)| keep(*i))
                                .map(|(_, b)| b)
                                .collect(),
                        );
                    }
                    batch = filter_record_batch(&batch, &mask)?;
                }
                PhysStep::Sort(keys) => {
                    let mut fields = Vec::new();
                    let mut cols = Vec::new();
                    for (p, o) in keys {
                        let c = p.evaluate(&batch)?.into_array(batch.num_rows())?;
                        fields.push(datafusion::arrow::row::SortField::new_with_options(
                            c.data_type().clone(),
                            *o,
                        ));
                        cols.push(c);
                    }
                    let conv = datafusion::arrow::row::RowConverter::new(fields)?;
                    let rows = conv.convert_columns(&cols)?;
                    order = Some(rows.iter().map(|r| r.as_ref().to_vec()).collect());
                }
                PhysStep::Limit { .. } => {}
            }
        }
        let rows = RecordBatch::try_new_with_options(
            self.output_schema(),
            batch.columns().to_vec(),
            &datafusion::arrow::array::RecordBatchOptions::new()
                .with_row_count(Some(batch.num_rows())),
        )?;
        Ok(Materialized {
            rows,
            picked,
            order,
        })
    }

    /// Only the projections of the steps after the aggregate, on every group of `batch` (no
    /// HAVING, no order): what one layer's part of a row is ("320 from batch").
    pub fn project_parts(&self, state: &ViewState, gids: &[usize]) -> Result<RecordBatch> {
        Ok(self.post(state.evaluate_groups(self, gids)?, false)?.0)
    }

    fn project(&self, step: &PhysStep, batch: &RecordBatch) -> Result<RecordBatch> {
        let PhysStep::Project(exprs, schema) = step else {
            return Ok(batch.clone());
        };
        let cols = exprs
            .iter()
            .map(|p| p.evaluate(batch)?.into_array(batch.num_rows()))
            .collect::<Result<Vec<ArrayRef>, _>>()?;
        let cols = cols
            .into_iter()
            .zip(schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    datafusion::arrow::compute::cast(&c, f.data_type())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(schema),
            cols,
            &datafusion::arrow::array::RecordBatchOptions::new()
                .with_row_count(Some(batch.num_rows())),
        )?)
    }

    /// The data types of the GROUP BY columns.
    pub fn group_types(&self) -> Vec<DataType> {
        self.agg_schema.fields()[..self.group_len()]
            .iter()
            .map(|f| f.data_type().clone())
            .collect()
    }
}

/// HAVING evaluated on `batch`: one boolean per row.
fn having(
    p: &Arc<dyn PhysicalExpr>,
    batch: &RecordBatch,
) -> Result<datafusion::arrow::array::BooleanArray> {
    let mask = p.evaluate(batch)?.into_array(batch.num_rows())?;
    Ok(datafusion::arrow::array::AsArray::as_boolean_opt(&mask)
        .ok_or_else(|| Error::Internal("HAVING did not evaluate to booleans".into()))?
        .clone())
}

fn describe(plan: &LogicalPlan) -> String {
    match plan {
        LogicalPlan::Join(_) => "a JOIN".into(),
        LogicalPlan::Window(_) => "a window function".into(),
        LogicalPlan::Distinct(_) => "SELECT DISTINCT".into(),
        LogicalPlan::Union(_) => "UNION".into(),
        LogicalPlan::Subquery(_) | LogicalPlan::SubqueryAlias(_) => "a subquery".into(),
        LogicalPlan::Aggregate(_) => "nested aggregation".into(),
        LogicalPlan::TableScan(t) => format!("reading table `{}`", t.table_name),
        LogicalPlan::Values(_) => "VALUES".into(),
        LogicalPlan::EmptyRelation(_) => "a query without FROM".into(),
        other => format!("`{}`", other.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_fields;

    async fn compile(sql: &str) -> Result<ViewDef> {
        ViewDef::compile(
            "v",
            sql,
            "events",
            &EventSchema::new(default_fields()).unwrap(),
        )
        .await
    }

    #[tokio::test]
    async fn compiles_the_seed_view() {
        let v =
            compile("SELECT customer, SUM(amount) AS total_amount FROM events GROUP BY customer")
                .await
                .unwrap();
        assert_eq!(v.group_len(), 1);
        assert_eq!(v.aggs.len(), 1);
        let names: Vec<_> = v
            .output_schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["customer", "total_amount"]);
    }

    #[tokio::test]
    async fn rejects_what_cannot_be_incremental_by_name() {
        for (sql, word) in [
            (
                "SELECT customer, COUNT(DISTINCT amount) FROM events GROUP BY customer",
                "DISTINCT",
            ),
            ("SELECT customer, amount FROM events", "must aggregate"),
            (
                "SELECT a.customer, SUM(a.amount) FROM events a JOIN events b ON a.customer = b.customer GROUP BY a.customer",
                "JOIN",
            ),
            ("SELECT customer, SUM(amount) OVER () FROM events", "window"),
        ] {
            let err = compile(sql).await.unwrap_err().to_string();
            assert!(err.contains(word), "{sql}: {err}");
        }
    }

    #[tokio::test]
    async fn names_a_missing_column_and_a_parse_error() {
        let err = compile("SELECT custmer, SUM(amount) FROM events GROUP BY custmer")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("custmer"), "{err}");
        let err = compile("SELEC customer").await.unwrap_err();
        assert!(err.to_string().contains("view `v`"), "{err}");
    }
}
