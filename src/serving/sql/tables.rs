//! The served views as DataFusion tables, and `lambdaflow_freshness`.
//!
//! A view's table reads the maintained serving table under its read lock, once per scan: the
//! rows of one version of the view (a micro-batch or a batch swap is applied whole under the
//! write lock, so a scan never sees half of one). Equality on every group key of a view
//! without a window is a lookup in the serving index (a hash probe and the copy of one row);
//! in a windowed view, equality on the keys besides the window and ranges on the window's
//! start are a range scan of its time index; anything else reads every row (the table's Arrow
//! blocks, decoded again only where rows changed: [`ServingTable::arrow_scan`]). `EXPLAIN`
//! names which (`ViewScan: … key lookup`, `… range scan of the time index`, `… scan`). A
//! query that is nothing but a key lookup is answered without a plan ([`KeyLookup`]).
//!
//! One query reads one version of everything served, however many tables it reads (a join of
//! two views, a view with itself, a view with `lambdaflow_freshness`): [`SnapshotPlanner`]
//! copies the rows of every scan in the plan at once, under the fence updates take
//! ([`crate::serving::updating`]), and decodes them after it, before DataFusion plans the
//! query; each scan then takes its copy.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, RecordBatchOptions, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::json::ReaderBuilder;
use datafusion::arrow::json::reader::Decoder;
use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, DataFusionError, Result, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    BinaryExpr, Cast, Expr, LogicalPlan, Operator, TableProviderFilterPushDown,
};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion::prelude::SessionContext;
use tokio::sync::watch;

use super::keys::PrimaryKey;
use crate::serving::table::{ArrowScan, ServingTable};
use crate::serving::{ServedView, ServingState};
use crate::view::{OutputSource, ViewDef};

/// The name of the freshness table.
pub const FRESHNESS: &str = "lambdaflow_freshness";

/// The `public` schema: every view by name, and [`FRESHNESS`]. Tables are resolved against the
/// state served now, so a view list never goes stale.
#[derive(Debug)]
pub struct Views {
    /// What is served now.
    pub served: watch::Receiver<Arc<ServingState>>,
    /// The topic the views' offsets are of.
    pub topic: String,
}

#[async_trait]
impl SchemaProvider for Views {
    fn table_names(&self) -> Vec<String> {
        let st = self.served.borrow().clone();
        st.views
            .iter()
            .map(|v| v.def.name.clone())
            .chain([FRESHNESS.to_string()])
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if name == FRESHNESS {
            return Ok(Some(Arc::new(Freshness {
                served: self.served.clone(),
                topic: self.topic.clone(),
            })));
        }
        let st = self.served.borrow().clone();
        Ok(st.views.iter().position(|v| v.def.name == name).map(|i| {
            Arc::new(ViewTable {
                served: self.served.clone(),
                index: i,
                schema: st.views[i].def.output_schema(),
                name: name.to_string(),
            }) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        name == FRESHNESS
            || self
                .served
                .borrow()
                .views
                .iter()
                .any(|v| v.def.name == name)
    }
}

/// The primary keys of what `served` serves: each view's ([`ViewDef::primary_key`]), and
/// `lambdaflow_freshness`'s (a row per view).
pub fn primary_keys(served: &ServingState) -> Vec<PrimaryKey> {
    let key = |table: &str, columns: Vec<(i16, String)>| PrimaryKey {
        schema: "public".into(),
        table: table.into(),
        columns,
    };
    served
        .views
        .iter()
        .filter_map(|v| {
            let schema = v.def.output_schema();
            let columns = v.def.primary_key()?.into_iter().map(|c| {
                let attnum = i16::try_from(c + 1).ok()?;
                Some((attnum, schema.field(c).name().clone()))
            });
            Some(key(&v.def.name, columns.collect::<Option<_>>()?))
        })
        .chain([key(FRESHNESS, vec![(1, "view".into())])])
        .collect()
}

/// The rows of each table served (each view's now, after its own LIMIT; and
/// [`FRESHNESS`]'s, one per view).
pub fn row_counts(served: &ServingState) -> Vec<(String, usize)> {
    served
        .views
        .iter()
        .map(|v| (v.def.name.clone(), v.read().total()))
        .chain([(FRESHNESS.to_string(), served.views.len())])
        .collect()
}

/// One view as a table.
#[derive(Debug, Clone)]
struct ViewTable {
    served: watch::Receiver<Arc<ServingState>>,
    index: usize,
    schema: SchemaRef,
    name: String,
}

/// `column <op> literal` (either way round, the operator turned to read column first): the
/// column's index, the operator and the literal.
fn comparison<'a>(e: &'a Expr, schema: &Schema) -> Option<(usize, Operator, &'a ScalarValue)> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
        return None;
    };
    let (c, op, l) = match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), Expr::Literal(l, _)) => (c, *op, l),
        (Expr::Literal(l, _), Expr::Column(c)) => (c, op.swap()?, l),
        _ => return None,
    };
    matches!(
        op,
        Operator::Eq | Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq
    )
    .then_some(())?;
    Some((schema.index_of(&c.name).ok()?, op, l))
}

