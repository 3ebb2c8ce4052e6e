//! Scalar subqueries without an aggregate, which PostgreSQL runs and DataFusion refuses when
//! they are correlated (`SELECT (SELECT h.total FROM hourly h WHERE h.customer = c.customer
//! AND h.start = …) FROM customer_totals c`; psql's `\dT`, the JDBC driver's `getTypeInfo`).
//!
//! PostgreSQL's rule for such a subquery: no row is NULL, one row is its value, more than one
//! is an error (SQLSTATE `21000`) — for the rows of the outer query that use it. Such a
//! subquery is rewritten before DataFusion plans it ([`aggregated`]): `(SELECT x FROM …)`
//! becomes `scalar_subquery_value((SELECT scalar_subquery(x) FROM …))`. The aggregate
//! [`ScalarSubquery`] keeps the value and how many rows had one, which DataFusion decorrelates
//! as any aggregated subquery (a join); [`ScalarSubqueryValue`] then answers the value, or the
//! error, for each outer row it is evaluated for.
//!
//! Which subqueries, before a query is planned ([`Subqueries::BeforePlanning`]): those over
//! the views, and the correlated ones of the catalog anywhere but as a column of a SELECT
//! (psql's `\dT`, JDBC's `getTypeInfo`: in a condition, where DataFusion would refuse them).
//! As a column of a SELECT, a correlated subquery of the catalog alone is left to
//! datafusion-postgres's parser, which answers it NULL (its `RemoveSubqueryFromProjection`,
//! for the catalog queries of psql and others that DataFusion cannot plan); it is rewritten
//! only once DataFusion refused the query ([`Subqueries::All`]). A subquery over the views is
//! always rewritten first, so that the parser does not make it NULL.
//!
//! Two shapes DataFusion does not decorrelate are rewritten with it: conditions on the outer
//! query's columns alone leave the subquery for a `CASE WHEN` around it
//! ([`outer_conditions`]), and a value that reads the outer query's columns is computed
//! outside, from the subquery's own columns carried out in a struct ([`own_columns`]) —
//! SQLAlchemy's reflection of columns has both. `ARRAY(SELECT …)` becomes an `array_agg`
//! subquery ([`array_of_rows`]), or of an array's elements alone, a map of them
//! ([`super::elements`]).

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt::Display;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use datafusion::arrow::compute::kernels::boolean::not;
use datafusion::arrow::compute::kernels::nullif::nullif;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, UInt64Type};
use datafusion::common::scalar::ScalarStructBuilder;
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::functions::utils::make_scalar_function;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken;
use datafusion::sql::sqlparser::ast::{
    AccessExpr, BinaryOperator, CaseWhen, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArgumentList, FunctionArguments, GroupByExpr, Ident, LimitClause, ObjectName, Query,
    SelectItem, SetExpr, Subscript, TableFactor, Value, Visit, Visitor, visit_expressions,
    visit_expressions_mut, visit_relations,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// The aggregate's name, as `EXPLAIN` shows it, and the function's that reads its answer.
const AGGREGATE: &str = "scalar_subquery";
const VALUE: &str = "scalar_subquery_value";

/// PostgreSQL's words for a subquery with more than one row (SQLSTATE `21000`).
pub const MORE_THAN_ONE_ROW: &str =
    "more than one row returned by a subquery used as an expression";

/// Whether `function` is one of those a rewritten subquery calls.
pub fn rewritten(function: &str) -> bool {
    function == AGGREGATE || function == VALUE
}

/// Registers [`ScalarSubquery`] and [`ScalarSubqueryValue`] in `ctx`.
pub fn register(ctx: &SessionContext) {
    ctx.register_udaf(AggregateUDF::from(ScalarSubquery {
        signature: Signature::any(1, Volatility::Immutable),
    }));
    ctx.register_udf(ScalarUDF::from(ScalarSubqueryValue {
        signature: Signature::any(1, Volatility::Immutable),
    }));
}

/// The addresses of the scalar subqueries that are a column of a SELECT.
struct SelectItems(HashSet<*const Expr>);

impl Visitor for SelectItems {
    type Break = ();

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if let SetExpr::Select(select) = q.body.as_ref() {
            for item in &select.projection {
                if let SelectItem::UnnamedExpr(e @ Expr::Subquery(_))
                | SelectItem::ExprWithAlias {
                    expr: e @ Expr::Subquery(_),
                    ..
                } = item
                {
                    self.0.insert(e);
                }
            }
        }
        ControlFlow::Continue(())
    }
}

