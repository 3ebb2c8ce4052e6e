//! Mergeable aggregate state: the contract that makes the Lambda merge exact.
//!
//! Every aggregate keeps a *state* from which its value is computed, and two states of the same
//! group combine with `merge`. The contract (the same as DataFusion's `Accumulator`):
//!
//! ```text
//!        batch layer                      speed layer
//!   events[..cut] ──update──► S_b     events[cut..] ──update──► S_s
//!                               \                           /
//!                                └──────── merge ──────────┘
//!                                            │
//!                                         evaluate ──► final value
//!
//!   evaluate(merge(update(∅, A), update(∅, B))) == evaluate(update(∅, A ++ B))
//! ```
//!
//! | aggregate | state              | evaluate                         |
//! |-----------|--------------------|----------------------------------|
//! | SUM(x)    | sum, count(x)      | NULL when count = 0, else sum    |
//! | COUNT(x)  | count              | count                            |
//! | MIN/MAX   | the extreme so far | it (NULL when none)              |
//! | AVG(x)    | sum (double), count| sum / count, NULL when count = 0 |
//!
//! AVG therefore merges as a sum and a count, never as an average of averages. The batch layer
//! produces the same state columns with DataFusion ([`state_exprs`]), so states from either layer
//! merge with each other.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, RecordBatchOptions,
};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::functions_aggregate::expr_fn::{count, max, min, sum};
use datafusion::logical_expr::{Expr, cast as cast_expr};

use super::{AggSpec, ViewDef};
use crate::error::{Error, Result};

/// What an aggregate computes, and so what state it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    /// SUM over integers: exact 64-bit sum and the count of non-null inputs.
    SumInt,
    /// SUM over floating point numbers.
    SumFloat,
    /// COUNT(x) or COUNT(*).
    Count,
    /// MIN(x).
    Min,
    /// MAX(x).
    Max,
    /// AVG(x): a double sum and a count.
    Avg,
}

impl AggKind {
    /// The kind for aggregate function `name` over `arg`, or `None` when not supported.
    pub fn new(name: &str, arg: &DataType) -> Option<Self> {
        let int = arg.is_integer();
        let num = arg.is_numeric();
        Some(match name {
            "sum" if int => AggKind::SumInt,
            "sum" if num => AggKind::SumFloat,
            "count" => AggKind::Count,
            "min" => AggKind::Min,
            "max" => AggKind::Max,
            "avg" | "mean" if num => AggKind::Avg,
            _ => return None,
        })
    }

    /// The state columns' suffixes and types (`arg` is the argument's type).
    fn state_fields(self, arg: &DataType) -> Vec<(&'static str, DataType)> {
        match self {
            AggKind::SumInt => vec![("sum", DataType::Int64), ("count", DataType::Int64)],
            AggKind::SumFloat | AggKind::Avg => {
                vec![("sum", DataType::Float64), ("count", DataType::Int64)]
            }
            AggKind::Count => vec![("count", DataType::Int64)],
            AggKind::Min => vec![("min", arg.clone())],
            AggKind::Max => vec![("max", arg.clone())],
        }
    }

    /// Number of state columns.
    fn state_len(self) -> usize {
        match self {
            AggKind::SumInt | AggKind::SumFloat | AggKind::Avg => 2,
            AggKind::Count | AggKind::Min | AggKind::Max => 1,
        }
    }

    /// The type the argument is cast to before it is accumulated.
    fn input_type(self, arg: &DataType) -> DataType {
        match self {
            AggKind::SumInt => DataType::Int64,
            AggKind::SumFloat | AggKind::Avg => DataType::Float64,
            AggKind::Count | AggKind::Min | AggKind::Max => arg.clone(),
        }
    }
}

/// The state schema: the group columns of `agg_schema`, then each aggregate's state columns,
/// named `<aggregate column>#<part>`.
pub(crate) fn state_schema(agg_schema: &DFSchema, glen: usize, aggs: &[AggSpec]) -> SchemaRef {
    let mut fields: Vec<Field> = agg_schema.fields()[..glen]
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    for (j, a) in aggs.iter().enumerate() {
        let out = &agg_schema.fields()[glen + j];
        for (part, ty) in a.kind.state_fields(out.data_type()) {
            fields.push(Field::new(format!("{}#{part}", out.name()), ty, true));
        }
    }
    Arc::new(Schema::new(fields))
}