/// A timestamp literal in microseconds (rounded down: the bounds made of it hold a superset,
/// which DataFusion filters again).
fn literal_micros(l: &ScalarValue) -> Option<i64> {
    match l {
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000),
        ScalarValue::TimestampMicrosecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(v.div_euclid(1_000)),
        _ => None,
    }
}

/// How a scan finds its rows in the serving table.
#[derive(Debug, Clone, PartialEq)]
enum Select {
    /// Every row.
    All,
    /// One key's row (a view without a window): its values, one per group key.
    Key(Vec<String>),
    /// A windowed view's rows whose window starts in `[from, to)`, of one key (the group keys
    /// besides the window) or of all: a range scan of the time index.
    Times {
        key: Option<Vec<String>>,
        from: Option<i64>,
        to: Option<i64>,
    },
}

impl Select {
    /// What `filters` let the scan use: equality on every group key, ranges on the window's
    /// start.
    fn of(def: &ViewDef, schema: &Schema, filters: &[Expr]) -> Select {
        let sources = def.output_sources();
        let mut eq: BTreeMap<usize, &ScalarValue> = BTreeMap::new();
        let (mut from, mut to): (Option<i64>, Option<i64>) = (None, None);
        for f in filters {
            let Some((c, op, l)) = comparison(f, schema) else {
                continue;
            };
            match (sources.get(c), op) {
                (Some(OutputSource::GroupKey(k)), Operator::Eq) if !l.is_null() => {
                    eq.insert(*k, l);
                }
                (Some(OutputSource::WindowStart), _) => {
                    let Some(m) = literal_micros(l) else { continue };
                    let (lo, hi) = match op {
                        Operator::Eq => (Some(m), Some(m + 1)),
                        Operator::Gt | Operator::GtEq => (Some(m), None),
                        _ => (None, Some(m + 1)),
                    };
                    from = from.max(lo);
                    to = match (to, hi) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                _ => {}
            }
        }
        let window = def.window().map(|w| w.key);
        let key: Option<Vec<String>> = (0..def.group_len())
            .filter(|k| Some(*k) != window)
            .map(|k| eq.get(&k).map(|l| scalar_text(l)))
            .collect();
        match (window, key) {
            (None, Some(key)) if !key.is_empty() => Select::Key(key),
            (None, _) => Select::All,
            (Some(_), key) => {
                let key = key.filter(|k| !k.is_empty());
                if key.is_none() && from.is_none() && to.is_none() {
                    Select::All
                } else {
                    Select::Times { key, from, to }
                }
            }
        }
    }
}

#[async_trait]
impl TableProvider for ViewTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Inexact: DataFusion filters the rows again, so a lookup only has to hold them.
        Ok(filters
            .iter()
            .map(|f| match comparison(f, &self.schema) {
                Some(_) => TableProviderFilterPushDown::Inexact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let st = self.served.borrow().clone();
        let v = st.views.get(self.index).ok_or_else(|| {
            DataFusionError::Plan(format!("view `{}` is no longer served", self.name))
        })?;
        let select = Select::of(&v.def, &self.schema, filters);
        let batches = match QUERY_ROWS.try_with(|q| q.view(self.index, &select)) {
            Ok(Some(rows)) => rows,
            // Planned outside a SnapshotPlanner: the rows as they are now.
            _ => Arc::new(copy_rows(v, &select).decode(v, &self.schema)?),
        };
        let rows = batches.iter().map(RecordBatch::num_rows).sum();
        let inner = MemorySourceConfig::try_new_exec(
            &[batches.to_vec()],
            Arc::clone(&self.schema),
            projection.cloned(),
        )?;
        Ok(Arc::new(ViewScan {
            view: self.name.clone(),
            how: select,
            rows,
            inner,
        }))
    }
}

/// The rows a scan found in a view, copied under its read lock, to decode after.
enum Copied {
    /// Every row, from the table's Arrow blocks.
    Blocks(ArrowScan),
    /// Rows as JSON lines.
    Json(Vec<u8>),
}

impl Copied {
    /// The rows as record batches of `schema` (`v`: the view they were copied from, which
    /// keeps the blocks decoded here).
    fn decode(self, v: &ServedView, schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
        match self {
            Copied::Json(json) => decode(Arc::clone(schema), &json, BATCH_ROWS),
            Copied::Blocks(scan) => {
                let (rows, decoded) = scan.decode(|json| {
                    let mut batches = decode(Arc::clone(schema), json, BATCH_ROWS)?;
                    match batches.len() {
                        1 => Ok(batches.pop().expect("one batch")),
                        _ => Ok::<_, DataFusionError>(concat_batches(schema, &batches)?),
                    }
                })?;
                v.read().keep_arrow(decoded);
                Ok(rows)
            }
        }
    }
}

/// The rows `select` finds in view `v`, copied under its read lock, once.
fn copy_rows(v: &ServedView, select: &Select) -> Copied {
    let t = v.read();
    if let Select::All = select
        && let Some(scan) = t.arrow_scan()
    {
        return Copied::Blocks(scan);
    }
    Copied::Json(rows_json(&t, select))
}

/// The JSON lines of the rows `select` finds in table `t`.
fn rows_json(t: &ServingTable, select: &Select) -> Vec<u8> {
    match select {
        Select::All => t.all_rows_json(),
        Select::Key(values) => {
            let refs: Vec<&str> = values.iter().map(String::as_str).collect();
            // A value the key's type cannot hold matches no row.
            t.rows_json_lines(t.encode_key(&refs).ok().and_then(|k| t.lookup(&k)))
        }
        Select::Times { key, from, to } => {
            let refs: Option<Vec<&str>> =
                key.as_ref().map(|k| k.iter().map(String::as_str).collect());
            let sids = t
                .time_range(refs.as_deref(), *from, *to)
                .unwrap_or_default();
            t.rows_json_lines(sids)
        }
    }
}

/// A point lookup answered without a query plan: `SELECT <columns> FROM <view> WHERE <key> =
/// <value> [AND …]`, one equality on each group key of a view without a window, nothing else,
/// each value a constant or an expression of the statement's parameters (`'k' || lpad($1, 7,
/// '0')`). The key's row comes from the serving index as a scan would find it (a hash probe),
/// with the columns asked for.
///
/// Understood once per statement ([`KeyLookup::of`]: a prepared statement keeps it), run for
/// each execution ([`KeyLookup::run`]): an execution computes the key's values from its
/// parameters and probes, without binding the parameters into the plan, simplifying it,
/// optimising it or planning it — the work a prepared lookup skips.
pub struct KeyLookup {
    view: ViewTable,
    /// Each conjunct of the condition: the group key (its place in the view's key) and what
    /// it equals, computed over the parameters' row; one for each key.
    equals: Vec<(usize, Arc<dyn PhysicalExpr>)>,
    /// The parameters' types as the plan infers them, `$1` first.
    inferred: Vec<Option<DataType>>,
    /// The parameters' row: `$1`, `$2`, … by position, of the inferred types (text where
    /// none is, as PostgreSQL takes a parameter of unknown type).
    params: SchemaRef,
    /// The view's columns the statement selects, and the answer's schema.
    columns: Vec<usize>,
    out: SchemaRef,
    /// The decoder of the key's row, kept from one execution to the next.
    decoder: Mutex<Option<Decoder>>,
}

impl fmt::Debug for KeyLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyLookup")
            .field("equals", &self.equals)
            .field("columns", &self.columns)
            .finish_non_exhaustive()
    }
}