/// The names a query's tables go by (each one's name and alias, in lower case), and the
/// table names its columns are qualified with.
#[derive(Default)]
struct Names {
    tables: HashSet<String>,
    qualifiers: HashSet<String>,
    /// A column without a table's name.
    unqualified: bool,
}

impl Names {
    fn of(v: &impl Visit) -> Names {
        let mut names = Names::default();
        let _ = v.visit(&mut names);
        names
    }
}

impl Visitor for Names {
    type Break = ();
    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table { name, alias, .. } = t {
            let last = name.0.last().and_then(|p| p.as_ident());
            self.tables.extend(last.map(|i| i.value.to_lowercase()));
            self.tables
                .extend(alias.as_ref().map(|a| a.name.value.to_lowercase()));
        }
        ControlFlow::Continue(())
    }
    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        match e {
            Expr::CompoundIdentifier(parts) => {
                if let [.., table, _] = parts.as_slice() {
                    self.qualifiers.insert(table.value.to_lowercase());
                }
            }
            Expr::Identifier(_) => self.unqualified = true,
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// Whether a subquery names a column of a table it does not read (`t.typrelid` in `SELECT …
/// FROM pg_class c WHERE c.oid = t.typrelid`): a column of the outer query. A column without
/// a table's name is taken as the subquery's own.
fn correlated(q: &Query) -> bool {
    let names = Names::of(q);
    !names.qualifiers.is_subset(&names.tables)
}

/// The conditions of a subquery's WHERE that read only the outer query's columns (each named
/// with a table the subquery does not read), taken out of it, joined by AND. A scalar
/// subquery under such a condition is the subquery without it when it holds, and NULL
/// (no row) when it does not: `(SELECT x FROM t WHERE o AND r)` is `CASE WHEN o THEN (SELECT
/// x FROM t WHERE r) END`, which DataFusion decorrelates where it could not the first
/// (SQLAlchemy's reflection of columns has `pg_attribute.atthasdef` in its subqueries' WHERE).
fn outer_conditions(q: &mut Query) -> Option<Expr> {
    let tables = Names::of(&*q).tables;
    let SetExpr::Select(select) = q.body.as_mut() else {
        return None;
    };
    fn conjuncts(e: Expr, into: &mut Vec<Expr>) {
        match e {
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => {
                conjuncts(*left, into);
                conjuncts(*right, into);
            }
            Expr::Nested(e)
                if matches!(
                    *e,
                    Expr::BinaryOp {
                        op: BinaryOperator::And,
                        ..
                    }
                ) =>
            {
                conjuncts(*e, into)
            }
            e => into.push(e),
        }
    }
    let and = |all: Vec<Expr>| {
        all.into_iter().reduce(|a, b| Expr::BinaryOp {
            left: Box::new(a),
            op: BinaryOperator::And,
            right: Box::new(b),
        })
    };
    let mut all = vec![];
    conjuncts(select.selection.take()?, &mut all);
    let (outer, own): (Vec<Expr>, Vec<Expr>) = all.into_iter().partition(|c| {
        let names = Names::of(c);
        let nested = visit_expressions(c, |e| match e {
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => {
                ControlFlow::Break(())
            }
            _ => ControlFlow::Continue(()),
        });
        !names.unqualified
            && !names.qualifiers.is_empty()
            && names.qualifiers.is_disjoint(&tables)
            && nested.is_continue()
    });
    select.selection = and(own);
    and(outer)
}

/// Whether a query reads a table that is not the catalog's (`pg_catalog`,
/// `information_schema`, or a `pg_` name, which datafusion-postgres reads in `pg_catalog`).
fn reads_views(q: &Query) -> bool {
    let mut views = false;
    let _ = visit_relations(q, |name| {
        let catalog = match lowercase_parts(name).as_slice() {
            [.., schema, _] => schema == "pg_catalog" || schema == "information_schema",
            [table] => table.starts_with("pg_"),
            [] => true,
        };
        views |= !catalog;
        ControlFlow::<()>::Continue(())
    });
    views
}

/// The parts of a relation's name (`pg_catalog.pg_class`), in lower case.
fn lowercase_parts(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .filter_map(|p| p.as_ident())
        .map(|i| i.value.to_lowercase())
        .collect()
}

/// Whether `error` is DataFusion's refusal of a correlated scalar subquery without an
/// aggregate.
pub fn refused(error: &impl Display) -> bool {
    error
        .to_string()
        .contains("Correlated scalar subquery must be aggregated")
}

/// Which scalar subqueries [`aggregated`] rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subqueries {
    /// Before a query is planned: those that read a view, and the correlated ones that are
    /// not a column of a SELECT.
    BeforePlanning,
    /// All: once DataFusion refused the query.
    All,
}

