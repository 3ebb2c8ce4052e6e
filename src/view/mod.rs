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

mod compile;
mod finalize;
pub mod state;
pub mod window;

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::DFSchemaRef;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;

pub use compile::planning_context;
pub use state::{AggKind, PendingRows, RowPlan, ViewState};

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
    /// Each aggregate's name as the SELECT gives it (see [`ViewDef::aggregate_names`]).
    agg_names: Vec<String>,
    /// Schema of the aggregate's output: the group columns, then one column per aggregate.
    pub(crate) agg_schema: DFSchemaRef,
    /// Schema of the state the layers exchange: the group columns, then each aggregate's state.
    pub(crate) state_schema: SchemaRef,
    output_schema: SchemaRef,
    phys: Physical,
    /// The event-time window among the GROUP BY keys, if there is one.
    pub(crate) window: Option<window::Window>,
    /// How its watermark follows the event times, when the view has one.
    watermark: Option<window::WatermarkPolicy>,
    /// How one decoded record folds straight into the state, for the usual shape of view.
    row_plan: Option<RowPlan>,
}

/// One aggregate of the view, e.g. `sum(events.amount)`.
#[derive(Debug, Clone)]
pub(crate) struct AggSpec {
    pub kind: AggKind,
    /// The argument (`Int64(1)` for `COUNT(*)`).
    pub arg: Expr,
    /// The argument's type.
    pub arg_type: DataType,
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

/// What an output column of a view is ([`ViewDef::output_sources`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputSource {
    /// GROUP BY key `k` (not the window), as it is.
    GroupKey(usize),
    /// The start of the view's window.
    WindowStart,
    /// Anything else (an aggregate, an expression).
    Other,
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

impl ViewDef {
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

    /// How one decoded record folds straight into the state ([`ViewState::fold_rows`]), when
    /// the view has the usual shape: no WHERE, GROUP BY one string field or nothing, each
    /// aggregate over a field or `COUNT(*)`.
    pub fn row_plan(&self) -> Option<&RowPlan> {
        self.row_plan.as_ref()
    }

    /// The view's event-time window, if a GROUP BY key is one.
    pub fn window(&self) -> Option<&window::Window> {
        self.window.as_ref()
    }

    /// The view's watermark policy, if it has one.
    pub fn watermark(&self) -> Option<&window::WatermarkPolicy> {
        self.watermark.as_ref()
    }

    /// Whether the view has a retention.
    pub fn has_retention(&self) -> bool {
        self.watermark.is_some_and(|w| w.retention.is_some())
    }

    /// Where the view's retention cuts at watermark `wm` (`None`: it has no retention).
    pub fn horizon(&self, wm: i64) -> Option<i64> {
        self.watermark.as_ref()?.horizon(wm)
    }

    /// Gives the view a watermark; only a view with a `window()` can have one.
    pub fn set_watermark(&mut self, policy: window::WatermarkPolicy) -> crate::error::Result<()> {
        if self.window.is_none() {
            return Err(crate::error::Error::config(format!(
                "views `{}`: `watermark` needs an event-time window in GROUP BY, such as \
                 window(ts, '1 hour')",
                self.name
            )));
        }
        self.watermark = Some(policy);
        Ok(())
    }

    /// An empty state for this view.
    pub fn new_state(&self) -> ViewState {
        ViewState::new(self)
    }

    /// Each aggregate's name as the view's SELECT gives it (`total_amount` for `SUM(amount) AS
    /// total_amount`; DataFusion's own name, e.g. `sum(events.amount)`, when the SELECT
    /// computes on the aggregate instead of naming it).
    pub fn aggregate_names(&self) -> &[String] {
        &self.agg_names
    }

    /// What each output column is, where it is a group key as it is (a SELECT of the key
    /// column or of a window's start), so that readers can select rows by key or by time
    /// through the serving indexes.
    pub fn output_sources(&self) -> Vec<OutputSource> {
        use datafusion::physical_expr::ScalarFunctionExpr;
        use datafusion::physical_expr::expressions::{Column, Literal};
        let window_key = self.window.as_ref().map(|w| w.key);
        let Some(PhysStep::Project(exprs, _)) = self
            .phys
            .post
            .iter()
            .find(|s| matches!(s, PhysStep::Project(..)))
        else {
            // No projection step: the output is the aggregate's schema itself.
            return (0..self.output_schema.fields().len())
                .map(|i| {
                    if i < self.group_len() && Some(i) != window_key {
                        OutputSource::GroupKey(i)
                    } else {
                        OutputSource::Other
                    }
                })
                .collect();
        };
        exprs
            .iter()
            .map(|e| {
                let any: &dyn std::any::Any = e.as_ref();
                if let Some(c) = any.downcast_ref::<Column>() {
                    if c.index() < self.group_len() && Some(c.index()) != window_key {
                        return OutputSource::GroupKey(c.index());
                    }
                } else if let Some(f) = any.downcast_ref::<ScalarFunctionExpr>() {
                    let args = f.args();
                    let on_window = args
                        .first()
                        .and_then(|a| (a.as_ref() as &dyn std::any::Any).downcast_ref::<Column>())
                        .is_some_and(|c| Some(c.index()) == window_key);
                    let start = args
                        .get(1)
                        .and_then(|a| (a.as_ref() as &dyn std::any::Any).downcast_ref::<Literal>())
                        .is_some_and(|l| l.value().to_string() == "start");
                    if f.name() == "get_field" && on_window && start {
                        return OutputSource::WindowStart;
                    }
                }
                OutputSource::Other
            })
            .collect()
    }

    /// The output columns that tell the view's rows apart, in GROUP BY order: each group key
    /// as it is, a window by its start. `None` when a group key is not among the output
    /// columns as it is (two rows may then look alike), or the view has no GROUP BY (one row).
    pub fn primary_key(&self) -> Option<Vec<usize>> {
        let sources = self.output_sources();
        let window_key = self.window.as_ref().map(|w| w.key);
        (0..self.group_len())
            .map(|k| {
                let source = match Some(k) == window_key {
                    true => OutputSource::WindowStart,
                    false => OutputSource::GroupKey(k),
                };
                sources.iter().position(|s| *s == source)
            })
            .collect::<Option<Vec<_>>>()
            .filter(|key| !key.is_empty())
    }

    /// The data types of the GROUP BY columns.
    pub fn group_types(&self) -> Vec<DataType> {
        self.agg_schema.fields()[..self.group_len()]
            .iter()
            .map(|f| f.data_type().clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_fields;
    use crate::error::Result;
    use crate::event::EventSchema;

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
        assert_eq!(v.aggregate_names(), ["total_amount"]);
        let v = compile(
            "SELECT customer, SUM(amount) * 2 AS twice, COUNT(*) AS n FROM events \
             GROUP BY customer HAVING n > 1",
        )
        .await
        .unwrap();
        assert_eq!(v.aggregate_names()[1], "n");
        assert!(
            v.aggregate_names()[0].starts_with("sum("),
            "{:?}",
            v.aggregate_names()
        );
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