impl KeyLookup {
    /// `plan` (parameters `$1`, `$2`, … unbound, or none) as a key lookup, or `None` for any
    /// other plan, which DataFusion optimises, plans and runs as usual.
    pub fn of(plan: &LogicalPlan, ctx: &SessionContext) -> Option<KeyLookup> {
        let LogicalPlan::Projection(p) = plan else {
            return None;
        };
        let LogicalPlan::Filter(f) = p.input.as_ref() else {
            return None;
        };
        let scan = match f.input.as_ref() {
            LogicalPlan::SubqueryAlias(a) => a.input.as_ref(),
            other => other,
        };
        let LogicalPlan::TableScan(scan) = scan else {
            return None;
        };
        if scan.fetch.is_some() || !scan.filters.is_empty() || scan.projection.is_some() {
            return None;
        }
        let table = source_as_provider(&scan.source).ok()?;
        let view = table.downcast_ref::<ViewTable>()?;
        let def = {
            let st = view.served.borrow().clone();
            Arc::clone(&st.views.get(view.index)?.def)
        };
        if def.window().is_some() {
            return None;
        }
        let inferred = parameters(plan)?;
        // A parameter of no inferred type is text, or the type it is cast to (`$1::text`), as
        // PostgreSQL infers it: the cast is then no work ([`ExprSimplifier`] drops it).
        let mut casts: BTreeMap<String, DataType> = BTreeMap::new();
        let _ = f.predicate.apply(|e| {
            if let Expr::Cast(Cast { expr, field }) = e
                && let Expr::Placeholder(p) = expr.as_ref()
            {
                casts
                    .entry(p.id.clone())
                    .or_insert_with(|| field.data_type().clone());
            }
            Ok(TreeNodeRecursion::Continue)
        });
        let params: SchemaRef = Arc::new(Schema::new(
            inferred
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let name = format!("${}", i + 1);
                    let t = t.clone().or_else(|| casts.get(&name).cloned());
                    Field::new(name, t.unwrap_or(DataType::Utf8), true)
                })
                .collect::<Vec<_>>(),
        ));
        let params_df = DFSchema::try_from(Arc::clone(&params)).ok()?;
        let simplifier = ExprSimplifier::new(
            SimplifyContext::builder()
                .with_schema(Arc::new(params_df.clone()))
                .build(),
        );
        let state = ctx.state();
        let sources = def.output_sources();
        let conjuncts = split_conjunction(&f.predicate);
        // One equality per group key: `customer = 'a' AND customer = 'b'` matches no row,
        // which the general path answers (the lookup would find one key's row).
        if conjuncts.len() != def.group_len() {
            return None;
        }
        let equals = conjuncts
            .into_iter()
            .map(|e| {
                let Expr::BinaryExpr(BinaryExpr {
                    left,
                    op: Operator::Eq,
                    right,
                }) = e
                else {
                    return None;
                };
                let (c, value) = match (left.as_ref(), right.as_ref()) {
                    (Expr::Column(c), v) | (v, Expr::Column(c)) if !v.any_column_refs() => (c, v),
                    _ => return None,
                };
                let Some(OutputSource::GroupKey(k)) =
                    sources.get(view.schema.index_of(&c.name).ok()?)
                else {
                    return None;
                };
                // The parameters as the columns of their row.
                let value = value
                    .clone()
                    .transform(|e| match e {
                        Expr::Placeholder(ph) => {
                            Ok(Transformed::yes(Expr::Column(Column::from_name(ph.id))))
                        }
                        e => Ok(Transformed::no(e)),
                    })
                    .ok()?
                    .data;
                // Simplified once, for every execution: a cast of a parameter to its own
                // type (`$1::text` of a text parameter) goes, constants are folded.
                let value = simplifier.simplify(value.clone()).unwrap_or(value);
                let value = state.create_physical_expr(value, &params_df).ok()?;
                Some((*k, value))
            })
            .collect::<Option<Vec<_>>>()?;
        let mut keys: Vec<usize> = equals.iter().map(|(k, _)| *k).collect();
        keys.sort_unstable();
        if keys != (0..def.group_len()).collect::<Vec<_>>() {
            return None;
        }
        let columns = p
            .expr
            .iter()
            .map(|e| match e.clone().unalias() {
                Expr::Column(c) => view.schema.index_of(&c.name).ok(),
                _ => None,
            })
            .collect::<Option<_>>()?;
        Some(KeyLookup {
            view: view.clone(),
            equals,
            inferred,
            params,
            columns,
            out: Arc::new(p.schema.as_arrow().clone()),
            decoder: Mutex::new(None),
        })
    }

    /// The parameters' types as the plan infers them, `$1` first (`None`: not inferred).
    pub fn parameter_types(&self) -> impl Iterator<Item = Option<&DataType>> {
        self.inferred.iter().map(Option::as_ref)
    }

    /// The row of the key `params` give (no row when it is not served), or `None` when the
    /// values are not a key (a NULL, a parameter that does not cast to the plan's type): the
    /// general path then answers, or names the error.
    pub fn run(&self, params: &[ScalarValue]) -> Option<Result<RecordBatch>> {
        let view = &self.view;
        let row = RecordBatch::try_new_with_options(
            Arc::clone(&self.params),
            params
                .iter()
                .zip(self.params.fields())
                .map(|(p, f)| p.cast_to(f.data_type())?.to_array())
                .collect::<Result<_>>()
                .ok()?,
            &RecordBatchOptions::new().with_row_count(Some(1)),
        )
        .ok()?;
        // The key's values in the key's order, as `?key=` gives them.
        let mut key = vec![String::new(); self.equals.len()];
        for (k, value) in &self.equals {
            let value = value.evaluate(&row).ok()?.into_array(1).ok()?;
            let value = ScalarValue::try_from_array(&value, 0).ok()?;
            if value.is_null() {
                return None;
            }
            key[*k] = scalar_text(&value);
        }
        let st = view.served.borrow().clone();
        let json = rows_json(&st.views.get(view.index)?.read(), &Select::Key(key));
        Some((|| {
            // One row at most, decoded by the statement's decoder (made once: its buffers are
            // sized by its batch's one row); after an error, by a new one.
            let mut decoder = self.decoder.lock().unwrap_or_else(|e| e.into_inner());
            let d = match decoder.as_mut() {
                Some(d) => d,
                None => decoder.insert(
                    ReaderBuilder::new(Arc::clone(&view.schema))
                        .with_batch_size(1)
                        .build_decoder()?,
                ),
            };
            let decoded = decode_with(d, &view.schema, &json);
            if decoded.is_err() {
                *decoder = None;
            }
            let mut batches = decoded?;
            let row = match batches.len() {
                1 => batches.remove(0),
                _ => concat_batches(&view.schema, &batches)?,
            };
            let cols = self
                .columns
                .iter()
                .map(|&c| Arc::clone(row.column(c)))
                .collect();
            Ok(RecordBatch::try_new(Arc::clone(&self.out), cols)?)
        })())
    }
}