/// `sql` with each scalar subquery of `which` that selects one expression of its rows (no
/// aggregate, GROUP BY, DISTINCT, ORDER BY, LIMIT or OFFSET) rewritten as the module says;
/// `sql` itself when there is none, or it does not parse. A query with fewer than two
/// SELECTs has no subquery: it is not parsed.
pub fn aggregated<'s>(sql: &'s str, which: Subqueries, ctx: &SessionContext) -> Cow<'s, str> {
    let selects = sql.as_bytes().windows(6);
    if selects
        .filter(|w| w.eq_ignore_ascii_case(b"select"))
        .take(2)
        .count()
        < 2
    {
        return Cow::Borrowed(sql);
    }
    let Ok(mut statements) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else {
        return Cow::Borrowed(sql);
    };
    let state = ctx.state();
    let aggregates = state.aggregate_functions();
    let is_aggregate = |f: &Function| {
        let name = f.name.0.last().and_then(|p| p.as_ident());
        f.over.is_some() || name.is_some_and(|i| aggregates.contains_key(&i.value.to_lowercase()))
    };
    let mut n = 0;
    for statement in &mut statements {
        // First the subqueries of no rows, as the client wrote them (the rewrites below would
        // make their aggregates of others).
        let _ = visit_expressions_mut(statement, |e| {
            if let Some(none) = of_no_rows(e, ctx, &is_aggregate) {
                *e = none;
                n += 1;
            }
            ControlFlow::<()>::Continue(())
        });
        // The subqueries that are a column of a SELECT, by address (nothing moves them: the
        // rewrite below replaces an expression in its place, after its children).
        let mut items = SelectItems(HashSet::new());
        let _ = statement.visit(&mut items);
        let rewrite = |q: &Query, at: *const Expr| match which {
            Subqueries::All => true,
            Subqueries::BeforePlanning => {
                reads_views(q) || (!items.0.contains(&at) && correlated(q))
            }
        };
        // After an expression's children: a rewritten subquery is not visited again.
        let _ = visit_expressions_mut(statement, |e| {
            let at: *const Expr = e;
            if let Expr::Function(f) = e
                && let FunctionArguments::Subquery(q) = &f.args
                && f.name.to_string().eq_ignore_ascii_case("array")
                && let Some(rows) =
                    super::elements::of_elements(q, &is_aggregate).or_else(|| array_of_rows(q))
            {
                *e = rows;
                n += 1;
            } else if let Expr::Subquery(q) = e
                && rewrite(q, at)
                && let tables = Names::of(&**q).tables
                && let Some(value) = one_value(q, &is_aggregate)
            {
                let own = own_columns(value, &tables);
                let written = value.clone();
                *value = call(AGGREGATE, own.as_deref().map_or(written.clone(), carried));
                let outer = outer_conditions(q);
                *e = call(VALUE, e.clone());
                if let Some(own) = own {
                    *e = case(
                        Expr::IsNotNull(Box::new(e.clone())),
                        carried_out(written, &own, e),
                    );
                }
                if let Some(condition) = outer {
                    *e = case(condition, e.clone());
                }
                n += 1;
            }
            ControlFlow::<()>::Continue(())
        });
    }
    match n {
        0 => Cow::Borrowed(sql),
        _ => Cow::Owned(super::syntax::text_of(&statements)),
    }
}

