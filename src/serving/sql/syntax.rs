//! PostgreSQL's syntax where DataFusion plans another, rewritten in a query's text before it
//! is planned ([`planned`]): set-returning functions in a SELECT list (`_pg_expandarray`,
//! `generate_subscripts`), fields of records, the catalog's vectors counted from 0, casts to
//! `regclass` of computed names, and `LIKE … ESCAPE` with an escape other than `\`.
//! Clients' catalog queries hold these (the JDBC driver's, SQLAlchemy's, Metabase's).

use std::borrow::Cow;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, ListBuilder, StringArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int32Type};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{Signature, Volatility};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    self, AccessExpr, Subscript, Value, VisitMut, VisitorMut, visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::catalog::{self, Function};
use super::keys::{EXPAND_ARRAY, REGCLASS, REGPROC, REGPROCEDURE_TEXT};
use super::procedures;
use super::subquery::call;
use ast::Expr;

/// `pg_index`'s `int2vector` and `oidvector` columns, arrays here as in PostgreSQL, where
/// their elements are counted from 0 (DataFusion counts an array's from 1).
const VECTORS: [&str; 4] = ["indkey", "indoption", "indclass", "indcollation"];

/// The words whose presence has [`planned`] parse a query.
const REWRITTEN: [&str; 12] = [
    EXPAND_ARRAY,
    REGTYPE,
    "'{",
    TABLEOID,
    "generate_subscripts",
    REGCLASS,
    REGPROC,
    "escape",
    VECTORS[0],
    VECTORS[1],
    VECTORS[2],
    VECTORS[3],
];

/// Whether `e` is a column of [`VECTORS`] (by its name: they are `pg_index`'s).
fn is_int2vector(e: &ast::Expr) -> bool {
    let name = match e {
        ast::Expr::Identifier(i) => i,
        ast::Expr::CompoundIdentifier(parts) => match parts.last() {
            Some(i) => i,
            None => return false,
        },
        _ => return false,
    };
    VECTORS.contains(&name.value.to_lowercase().as_str())
}

/// The first subscript of a column of [`VECTORS`] (`indkey[0]`, `i.indkey[0]`), which
/// sqlparser reads as `indkey` then `[0]`, or `i` then `.indkey` then `[0]`.
fn vector_subscript<'e>(
    root: &ast::Expr,
    chain: &'e mut [AccessExpr],
) -> Option<&'e mut ast::Expr> {
    let mut vector = is_int2vector(root);
    for access in chain {
        match access {
            AccessExpr::Dot(e) => vector = is_int2vector(e),
            AccessExpr::Subscript(Subscript::Index { index }) if vector => return Some(index),
            AccessExpr::Subscript(_) => return None,
        }
    }
    None
}