/// `plan`'s parameters, `$1`, `$2`, … in order, as the plan infers their types (`None`: not
/// inferred); `None` when they are not numbered from 1.
fn parameters(plan: &LogicalPlan) -> Option<Vec<Option<DataType>>> {
    let mut types: Vec<(usize, Option<DataType>)> = plan
        .get_parameter_types()
        .ok()?
        .into_iter()
        .map(|(id, t)| Some((id.strip_prefix('$')?.parse().ok()?, t)))
        .collect::<Option<_>>()?;
    types.sort_by_key(|(n, _)| *n);
    if types.iter().enumerate().any(|(i, (n, _))| *n != i + 1) {
        return None;
    }
    Some(types.into_iter().map(|(_, t)| t).collect())
}

/// A literal as the text `?key=` would give (what [`crate::serving::table::ServingTable::encode_key`] parses).
fn scalar_text(l: &ScalarValue) -> String {
    match l {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => s.clone(),
        other => other.to_string(),
    }
}

/// The rows of the record batches a scan decodes.
const BATCH_ROWS: usize = 8192;

/// JSON lines (a view's rows) as record batches of `schema`, of `batch_rows` rows at most.
fn decode(schema: SchemaRef, json: &[u8], batch_rows: usize) -> Result<Vec<RecordBatch>> {
    let mut d = ReaderBuilder::new(Arc::clone(&schema))
        .with_batch_size(batch_rows)
        .build_decoder()?;
    decode_with(&mut d, &schema, json)
}

