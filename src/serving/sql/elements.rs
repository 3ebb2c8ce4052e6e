//! `ARRAY(SELECT e(x) FROM unnest(a) x [WHERE p(x)])`: an array computed from another's
//! elements, which psql's `\d+` (a table's storage options: `array(select 'toast.' || x from
//! unnest(tc.reloptions) x)`) and `\dy` (an event trigger's tags) read of a catalog row's
//! array. DataFusion cannot plan an `unnest` of the outer query's column in a subquery; the
//! subquery reads nothing but the elements, so its value is a function of the array alone:
//! [`of_elements`] writes it as `array_map(a, 'e(x)', 'p(x)')` ([`ArrayMap`]), which plans the
//! element's expression and condition over a column of the elements and computes them over
//! all the arrays of a batch at once.
//!
//! `pg_options_to_table(a)` is read the same way: the rows of an options array
//! (`{fillfactor=70}`), each element's `option_name` before its first `=` and `option_value`
//! after it (NULL without one), as psql's `\des+`, `\det+` and `\deu+` read a foreign
//! server's, table's or user mapping's options.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, ListArray, RecordBatch, new_null_array};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema};
use datafusion::common::{DFSchema, Result, ScalarValue, exec_err, plan_err};
use datafusion::execution::SessionState;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_plan::PhysicalExpr;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, Query,
    SelectItem, SetExpr, TableFactor, TableFunctionArgs, Value, visit_expressions_mut,
};

/// The function's name.
const ARRAY_MAP: &str = "array_map";

/// The name of the elements' column in the expressions [`ArrayMap`] plans.
const ELEMENT: &str = "x";

/// Registers [`ArrayMap`] in `ctx`, planning its expressions with `ctx`'s functions.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::from(ArrayMap {
        signature: Signature::any(3, Volatility::Immutable),
        session: {
            let session = ctx.state_weak_ref();
            Arc::new(move || session.upgrade().map(|s| s.read().clone()))
        },
    }));
}

/// The table functions whose rows are an array's elements: `unnest`, and
/// `pg_options_to_table` with its two columns of each element.
const FUNCTIONS: [&str; 2] = ["unnest", "pg_options_to_table"];

/// The columns of `pg_options_to_table`, each an expression of the element `x`.
const OPTION_COLUMNS: [(&str, &str); 2] = [
    ("option_name", "split_part(\"x\", '=', 1)"),
    (
        "option_value",
        "CASE WHEN strpos(\"x\", '=') > 0 THEN substr(\"x\", strpos(\"x\", '=') + 1) END",
    ),
];