/// `sql` with what PostgreSQL reads and DataFusion does not plan rewritten:
/// - `information_schema._pg_expandarray(a)` in a SELECT list, a set-returning function,
///   becomes `unnest(_pg_expandarray(a))` (two of them in one SELECT list run side by side, as
///   in PostgreSQL); a field of a record, `(e).f`, becomes `e['f']`;
/// - a cast to `regclass` of a computed name, `CAST(format('%I.%I', s, t) AS regclass)`,
///   becomes `regclass(…)`, which resolves it when it runs ([`super::keys::Keys::regclass`]),
///   and a cast to `regproc` of a name `regproc(…)` ([`super::keys::Keys::regproc`]);
/// - `x LIKE p ESCAPE 'c'` with an escape other than `\`, which DataFusion refuses (SQLAlchemy's
///   reflection of schemas writes `ESCAPE '/'`), becomes `x LIKE like_escaped(p, 'c')`, the
///   pattern written with `\` ([`like_escaped`]);
/// - `generate_subscripts(a, d)`, set-returning too, becomes `unnest(range(…))` of `a`'s
///   subscripts, from 1 (from 0 for an `int2vector` or `oidvector`, [`VECTORS`]); and their
///   subscript `indkey[i]` becomes `indkey[i + 1]` (SQLAlchemy's reflection of keys and
///   indexes reads `pg_index.indkey` so).
///
/// `sql` itself when it has none, or does not parse; the text is parsed only when it has a
/// word of [`REWRITTEN`] or `).` before a name.
pub fn planned(sql: &str) -> Cow<'_, str> {
    let bytes = sql.as_bytes();
    let named = REWRITTEN.iter().any(|word| {
        bytes
            .windows(word.len())
            .any(|w| w.eq_ignore_ascii_case(word.as_bytes()))
    });
    let selects = bytes
        .windows(3)
        .any(|w| w[..2] == *b")." && (w[2].is_ascii_alphabetic() || matches!(w[2], b'_' | b'"')));
    if !named && !selects {
        return Cow::Borrowed(sql);
    }
    let Ok(mut statements) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else {
        return Cow::Borrowed(sql);
    };
    let mut n = 0;
    for statement in &mut statements {
        let mut oids = TableOids(0);
        let _ = statement.visit(&mut oids);
        n += oids.0;
        let mut procedures = ProcedureColumns(0);
        let _ = statement.visit(&mut procedures);
        n += procedures.0;
        let _ = visit_expressions_mut(statement, |e| {
            match e {
                ast::Expr::Function(f) if is_named(f, EXPAND_ARRAY) => {
                    f.name = ast::ObjectName::from(vec![ast::Ident::new(EXPAND_ARRAY)]);
                    *e = call("unnest", e.clone());
                    n += 1;
                }
                ast::Expr::Function(f) if is_named(f, "generate_subscripts") => {
                    let ast::FunctionArguments::List(list) = &f.args else {
                        return ControlFlow::Continue(());
                    };
                    let [
                        ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(a)),
                        ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(d)),
                    ] = list.args.as_slice()
                    else {
                        return ControlFlow::Continue(());
                    };
                    let range = match is_int2vector(a) {
                        true => format!("unnest(range(0, array_length({a}, {d})))"),
                        false => format!("unnest(range(1, array_length({a}, {d}) + 1))"),
                    };
                    let parsed = Parser::new(&PostgreSqlDialect {})
                        .try_with_sql(&range)
                        .and_then(|mut p| p.parse_expr());
                    if let Ok(range) = parsed {
                        *e = range;
                        n += 1;
                    }
                }
                // LIKE's escape other than `\\`: its pattern written with `\\` instead.
                ast::Expr::Like {
                    pattern,
                    escape_char,
                    any: false,
                    ..
                }
                | ast::Expr::ILike {
                    pattern,
                    escape_char,
                    any: false,
                    ..
                } if escape_char
                    .as_ref()
                    .is_some_and(|c| c.value != Value::SingleQuotedString("\\".into())) =>
                {
                    let Some(escape) = escape_char.take() else {
                        return ControlFlow::Continue(());
                    };
                    let Expr::Function(mut f) = call(LIKE_ESCAPED, pattern.as_ref().clone()) else {
                        unreachable!("call makes a function")
                    };
                    if let ast::FunctionArguments::List(list) = &mut f.args {
                        list.args
                            .push(ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(
                                ast::Expr::Value(escape),
                            )));
                    }
                    **pattern = ast::Expr::Function(f);
                    n += 1;
                }
                // An array column compared with an array literal: the literal as an array.
                ast::Expr::BinaryOp { left, right, .. } => {
                    if let Some(array) = array_literal(left, right) {
                        **right = array;
                        n += 1;
                    } else if let Some(array) = array_literal(right, left) {
                        **left = array;
                        n += 1;
                    }
                }
                // An array of types' oids as `regtype[]` (pgcli's functions read their
                // arguments' types so): the types' names, as `regtypeout` writes each.
                ast::Expr::Cast {
                    expr, data_type, ..
                } if data_type
                    .to_string()
                    .to_lowercase()
                    .ends_with(&format!("{REGTYPE}[]")) =>
                {
                    *e = call(REGTYPE_NAMES, expr.as_ref().clone());
                    n += 1;
                }
                // A type's oid as text, `atttypid::regtype::text`: its name (pgcli's
                // columns and functions), as `regtypeout` writes it.
                ast::Expr::Cast {
                    expr, data_type, ..
                } if is_text(data_type)
                    && let ast::Expr::Cast {
                        expr: oid,
                        data_type: inner,
                        ..
                    } = expr.as_ref()
                    && inner.to_string().to_lowercase().ends_with(REGTYPE) =>
                {
                    let Expr::Function(mut f) = call("format_type", oid.as_ref().clone()) else {
                        unreachable!("call makes a function")
                    };
                    if let ast::FunctionArguments::List(list) = &mut f.args {
                        list.args
                            .push(ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(
                                ast::Expr::value(Value::Null),
                            )));
                    }
                    *e = Expr::Function(f);
                    n += 1;
                }
                ast::Expr::Cast {
                    expr, data_type, ..
                } if let Some(resolve) = resolved_cast(data_type, expr) => {
                    *e = call(resolve, expr.as_ref().clone());
                    n += 1;
                }
                ast::Expr::CompoundFieldAccess { root, access_chain }
                    if !matches!(root.as_ref(), ast::Expr::Nested(_)) =>
                {
                    if let Some(index) = vector_subscript(root, access_chain) {
                        *index = ast::Expr::BinaryOp {
                            left: Box::new(ast::Expr::Nested(Box::new(index.clone()))),
                            op: ast::BinaryOperator::Plus,
                            right: Box::new(ast::Expr::value(Value::Number("1".into(), false))),
                        };
                        n += 1;
                    }
                }
                // A field of a record, `(e).f` (the arm before took every other root).
                ast::Expr::CompoundFieldAccess { access_chain, .. } => {
                    for access in access_chain.iter_mut() {
                        let AccessExpr::Dot(ast::Expr::Identifier(field)) = access else {
                            continue;
                        };
                        let name = match field.quote_style {
                            Some(_) => field.value.clone(),
                            None => field.value.to_lowercase(),
                        };
                        *access = AccessExpr::Subscript(Subscript::Index {
                            index: ast::Expr::value(Value::SingleQuotedString(name)),
                        });
                        n += 1;
                    }
                }
                _ => {}
            }
            ControlFlow::<()>::Continue(())
        });
    }
    match n {
        0 => Cow::Borrowed(sql),
        _ => Cow::Owned(text_of(&statements)),
    }
}