/// JSON lines of rows of `schema` as record batches, by decoder `d` (left empty, to decode
/// more, when this succeeds).
fn decode_with(d: &mut Decoder, schema: &SchemaRef, json: &[u8]) -> Result<Vec<RecordBatch>> {
    let mut rest = json;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let n = d.decode(rest)?;
        rest = &rest[n..];
        if let Some(b) = d.flush()? {
            out.push(b);
        }
    }
    if let Some(b) = d.flush()? {
        out.push(b);
    }
    if out.is_empty() {
        out.push(RecordBatch::new_empty(Arc::clone(schema)));
    }
    Ok(out)
}

/// The rows one scan copied out of a view, shown in `EXPLAIN` with how they were found.
#[derive(Debug)]
struct ViewScan {
    view: String,
    how: Select,
    rows: usize,
    inner: Arc<dyn ExecutionPlan>,
}

impl DisplayAs for ViewScan {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let how = match &self.how {
            Select::All => "scan of the served rows".to_string(),
            Select::Key(_) => "key lookup in the serving index".to_string(),
            Select::Times { key, from, to } => format!(
                "range scan of the time index{}, window start in [{}, {})",
                if key.is_some() { " for one key" } else { "" },
                from.and_then(crate::speed::rfc3339)
                    .unwrap_or_else(|| "-inf".into()),
                to.and_then(crate::speed::rfc3339)
                    .unwrap_or_else(|| "+inf".into()),
            ),
        };
        write!(f, "ViewScan: view={}, {how}, rows={}", self.view, self.rows)
    }
}

