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

mod accs;
pub mod keys;
mod rebuild;
mod rows;

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::functions_aggregate::expr_fn::{count, max, min, sum};
use datafusion::logical_expr::{Expr, cast as cast_expr};

use super::{AggSpec, ViewDef};
use crate::error::{Error, Result};
use accs::AccCol;
pub use keys::KeyIndex;
pub use rebuild::rebuild;
pub use rows::{PendingRows, RowPlan};

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

    /// The type an argument of type `arg` is cast to before it is accumulated (COUNT, MIN and
    /// MAX take it as it is: a cast could make values NULL).
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

/// The DataFusion aggregate expressions that compute the state columns, in `state_schema`
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

/// Per-group aggregate state of one view: the unit that the speed layer updates, the batch
/// layer publishes, and serving merges.
///
/// Compact by construction: each group key is stored once, in Arrow's row format, behind one
/// hash table ([`KeyIndex`]); each aggregate's state is a flat column indexed by group id
/// (`AccCol`). Group ids are dense, in order of first appearance, and never change, so a
/// caller can keep its own per-group vectors beside a state. Cost: `update` and `merge` grow
/// with the rows or groups they are given, never with the size of the state.
#[derive(Debug, Clone)]
pub struct ViewState {
    keys: KeyIndex,
    /// One column per aggregate, each indexed by group id.
    accs: Vec<AccCol>,
    kinds: Vec<AggKind>,
    /// Each aggregate's argument type (after the cast to its input type).
    arg_types: Vec<DataType>,
}