/// Statements as the text of one query, which the rewrites before planning give
/// datafusion-postgres.
pub(super) fn text_of(statements: &[ast::Statement]) -> String {
    let texts: Vec<String> = statements.iter().map(ToString::to_string).collect();
    texts.join(";\n")
}

/// The function a cast of `expr` to `data_type` becomes, resolving a name when the query
/// runs: to `regclass` of a name, literal or computed (datafusion-pg-catalog's resolves no
/// literal name of its own tables: `'pg_class'::regclass` was NULL in a non-nullable column), to
/// `regproc` of a name, literal or not (datafusion-pg-catalog's finds no function of a
/// qualified name, `'pg_catalog.array_in'::regproc`), and to `regprocedure` of a name with
/// its arguments' types (psql's `\\sf lower(text)`). A column's cast stays theirs: it holds
/// an oid already.
fn resolved_cast(data_type: &ast::DataType, expr: &Expr) -> Option<&'static str> {
    if matches!(expr, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
        return None;
    }
    let name = data_type.to_string().to_lowercase();
    let function = name.ends_with("regproc") || name.ends_with("regprocedure");
    match (name.ends_with("regclass"), function, expr) {
        (true, _, _) => Some(REGCLASS),
        (_, true, _) => Some(REGPROC),
        _ => None,
    }
}

/// PostgreSQL's type of types' oids, whose text is the type's name.
const REGTYPE: &str = "regtype";