/// What `e` is when it is a subquery of a catalog table that has no rows, selecting no
/// aggregate: `ARRAY(SELECT …)` an empty array, `(SELECT …)` NULL — whatever the subquery
/// reads of the outer query. (psql's `\dp` lists each table's row policies, none here, in a
/// subquery correlated twice, which DataFusion does not plan.) `None` for any other `e`.
fn of_no_rows(
    e: &Expr,
    ctx: &SessionContext,
    is_aggregate: &impl Fn(&Function) -> bool,
) -> Option<Expr> {
    let (q, array) = match e {
        Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("array") => {
            let FunctionArguments::Subquery(q) = &f.args else {
                return None;
            };
            (q, true)
        }
        Expr::Subquery(q) => (q, false),
        _ => return None,
    };
    let SetExpr::Select(select) = q.body.as_ref() else {
        return None;
    };
    let [from] = select.from.as_slice() else {
        return None;
    };
    let TableFactor::Table { name, .. } = &from.relation else {
        return None;
    };
    let mut aggregates = false;
    let _ = visit_expressions(&select.projection, |e| {
        aggregates |= matches!(e, Expr::Function(f) if is_aggregate(f));
        ControlFlow::<()>::Continue(())
    });
    // A statement's parameters are typed by where they stand: none is taken away.
    let mut parameters = false;
    let _ = visit_expressions(q, |e| {
        parameters |= matches!(e, Expr::Value(v) if matches!(v.value, Value::Placeholder(_)));
        ControlFlow::<()>::Continue(())
    });
    if parameters {
        return None;
    }
    let grouped = !matches!(&select.group_by, GroupByExpr::Expressions(g, _) if g.is_empty());
    if !from.joins.is_empty() || aggregates || grouped || select.having.is_some() {
        return None;
    }
    // One that is not correlated is planned as it is.
    if !correlated(q) {
        return None;
    }
    let parts = lowercase_parts(name);
    let table = match parts.as_slice() {
        [schema, table] if schema == "pg_catalog" => table,
        [table] if table.starts_with("pg_") => table,
        _ => return None,
    };
    let catalog = ctx.catalog(super::DATABASE)?.schema("pg_catalog")?;
    let state = ctx.state();
    // The catalog's tables are made in memory: nothing to wait for.
    let rows = futures::executor::block_on(async {
        let t = catalog.table(table).await.ok()??;
        super::catalog::every_row(t.as_ref(), &state).await.ok()
    })?;
    if rows.iter().any(|b| b.num_rows() > 0) {
        return None;
    }
    match array {
        true => Parser::new(&PostgreSqlDialect {})
            .try_with_sql("make_array()")
            .and_then(|mut p| p.parse_expr())
            .ok(),
        false => Some(Expr::value(Value::Null)),
    }
}

/// `ARRAY(SELECT x FROM … [ORDER BY o] [LIMIT n] [OFFSET m])`, PostgreSQL's array of a
/// subquery's rows (psql's `\du` and `\dD` read roles and domains so), as a subquery that
/// DataFusion plans, correlated or not: `coalesce(array_slice((SELECT array_agg(x ORDER BY o)
/// FROM …), m + 1, m + n), make_array())` (no row is an empty array, as in PostgreSQL). `None`
/// for a subquery that selects more than one column or groups its rows.
fn array_of_rows(q: &Query) -> Option<Expr> {
    let slice = match &q.limit_clause {
        None => None,
        Some(LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) if limit_by.is_empty() => {
            let skip = offset.as_ref().map(|o| &o.value);
            let from = skip.map_or("1".to_string(), |m| format!("({m}) + 1"));
            // Past the last, counted from the end: -1 (DataFusion's `array_slice`).
            let to = match (limit, skip) {
                (Some(n), Some(m)) => format!("({m}) + ({n})"),
                (Some(n), None) => format!("{n}"),
                (None, _) => "-1".to_string(),
            };
            Some((from, to))
        }
        Some(_) => return None,
    };
    if q.fetch.is_some() || q.with.is_some() {
        return None;
    }
    let SetExpr::Select(select) = q.body.as_ref() else {
        return None;
    };
    let ungrouped = matches!(&select.group_by, GroupByExpr::Expressions(g, _) if g.is_empty());
    if !ungrouped || select.having.is_some() || select.distinct.is_some() {
        return None;
    }
    let [SelectItem::UnnamedExpr(value) | SelectItem::ExprWithAlias { expr: value, .. }] =
        select.projection.as_slice()
    else {
        return None;
    };
    let order = q
        .order_by
        .as_ref()
        .map_or(String::new(), |o| format!(" {o}"));
    let mut rows = q.clone();
    rows.order_by = None;
    rows.limit_clause = None;
    let SetExpr::Select(select) = rows.body.as_mut() else {
        return None;
    };
    select.projection = vec![SelectItem::UnnamedExpr(parsed(&format!(
        "array_agg({value}{order})"
    ))?)];
    let array = match slice {
        Some((from, to)) => format!("array_slice(({rows}), {from}, {to})"),
        None => format!("({rows})"),
    };
    parsed(&format!("coalesce({array}, make_array())"))
}