/// The DataFusion aggregate expressions that compute the state columns, in [`state_schema`]
/// order. The batch layer runs `events WHERE .. GROUP BY keys` with these.
pub fn state_exprs(def: &ViewDef) -> Vec<Expr> {
    let names = def.state_schema.fields()[def.group_len()..]
        .iter()
        .map(|f| f.name().clone());
    let mut exprs = Vec::new();
    for a in &def.aggs {
        let arg = a.arg.clone();
        match a.kind {
            AggKind::SumInt => {
                exprs.push(sum(cast_expr(arg.clone(), DataType::Int64)));
                exprs.push(count(arg));
            }
            AggKind::SumFloat | AggKind::Avg => {
                exprs.push(sum(cast_expr(arg.clone(), DataType::Float64)));
                exprs.push(count(arg));
            }
            AggKind::Count => exprs.push(count(arg)),
            AggKind::Min => exprs.push(min(arg)),
            AggKind::Max => exprs.push(max(arg)),
        }
    }
    exprs
        .into_iter()
        .zip(names)
        .map(|(e, n)| e.alias(n))
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
enum Acc {
    SumInt { sum: i64, count: i64 },
    SumFloat { sum: f64, count: i64 },
    Count(i64),
    Min(ScalarValue),
    Max(ScalarValue),
}

impl Acc {
    fn new(kind: AggKind, arg: &DataType) -> Result<Self> {
        Ok(match kind {
            AggKind::SumInt => Acc::SumInt { sum: 0, count: 0 },
            AggKind::SumFloat | AggKind::Avg => Acc::SumFloat { sum: 0.0, count: 0 },
            AggKind::Count => Acc::Count(0),
            AggKind::Min => Acc::Min(ScalarValue::try_from(arg)?),
            AggKind::Max => Acc::Max(ScalarValue::try_from(arg)?),
        })
    }

    fn merge(&mut self, other: &Acc) {
        match (self, other) {
            (Acc::SumInt { sum, count }, Acc::SumInt { sum: s, count: c }) => {
                *sum = sum.wrapping_add(*s);
                *count += c;
            }
            (Acc::SumFloat { sum, count }, Acc::SumFloat { sum: s, count: c }) => {
                *sum += s;
                *count += c;
            }
            (Acc::Count(n), Acc::Count(m)) => *n += m,
            (Acc::Min(a), Acc::Min(b)) => {
                if !b.is_null() && (a.is_null() || b < a) {
                    *a = b.clone();
                }
            }
            (Acc::Max(a), Acc::Max(b)) => {
                if !b.is_null() && (a.is_null() || b > a) {
                    *a = b.clone();
                }
            }
            (a, b) => unreachable!("states of one view always line up: {a:?} vs {b:?}"),
        }
    }

    fn evaluate(&self, kind: AggKind) -> ScalarValue {
        match (self, kind) {
            (Acc::SumInt { sum, count }, _) => ScalarValue::Int64((*count > 0).then_some(*sum)),
            (Acc::SumFloat { sum, count }, AggKind::Avg) => {
                ScalarValue::Float64((*count > 0).then(|| sum / *count as f64))
            }
            (Acc::SumFloat { sum, count }, _) => ScalarValue::Float64((*count > 0).then_some(*sum)),
            (Acc::Count(n), _) => ScalarValue::Int64(Some(*n)),
            (Acc::Min(v) | Acc::Max(v), _) => v.clone(),
        }
    }

    fn state(&self) -> Vec<ScalarValue> {
        match self {
            Acc::SumInt { sum, count } => {
                vec![
                    ScalarValue::Int64(Some(*sum)),
                    ScalarValue::Int64(Some(*count)),
                ]
            }
            Acc::SumFloat { sum, count } => {
                vec![
                    ScalarValue::Float64(Some(*sum)),
                    ScalarValue::Int64(Some(*count)),
                ]
            }
            Acc::Count(n) => vec![ScalarValue::Int64(Some(*n))],
            Acc::Min(v) | Acc::Max(v) => vec![v.clone()],
        }
    }
}

/// Per-group aggregate state of one view: the unit that the speed layer updates, checkpoints,
/// and that serving merges with the batch layer's.
#[derive(Debug)]
pub struct ViewState {
    /// Encodes GROUP BY values into comparable bytes (`None` without GROUP BY: one group).
    converter: Option<RowConverter>,
    group_types: Vec<DataType>,
    /// Encoded group key → group number.
    index: HashMap<Box<[u8]>, usize>,
    /// Group number → key values.
    keys: Vec<Vec<ScalarValue>>,
    /// Group `g`'s aggregate `j` lives at `g * kinds.len() + j`.
    accs: Vec<Acc>,
    kinds: Vec<AggKind>,
    /// Each aggregate's argument type (after the cast to its input type).
    arg_types: Vec<DataType>,
}

impl Clone for ViewState {
    fn clone(&self) -> Self {
        Self {
            converter: self
                .converter
                .as_ref()
                .map(|_| new_converter(&self.group_types)),
            group_types: self.group_types.clone(),
            index: self.index.clone(),
            keys: self.keys.clone(),
            accs: self.accs.clone(),
            kinds: self.kinds.clone(),
            arg_types: self.arg_types.clone(),
        }
    }
}

impl ViewState {
    pub(crate) fn new(def: &ViewDef) -> Self {
        let groups = def.group_types();
        let converter = (!groups.is_empty()).then(|| new_converter(&groups));
        let glen = def.group_len();
        let arg_types = def
            .aggs
            .iter()
            .enumerate()
            .map(|(j, a)| {
                a.kind
                    .input_type(def.agg_schema.field(glen + j).data_type())
            })
            .collect();
        Self {
            converter,
            group_types: groups,
            index: HashMap::new(),
            keys: Vec::new(),
            accs: Vec::new(),
            kinds: def.aggs.iter().map(|a| a.kind).collect(),
            arg_types,
        }
    }

    /// Number of groups.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no group has been seen.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Group numbers for each row of `group_cols`, creating groups as needed.
    fn group_ids(&mut self, group_cols: &[ArrayRef], n: usize) -> Result<Vec<usize>> {
        let naggs = self.kinds.len();
        let Some(conv) = &self.converter else {
            if self.keys.is_empty() {
                self.index.insert(Box::default(), 0);
                self.keys.push(Vec::new());
                for j in 0..naggs {
                    self.accs.push(Acc::new(self.kinds[j], &self.arg_types[j])?);
                }
            }
            return Ok(vec![0; n]);
        };
        let rows = conv.convert_columns(group_cols)?;
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let bytes = rows.row(i);
            let bytes: &[u8] = bytes.as_ref();
            let gid = match self.index.get(bytes) {
                Some(g) => *g,
                None => {
                    let g = self.keys.len();
                    self.index.insert(bytes.into(), g);
                    self.keys.push(
                        group_cols
                            .iter()
                            .map(|c| ScalarValue::try_from_array(c, i))
                            .collect::<Result<_, _>>()?,
                    );
                    for j in 0..naggs {
                        self.accs.push(Acc::new(self.kinds[j], &self.arg_types[j])?);
                    }
                    g
                }
            };
            ids.push(gid);
        }
        Ok(ids)
    }

    /// Folds a batch of decoded events into the state: WHERE, then the group keys and the
    /// aggregate arguments, all evaluated by the view's compiled DataFusion expressions.
    /// Returns the number of events that passed WHERE.
    pub fn update(&mut self, def: &ViewDef, events: &RecordBatch) -> Result<usize> {
        let phys = def.physical();
        let filtered;
        let batch = match &phys.filter {
            Some(f) => {
                let mask = f.evaluate(events)?.into_array(events.num_rows())?;
                let mask = mask.as_boolean_opt().ok_or_else(|| Error::View {
                    view: def.name.clone(),
                    msg: "WHERE does not evaluate to a boolean".into(),
                })?;
                filtered = filter_record_batch(events, mask)?;
                &filtered
            }
            None => events,
        };
        let n = batch.num_rows();
        if n == 0 {
            return Ok(0);
        }
        let group_cols = phys
            .groups
            .iter()
            .map(|p| p.evaluate(batch)?.into_array(n))
            .collect::<Result<Vec<_>, _>>()?;
        let args = phys
            .args
            .iter()
            .zip(&self.arg_types)
            .map(|(p, ty)| {
                let a = p.evaluate(batch)?.into_array(n)?;
                Ok(if a.data_type() == ty {
                    a
                } else {
                    cast(&a, ty)?
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let gids = self.group_ids(&group_cols, n)?;
        let naggs = self.kinds.len();
        for (j, arg) in args.iter().enumerate() {
            let accs = &mut self.accs;
            let slot = |g: usize| g * naggs + j;
            match self.kinds[j] {
                AggKind::SumInt => {
                    let a = arg.as_primitive::<Int64Type>();
                    for (row, &g) in gids.iter().enumerate() {
                        if a.is_valid(row)
                            && let Acc::SumInt { sum, count } = &mut accs[slot(g)]
                        {
                            *sum = sum.wrapping_add(a.value(row));
                            *count += 1;
                        }
                    }
                }
                AggKind::SumFloat | AggKind::Avg => {
                    let a = arg.as_primitive::<Float64Type>();
                    for (row, &g) in gids.iter().enumerate() {
                        if a.is_valid(row)
                            && let Acc::SumFloat { sum, count } = &mut accs[slot(g)]
                        {
                            *sum += a.value(row);
                            *count += 1;
                        }
                    }
                }
                AggKind::Count => {
                    for (row, &g) in gids.iter().enumerate() {
                        if arg.is_valid(row)
                            && let Acc::Count(c) = &mut accs[slot(g)]
                        {
                            *c += 1;
                        }
                    }
                }
                AggKind::Min | AggKind::Max => {
                    for (row, &g) in gids.iter().enumerate() {
                        if arg.is_valid(row) {
                            let v = ScalarValue::try_from_array(arg, row)?;
                            let acc = &mut accs[slot(g)];
                            let other = match acc {
                                Acc::Min(_) => Acc::Min(v),
                                _ => Acc::Max(v),
                            };
                            acc.merge(&other);
                        }
                    }
                }
            }
        }
        Ok(n)
    }

    /// Merges another state of the same view into this one.
    pub fn merge(&mut self, other: &ViewState) {
        let naggs = self.kinds.len();
        // In the other state's group order, so groups keep their order of first appearance.
        let mut entries: Vec<(&Box<[u8]>, usize)> =
            other.index.iter().map(|(b, g)| (b, *g)).collect();
        entries.sort_unstable_by_key(|e| e.1);
        for (bytes, og) in entries {
            let g = match self.index.get(bytes) {
                Some(g) => *g,
                None => {
                    let g = self.keys.len();
                    self.index.insert(bytes.clone(), g);
                    self.keys.push(other.keys[og].clone());
                    self.accs
                        .extend_from_slice(&other.accs[og * naggs..(og + 1) * naggs]);
                    continue;
                }
            };
            for j in 0..naggs {
                let o = other.accs[og * naggs + j].clone();
                self.accs[g * naggs + j].merge(&o);
            }
        }
    }

    /// This state's accumulators for the groups of `order`, in its group order; a group this
    /// state has not seen gets fresh accumulators.
    pub fn aligned_to(&self, order: &ViewState) -> ViewState {
        let naggs = self.kinds.len();
        let mut by_group: Vec<&[u8]> = vec![&[]; order.keys.len()];
        for (bytes, &g) in &order.index {
            by_group[g] = bytes;
        }
        let mut out = ViewState {
            converter: order
                .converter
                .as_ref()
                .map(|_| new_converter(&order.group_types)),
            group_types: order.group_types.clone(),
            index: order.index.clone(),
            keys: order.keys.clone(),
            accs: Vec::with_capacity(order.accs.len()),
            kinds: self.kinds.clone(),
            arg_types: self.arg_types.clone(),
        };
        for bytes in by_group {
            match self.index.get(bytes) {
                Some(&g) => out
                    .accs
                    .extend_from_slice(&self.accs[g * naggs..(g + 1) * naggs]),
                None => {
                    for j in 0..naggs {
                        out.accs.push(
                            Acc::new(self.kinds[j], &self.arg_types[j])
                                .expect("accumulator types were checked when the view compiled"),
                        );
                    }
                }
            }
        }
        out
    }

    /// Merges state rows (in [`ViewDef::state_schema`] layout, as the batch layer writes them).
    pub fn merge_state_batch(&mut self, def: &ViewDef, batch: &RecordBatch) -> Result<()> {
        let glen = def.group_len();
        let n = batch.num_rows();
        if batch.schema().fields().len() != def.state_schema.fields().len() {
            return Err(Error::Internal(format!(
                "state of view `{}` has {} columns, expected {}",
                def.name,
                batch.num_columns(),
                def.state_schema.fields().len()
            )));
        }
        let cols: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .zip(def.state_schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(Arc::clone(c))
                } else {
                    cast(c, f.data_type())
                }
            })
            .collect::<Result<_, _>>()?;
        let gids = self.group_ids(&cols[..glen], n)?;
        let naggs = self.kinds.len();
        let mut c = glen;
        for j in 0..naggs {
            let kind = self.kinds[j];
            for (row, &g) in gids.iter().enumerate() {
                let other = match kind {
                    AggKind::SumInt => Acc::SumInt {
                        sum: int_at(&cols[c], row),
                        count: int_at(&cols[c + 1], row),
                    },
                    AggKind::SumFloat | AggKind::Avg => Acc::SumFloat {
                        sum: float_at(&cols[c], row),
                        count: int_at(&cols[c + 1], row),
                    },
                    AggKind::Count => Acc::Count(int_at(&cols[c], row)),
                    AggKind::Min => Acc::Min(ScalarValue::try_from_array(&cols[c], row)?),
                    AggKind::Max => Acc::Max(ScalarValue::try_from_array(&cols[c], row)?),
                };
                self.accs[g * naggs + j].merge(&other);
            }
            c += kind.state_len();
        }
        if glen == 0 && n == 0 {
            // An empty global aggregate still has its one group.
            self.group_ids(&[], 0)?;
        }
        Ok(())
    }

    /// The state as rows in [`ViewDef::state_schema`] layout.
    pub fn to_state_batch(&self, def: &ViewDef) -> Result<RecordBatch> {
        let glen = def.group_len();
        let naggs = self.kinds.len();
        let mut cols: Vec<ArrayRef> = Vec::new();
        for k in 0..glen {
            cols.push(column(
                self.keys.iter().map(|key| key[k].clone()),
                def.state_schema.field(k).data_type(),
            )?);
        }
        let mut c = glen;
        for j in 0..naggs {
            for p in 0..self.kinds[j].state_len() {
                let vals =
                    (0..self.keys.len()).map(|g| self.accs[g * naggs + j].state()[p].clone());
                cols.push(column(vals, def.state_schema.field(c).data_type())?);
                c += 1;
            }
        }
        Ok(RecordBatch::try_new_with_options(
            def.state_schema(),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(self.keys.len())),
        )?)
    }

    /// One row per group: the group columns and each aggregate's value, in the schema of the
    /// view's aggregate node (what HAVING and SELECT are planned against).
    pub(crate) fn evaluate(&self, def: &ViewDef) -> Result<RecordBatch> {
        let glen = def.group_len();
        let naggs = self.kinds.len();
        let schema = Arc::new(def.agg_schema.as_arrow().clone());
        let (keys, accs) = if glen == 0 && self.keys.is_empty() {
            // SQL: a global aggregate over no rows is one row (SUM = NULL, COUNT = 0).
            let accs = (0..naggs)
                .map(|j| Acc::new(self.kinds[j], &self.arg_types[j]))
                .collect::<Result<Vec<_>>>()?;
            (vec![Vec::new()], accs)
        } else {
            (self.keys.clone(), self.accs.clone())
        };
        let mut cols: Vec<ArrayRef> = Vec::new();
        for k in 0..glen {
            cols.push(column(
                keys.iter().map(|key| key[k].clone()),
                schema.field(k).data_type(),
            )?);
        }
        for j in 0..naggs {
            let vals = (0..keys.len()).map(|g| accs[g * naggs + j].evaluate(self.kinds[j]));
            cols.push(column(vals, schema.field(glen + j).data_type())?);
        }
        Ok(RecordBatch::try_new_with_options(
            schema,
            cols,
            &RecordBatchOptions::new().with_row_count(Some(keys.len())),
        )?)
    }
}

fn new_converter(types: &[DataType]) -> RowConverter {
    RowConverter::new(types.iter().cloned().map(SortField::new).collect())
        .expect("GROUP BY types are plain Arrow types")
}

fn int_at(a: &ArrayRef, row: usize) -> i64 {
    let a: &Int64Array = a.as_primitive();
    if a.is_valid(row) { a.value(row) } else { 0 }
}

fn float_at(a: &ArrayRef, row: usize) -> f64 {
    let a: &Float64Array = a.as_primitive();
    if a.is_valid(row) { a.value(row) } else { 0.0 }
}

/// An Arrow column of `ty` from scalars (an empty iterator gives an empty column).
fn column(vals: impl Iterator<Item = ScalarValue>, ty: &DataType) -> Result<ArrayRef> {
    let vals: Vec<ScalarValue> = vals.collect();
    if vals.is_empty() {
        return Ok(datafusion::arrow::array::new_empty_array(ty));
    }
    let a = ScalarValue::iter_to_array(vals)?;
    Ok(if a.data_type() == ty {
        a
    } else {
        cast(&a, ty)?
    })
}

#[cfg(test)]
mod tests {
    use crate::config::default_fields;
    use crate::show::show;
    use crate::view::ViewDef;
    use crate::view::event::{EventDecoder, EventSchema};

    async fn view(sql: &str) -> (ViewDef, EventSchema) {
        let schema = EventSchema::new(default_fields()).unwrap();
        (
            ViewDef::compile("v", sql, "events", &schema).await.unwrap(),
            schema,
        )
    }

    fn events(schema: &EventSchema, rows: &[(&str, i64)]) -> datafusion::arrow::array::RecordBatch {
        let mut d = EventDecoder::new(schema);
        for (c, a) in rows {
            d.push(format!(r#"{{"customer":"{c}","amount":{a}}}"#).as_bytes())
                .unwrap();
        }
        d.finish()
    }

    #[tokio::test]
    async fn avg_merges_as_sum_and_count_not_average_of_averages() {
        let (def, schema) = view("SELECT customer, AVG(amount) AS a, MIN(amount) AS lo, MAX(amount) AS hi, COUNT(*) AS n FROM events GROUP BY customer").await;
        let mut batch = def.new_state();
        batch
            .update(
                &def,
                &events(&schema, &[("Ali", 10), ("Ali", 20), ("Ali", 30)]),
            )
            .unwrap();
        let mut speed = def.new_state();
        speed
            .update(&def, &events(&schema, &[("Ali", 100)]))
            .unwrap();
        batch.merge(&speed);
        // (10+20+30+100)/4 = 40, not (20+100)/2 = 60.
        assert!(show(&def.finalize(&batch).unwrap(), 20).contains("|Ali     |40.0|10 |100|4  |"));
    }

    #[tokio::test]
    async fn having_runs_on_the_merged_state() {
        let (def, schema) =
            view("SELECT customer, SUM(amount) AS t FROM events GROUP BY customer HAVING t > 200")
                .await;
        let mut b = def.new_state();
        b.update(&def, &events(&schema, &[("Mounir", 150)]))
            .unwrap();
        let mut s = def.new_state();
        s.update(&def, &events(&schema, &[("Mounir", 100)]))
            .unwrap();
        assert_eq!(def.finalize(&b).unwrap().num_rows(), 0);
        assert_eq!(def.finalize(&s).unwrap().num_rows(), 0);
        b.merge(&s);
        assert!(show(&def.finalize(&b).unwrap(), 20).contains("|Mounir  |250|"));
    }

    #[tokio::test]
    async fn state_round_trips_through_its_batch_form() {
        let (def, schema) = view(
            "SELECT customer, SUM(amount) AS t, MIN(amount) AS lo FROM events GROUP BY customer",
        )
        .await;
        let mut s = def.new_state();
        s.update(
            &def,
            &events(&schema, &[("Ali", 5), ("Sara", -3), ("Ali", 7)]),
        )
        .unwrap();
        let mut back = def.new_state();
        back.merge_state_batch(&def, &s.to_state_batch(&def).unwrap())
            .unwrap();
        assert_eq!(
            show(&def.finalize(&back).unwrap(), 20),
            show(&def.finalize(&s).unwrap(), 20)
        );
    }
}