/// Whether `t` is a text type (`text`, `varchar`, `character varying`).
fn is_text(t: &ast::DataType) -> bool {
    matches!(
        t,
        ast::DataType::Text
            | ast::DataType::Varchar(_)
            | ast::DataType::CharacterVarying(_)
            | ast::DataType::String(_)
    )
}

/// `literal`, PostgreSQL's text of an array (`'{0}'`), as an array of the type of the
/// catalog's array `column` (`make_array(0)`) — psql's `\\dp` compares `polroles <> '{0}'`,
/// where DataFusion compares no text with an array; `None` for any other pair.
fn array_literal(column: &Expr, literal: &Expr) -> Option<Expr> {
    let name = match column {
        Expr::Identifier(i) => i,
        Expr::CompoundIdentifier(parts) => parts.last()?,
        _ => return None,
    };
    let element = catalog::array_element(&name.value.to_lowercase())?;
    let Expr::Value(v) = literal else {
        return None;
    };
    let Value::SingleQuotedString(text) = &v.value else {
        return None;
    };
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let elements: Vec<String> = catalog::elements(text)
        .into_iter()
        .map(|e| match element.is_numeric() {
            true => e,
            false => format!("'{}'", e.replace('\'', "''")),
        })
        .collect();
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&format!("make_array({})", elements.join(", ")))
        .and_then(|mut p| p.parse_expr())
        .ok()
}

/// PostgreSQL's system column of every table: the oid of the table itself in `pg_class`.
const TABLEOID: &str = "tableoid";

/// `t.tableoid` — psql's `\\dL`, `\\des+`, `\\dew+` and `\\det+` join `pg_description` on it —
/// as the oid of `t`'s table, `'pg_catalog.pg_language'::regclass`, in each SELECT that names
/// the table `t` in its FROM (datafusion-pg-catalog's tables have no system column). Counts
/// the columns rewritten.
struct TableOids(usize);

impl VisitorMut for TableOids {
    type Break = ();

    fn pre_visit_query(&mut self, q: &mut ast::Query) -> ControlFlow<()> {
        for select in selects(q.body.as_mut()) {
            self.0 += table_oids(select);
        }
        ControlFlow::Continue(())
    }
}

/// The SELECTs of a query's body: itself, or each side of its UNIONs (psql's `\\dd` reads
/// `tableoid` in each).
fn selects(body: &mut ast::SetExpr) -> Vec<&mut ast::Select> {
    match body {
        ast::SetExpr::Select(select) => vec![select.as_mut()],
        ast::SetExpr::SetOperation { left, right, .. } => {
            let mut both = selects(left.as_mut());
            both.extend(selects(right.as_mut()));
            both
        }
        _ => vec![],
    }
}

/// [`TableOids`]' rewrite of one SELECT: how many columns it rewrote.
fn table_oids(select: &mut ast::Select) -> usize {
    let mut tables: Vec<(String, String)> = Vec::new();
    for t in &select.from {
        for f in std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)) {
            if let ast::TableFactor::Table {
                name,
                alias,
                args: None,
                ..
            } = f
                && let Some(last) = name.0.last().and_then(|p| p.as_ident())
            {
                let called = alias.as_ref().map_or(&last.value, |a| &a.name.value);
                tables.push((called.to_lowercase(), name.to_string()));
            }
        }
    }
    let mut n = 0;
    let _ = visit_expressions_mut(select, |e| {
        if let Expr::CompoundIdentifier(parts) = e
            && let [table, column] = parts.as_slice()
            && column.value.eq_ignore_ascii_case(TABLEOID)
            && let Some((_, name)) = tables
                .iter()
                .find(|(called, _)| *called == table.value.to_lowercase())
            && let Ok(oid) = Parser::new(&PostgreSqlDialect {})
                .try_with_sql(&format!("'{}'::regclass", name.replace('\'', "''")))
                .and_then(|mut p| p.parse_expr())
        {
            *e = oid;
            n += 1;
        }
        ControlFlow::<()>::Continue(())
    });
    n
}

