//! The names PostgreSQL gives an answer's columns, sent in the wire protocol's row
//! descriptions.
//!
//! DataFusion names a column without an alias after its whole expression (`count(*)`,
//! `sum(customer_totals.total_amount)`, `Int64(1)`); PostgreSQL after the function, the
//! column or the type cast to (`count`, `sum`, `int4`), else `?column?`. Clients read columns
//! by these names: JDBC's `getLong("count")`, pandas' frame columns, Grafana's series. A
//! column with an alias, or a column of a table, has the same name in both.
//!
//! PostgreSQL lets two columns have one name (`SELECT 1, 1`, `SELECT count(*), count(*)`, the
//! JDBC driver's `getProcedures` query); DataFusion does not. Such a query is planned again
//! with its columns given unique aliases ([`aliased`]), which the row descriptions then name
//! as PostgreSQL would.

use datafusion::sql::sqlparser::ast::{
    AccessExpr, DataType as SqlType, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident,
    Query, Select, SelectItem, SetExpr, Statement,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_postgres::pgwire::api::Type;
use datafusion_postgres::pgwire::api::results::FieldInfo;

use super::{server, subquery};

/// PostgreSQL's name of a column it cannot name otherwise.
const UNNAMED: &str = "?column?";

/// What separates the name from the number in [`aliased`]'s aliases (a control character no
/// name holds).
const NUMBERED: char = '\u{1f}';

/// Whether `error` is DataFusion's refusal of two columns of one name.
pub fn duplicate_names(error: &impl std::fmt::Display) -> bool {
    error
        .to_string()
        .contains("require unique expression names")
}

/// `sql` with every column without an alias given a unique one (its PostgreSQL name and a
/// number), in each SELECT of each query; `None` when nothing was to alias, or `sql` does not
/// parse.
pub fn aliased(sql: &str) -> Option<String> {
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let mut n = 0;
    for statement in &mut statements {
        if let Statement::Query(q) = statement {
            alias_items(&mut q.body, &mut n);
        }
    }
    (n > 0).then(|| super::syntax::text_of(&statements))
}

fn alias_items(body: &mut SetExpr, n: &mut usize) {
    match body {
        SetExpr::Select(select) => {
            // A column of a table keeps its name unless another item has it too (`SELECT
            // c.oid, c.relname, c.oid`).
            let names: Vec<Option<String>> = select.projection.iter().map(item_name).collect();
            let shared = |name: &Option<String>| names.iter().filter(|n| *n == name).count() > 1;
            for (item, name) in select.projection.iter_mut().zip(&names) {
                let SelectItem::UnnamedExpr(e) = item else {
                    continue;
                };
                if matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) && !shared(name) {
                    continue;
                }
                *n += 1;
                let name = figure(e).map_or_else(|| UNNAMED.to_string(), |(name, _)| name);
                *item = SelectItem::ExprWithAlias {
                    expr: e.clone(),
                    alias: Ident::with_quote('"', format!("{name}{NUMBERED}{n}")),
                };
            }
        }
        SetExpr::Query(q) => alias_items(&mut q.body, n),
        SetExpr::SetOperation { left, right, .. } => {
            alias_items(left, n);
            alias_items(right, n);
        }
        _ => {}
    }
}

/// `fields` (the columns of `statement`'s answer, as DataFusion names them) with the names
/// PostgreSQL gives them. Columns whose place in the query is not known (between two `*`)
/// keep theirs.
pub fn pg_names(statement: &Statement, fields: Vec<FieldInfo>) -> Vec<FieldInfo> {
    let Statement::Query(q) = statement else {
        return fields;
    };
    let names = query_names(q, fields.len());
    fields
        .into_iter()
        .zip(names)
        .map(|(f, name)| match name {
            Some(name) if name != f.name() => renamed(f, name),
            _ => f,
        })
        .collect()
}

/// The names of an answer's columns as `POST /api/sql` writes them, one key per column of a
/// JSON row: PostgreSQL's ([`pg_names`]) where no two columns would share one, DataFusion's
/// (unique) for those that would (`SELECT count(*), count(customer)`).
pub fn json_names(statement: &Statement, datafusions: Vec<String>) -> Vec<String> {
    let Statement::Query(q) = statement else {
        return datafusions;
    };
    let pg: Vec<String> = query_names(q, datafusions.len())
        .into_iter()
        .zip(&datafusions)
        .map(|(pg, df)| pg.unwrap_or_else(|| df.clone()))
        .collect();
    let shared = |name: &String| pg.iter().filter(|n| *n == name).count() > 1;
    let names: Vec<String> = pg
        .iter()
        .zip(&datafusions)
        .map(|(pg, df)| match shared(pg) {
            true => df.clone(),
            false => pg.clone(),
        })
        .collect();
    // A PostgreSQL name that is another column's DataFusion name: DataFusion's, all of them.
    let unique = names
        .iter()
        .enumerate()
        .all(|(i, n)| !names[..i].contains(n));
    match unique {
        true => names,
        false => datafusions,
    }
}

