//! The fold of decoded records, straight into the state: for the usual view — no WHERE, GROUP
//! BY one string field (or nothing), each aggregate over a field or `COUNT(*)` — a record's
//! values go from the decoder to the accumulators without becoming Arrow arrays first (a few
//! hundred records at a time: [`PendingRows`]).
//!
//! It computes exactly what [`ViewState::update`] computes for a batch of those records, in the
//! same order (groups keep their first appearance): the same key, the same casts (an integer
//! averaged as a double), the same NULL rules. Any other view has no [`RowPlan`] and goes
//! through the compiled expressions.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column, Literal};

use super::accs::AccCol;
use super::{AggKind, ViewState};
use crate::error::Result;
use crate::event::{EventSchema, FieldType, FieldValue};
use crate::view::ViewDef;

/// An aggregate argument's value, as the accumulators take it (plain: two words).
#[derive(Debug, Clone, Copy)]
enum Value {
    /// NULL or missing: not accumulated.
    Null,
    /// An integer.
    Int(i64),
    /// A double.
    Float(f64),
    /// Any other non-NULL value (a string or boolean, only ever counted).
    Present,
}

/// Where an aggregate's argument comes from.
#[derive(Debug, Clone, Copy)]
enum Arg {
    /// A declared field, by position.
    Field(usize),
    /// A constant that is never NULL (`COUNT(*)` counts `1`).
    Row,
}

/// How a view folds one decoded record (see the module docs).
#[derive(Debug, Clone)]
pub struct RowPlan {
    /// The GROUP BY field (a string), or none for a global aggregate.
    key: Option<usize>,
    /// Each aggregate's argument.
    args: Vec<Arg>,
}