/// The expression `sql` is.
fn parsed(sql: &str) -> Option<Expr> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .ok()
}

/// The subquery's own columns in its value, when the value reads a column of the outer query
/// too (SQLAlchemy's reflection of columns selects `json_build_object('always',
/// pg_attribute.attidentity = 'a', 'start', pg_sequence.seqstart) FROM pg_sequence`), which
/// DataFusion cannot aggregate in the subquery: `None` when it reads only its own. Its own
/// columns are then carried out of the subquery in a struct ([`carried`]), and the value is
/// computed outside ([`carried_out`]).
fn own_columns(value: &Expr, tables: &HashSet<String>) -> Option<Vec<Expr>> {
    let (mut own, mut outer) = (Vec::<Expr>::new(), false);
    let _ = visit_expressions(value, |e| {
        let mine = match e {
            Expr::Identifier(_) => true,
            Expr::CompoundIdentifier(parts) => match parts.as_slice() {
                [.., table, _] => tables.contains(&table.value.to_lowercase()),
                _ => true,
            },
            _ => return ControlFlow::<()>::Continue(()),
        };
        match mine {
            true if !own.contains(e) => own.push(e.clone()),
            true => {}
            false => outer = true,
        }
        ControlFlow::Continue(())
    });
    outer.then_some(own)
}

/// The struct of a subquery's own columns that [`own_columns`] carries out: `c0`, `c1`… (a
/// struct of one `true` when it has none, telling a row from none).
fn carried(own: &[Expr]) -> Expr {
    let mut args = vec![];
    for (i, c) in own.iter().enumerate() {
        args.push(Expr::value(Value::SingleQuotedString(format!("c{i}"))));
        args.push(c.clone());
    }
    if own.is_empty() {
        args = vec![
            Expr::value(Value::SingleQuotedString("row".into())),
            Expr::value(Value::Boolean(true)),
        ];
    }
    let Expr::Function(mut f) = call("named_struct", Expr::value(Value::Null)) else {
        unreachable!("call makes a function")
    };
    f.args = FunctionArguments::List(FunctionArgumentList {
        duplicate_treatment: None,
        args: args
            .into_iter()
            .map(|a| FunctionArg::Unnamed(FunctionArgExpr::Expr(a)))
            .collect(),
        clauses: vec![],
    });
    Expr::Function(f)
}

/// `value` with each of its subquery's `own` columns read from `row`, the struct the
/// subquery answers ([`carried`]).
fn carried_out(mut value: Expr, own: &[Expr], row: &Expr) -> Expr {
    let _ = visit_expressions_mut(&mut value, |e| {
        if let Some(i) = own.iter().position(|c| c == e) {
            *e = Expr::CompoundFieldAccess {
                root: Box::new(Expr::Nested(Box::new(row.clone()))),
                access_chain: vec![AccessExpr::Subscript(Subscript::Index {
                    index: Expr::value(Value::SingleQuotedString(format!("c{i}"))),
                })],
            };
        }
        ControlFlow::<()>::Continue(())
    });
    value
}

/// `CASE WHEN condition THEN result END`.
fn case(condition: Expr, result: Expr) -> Expr {
    Expr::Case {
        case_token: AttachedToken::empty(),
        end_token: AttachedToken::empty(),
        operand: None,
        conditions: vec![CaseWhen { condition, result }],
        else_result: None,
    }
}

/// The one expression a subquery selects of its rows, when it selects one and nothing groups,
/// aggregates or limits its rows.
fn one_value<'q>(
    q: &'q mut Query,
    is_aggregate: &impl Fn(&Function) -> bool,
) -> Option<&'q mut Expr> {
    if q.order_by.is_some() || q.limit_clause.is_some() || q.fetch.is_some() {
        return None;
    }
    let SetExpr::Select(select) = q.body.as_mut() else {
        return None;
    };
    let ungrouped = matches!(&select.group_by, GroupByExpr::Expressions(g, _) if g.is_empty());
    if !ungrouped || select.having.is_some() || select.distinct.is_some() {
        return None;
    }
    let [SelectItem::UnnamedExpr(value) | SelectItem::ExprWithAlias { expr: value, .. }] =
        select.projection.as_mut_slice()
    else {
        return None;
    };
    let aggregated = visit_expressions(value, |e| match e {
        Expr::Function(f) if is_aggregate(f) => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break();
    (!aggregated).then_some(value)
}

/// `name(arg)`.
pub(super) fn call(name: &str, arg: Expr) -> Expr {
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))],
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