impl ExecutionPlan for ViewScan {
    fn name(&self) -> &'static str {
        "ViewScan"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.inner.execute(partition, context)
    }
}

/// `lambdaflow_freshness`: per view what its answers are made of, as `GET /api/views/{view}`
/// says in `freshness`.
#[derive(Debug)]
struct Freshness {
    served: watch::Receiver<Arc<ServingState>>,
    topic: String,
}

impl Freshness {
    fn schema() -> SchemaRef {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        Arc::new(Schema::new(vec![
            Field::new("view", DataType::Utf8, false),
            Field::new("version", DataType::Int64, false),
            Field::new("batch_run", DataType::Utf8, true),
            Field::new("batch_started_at", ts.clone(), true),
            Field::new("batch_offsets", DataType::Utf8, false),
            Field::new("speed_offsets", DataType::Utf8, false),
            Field::new("speed_events_after_batch", DataType::Int64, false),
            Field::new("watermark", ts, true),
        ]))
    }

    fn rows(&self) -> Result<RecordBatch> {
        Freshness::rows_of(&self.served.borrow().clone(), &self.topic)
    }

    fn rows_of(st: &ServingState, topic: &str) -> Result<RecordBatch> {
        let (mut names, mut versions, mut runs, mut started) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut batch_offsets, mut speed_offsets, mut after, mut wm) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for v in &st.views {
            let t = v.read();
            let f = st.freshness_of(v, &t, topic);
            names.push(v.def.name.clone());
            versions.push(t.version() as i64);
            runs.push(f.batch_run.clone());
            started.push(f.batch_started_at.as_deref().and_then(micros));
            batch_offsets.push(offsets_json(&f.batch_offsets));
            speed_offsets.push(offsets_json(&f.speed_offsets));
            after.push(f.speed_events_after_batch);
            wm.push(st.watermark_of(v));
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(names)),
            Arc::new(Int64Array::from(versions)),
            Arc::new(StringArray::from(runs)),
            Arc::new(TimestampMicrosecondArray::from(started).with_timezone("UTC")),
            Arc::new(StringArray::from(batch_offsets)),
            Arc::new(StringArray::from(speed_offsets)),
            Arc::new(Int64Array::from(after)),
            Arc::new(TimestampMicrosecondArray::from(wm).with_timezone("UTC")),
        ];
        Ok(RecordBatch::try_new(Freshness::schema(), columns)?)
    }
}