impl RowPlan {
    /// The plan of `def` over events of `schema`, when it has one.
    pub(crate) fn new(def: &ViewDef, schema: &EventSchema) -> Option<Self> {
        let phys = def.physical();
        if phys.filter.is_some() {
            return None;
        }
        let field = |e: &dyn PhysicalExpr| {
            let c = e.downcast_ref::<Column>()?;
            let f = schema.fields().get(c.index())?;
            (f.name == c.name()).then_some((c.index(), f.ty))
        };
        let key = match phys.groups.as_slice() {
            [] => None,
            [g] => match field(g.as_ref()) {
                Some((i, FieldType::String)) if def.group_types() == [DataType::Utf8] => Some(i),
                _ => return None,
            },
            _ => return None,
        };
        let args = def
            .aggs
            .iter()
            .zip(&phys.args)
            .map(|(a, e)| {
                if let Some(l) = e.downcast_ref::<Literal>() {
                    return (a.kind == AggKind::Count && !l.value().is_null()).then_some(Arg::Row);
                }
                // An integer averaged (or summed as a double) is cast to a double first; the
                // fold casts it the same way (`as f64`, as Arrow's cast does).
                let (i, ty, to_double) = match e.downcast_ref::<CastExpr>() {
                    Some(c) if c.cast_type() == &DataType::Float64 => {
                        let (i, ty) = field(c.expr().as_ref())?;
                        (ty == FieldType::Integer).then_some((i, ty, true))?
                    }
                    Some(_) => return None,
                    None => field(e.as_ref()).map(|(i, ty)| (i, ty, false))?,
                };
                let number = matches!(ty, FieldType::Integer | FieldType::Double);
                let fits = match a.kind {
                    AggKind::SumInt => ty == FieldType::Integer && !to_double,
                    AggKind::SumFloat => ty == FieldType::Double || to_double,
                    AggKind::Avg => number,
                    AggKind::Min | AggKind::Max => number && !to_double,
                    AggKind::Count => true,
                };
                fits.then_some(Arg::Field(i))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(RowPlan { key, args })
    }
}

/// Decoded records of one view waiting to be folded ([`ViewState::fold_rows`]): each one's key
/// (copied) and aggregate arguments. Folding many at once runs their key lookups back to back,
/// where the processor overlaps their memory accesses; a lookup right after each decode waits
/// for each of its cache misses in turn.
#[derive(Debug, Default)]
pub struct PendingRows {
    /// The keys' bytes, back to back.
    keys: Vec<u8>,
    /// Per record, its key's end in `keys`, or `None` for a NULL (or no) key.
    ends: Vec<Option<u32>>,
    /// Per record, each aggregate's argument.
    args: Vec<Value>,
    /// Scratch: the records' key hashes and groups.
    hashes: Vec<u64>,
    groups: Vec<usize>,
}

impl PendingRows {
    /// Records waiting.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when no record waits.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Adds one decoded record (`row`: one value per declared field) of the view of `plan`.
    #[inline]
    pub fn push(&mut self, plan: &RowPlan, row: &[FieldValue<'_>]) {
        match plan.key.map(|k| row[k]) {
            Some(FieldValue::Str(s)) => {
                self.keys.extend_from_slice(s);
                self.ends.push(Some(self.keys.len() as u32));
            }
            _ => self.ends.push(None),
        }
        for arg in &plan.args {
            self.args.push(match *arg {
                Arg::Row => Value::Present,
                Arg::Field(i) => match row[i] {
                    FieldValue::Missing | FieldValue::Null => Value::Null,
                    FieldValue::Int(x) => Value::Int(x),
                    FieldValue::Float(x) => Value::Float(x),
                    FieldValue::Str(_) | FieldValue::Bool(_) | FieldValue::Time(_) => {
                        Value::Present
                    }
                },
            });
        }
    }

    /// Each waiting record's key: `None` for NULL.
    fn keys(&self) -> impl Iterator<Item = Option<&[u8]>> {
        let mut start = 0;
        self.ends.iter().map(move |end| {
            let end = (*end)?;
            let k = &self.keys[start as usize..end as usize];
            start = end;
            Some(k)
        })
    }
}

impl ViewState {
    /// Folds the records waiting in `rows` into the state, in their order, as
    /// [`ViewState::update`] would fold them, and empties `rows`; `plan` is the view's
    /// [`ViewDef::row_plan`].
    pub fn fold_rows(&mut self, plan: &RowPlan, rows: &mut PendingRows) {
        let mut hashes = std::mem::take(&mut rows.hashes);
        let mut groups = std::mem::take(&mut rows.groups);
        groups.clear();
        match plan.key {
            None => {
                let (g, new) = self.keys.find_or_insert(&[]);
                self.groups_created(new);
                groups.resize(rows.len(), g);
            }
            Some(_) => {
                hashes.clear();
                hashes.extend(rows.keys().map(|k| self.keys.hash_str(k)));
                for (k, &h) in rows.keys().zip(&hashes) {
                    let (g, new) = self.keys.find_or_insert_str(h, k);
                    self.groups_created(new);
                    groups.push(g);
                }
            }
        }
        let n = plan.args.len();
        for (j, acc) in self.accs.iter_mut().enumerate() {
            for (r, &g) in groups.iter().enumerate() {
                acc.add(g, rows.args[r * n + j]);
            }
        }
        rows.keys.clear();
        rows.ends.clear();
        rows.args.clear();
        rows.hashes = hashes;
        rows.groups = groups;
    }

    /// Folds a batch of events (the declared fields, in order) into the state, as
    /// [`ViewState::update`] would; a string key may be dictionary-encoded, as archived
    /// segments are read. `plan` is the view's [`ViewDef::row_plan`]; `gids` a scratch buffer
    /// the caller keeps from batch to batch (a fresh one per batch costs its pages again).
    pub fn fold_columns(
        &mut self,
        plan: &RowPlan,
        events: &RecordBatch,
        gids: &mut Vec<usize>,
    ) -> Result<()> {
        let n = events.num_rows();
        match plan.key {
            None => {
                let g = self.group_of(&[]);
                gids.clear();
                gids.resize(n, g);
            }
            Some(k) => self.intern_into(&[Arc::clone(events.column(k))], n, gids)?,
        }
        let args = plan
            .args
            .iter()
            .map(|a| match *a {
                Arg::Field(i) => Some(Arc::clone(events.column(i))),
                Arg::Row => None,
            })
            .collect();
        self.accumulate(args, gids)
    }

    /// Gives every aggregate its new (empty) group when `new`.
    fn groups_created(&mut self, new: bool) {
        if new {
            for a in &mut self.accs {
                a.push_group();
            }
        }
    }
}

impl AccCol {
    /// Adds one value to group `g` (a type the plan checked against the aggregate).
    #[inline]
    fn add(&mut self, g: usize, v: Value) {
        use super::accs::Extremes;
        match (self, v) {
            (_, Value::Null) => {}
            (AccCol::SumInt { sum, count }, Value::Int(x)) => {
                sum[g] = sum[g].wrapping_add(x);
                count[g] += 1;
            }
            (AccCol::SumFloat { sum, count }, Value::Float(x)) => {
                sum[g] += x;
                count[g] += 1;
            }
            (AccCol::SumFloat { sum, count }, Value::Int(x)) => {
                sum[g] += x as f64;
                count[g] += 1;
            }
            (AccCol::Count(c), _) => c[g] += 1,
            (AccCol::Extreme { max, vals }, v) => match (vals, v) {
                (Extremes::Int { v, seen, .. }, Value::Int(x)) => {
                    super::accs::keep(&mut v[g], &mut seen[g], x, *max)
                }
                (Extremes::Float { v, seen, .. }, Value::Float(x)) => {
                    super::accs::keep(&mut v[g], &mut seen[g], x, *max)
                }
                _ => unreachable!("the row plan checked the argument's type"),
            },
            _ => unreachable!("the row plan checked the argument's type"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventDecoder, FieldDef, RowDecoder};
    use crate::show::show;

    fn schema() -> EventSchema {
        let f = |name: &str, ty| FieldDef {
            name: name.into(),
            ty,
            nullable: true,
            unit: None,
        };
        EventSchema::new(vec![
            f("customer", FieldType::String),
            f("amount", FieldType::Integer),
            f("price", FieldType::Double),
        ])
        .unwrap()
    }

    async fn view(sql: &str) -> ViewDef {
        ViewDef::compile("v", sql, "events", &schema())
            .await
            .unwrap()
    }

    /// Records of every kind of value: repeated, NULL and missing keys and arguments, an escaped
    /// key (the decoder's slow path), integers in a double field.
    fn records() -> Vec<String> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let keys = [
            r#""customer":"Ali""#,
            r#""customer":"Sara""#,
            r#""customer":"Sa\"ra""#,
            r#""customer":"Éloïse""#,
            r#""customer":null"#,
            "",
        ];
        (0..5_000)
            .map(|_| {
                let mut parts = Vec::new();
                let k = keys[rng.random_range(0..keys.len())];
                if !k.is_empty() {
                    parts.push(k.to_string());
                }
                match rng.random_range(0..5) {
                    0 => parts.push(r#""amount":null"#.into()),
                    1 => {}
                    _ => parts.push(format!(r#""amount":{}"#, rng.random_range(-1000..1000))),
                }
                match rng.random_range(0..4) {
                    0 => parts.push(format!(r#""price":{}"#, rng.random_range(-50..50))),
                    1 => {}
                    _ => parts.push(format!(r#""price":{:.2}"#, rng.random_range(-9.0..9.0))),
                }
                format!("{{{}}}", parts.join(","))
            })
            .collect()
    }

    #[tokio::test]
    async fn folding_records_equals_updating_with_their_batches() {
        let s = schema();
        for sql in [
            "SELECT customer, SUM(amount) AS t, COUNT(*) AS n, AVG(amount) AS a, MIN(price) AS lo, \
             MAX(amount) AS hi, COUNT(price) AS c, SUM(price) AS sp, AVG(price) AS ap, \
             MIN(amount) AS mi, MAX(price) AS mp FROM events GROUP BY customer",
            "SELECT COUNT(*) AS n, SUM(amount) AS t, COUNT(customer) AS k FROM events",
            "SELECT customer AS who, COUNT(1) AS n FROM events GROUP BY customer HAVING n > 1 \
             ORDER BY n DESC",
        ] {
            let def = view(sql).await;
            let plan = def
                .row_plan()
                .unwrap_or_else(|| panic!("no row plan: {sql}"));
            let (mut by_row, mut by_batch) = (def.new_state(), def.new_state());
            let (mut dec, mut rows) = (EventDecoder::new(&s), RowDecoder::new(&s));
            let mut pending = PendingRows::default();
            for (i, r) in records().iter().enumerate() {
                rows.decode(r.as_bytes(), |row| pending.push(plan, row))
                    .unwrap();
                if i % 100 == 0 {
                    by_row.fold_rows(plan, &mut pending);
                }
                dec.push(r.as_bytes()).unwrap();
                if dec.len() == 333 {
                    by_batch.update(&def, &dec.finish()).unwrap();
                }
            }
            by_batch.update(&def, &dec.finish()).unwrap();
            by_row.fold_rows(plan, &mut pending);
            assert!(pending.is_empty());
            assert_eq!(by_row.len(), by_batch.len(), "{sql}");
            if sql.contains("COUNT(customer)") {
                // Strings are counted, not cast to the count's type (which made them NULL).
                let named = records()
                    .iter()
                    .filter(|r| r.contains(r#""customer":""#))
                    .count();
                let t = show(&def.finalize(&by_batch).unwrap(), 10);
                assert!(t.contains(&format!("|{named}")), "{named} in {t}");
            }
            let (a, b) = (
                def.finalize(&by_row).unwrap(),
                def.finalize(&by_batch).unwrap(),
            );
            assert_eq!(show(&a, 100), show(&b, 100), "{sql}");
            // The same states: they merge into the other layer's as theirs do.
            assert_eq!(
                format!("{:?}", by_row.to_state_batch(&def).unwrap()),
                format!("{:?}", by_batch.to_state_batch(&def).unwrap())
            );
        }
    }

    #[tokio::test]
    async fn folding_dictionary_columns_equals_updating_with_strings() {
        use datafusion::arrow::compute::cast;
        let s = schema();
        let def = view(
            "SELECT customer, SUM(amount) AS t, COUNT(*) AS n, AVG(amount) AS a, \
             COUNT(customer) AS k, MAX(price) AS hi FROM events GROUP BY customer",
        )
        .await;
        let plan = def.row_plan().unwrap();
        let mut dec = EventDecoder::new(&s);
        for r in records() {
            dec.push(r.as_bytes()).unwrap();
        }
        let plain = dec.finish();
        let dict_type = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let mut cols = plain.columns().to_vec();
        cols[0] = cast(&cols[0], &dict_type).unwrap();
        let mut fields: Vec<_> = plain
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields[0] = datafusion::arrow::datatypes::Field::new("customer", dict_type, true);
        let dict = RecordBatch::try_new(
            Arc::new(datafusion::arrow::datatypes::Schema::new(fields)),
            cols,
        )
        .unwrap();
        let (mut by_columns, mut by_update) = (def.new_state(), def.new_state());
        by_columns
            .fold_columns(plan, &dict, &mut Vec::new())
            .unwrap();
        by_update.update(&def, &plain).unwrap();
        assert_eq!(
            format!("{:?}", by_columns.to_state_batch(&def).unwrap()),
            format!("{:?}", by_update.to_state_batch(&def).unwrap())
        );
    }

    #[tokio::test]
    async fn other_views_fold_through_their_expressions() {
        for sql in [
            "SELECT customer, SUM(amount) AS t FROM events WHERE amount > 0 GROUP BY customer",
            "SELECT upper(customer) AS c, SUM(amount) AS t FROM events GROUP BY upper(customer)",
            "SELECT customer, amount, COUNT(*) AS n FROM events GROUP BY customer, amount",
            "SELECT amount, COUNT(*) AS n FROM events GROUP BY amount",
            "SELECT customer, SUM(amount * 2) AS t FROM events GROUP BY customer",
            "SELECT customer, MIN(customer) AS m FROM events GROUP BY customer",
        ] {
            assert!(view(sql).await.row_plan().is_none(), "{sql}");
        }
    }
}