/// `ARRAY(q)` as `array_map(a, 'e', 'p')` when `q` is `SELECT e FROM unnest(a) [AS] t[(x)]
/// [WHERE p]` — one column, nothing but the elements read in `e` and `p` (as `x`, `t.x`, or
/// `t` when the alias names no column), no aggregate, grouping, order or limit — or the same
/// over `pg_options_to_table(a) [AS t[(n, v)]]` reading `option_name` and `option_value`;
/// `None` for any other.
/// The array keeps the elements' order; no element, or a NULL array, is an empty array (as
/// PostgreSQL's `ARRAY` of no row).
pub fn of_elements(q: &Query, is_aggregate: &dyn Fn(&Function) -> bool) -> Option<Expr> {
    if q.with.is_some() || q.order_by.is_some() || q.limit_clause.is_some() || q.fetch.is_some() {
        return None;
    }
    let SetExpr::Select(select) = q.body.as_ref() else {
        return None;
    };
    let ungrouped = matches!(&select.group_by, GroupByExpr::Expressions(g, _) if g.is_empty());
    if !ungrouped || select.having.is_some() || select.distinct.is_some() {
        return None;
    }
    let [from] = select.from.as_slice() else {
        return None;
    };
    if !from.joins.is_empty() {
        return None;
    }
    let (array, alias, function) = match &from.relation {
        TableFactor::UNNEST {
            alias,
            array_exprs,
            with_offset: false,
            with_ordinality: false,
            ..
        } => match array_exprs.as_slice() {
            [a] => (a.clone(), alias, FUNCTIONS[0]),
            _ => return None,
        },
        TableFactor::Table {
            name,
            alias,
            args:
                Some(TableFunctionArgs {
                    args,
                    settings: None,
                }),
            with_ordinality: false,
            ..
        } => {
            let function = name.0.last().and_then(|p| p.as_ident()).and_then(|i| {
                FUNCTIONS
                    .into_iter()
                    .find(|f| i.value.eq_ignore_ascii_case(f))
            })?;
            match args.as_slice() {
                [FunctionArg::Unnamed(FunctionArgExpr::Expr(a))] => (a.clone(), alias, function),
                _ => return None,
            }
        }
        _ => return None,
    };
    // The columns' names, each with what it is of the element `x`; and the table's name.
    let x = || Expr::Identifier(Ident::with_quote('"', ELEMENT));
    let mut columns: Vec<(Ident, Expr)> = if function == FUNCTIONS[0] {
        vec![(Ident::new("unnest"), x())]
    } else {
        let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
        OPTION_COLUMNS
            .iter()
            .map(|(name, sql)| {
                let e = datafusion::sql::sqlparser::parser::Parser::new(&dialect)
                    .try_with_sql(sql)
                    .and_then(|mut p| p.parse_expr())
                    .expect("the options' columns are SQL");
                (Ident::new(*name), e)
            })
            .collect()
    };
    let table = alias.as_ref().map(|a| a.name.clone());
    if let Some(a) = alias {
        match a.columns.as_slice() {
            // `unnest(a) t`: `t` names the element too.
            [] if function == FUNCTIONS[0] => columns[0].0 = a.name.clone(),
            [] => {}
            named if named.len() == columns.len() => {
                for (c, n) in columns.iter_mut().zip(named) {
                    c.0 = n.name.clone();
                }
            }
            _ => return None,
        }
    }
    let same = |i: &Ident, name: &Ident| match (i.quote_style, name.quote_style) {
        (None, None) => i.value.eq_ignore_ascii_case(&name.value),
        _ => i.value == name.value,
    };
    let column = |i: &Ident| columns.iter().find(|(c, _)| same(i, c)).map(|(_, e)| e);
    let element = |e: &Expr| match e {
        Expr::Identifier(i) => column(i),
        Expr::CompoundIdentifier(parts) => match parts.as_slice() {
            [t, c] if table.as_ref().is_some_and(|table| same(t, table)) => column(c),
            _ => None,
        },
        _ => None,
    };
    // Each expression with the element as `x`; `None` when it reads anything else.
    let over_elements = |e: &Expr| {
        let mut e = e.clone();
        let mut other = false;
        let _ = visit_expressions_mut(&mut e, |e| {
            if let Expr::Function(f) = e
                && f.name.0.len() > 1
            {
                // `pg_catalog.quote_ident`: functions are found by their bare names, as the
                // query's own are.
                f.name.0.drain(..f.name.0.len() - 1);
            }
            if let Some(x) = element(e) {
                *e = x.clone();
            } else if matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_))
                || matches!(
                    e,
                    Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. }
                )
                || matches!(e, Expr::Function(f) if is_aggregate(f))
            {
                other = true;
            }
            ControlFlow::<()>::Continue(())
        });
        (!other).then(|| e.to_string())
    };
    let [SelectItem::UnnamedExpr(value) | SelectItem::ExprWithAlias { expr: value, .. }] =
        select.projection.as_slice()
    else {
        return None;
    };
    let value = over_elements(value)?;
    let condition = match &select.selection {
        Some(p) => over_elements(p)?,
        None => "true".to_string(),
    };
    let text = |s: String| Expr::value(Value::SingleQuotedString(s));
    let Expr::Function(mut f) = super::subquery::call(ARRAY_MAP, array) else {
        unreachable!("call makes a function")
    };
    if let FunctionArguments::List(list) = &mut f.args {
        for s in [value, condition] {
            list.args
                .push(FunctionArg::Unnamed(FunctionArgExpr::Expr(text(s))));
        }
    }
    Some(Expr::Function(f))
}

/// `array_map(a, e, p)`: for each array `a`, the array of `e` over its elements for which
/// `p` holds; `e` and `p` are SQL expressions (text constants) of the element `x`, planned
/// with the session's functions (`quote_ident`, `quote_literal`…). A NULL array has no
/// element: its answer is an empty array.
struct ArrayMap {
    signature: Signature,
    /// The state of the session it is registered in, while there is one (the session holds
    /// the function: it is held weakly).
    session: Arc<dyn Fn() -> Option<SessionState> + Send + Sync>,
}