/// Whether DataFusion's name could differ from PostgreSQL's: an expression's name has more
/// than an identifier's characters (a column of a table is named alike in both), a NULL
/// (PostgreSQL's `?column?`, or the name of the subquery a rewrite made NULL), and a column
/// the catalog's rewrite aliased ([`STAND_IN_ALIAS`]).
pub fn may_differ(name: &str) -> bool {
    !name
        .chars()
        .all(|c| c.is_alphanumeric() || c == '_' || c == '$')
        || name == "NULL"
        || name.starts_with(STAND_IN_ALIAS)
}

/// The prefix of the alias datafusion-pg-catalog gives a column that a `*` beside it selects
/// again (`SELECT c.oid, c.* FROM pg_class c`, as DBeaver reads its catalog): PostgreSQL
/// names it `oid`.
const STAND_IN_ALIAS: &str = "__alias_";

fn renamed(f: FieldInfo, name: String) -> FieldInfo {
    FieldInfo::new(
        name,
        f.table_id(),
        f.column_id(),
        f.datatype().clone(),
        f.format(),
    )
    .with_format_options(std::sync::Arc::clone(f.format_options()))
    .with_type_size(f.type_size())
    .with_type_modifier(f.type_modifier())
}

/// The names of the `n` columns of `q`'s answer, `None` where DataFusion's stands.
fn query_names(q: &Query, n: usize) -> Vec<Option<String>> {
    let mut names = vec![None; n];
    let Some(select) = first_select(&q.body) else {
        return names;
    };
    let items = &select.projection;
    let star = |i: &SelectItem| {
        matches!(
            i,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        )
    };
    // Items before the first `*` from the start, after the last one from the end.
    let first = items.iter().position(star).unwrap_or(items.len());
    let last = items.iter().rposition(star);
    let after = last.map_or(0, |l| items.len() - l - 1);
    if first + after > n || (last.is_none() && items.len() != n) {
        return names;
    }
    for (i, item) in items[..first].iter().enumerate() {
        names[i] = item_name(item);
    }
    if let Some(l) = last {
        for (k, item) in items[l + 1..].iter().enumerate() {
            names[n - after + k] = item_name(item);
        }
    }
    names
}

/// The SELECT whose items name a query's columns: the first of a UNION, INTERSECT or EXCEPT.
fn first_select(body: &SetExpr) -> Option<&Select> {
    match body {
        SetExpr::Select(s) => Some(s),
        SetExpr::Query(q) => first_select(&q.body),
        SetExpr::SetOperation { left, .. } => first_select(left),
        _ => None,
    }
}

/// PostgreSQL's name of an item without an alias; `None` for any other (DataFusion names it
/// so too).
fn item_name(item: &SelectItem) -> Option<String> {
    match item {
        SelectItem::UnnamedExpr(e) => {
            Some(figure(e).map_or_else(|| UNNAMED.to_string(), |(name, _)| name))
        }
        // One of [`aliased`]'s, or of the catalog's rewrite ([`STAND_IN_ALIAS`]).
        SelectItem::ExprWithAlias { alias, .. } => match alias.value.split_once(NUMBERED) {
            Some((name, _)) => Some(name.to_string()),
            None => alias.value.strip_prefix(STAND_IN_ALIAS).map(str::to_string),
        },
        _ => None,
    }
}

/// A name of `e` as PostgreSQL figures one (`FigureColname`), with its strength: 2 for a
/// column's, a field's or a function's name, 1 for the name of a type cast to.
fn figure(e: &Expr) -> Option<(String, u8)> {
    let named = |s: &str| Some((s.to_string(), 2));
    match e {
        Expr::Identifier(i) => Some((ident(i), 2)),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| (ident(i), 2)),
        Expr::CompoundFieldAccess { root, access_chain } => match access_chain.last() {
            Some(AccessExpr::Dot(field)) => figure(field),
            _ => figure(root),
        },
        Expr::Function(f) => {
            let name = f.name.0.last().and_then(|p| p.as_ident()).map(ident)?;
            // A subquery as lambdaflow rewrote it for DataFusion: named as written.
            if let (true, FunctionArguments::List(l)) = (subquery::rewritten(&name), &f.args)
                && let [FunctionArg::Unnamed(FunctionArgExpr::Expr(e))] = l.args.as_slice()
            {
                return figure(e);
            }
            Some((name, 2))
        }
        Expr::Cast {
            expr, data_type, ..
        } => match figure(expr) {
            Some((name, 2)) => Some((name, 2)),
            _ => Some((type_name(data_type), 1)),
        },
        Expr::TypedString(t) => Some((type_name(&t.data_type), 1)),
        Expr::Nested(e) | Expr::Collate { expr: e, .. } => figure(e),
        Expr::Subquery(q) => {
            let item = first_select(&q.body)?.projection.first()?;
            match item {
                SelectItem::ExprWithAlias { alias, .. } => Some((ident(alias), 2)),
                SelectItem::UnnamedExpr(e) => {
                    Some(figure(e).map_or_else(|| (UNNAMED.to_string(), 2), |(n, _)| (n, 2)))
                }
                _ => None,
            }
        }
        Expr::Case { .. } => named("case"),
        Expr::Exists { .. } => named("exists"),
        Expr::Array(_) => named("array"),
        Expr::Tuple(_) => named("row"),
        Expr::Trim { .. } => named("btrim"),
        Expr::Substring { .. } => named("substring"),
        Expr::Position { .. } => named("position"),
        Expr::Extract { .. } => named("extract"),
        Expr::Ceil { .. } => named("ceil"),
        Expr::Floor { .. } => named("floor"),
        Expr::Overlay { .. } => named("overlay"),
        Expr::AtTimeZone { .. } => named("timezone"),
        Expr::Interval(_) => Some(("interval".into(), 1)),
        _ => None,
    }
}