/// A column of functions' oids cast to `regprocedure` as a column of a SELECT
/// (`l.lanplcallfoid::regprocedure`: psql's `\\dL+`): its text, `plpgsql_call_handler()`,
/// as `regprocedureout` writes it ([`REGPROCEDURE_TEXT`]). Elsewhere (a condition) the cast
/// stays an oid. Counts the columns rewritten.
struct ProcedureColumns(usize);

impl VisitorMut for ProcedureColumns {
    type Break = ();

    fn pre_visit_query(&mut self, q: &mut ast::Query) -> ControlFlow<()> {
        for item in selects(q.body.as_mut())
            .into_iter()
            .flat_map(|select| select.projection.iter_mut())
        {
            let (ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. }) =
                item
            else {
                continue;
            };
            if let Expr::Cast {
                expr, data_type, ..
            } = e
                && matches!(
                    expr.as_ref(),
                    Expr::Identifier(_) | Expr::CompoundIdentifier(_)
                )
                && data_type
                    .to_string()
                    .to_lowercase()
                    .ends_with("regprocedure")
            {
                *e = call(REGPROCEDURE_TEXT, expr.as_ref().clone());
                self.0 += 1;
            }
        }
        ControlFlow::Continue(())
    }
}

/// Whether `f` is the function `name` (in any schema).
fn is_named(f: &ast::Function, name: &str) -> bool {
    let last = f.name.0.last().and_then(|p| p.as_ident());
    last.is_some_and(|i| i.value.eq_ignore_ascii_case(name))
}

/// The function a pattern of `LIKE … ESCAPE` becomes ([`like_escaped`]).
const LIKE_ESCAPED: &str = "like_escaped";

/// The function a cast to `regtype[]` becomes: the types' names ([`type_names`]).
const REGTYPE_NAMES: &str = "regtype_names";

/// The name of each type of an array of types' oids, as a `text[]`: an `oidvector` the
/// catalog holds as text (`pg_proc.proargtypes`, `114 25`) or an `oid[]`
/// (`proallargtypes`); NULL for NULL.
fn type_names(args: &[ArrayRef]) -> Result<ArrayRef> {
    let mut names = ListBuilder::new(StringBuilder::new());
    let oids = |a: &ArrayRef, i: usize| -> Result<Vec<i32>> {
        Ok(match a.data_type() {
            DataType::List(_) => {
                let e = cast(&a.as_list::<i32>().value(i), &DataType::Int32)?;
                e.as_primitive::<Int32Type>().iter().flatten().collect()
            }
            _ => {
                let text = cast(&a.slice(i, 1), &DataType::Utf8)?;
                catalog::elements(text.as_string::<i32>().value(0))
                    .iter()
                    .filter_map(|e| e.parse().ok())
                    .collect()
            }
        })
    };
    let a = &args[0];
    for i in 0..a.len() {
        if a.is_null(i) {
            names.append_null();
            continue;
        }
        for oid in oids(a, i)? {
            names.values().append_value(procedures::type_name(oid));
        }
        names.append(true);
    }
    Ok(Arc::new(names.finish()))
}

/// Registers [`LIKE_ESCAPED`] and [`REGTYPE_NAMES`] in `ctx`.
pub fn register(ctx: &SessionContext) {
    let functions: [Function; 2] = [
        (
            REGTYPE_NAMES,
            Signature::any(1, Volatility::Immutable),
            DataType::new_list(DataType::Utf8, true),
            catalog::over_columns(type_names),
        ),
        (
            LIKE_ESCAPED,
            Signature::any(2, Volatility::Immutable),
            DataType::Utf8,
            catalog::over_columns(|args: &[ArrayRef]| {
                let (patterns, escapes) = (
                    cast(&args[0], &DataType::Utf8)?,
                    cast(&args[1], &DataType::Utf8)?,
                );
                let (patterns, escapes) = (patterns.as_string::<i32>(), escapes.as_string::<i32>());
                let written: StringArray = patterns
                    .iter()
                    .zip(escapes.iter())
                    .map(|(p, e)| match (p, e) {
                        (Some(p), Some(e)) => like_escaped(p, e).map(Some),
                        _ => Ok(None),
                    })
                    .collect::<Result<_>>()?;
                Ok(Arc::new(written) as ArrayRef)
            }),
        ),
    ];
    catalog::register_functions(ctx, functions);
}