/// A subquery's rows as `{value, rows}`: the value of its last row, and how many there were.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ScalarSubquery {
    signature: Signature,
}

/// The fields of [`ScalarSubquery`]'s answer for a value of type `t`.
fn fields(t: &DataType) -> Fields {
    Fields::from(vec![
        Field::new("value", t.clone(), true),
        Field::new("rows", DataType::UInt64, false),
    ])
}

/// The fields of the struct `t` is, or an error naming `what`.
fn struct_fields<'t>(t: &'t DataType, what: &str) -> Result<&'t Fields> {
    match t {
        DataType::Struct(f) if f.len() == 2 => Ok(f),
        other => exec_err!("{what}: {other} is not a {AGGREGATE}'s answer"),
    }
}

impl AggregateUDFImpl for ScalarSubquery {
    fn name(&self) -> &str {
        AGGREGATE
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(fields(&args[0])))
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let fields = struct_fields(args.return_field.data_type(), AGGREGATE)?;
        Ok(Box::new(Rows {
            value: ScalarValue::try_from(fields[0].data_type())?,
            rows: 0,
            fields: fields.clone(),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let fields = struct_fields(args.return_field.data_type(), AGGREGATE)?;
        Ok(fields.iter().cloned().collect())
    }
}

#[derive(Debug)]
struct Rows {
    value: ScalarValue,
    rows: u64,
    fields: Fields,
}

impl Accumulator for Rows {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let values = &values[0];
        if let Some(last) = values.len().checked_sub(1) {
            self.rows += values.len() as u64;
            self.value = ScalarValue::try_from_array(values, last)?;
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let rows = states[1].as_primitive::<UInt64Type>();
        for (i, n) in rows.values().iter().enumerate() {
            if *n > 0 {
                self.rows += n;
                self.value = ScalarValue::try_from_array(&states[0], i)?;
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![
            self.value.clone(),
            ScalarValue::UInt64(Some(self.rows)),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        ScalarStructBuilder::new()
            .with_scalar(Arc::clone(&self.fields[0]), self.value.clone())
            .with_scalar(
                Arc::clone(&self.fields[1]),
                ScalarValue::UInt64(Some(self.rows)),
            )
            .build()
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.value.size() - std::mem::size_of_val(&self.value)
    }
}

/// The values of a column of [`ScalarSubquery`]'s answers, or the error of one of more than
/// one row.
fn answer_values(args: &[ArrayRef]) -> Result<ArrayRef> {
    let answers = args[0].as_struct();
    let rows = answers.column(1).as_primitive::<UInt64Type>();
    if (0..answers.len()).any(|i| answers.is_valid(i) && rows.value(i) > 1) {
        return exec_err!("{MORE_THAN_ONE_ROW}");
    }
    Ok(match answers.nulls() {
        // NULL where no row joined.
        Some(nulls) => nullif(
            answers.column(0),
            &not(&BooleanArray::new(nulls.inner().clone(), None))?,
        )?,
        None => Arc::clone(answers.column(0)),
    })
}

/// The value of a [`ScalarSubquery`]'s answer: NULL for no row (or no answer: no row joined),
/// the row's value for one, an error for more.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ScalarSubqueryValue {
    signature: Signature,
}

impl ScalarUDFImpl for ScalarSubqueryValue {
    fn name(&self) -> &str {
        VALUE
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(struct_fields(&args[0], VALUE)?[0].data_type().clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        make_scalar_function(answer_values, vec![])(&args.args)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use datafusion::arrow::util::pretty::pretty_format_batches;

    /// The answer of `sql` after the rewrites before planning, as a table.
    pub(in crate::serving::sql) async fn answer(ctx: &SessionContext, sql: &str) -> Result<String> {
        let sql = aggregated(sql, Subqueries::BeforePlanning, ctx);
        let batches = ctx.sql(&sql).await?.collect().await?;
        Ok(pretty_format_batches(&batches)?.to_string())
    }

    #[tokio::test]
    async fn a_correlated_subquery_is_null_for_no_row_its_value_for_one_an_error_for_more() {
        let ctx = SessionContext::new();
        register(&ctx);
        ctx.sql("CREATE TABLE c (k INT, name TEXT) AS VALUES (1, 'a'), (2, 'b'), (3, 'c')")
            .await
            .unwrap();
        ctx.sql("CREATE TABLE h (k INT, total INT) AS VALUES (1, 10), (2, 20), (2, 21)")
            .await
            .unwrap();
        let one = "SELECT name, (SELECT h.total FROM h WHERE h.k = c.k) AS total FROM c \
                   WHERE c.k <> 2 ORDER BY name";
        let got = answer(&ctx, one).await.unwrap();
        assert!(got.contains("| a    | 10    |"), "{got}");
        assert!(got.contains("| c    |       |"), "{got}");
        // In a condition too (psql's \dT, JDBC's getTypeInfo).
        ctx.sql("CREATE TABLE g (k INT, total INT) AS VALUES (1, 10), (3, 2)")
            .await
            .unwrap();
        let filter = "SELECT name FROM c WHERE c.k = 2 OR (SELECT g.total > 5 FROM g WHERE g.k = c.k) \
                      ORDER BY name";
        let got = answer(&ctx, filter).await.unwrap();
        assert!(
            got.contains("| a    |") && got.contains("| b    |"),
            "{got}"
        );
        assert!(!got.contains("| c    |"), "{got}");
        let two = "SELECT name, (SELECT h.total FROM h WHERE h.k = c.k) FROM c";
        let e = answer(&ctx, two).await.unwrap_err();
        assert!(e.to_string().contains(MORE_THAN_ONE_ROW), "{e}");
        // The catalog's only once DataFusion refused the query.
        let catalog = "SELECT (SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid = a.attrelid) \
                       FROM pg_attribute a";
        let before = aggregated(catalog, Subqueries::BeforePlanning, &ctx);
        assert!(matches!(before, Cow::Borrowed(_)));
        // In a condition it is, when it is correlated.
        let condition = "SELECT t.typname FROM pg_type t WHERE t.typrelid = 0 OR \
                         (SELECT c.relkind = 'c' FROM pg_class c WHERE c.oid = t.typrelid)";
        let before = aggregated(condition, Subqueries::BeforePlanning, &ctx);
        assert!(
            before.contains("scalar_subquery(c.relkind = 'c')"),
            "{before}"
        );
        let uncorrelated = "SELECT t.typname FROM pg_type t WHERE t.typnamespace = \
                            (SELECT n.oid FROM pg_namespace n WHERE n.nspname = 'public')";
        let before = aggregated(uncorrelated, Subqueries::BeforePlanning, &ctx);
        assert!(matches!(before, Cow::Borrowed(_)));
        assert!(aggregated(catalog, Subqueries::All, &ctx).contains("scalar_subquery(c.relname)"));
        // Aggregated, grouped or limited subqueries are left as they are.
        for sql in [
            "SELECT (SELECT max(h.total) FROM h WHERE h.k = c.k) FROM c",
            "SELECT (SELECT h.total FROM h WHERE h.k = c.k LIMIT 1) FROM c",
            "SELECT (SELECT h.k FROM h WHERE h.k = c.k GROUP BY h.k) FROM c",
        ] {
            let same = aggregated(sql, Subqueries::All, &ctx);
            assert!(matches!(same, Cow::Borrowed(_)), "{sql}");
        }
    }

    #[tokio::test]
    async fn a_subquery_may_read_the_outer_querys_columns_in_its_value_and_alone_in_its_where() {
        let ctx = SessionContext::new();
        register(&ctx);
        ctx.sql("CREATE TABLE c (k INT, name TEXT) AS VALUES (1, 'a'), (2, 'b'), (3, 'c')")
            .await
            .unwrap();
        ctx.sql("CREATE TABLE h (k INT, total INT) AS VALUES (1, 10), (2, 20), (3, NULL)")
            .await
            .unwrap();
        // As SQLAlchemy's reflection of columns: the outer query's columns in the value, and
        // a condition on them alone; no row is NULL, a row with NULLs is the value of them.
        let sql = "SELECT c.name, CASE WHEN c.k > 0 THEN (SELECT c.name || ':' || \
                   coalesce(h.total, -1) FROM h WHERE c.k <> 2 AND h.k = c.k) END AS v \
                   FROM c ORDER BY c.name";
        let rewritten = aggregated(sql, Subqueries::BeforePlanning, &ctx);
        assert!(
            rewritten.contains("CASE WHEN c.k <> 2 THEN CASE WHEN scalar_subquery_value("),
            "{rewritten}"
        );
        let got = answer(&ctx, sql).await.unwrap();
        for row in ["| a    | a:10 |", "| b    |      |", "| c    | c:-1 |"] {
            assert!(got.contains(row), "{got}");
        }
        // ARRAY(SELECT …): the array of the rows, ordered and limited; none is empty.
        let rows = "array(SELECT h.total FROM h WHERE h.k = c.k AND h.total IS NOT NULL \
                    ORDER BY h.k DESC LIMIT 2)";
        let sql = format!("SELECT c.name, {rows} AS a, cardinality({rows}) AS n FROM c ORDER BY 1");
        let got = answer(&ctx, &sql).await.unwrap();
        for row in ["| a    | [10] | 1 |", "| c    | []   | 0 |"] {
            assert!(got.contains(row), "{got}");
        }
        let uncorrelated = "SELECT array(SELECT h.total FROM h WHERE h.total IS NOT NULL \
                            ORDER BY h.k DESC LIMIT 5 OFFSET 1) AS a";
        let got = answer(&ctx, uncorrelated).await.unwrap();
        assert!(got.contains("| [10] |"), "{got}");
        // Only the outer query's columns in the value: a row, or none.
        let sql = "SELECT c.name, CASE WHEN true THEN (SELECT c.k * 2 FROM h \
                   WHERE h.k >= 1 AND c.k = 3) END AS v FROM c ORDER BY c.name";
        let e = answer(&ctx, sql).await.unwrap_err();
        assert!(e.to_string().contains(MORE_THAN_ONE_ROW), "{e}");
        let sql = "SELECT c.name, CASE WHEN true THEN (SELECT c.k * 2 FROM h \
                   WHERE h.total IS NOT NULL AND h.k = c.k) END AS v FROM c ORDER BY c.name";
        let got = answer(&ctx, sql).await.unwrap();
        for row in ["| a    | 2 |", "| b    | 4 |", "| c    |   |"] {
            assert!(got.contains(row), "{got}");
        }
    }

    /// A subquery of a catalog table without rows, correlated twice (psql's `\\dp` reads row
    /// policies so), is its answer for no rows: planned, where DataFusion plans no subquery
    /// correlated twice; with rows it is left as it is.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_correlated_subquery_of_an_empty_catalog_table_has_no_rows() {
        let config = datafusion::prelude::SessionConfig::new()
            .with_default_catalog_and_schema(crate::serving::sql::DATABASE, "public")
            .with_create_default_catalog_and_schema(true);
        let ctx = SessionContext::new_with_config(config);
        for sql in [
            "CREATE SCHEMA pg_catalog",
            "CREATE TABLE pg_catalog.pg_policy (polrelid INT, polname TEXT)",
            "CREATE TABLE pg_catalog.pg_roles (oid INT, rolname TEXT) AS VALUES (10, 'postgres')",
            "CREATE TABLE c (k INT) AS VALUES (1), (10)",
        ] {
            ctx.sql(sql).await.unwrap();
        }
        let policies = "SELECT c.k, array_to_string(ARRAY(SELECT pol.polname || ': ' || \
                        array_to_string(ARRAY(SELECT r.rolname FROM pg_catalog.pg_roles r \
                        WHERE r.oid = pol.polrelid), ',') FROM pg_catalog.pg_policy pol \
                        WHERE pol.polrelid = c.k), ';') AS p, \
                        (SELECT pol.polname FROM pg_policy pol WHERE pol.polrelid = c.k) AS q \
                        FROM c ORDER BY 1";
        let got = answer(&ctx, policies).await.unwrap();
        for row in ["| 1  |   |   |", "| 10 |   |   |"] {
            assert!(got.contains(row), "{got}");
        }
        // A parameter is typed where it stands: its subquery is kept.
        let parameter = "SELECT (SELECT pol.polname || $1 FROM pg_policy pol \
                         WHERE pol.polrelid = c.k) FROM c";
        let kept = aggregated(parameter, Subqueries::BeforePlanning, &ctx);
        assert!(kept.contains("pg_policy"), "{kept}");
        ctx.sql("INSERT INTO pg_catalog.pg_policy VALUES (10, 'mine')")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let kept = aggregated(policies, Subqueries::BeforePlanning, &ctx);
        assert!(kept.contains("pg_policy"), "{kept}");
    }
}