impl ViewState {
    pub(crate) fn new(def: &ViewDef) -> Self {
        let arg_types: Vec<DataType> = def
            .aggs
            .iter()
            .map(|a| a.kind.input_type(&a.arg_type))
            .collect();
        let accs = def
            .aggs
            .iter()
            .zip(&arg_types)
            .map(|(a, t)| AccCol::new(a.kind, t))
            .collect::<Result<Vec<_>>>()
            .expect("accumulator types were checked when the view compiled");
        Self {
            keys: KeyIndex::new(def.group_types()),
            accs,
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

    /// The group keys.
    pub fn keys(&self) -> &KeyIndex {
        &self.keys
    }

    fn intern(&mut self, cols: &[ArrayRef], n: usize) -> Result<Vec<usize>> {
        let mut ids = Vec::with_capacity(n);
        self.intern_into(cols, n, &mut ids)?;
        Ok(ids)
    }

    /// [`ViewState::intern`] into `ids`, a buffer reused from batch to batch.
    fn intern_into(&mut self, cols: &[ArrayRef], n: usize, ids: &mut Vec<usize>) -> Result<()> {
        let accs = &mut self.accs;
        self.keys.intern_into(cols, n, ids, |_| {
            for a in accs.iter_mut() {
                a.push_group();
            }
        })
    }

    /// The group of `key` (key bytes from [`KeyIndex::encode`] or another state of the
    /// view), created empty when new.
    pub fn group_of(&mut self, key: &[u8]) -> usize {
        let (g, new) = self.keys.find_or_insert(key);
        self.created(g, new)
    }

    /// [`ViewState::group_of`] group `og` of `other`'s key (by the hash it has there).
    fn group_of_other(&mut self, other: &ViewState, og: usize) -> usize {
        let (g, new) = self
            .keys
            .find_or_insert_hashed(other.keys.hash_of(og), other.keys.key(og));
        self.created(g, new)
    }

    /// Group `g`, with its accumulators when `new`.
    fn created(&mut self, g: usize, new: bool) -> usize {
        if new {
            for a in &mut self.accs {
                a.push_group();
            }
        }
        g
    }

    /// Folds a batch of decoded events into the state: WHERE, then the group keys and the
    /// aggregate arguments, all evaluated by the view's compiled DataFusion expressions.
    /// Returns the number of events that passed WHERE.
    pub fn update(&mut self, def: &ViewDef, events: &RecordBatch) -> Result<usize> {
        self.update_within(def, events, None)
    }

    /// [`ViewState::update`], leaving out the windows that end before `horizon` (a windowed
    /// view's retention).
    pub fn update_within(
        &mut self,
        def: &ViewDef,
        events: &RecordBatch,
        horizon: Option<i64>,
    ) -> Result<usize> {
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
        let passed = batch.num_rows();
        if passed == 0 {
            return Ok(0);
        }
        // A windowed view folds each event once per window that holds it.
        let expanded;
        let (batch, window) = match &def.window {
            Some(w) => {
                let (rows, col) = w.expand(batch, horizon)?;
                expanded = rows;
                (&expanded, Some((w.key, col)))
            }
            None => (batch, None),
        };
        let n = batch.num_rows();
        let group_cols = phys
            .groups
            .iter()
            .enumerate()
            .map(|(k, p)| match &window {
                Some((key, col)) if *key == k => Ok(Arc::clone(col)),
                _ => p.evaluate(batch)?.into_array(n),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let gids = self.intern(&group_cols, n)?;
        let args = phys
            .args
            .iter()
            .map(|p| Ok(Some(p.evaluate(batch)?.into_array(n)?)))
            .collect::<Result<Vec<_>>>()?;
        self.accumulate(args, &gids)?;
        Ok(passed)
    }

    /// Folds each aggregate's argument (`None`: a constant, counted on every row) into the
    /// groups `gids` of its rows.
    fn accumulate(&mut self, args: Vec<Option<ArrayRef>>, gids: &[usize]) -> Result<()> {
        for ((acc, ty), a) in self.accs.iter_mut().zip(&self.arg_types).zip(args) {
            match a {
                Some(a) if a.data_type() == ty => acc.update(&a, gids)?,
                Some(a) => acc.update(&cast(&a, ty)?, gids)?,
                None => acc.count_rows(gids),
            }
        }
        Ok(())
    }

    /// Drops, in place, a windowed view's groups whose window ends before `horizon`; returns
    /// whether any did. The kept groups close up in their order (group ids change, as after a
    /// rebuild) and the buffers keep their capacity for the windows to come, so a view under
    /// retention reuses its memory instead of copying itself. One pass over the groups.
    pub fn retain_windows(&mut self, def: &ViewDef, horizon: i64) -> Result<bool> {
        let Some(w) = def.window() else {
            return Ok(false);
        };
        let gids: Vec<usize> = (0..self.len()).collect();
        let cols = self.keys.columns(&gids)?;
        let Some(starts) = w.starts_of(&cols) else {
            return Ok(false);
        };
        let keep: Vec<bool> = (0..self.len())
            .map(|g| starts.is_null(g) || starts.value(g).saturating_add(w.shape.size) >= horizon)
            .collect();
        if keep.iter().all(|&k| k) {
            return Ok(false);
        }
        self.keys.retain(&keep);
        for acc in &mut self.accs {
            acc.retain_groups(&keep);
        }
        Ok(true)
    }

    /// Merges group `og` of `other` (a state of the same view) into group `g` of this one.
    pub fn merge_group(&mut self, g: usize, other: &ViewState, og: usize) {
        for (a, o) in self.accs.iter_mut().zip(&other.accs) {
            a.merge_group(g, o, og);
        }
    }

    /// Merges another state of the same view into this one; returns, for each group of
    /// `other`, its group here. Costs what `other` holds, not what this state holds.
    pub fn merge(&mut self, other: &ViewState) -> Vec<usize> {
        (0..other.len())
            .map(|og| {
                let g = self.group_of_other(other, og);
                self.merge_group(g, other, og);
                g
            })
            .collect()
    }

    /// An empty state of the same view.
    pub fn empty_like(&self) -> ViewState {
        let accs = self
            .kinds
            .iter()
            .zip(&self.arg_types)
            .map(|(k, t)| AccCol::new(*k, t))
            .collect::<Result<Vec<_>>>()
            .expect("accumulator types were checked when the view compiled");
        ViewState {
            keys: KeyIndex::new(self.keys.types().to_vec()),
            accs,
            kinds: self.kinds.clone(),
            arg_types: self.arg_types.clone(),
        }
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
        if glen == 0 && n == 0 {
            // An empty global aggregate still has its one group.
            self.intern(&[], 0)?;
            return Ok(());
        }
        let gids = self.intern(&cols[..glen], n)?;
        let mut c = glen;
        for (kind, acc) in self.kinds.iter().zip(&mut self.accs) {
            let len = kind.state_len();
            acc.merge_state(&cols[c..c + len], &gids)?;
            c += len;
        }
        Ok(())
    }

    /// The state as rows in [`ViewDef::state_schema`] layout.
    pub fn to_state_batch(&self, def: &ViewDef) -> Result<RecordBatch> {
        let gids: Vec<usize> = (0..self.len()).collect();
        let mut cols = self.keys.columns(&gids)?;
        for acc in &self.accs {
            cols.extend(acc.state(&gids)?);
        }
        Ok(RecordBatch::try_new_with_options(
            def.state_schema(),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(gids.len())),
        )?)
    }

    /// One row per group: the group columns and each aggregate's value, in the schema of the
    /// view's aggregate node (what HAVING and SELECT are planned against).
    pub(crate) fn evaluate(&self, def: &ViewDef) -> Result<RecordBatch> {
        if def.group_len() == 0 && self.is_empty() {
            // SQL: a global aggregate over no rows is one row (SUM = NULL, COUNT = 0).
            let mut one = self.empty_like();
            one.group_of(&[]);
            return one.evaluate(def);
        }
        self.evaluate_groups(def, &(0..self.len()).collect::<Vec<_>>())
    }

    /// [`ViewState::evaluate`] for the groups `gids` only, in that order.
    pub(crate) fn evaluate_groups(&self, def: &ViewDef, gids: &[usize]) -> Result<RecordBatch> {
        let glen = def.group_len();
        let schema = Arc::new(def.agg_schema.as_arrow().clone());
        let mut cols = Vec::with_capacity(schema.fields().len());
        for (k, c) in self.keys.columns(gids)?.into_iter().enumerate() {
            let ty = schema.field(k).data_type();
            cols.push(if c.data_type() == ty {
                c
            } else {
                cast(&c, ty)?
            });
        }
        for (j, acc) in self.accs.iter().enumerate() {
            cols.push(acc.evaluate(self.kinds[j], gids, schema.field(glen + j).data_type())?);
        }
        Ok(RecordBatch::try_new_with_options(
            schema,
            cols,
            &RecordBatchOptions::new().with_row_count(Some(gids.len())),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::default_fields;
    use crate::event::{EventDecoder, EventSchema};
    use crate::show::show;
    use crate::view::ViewDef;

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