/// A LIKE pattern with escape character `escape` (none when empty) written with `\\`, the
/// escape DataFusion knows: an escaped character stays itself, a `\\` of the pattern is
/// escaped in turn.
fn like_escaped(pattern: &str, escape: &str) -> Result<String> {
    let mut chars = escape.chars();
    let escape = match (chars.next(), chars.next()) {
        (None, _) => None,
        (Some(c), None) => Some(c),
        _ => {
            return exec_err!(
                "invalid escape string {escape:?}: it must be empty or one character"
            );
        }
    };
    let (mut written, mut pattern) = (String::new(), pattern.chars());
    while let Some(c) = pattern.next() {
        match c {
            c if Some(c) == escape => match pattern.next() {
                Some(escaped) => {
                    written.push('\\');
                    written.push(escaped);
                }
                None => return exec_err!("LIKE pattern must not end with escape character"),
            },
            '\\' => written.push_str("\\\\"),
            c => written.push(c),
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_column_of_functions_cast_to_regprocedure_is_its_text() {
        // psql's \\dL+ (a part of it); a condition's cast stays an oid.
        let sql = "SELECT l.lanplcallfoid::pg_catalog.regprocedure AS \"Call handler\", \
                   lanvalidator::regprocedure FROM pg_language l \
                   WHERE l.lanplcallfoid::regprocedure = 0";
        assert_eq!(
            planned(sql),
            "SELECT regprocedure_text(l.lanplcallfoid) AS \"Call handler\", \
             regprocedure_text(lanvalidator) FROM pg_language l \
             WHERE l.lanplcallfoid::regprocedure = 0"
        );
    }

    #[test]
    fn arrays_of_types_are_their_names() {
        let sql = "SELECT COALESCE(proallargtypes::regtype[], proargtypes::regtype[])::text[] \
                   FROM pg_proc";
        assert_eq!(
            planned(sql),
            "SELECT COALESCE(regtype_names(proallargtypes), regtype_names(proargtypes))::TEXT[] \
             FROM pg_proc"
        );
        let vector: ArrayRef = Arc::new(StringArray::from(vec![Some("114 25"), Some(""), None]));
        let names = type_names(&[vector]).unwrap();
        let names = names.as_list::<i32>();
        let text = |i: usize| -> Vec<String> {
            let v = names.value(i);
            v.as_string::<i32>()
                .iter()
                .flatten()
                .map(String::from)
                .collect()
        };
        assert_eq!(
            (text(0), text(1)),
            (vec!["json".into(), "text".into()], vec![])
        );
        assert!(names.is_null(2));
    }

    #[test]
    fn a_types_oid_as_text_is_its_name() {
        // pgcli's columns.
        let sql = "SELECT att.atttypid::regtype::text type_name, \
                   CAST(CAST(att.atttypid AS pg_catalog.regtype) AS varchar) FROM pg_attribute att";
        let planned = planned(sql);
        assert_eq!(
            planned.matches("format_type(att.atttypid, NULL)").count(),
            2,
            "{planned}"
        );
        let unchanged = "SELECT atttypid::regtype FROM pg_attribute";
        assert!(matches!(super::planned(unchanged), Cow::Borrowed(_)));
    }

    #[test]
    fn a_like_escape_is_written_as_datafusion_reads_one() {
        assert_eq!(like_escaped("pg/_%", "/").unwrap(), "pg\\_%");
        assert_eq!(like_escaped("a\\b//c", "/").unwrap(), "a\\\\b\\/c");
        assert_eq!(like_escaped("a\\b", "").unwrap(), "a\\\\b");
        assert!(like_escaped("x/", "/").is_err());
        let sql = "SELECT n FROM t WHERE n NOT LIKE $1 || '%' ESCAPE '/'";
        assert_eq!(
            planned(sql),
            "SELECT n FROM t WHERE n NOT LIKE like_escaped($1 || '%', '/')"
        );
        let plain = "SELECT n FROM t WHERE n LIKE 'a\\_%' ESCAPE '\\'";
        assert!(matches!(planned(plain), Cow::Borrowed(_)));
    }

    #[test]
    fn expandarray_and_record_fields_are_planned_as_unnest_and_subscripts() {
        // As the JDBC driver's getPrimaryKeys sends it (a part of it).
        let sql = "SELECT r.n FROM (SELECT (information_schema._pg_expandarray(i.indkey)).n AS n, \
                   information_schema._pg_expandarray(i.indkey) AS keys FROM pg_index i) r \
                   WHERE a = (r.keys).x AND (r.keys).\"X\" IS NULL";
        assert_eq!(
            planned(sql),
            "SELECT r.n FROM (SELECT (unnest(_pg_expandarray(i.indkey)))['n'] AS n, \
             unnest(_pg_expandarray(i.indkey)) AS keys FROM pg_index i) r \
             WHERE a = (r.keys)['x'] AND (r.keys)['X'] IS NULL"
        );
        // As SQLAlchemy's reflection of keys: an int2vector's subscripts count from 0.
        let sql = "SELECT unnest(i.indkey), generate_subscripts(i.indkey, $1::INTEGER), \
                   generate_subscripts(i.conkey, 1), i.indkey[0] FROM pg_index i";
        assert_eq!(
            planned(sql),
            "SELECT unnest(i.indkey), unnest(range(0, array_length(i.indkey, $1::INTEGER))), \
             unnest(range(1, array_length(i.conkey, 1) + 1)), i.indkey[(0) + 1] FROM pg_index i"
        );
        // Casts to regclass of a name, computed or literal, and to regproc, resolved when the
        // query runs; a column's (an oid) stays datafusion-pg-catalog's.
        let sql = "SELECT CAST(format('%I.%I', s, t) AS regclass), 'pg_catalog.array_in'::regproc, \
                   c.oid::regclass, 'customer_totals'::regclass FROM c";
        assert_eq!(
            planned(sql),
            "SELECT regclass(format('%I.%I', s, t)), regproc('pg_catalog.array_in'), \
             c.oid::REGCLASS, regclass('customer_totals') FROM c"
        );
        // A catalog array compared with PostgreSQL's text of an array (psql's `\\dp`).
        assert_eq!(
            planned("SELECT 1 FROM pg_policy WHERE polroles <> '{0}' AND '{a,\"b c\"}' = nspacl"),
            "SELECT 1 FROM pg_policy WHERE polroles <> make_array(0) \
             AND make_array('a', 'b c') = nspacl"
        );
        // A table's system column `tableoid`, by its alias or its name (psql's `\\dL`).
        assert_eq!(
            planned(
                "SELECT l.lanname FROM pg_catalog.pg_language l JOIN pg_description \
                 ON pg_description.classoid = l.tableoid WHERE pg_description.tableoid > 0"
            ),
            "SELECT l.lanname FROM pg_catalog.pg_language l JOIN pg_description \
             ON pg_description.classoid = regclass('pg_catalog.pg_language') \
             WHERE regclass('pg_description') > 0"
        );
        // Not parsed, or nothing to do: the text as it is.
        for sql in [
            "SELECT count(*) FROM customer_totals",
            "SELECT (parse_ident('a.b'))[1]",
            "SELECT 'x).y'",
        ] {
            assert!(
                matches!(planned(sql), Cow::Borrowed(s) if s == sql),
                "{sql}"
            );
        }
    }
}