impl fmt::Debug for ArrayMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArrayMap").finish_non_exhaustive()
    }
}

impl PartialEq for ArrayMap {
    fn eq(&self, other: &Self) -> bool {
        self.signature == other.signature && Arc::ptr_eq(&self.session, &other.session)
    }
}

impl Eq for ArrayMap {}

impl Hash for ArrayMap {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.signature.hash(state);
    }
}

impl ArrayMap {
    /// `sql`, an expression of the element `x` of type `element`, planned in the session.
    fn planned(
        &self,
        sql: &str,
        element: &DataType,
    ) -> Result<(Arc<Schema>, Arc<dyn PhysicalExpr>)> {
        let Some(state) = (self.session)() else {
            return exec_err!("{ARRAY_MAP}: its session is gone");
        };
        let schema = Arc::new(Schema::new(vec![Field::new(
            ELEMENT,
            element.clone(),
            true,
        )]));
        let df = Arc::new(DFSchema::try_from(Arc::clone(&schema))?);
        let expr = state.create_logical_expr(sql, &df)?;
        // Simplified as a query's expressions are (`coalesce` is planned as its CASE).
        let simplifier = ExprSimplifier::new(
            SimplifyContext::builder()
                .with_schema(Arc::clone(&df))
                .build(),
        );
        let expr = simplifier.simplify(simplifier.coerce(expr, &df)?)?;
        Ok((schema, state.create_physical_expr(expr, &df)?))
    }
}

/// The element's type of an array of type `t` (`Null` for a NULL).
fn element_type(t: &DataType) -> Result<DataType> {
    match t {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            Ok(f.data_type().clone())
        }
        DataType::Null => Ok(DataType::Null),
        other => plan_err!("{ARRAY_MAP}: the elements of {other}, which is no array"),
    }
}

/// The text constant `i` of `args`.
fn text_argument<'a>(args: &[Option<&'a ScalarValue>], i: usize) -> Result<&'a str> {
    match args.get(i).copied().flatten() {
        Some(ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s))) => Ok(s),
        _ => plan_err!("{ARRAY_MAP}: argument {} is not a text constant", i + 1),
    }
}