/// An identifier as PostgreSQL keeps it: folded to lower case unless quoted.
fn ident(i: &Ident) -> String {
    match i.quote_style {
        None => i.value.to_lowercase(),
        Some(_) => i.value.clone(),
    }
}

/// The internal name of a type as written in a cast (`integer` and `int` are `int4`).
fn type_name(t: &SqlType) -> String {
    let written = t.to_string().to_lowercase();
    let base = written.split('(').next().unwrap_or_default().trim();
    server::type_oid(base)
        .and_then(|oid| Type::from_oid(oid as u32))
        .map_or_else(|| base.to_string(), |t| t.name().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    use datafusion_postgres::pgwire::api::results::FieldFormat;

    /// The names of `sql`'s `n` columns, DataFusion's standing as `df`.
    fn names(sql: &str, n: usize) -> Vec<String> {
        let statement = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        let fields = (0..n)
            .map(|i| FieldInfo::new(format!("df{i}"), None, None, Type::INT8, FieldFormat::Text))
            .collect();
        pg_names(&statement, fields)
            .iter()
            .map(|f| f.name().to_string())
            .collect()
    }

    #[test]
    fn columns_are_named_as_postgresql_names_them() {
        assert_eq!(
            names(
                "SELECT count(*), SUM(t.total_amount), t.customer, total_amount + 1, \
                 total_amount AS \"Total\", pg_catalog.format_type(1, 2), 1::int, x::text, \
                 CASE WHEN true THEN 1 END, (SELECT max(a) FROM b), EXISTS (SELECT 1), \
                 \"Mixed\", DATE '2026-12-01', trim(' a '), NULL FROM t",
                15
            ),
            [
                "count",
                "sum",
                "customer",
                "?column?",
                "df4",
                "format_type",
                "int4",
                "x",
                "case",
                "max",
                "exists",
                "Mixed",
                "date",
                "btrim",
                "?column?",
            ]
        );
    }

    #[test]
    fn items_around_a_star_are_named_by_their_place() {
        // `*` stands for three columns here.
        assert_eq!(
            names("SELECT count(*), *, sum(x) FROM t GROUP BY 2", 5),
            ["count", "df1", "df2", "df3", "sum"]
        );
        // Between two stars the places are not known: DataFusion's names stand.
        assert_eq!(
            names("SELECT a.*, count(*), b.* FROM a, b", 4),
            ["df0", "df1", "df2", "df3"]
        );
        // The first SELECT of a UNION names the columns.
        assert_eq!(
            names("SELECT count(*) FROM a UNION ALL SELECT sum(x) FROM b", 1),
            ["count"]
        );
        // Not a query: nothing renamed.
        assert_eq!(names("SHOW server_version", 1), ["df0"]);
        // Two columns of one name: aliased apart for DataFusion, named alike on the wire.
        let sql = aliased("SELECT count(*), count(*), x, NULL FROM t; SELECT 1").unwrap();
        assert_eq!(
            sql,
            "SELECT count(*) AS \"count\u{1f}1\", count(*) AS \"count\u{1f}2\", x, \
             NULL AS \"?column?\u{1f}3\" FROM t;\nSELECT 1 AS \"?column?\u{1f}4\""
        );
        assert_eq!(names(&sql, 4), ["count", "count", "x", "?column?"]);
        assert_eq!(aliased("SELECT x, t.y FROM t"), None);
        // A column of a table selected twice, and one the catalog's rewrite aliased.
        let sql = aliased("SELECT c.oid, c.relname, c.oid FROM pg_class c").unwrap();
        assert_eq!(names(&sql, 3), ["oid", "relname", "oid"]);
        for sql in [
            "SELECT c.oid, c.* FROM pg_class c",
            "SELECT c.oid AS __alias_oid, c.* FROM pg_class c",
        ] {
            assert_eq!(names(sql, 3)[0], "oid", "{sql}");
        }
        assert!(may_differ("__alias_oid"));
        // A subquery rewritten for DataFusion is named as written.
        let rewritten =
            "SELECT scalar_subquery_value((SELECT scalar_subquery(h.total) FROM h)) FROM c";
        assert_eq!(names(rewritten, 1), ["total"]);
        assert!(may_differ("count(*)") && !may_differ("total_amount"));
    }
}