fn micros(rfc3339: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| t.timestamp_micros())
}

/// Offsets per partition as the HTTP API writes them: `{"0": 12, "1": 7}`.
fn offsets_json(o: &BTreeMap<i32, i64>) -> String {
    serde_json::to_string(o).unwrap_or_default()
}

#[async_trait]
impl TableProvider for Freshness {
    fn schema(&self) -> SchemaRef {
        Freshness::schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let rows = match QUERY_ROWS.try_with(|q| q.freshness.clone()) {
            Ok(Some(rows)) => rows,
            _ => self.rows()?,
        };
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![rows]],
            Freshness::schema(),
            projection.cloned(),
        )?)
    }
}

tokio::task_local! {
    /// The rows one query reads, copied at once by [`SnapshotPlanner`] for its scans.
    static QUERY_ROWS: Arc<QueryRows>;
}

/// A scan of a view: its index among the served views, and how it selects.
type ScanOf = (usize, Select);

/// The rows of every table one query reads, copied together (see the module docs).
#[derive(Default)]
struct QueryRows {
    /// Per scan of a view: its rows.
    views: Vec<(ScanOf, Arc<Vec<RecordBatch>>)>,
    /// `lambdaflow_freshness`, when the query reads it.
    freshness: Option<RecordBatch>,
}

impl QueryRows {
    fn view(&self, index: usize, select: &Select) -> Option<Arc<Vec<RecordBatch>>> {
        self.views
            .iter()
            .find(|((i, s), _)| *i == index && s == select)
            .map(|(_, rows)| Arc::clone(rows))
    }
}

/// DataFusion's physical planner, with the rows of every table the plan reads copied first, at
/// once: one served state, under the fence of in-place updates ([`crate::serving::updating`]).
/// The scans (planned next, in the same task) take their rows from that copy, so a query reads
/// one version of everything it reads.
#[derive(Debug)]
pub struct SnapshotPlanner {
    /// What is served now.
    pub served: watch::Receiver<Arc<ServingState>>,
    /// The topic the views' offsets are of.
    pub topic: String,
    /// The bytes each query's operators may hold at once (past them a query spills or fails).
    pub query_memory: usize,
}

impl SnapshotPlanner {
    /// Copies the rows of every scan of a view (and of the freshness table) in `plan`.
    fn copy(&self, plan: &LogicalPlan) -> Result<QueryRows> {
        let mut scans = Vec::new();
        plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node
                && let Ok(provider) = source_as_provider(&scan.source)
            {
                scans.push((provider, scan.filters.clone()));
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        let mut out = QueryRows::default();
        if scans.is_empty() {
            return Ok(out);
        }
        let st = self.served.borrow().clone();
        // Copied under the fence, decoded after it (updates wait for the copies alone).
        let mut copied: Vec<(ScanOf, SchemaRef, Copied)> = Vec::new();
        {
            let _fence = crate::serving::reading();
            for (provider, filters) in scans {
                if let Some(t) = provider.downcast_ref::<ViewTable>() {
                    let Some(v) = st.views.get(t.index) else {
                        continue;
                    };
                    let select = Select::of(&v.def, &t.schema, &filters);
                    if !copied
                        .iter()
                        .any(|((i, s), ..)| *i == t.index && *s == select)
                    {
                        let rows = copy_rows(v, &select);
                        copied.push(((t.index, select), Arc::clone(&t.schema), rows));
                    }
                } else if provider.downcast_ref::<Freshness>().is_some() && out.freshness.is_none()
                {
                    out.freshness = Some(Freshness::rows_of(&st, &self.topic)?);
                }
            }
        }
        for ((index, select), schema, rows) in copied {
            let rows = rows.decode(&st.views[index], &schema)?;
            out.views.push(((index, select), Arc::new(rows)));
        }
        Ok(out)
    }
}

#[async_trait]
impl QueryPlanner for SnapshotPlanner {
    async fn create_physical_plan(
        &self,
        plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let rows = Arc::new(self.copy(plan)?);
        let plan = QUERY_ROWS
            .scope(
                rows,
                DefaultPhysicalPlanner::default().create_physical_plan(plan, session),
            )
            .await?;
        Ok(super::memory::bound(plan, self.query_memory))
    }
}