impl ScalarUDFImpl for ArrayMap {
    fn name(&self) -> &str {
        ARRAY_MAP
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        plan_err!("{ARRAY_MAP}: its type is its expression's")
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let element = element_type(args.arg_fields[0].data_type())?;
        let sql = text_argument(args.scalar_arguments, 1)?;
        let (schema, value) = self.planned(sql, &element)?;
        let t = value.data_type(&schema)?;
        Ok(Arc::new(Field::new(
            self.name(),
            DataType::new_list(t, true),
            false,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays = args.args[0].to_array(n)?;
        let texts: Vec<Option<&ScalarValue>> = args
            .args
            .iter()
            .map(|a| match a {
                ColumnarValue::Scalar(s) => Some(s),
                ColumnarValue::Array(_) => None,
            })
            .collect();
        let element = element_type(arrays.data_type())?;
        let (schema, value) = self.planned(text_argument(&texts, 1)?, &element)?;
        let (_, condition) = self.planned(text_argument(&texts, 2)?, &element)?;
        let arrays: ArrayRef = match arrays.data_type() {
            DataType::Null => new_null_array(&DataType::new_list(DataType::Null, true), n),
            DataType::List(_) => arrays,
            _ => cast(&arrays, &DataType::new_list(element, true))?,
        };
        let list = arrays.as_list::<i32>();
        // The elements of the arrays, NULL arrays' none.
        let offsets = list.offsets();
        let (first, last) = (offsets[0] as usize, offsets[n] as usize);
        let values = list.values().slice(first, last - first);
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![values])?;
        let keep = condition.evaluate(&batch)?.into_array(batch.num_rows())?;
        let Some(keep) = keep.as_boolean_opt() else {
            return exec_err!("{ARRAY_MAP}: the condition is not a boolean");
        };
        // The elements kept, and how many of each array's (a NULL array's are none).
        let mut kept = vec![false; batch.num_rows()];
        let mut lengths = Vec::with_capacity(n);
        for i in 0..n {
            let (from, to) = (offsets[i] as usize - first, offsets[i + 1] as usize - first);
            let mut length = 0;
            if list.is_valid(i) {
                for (j, k) in kept.iter_mut().enumerate().take(to).skip(from) {
                    *k = keep.is_valid(j) && keep.value(j);
                    length += usize::from(*k);
                }
            }
            lengths.push(length);
        }
        let batch = filter_record_batch(&batch, &kept.into())?;
        let mapped = value.evaluate(&batch)?.into_array(batch.num_rows())?;
        let field = Arc::new(Field::new_list_field(mapped.data_type().clone(), true));
        Ok(ColumnarValue::Array(Arc::new(ListArray::try_new(
            field,
            OffsetBuffer::from_lengths(lengths),
            mapped,
            None,
        )?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serving::sql::subquery::tests::answer;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    #[tokio::test]
    async fn an_array_of_another_arrays_elements_is_computed_from_the_array_alone() {
        let ctx = SessionContext::new();
        register(&ctx);
        crate::serving::sql::subquery::register(&ctx);
        ctx.sql(
            "CREATE TABLE c (k INT, o TEXT[]) AS VALUES \
             (1, ['fillfactor=70', 'autovacuum_enabled=off']), (2, NULL), (3, [])",
        )
        .await
        .unwrap();
        // psql's `\d+` (its storage options), correlated with the outer row; `t(x)`, `t` and
        // no alias name the element.
        for from in [
            "unnest(c.o) x",
            "pg_catalog.unnest(c.o) AS t(x)",
            "unnest(c.o) AS x",
        ] {
            let sql = format!(
                "SELECT k, array_to_string(array(SELECT 'toast.' || x FROM {from}), ', ') AS o \
                 FROM c ORDER BY k"
            );
            let got = answer(&ctx, &sql).await.unwrap();
            assert!(
                got.contains("| 1 | toast.fillfactor=70, toast.autovacuum_enabled=off |"),
                "{from}: {got}"
            );
            // A NULL array and an empty one have no element: an empty array.
            assert!(got.contains("| 2 |  ") && got.contains("| 3 |  "), "{got}");
        }
        // A condition on the elements; an element's table-qualified name.
        let sql = "SELECT k, array(SELECT upper(t.x) FROM unnest(o) t(x) WHERE t.x LIKE 'auto%') \
                   AS o FROM c WHERE k = 1";
        let got = answer(&ctx, sql).await.unwrap();
        assert!(got.contains("| 1 | [AUTOVACUUM_ENABLED=OFF] |"), "{got}");
        // An options array's rows (psql's `\des+`): each element's name before its first
        // `=` and value after it, NULL without one; the columns named by an alias too.
        ctx.sql("CREATE TABLE s (k INT, o TEXT[]) AS VALUES (1, ['host=a=b', 'flag', 'port=5'])")
            .await
            .unwrap();
        for (from, name, value) in [
            (
                "pg_catalog.pg_options_to_table(s.o)",
                "option_name",
                "option_value",
            ),
            ("pg_options_to_table(o) AS t(n, v)", "t.n", "v"),
        ] {
            let sql = format!(
                "SELECT k, array_to_string(array(SELECT upper({name}) || ' ' || \
                 coalesce({value}, 'NULL') FROM {from}), ', ') AS o FROM s"
            );
            let got = answer(&ctx, &sql).await.unwrap();
            assert!(
                got.contains("| 1 | HOST a=b, FLAG NULL, PORT 5 |"),
                "{from}: {got}"
            );
        }
        // An aggregate, an outer column, an order: not a map of the elements.
        for sql in [
            "SELECT array(SELECT count(x) FROM unnest(o) x) FROM c",
            "SELECT array(SELECT x || k FROM unnest(o) x) FROM c",
            "SELECT array(SELECT x FROM unnest(o) x ORDER BY x) FROM c",
        ] {
            let q = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
            let mut found = None;
            let _ = datafusion::sql::sqlparser::ast::visit_expressions(&q, |e| {
                if let Expr::Function(f) = e
                    && let FunctionArguments::Subquery(q) = &f.args
                {
                    found = Some(of_elements(q, &|f: &Function| {
                        f.name.to_string() == "count"
                    }));
                }
                ControlFlow::<()>::Continue(())
            });
            assert_eq!(found, Some(None), "{sql}");
        }
    }
}
