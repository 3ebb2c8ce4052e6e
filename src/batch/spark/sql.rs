//! The Spark SQL the Spark engine sends: the view's state query, unparsed from the plan the
//! embedded engine runs (so the view SQL is written once), after a check that every construct
//! in it computes the same on Spark; and the statements that turn JSON lines into typed events
//! by the same rules as lambdaflow's decoder (`crate::event`).

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::{Expr, ExprSchemable, Operator};
use datafusion::sql::sqlparser::ast;
use datafusion::sql::unparser::Unparser;
use datafusion::sql::unparser::dialect::{CustomDialect, CustomDialectBuilder};

use crate::error::{Error, Result};
use crate::event::{EpochUnit, EventSchema, FieldType, KAFKA_COLUMNS};
use crate::view::ViewDef;

/// Spark SQL as the unparser writes it: backquoted identifiers, Spark's type names.
fn dialect() -> CustomDialect {
    CustomDialectBuilder::new()
        .with_identifier_quote_style('`')
        .with_utf8_cast_dtype(ast::DataType::String(None))
        .with_large_utf8_cast_dtype(ast::DataType::String(None))
        .with_int64_cast_dtype(ast::DataType::BigInt(None))
        .with_int32_cast_dtype(ast::DataType::Int(None))
        .with_float64_ast_dtype(ast::DataType::Double(ast::ExactNumberInfo::None))
        .build()
}

/// The state query's plan as Spark SQL.
pub fn unparse(plan: &datafusion::logical_expr::LogicalPlan) -> Result<String> {
    let d = dialect();
    Ok(Unparser::new(&d).plan_to_sql(plan)?.to_string())
}

/// Scalar functions that Spark computes as DataFusion does (same name, argument order, NULL
/// handling and result type) for the types a view can have.
const SAME_ON_SPARK: &[&str] = &[
    "lower",
    "upper",
    "abs",
    "coalesce",
    "nullif",
    "trim",
    "btrim",
    "ltrim",
    "rtrim",
    "character_length",
    "char_length",
    "length",
    "substr",
    "substring",
    // Event time: Spark's own `window()` (the reference), and `date_trunc(unit, ts)` in the
    // session's time zone, UTC.
    "window",
    "date_trunc",
];

/// Refuses, naming it, any construct of `def`'s filter, group keys or aggregate arguments that
/// Spark would compute differently from DataFusion; the rest unparses to Spark SQL as is.
pub fn check(def: &ViewDef, input: &DFSchema) -> Result<()> {
    let exprs = def
        .filter
        .iter()
        .chain(&def.group_exprs)
        .chain(def.aggs.iter().map(|a| &a.arg));
    for e in exprs {
        let mut bad = None;
        e.apply(|e| {
            bad = differs(e, input);
            Ok(if bad.is_some() {
                TreeNodeRecursion::Stop
            } else {
                TreeNodeRecursion::Continue
            })
        })?;
        if let Some(why) = bad {
            return Err(Error::View {
                view: def.name.clone(),
                msg: format!("cannot run on the spark engine (batch.engine = \"spark\"): {why}"),
            });
        }
    }
    Ok(())
}

/// Why `e` (one node) would compute differently on Spark, if it would.
fn differs(e: &Expr, input: &DFSchema) -> Option<String> {
    let ty = |e: &Expr| e.get_type(input).ok();
    match e {
        Expr::Column(_) | Expr::Alias(_) | Expr::Not(_) | Expr::Negative(_) => None,
        Expr::IsNull(_) | Expr::IsNotNull(_) | Expr::Between(_) | Expr::InList(_) => None,
        Expr::IsTrue(_) | Expr::IsFalse(_) | Expr::IsNotTrue(_) | Expr::IsNotFalse(_) => None,
        Expr::Case(_) => None,
        Expr::Literal(v, _) => match v {
            ScalarValue::Utf8(_)
            | ScalarValue::LargeUtf8(_)
            | ScalarValue::Utf8View(_)
            | ScalarValue::Boolean(_)
            | ScalarValue::Int8(_)
            | ScalarValue::Int16(_)
            | ScalarValue::Int32(_)
            | ScalarValue::Int64(_)
            | ScalarValue::Float64(_)
            | ScalarValue::Null => None,
            other => Some(format!("the literal {other} (type {})", other.data_type())),
        },
        Expr::Like(l) if l.escape_char.is_none() => None,
        Expr::BinaryExpr(b) => {
            use Operator::*;
            match b.op {
                Eq | NotEq | Lt | LtEq | Gt | GtEq | And | Or | Plus | Minus | Multiply
                | Modulo | IsDistinctFrom | IsNotDistinctFrom | StringConcat => None,
                // Spark's `/` is always a division of doubles; DataFusion's divides integers
                // as integers.
                Divide
                    if ty(&b.left) == Some(DataType::Float64)
                        && ty(&b.right) == Some(DataType::Float64) =>
                {
                    None
                }
                Divide => Some(format!(
                    "`{e}` divides integers, which DataFusion truncates and Spark does not: \
                     CAST one side AS DOUBLE"
                )),
                op => Some(format!("the operator `{op}` in `{e}`")),
            }
        }
        Expr::Cast(c) => {
            let from = ty(&c.expr);
            let to = c.field.data_type();
            let text = |t: &DataType| {
                matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8)
            };
            let simple = |t: &DataType| {
                text(t) || matches!(t, DataType::Int32 | DataType::Int64 | DataType::Float64)
            };
            match from {
                // Spark writes 1.0 where DataFusion writes 1.
                Some(DataType::Float64) if text(to) => Some(format!(
                    "`{e}`: Spark writes a double as text differently from DataFusion"
                )),
                Some(f) if simple(&f) && simple(to) => None,
                _ => Some(format!("the cast `{e}`")),
            }
        }
        Expr::ScalarFunction(f) if SAME_ON_SPARK.contains(&f.name()) => None,
        Expr::ScalarFunction(f) => Some(format!(
            "the function `{}` (the functions known to compute the same on Spark: {})",
            f.name(),
            SAME_ON_SPARK.join(", ")
        )),
        other => Some(format!("`{other}`")),
    }
}

/// A Spark SQL identifier, backquoted.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A Spark SQL string literal (Spark reads backslash escapes in literals).
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Spark's name for a field's type.
pub fn spark_type(ty: FieldType) -> &'static str {
    match ty {
        FieldType::String => "STRING",
        FieldType::Integer => "BIGINT",
        FieldType::Double => "DOUBLE",
        FieldType::Boolean => "BOOLEAN",
        FieldType::Timestamp => "TIMESTAMP",
    }
}

/// The Kafka record's columns ([`KAFKA_COLUMNS`]) with their Spark types.
pub fn kafka_columns() -> [(&'static str, &'static str); 4] {
    let t = ["TIMESTAMP", "INT", "BIGINT", "STRING"];
    [0, 1, 2, 3].map(|i| (KAFKA_COLUMNS[i], t[i]))
}

/// The Kafka record's columns as NULLs of their types (for the events of the files).
pub fn kafka_nulls() -> String {
    kafka_columns()
        .iter()
        .map(|(c, t)| format!("CAST(NULL AS {t}) AS {}", ident(c)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The event schema — the declared fields, then the Kafka record's columns — as a Spark DDL
/// string (for reading the Parquet segments; a segment archived before the Kafka columns
/// existed reads them as NULL).
pub fn ddl(schema: &EventSchema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", ident(&f.name), spark_type(f.ty)))
        .chain(
            kafka_columns()
                .iter()
                .map(|(c, t)| format!("{} {t}", ident(c))),
        )
        .collect::<Vec<_>>()
        .join(", ")
}

/// A line that is only ASCII whitespace (skipped, as lambdaflow's reader skips it), as a Java
/// regular expression in a Spark literal.
const BLANK: &str = r"'^[ \\t\\n\\r\\f]*$'";

/// The shape of an RFC 3339 timestamp as the decoder takes it, as a Java regular expression in
/// a Spark literal.
const TIMESTAMP_SHAPE: &str = "'^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-5][0-9]:[0-5][0-9]([.][0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})$'";

/// The view `name` over the lines `lines` (`p`: file, `b`: split, `line`): each line with its
/// row id `m`, `blank`, `ok` — whether it is an event by the decoder's rules: a JSON object
/// whose declared fields are present, not null (unless nullable) and of the declared JSON
/// type, checked over Spark's VARIANT type — and the event's typed columns.
///
/// The row id is computed in the outermost projection: a projection with a nondeterministic
/// expression stops Spark from pushing a filter on `ok` below it, where it would inline the
/// parse of each line once per reference (measured: 3x slower).
pub fn checked_view(name: &str, lines: &str, schema: &EventSchema) -> String {
    let fields = schema.fields();
    let x = |i: usize| format!("`__lambdaflow_f{i}`");
    let extract: Vec<String> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| format!("variant_get(v, {}) AS {}", path(&f.name), x(i)))
        .collect();
    let mut conds = vec!["v IS NOT NULL".to_string()];
    // A value that is not an object has none of the fields: a required one rejects it.
    if fields.iter().all(|f| f.nullable) {
        conds.push("schema_of_variant(v) LIKE 'OBJECT%'".into());
    }
    for (i, f) in fields.iter().enumerate() {
        let t = format!("schema_of_variant({})", x(i));
        let typed = match f.ty {
            FieldType::String => format!("{t} = 'STRING'"),
            FieldType::Integer => format!("{t} = 'BIGINT'"),
            // Integers, decimals and doubles are numbers; JSON has no infinities (Spark reads
            // 1e400 as one, lambdaflow's decoder rejects it).
            FieldType::Double => format!(
                "({t} IN ('BIGINT', 'DOUBLE') OR {t} LIKE 'DECIMAL%') AND \
                 try_variant_get({}, '$', 'double') BETWEEN -1.7976931348623157E308 AND 1.7976931348623157E308",
                x(i)
            ),
            FieldType::Boolean => format!("{t} = 'BOOLEAN'"),
            // The decoder's RFC 3339 shape (`event::parse_timestamp`), then Spark's own check
            // of the date and time; an integer in the declared unit.
            FieldType::Timestamp => {
                let text = format!(
                    "({t} = 'STRING' AND regexp_like(variant_get({x}, '$', 'string'), {TIMESTAMP_SHAPE}) \
                     AND try_cast(variant_get({x}, '$', 'string') AS TIMESTAMP) IS NOT NULL)",
                    x = x(i)
                );
                match f.unit {
                    Some(_) => format!("({text} OR {t} = 'BIGINT')"),
                    None => text,
                }
            }
        };
        let absent = if f.nullable { "TRUE" } else { "FALSE" };
        conds.push(format!(
            "(CASE WHEN {x} IS NULL OR is_variant_null({x}) THEN {absent} ELSE {typed} END)",
            x = x(i)
        ));
    }
    let typed: Vec<String> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let value = match (f.ty, f.unit) {
                (FieldType::Timestamp, unit) => format!(
                    "CASE WHEN schema_of_variant({x}) = 'STRING' \
                     THEN try_cast(variant_get({x}, '$', 'string') AS TIMESTAMP) ELSE {epoch} END",
                    x = x(i),
                    epoch = match unit {
                        Some(u) => format!(
                            "timestamp_{}(try_variant_get({}, '$', 'bigint'))",
                            match u {
                                EpochUnit::Seconds => "seconds",
                                EpochUnit::Millis => "millis",
                                EpochUnit::Micros => "micros",
                            },
                            x(i)
                        ),
                        None => "NULL".into(),
                    }
                ),
                (ty, _) => format!(
                    "try_variant_get({}, '$', '{}')",
                    x(i),
                    spark_type(ty).to_lowercase()
                ),
            };
            format!("IF(ok, {value}, NULL) AS {}", ident(&f.name))
        })
        .collect();
    let xs: Vec<String> = (0..fields.len()).map(x).collect();
    format!(
        "CREATE OR REPLACE TEMPORARY VIEW {name} AS \
         SELECT p, b, monotonically_increasing_id() AS m, line, blank, ok, {typed} FROM ( \
           SELECT p, b, line, blank, coalesce(NOT blank AND {conds}, FALSE) AS ok, {xs} FROM ( \
             SELECT p, b, line, blank, v, {extract} FROM ( \
               SELECT p, b, line, blank, IF(blank, NULL, try_parse_json(line)) AS v FROM ( \
                 SELECT p, b, line, regexp_like(line, {BLANK}) AS blank FROM {lines}))))",
        typed = typed.join(", "),
        conds = conds.join(" AND "),
        xs = xs.join(", "),
        extract = extract.join(", "),
    )
}

/// The JSON path of a top-level key, `$['name']`, as a literal ([`check_schema`] refuses
/// names with a quote).
fn path(name: &str) -> String {
    literal(&format!("$['{name}']"))
}

/// Refuses field names that a Spark JSON path cannot quote.
pub fn check_schema(schema: &EventSchema) -> Result<()> {
    match schema
        .fields()
        .iter()
        .find(|f| f.name.contains(['\'', '"']))
    {
        Some(f) => Err(Error::config(format!(
            "schema.fields: `{}` has a quote in its name, which the spark engine (batch.engine = \"spark\") cannot read",
            f.name
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_state_query_unparses_to_spark_sql_and_unsafe_constructs_are_refused() {
        let schema = EventSchema::new(crate::config::default_fields()).unwrap();
        let ok = ViewDef::compile(
            "v",
            "SELECT upper(customer) AS c, SUM(amount) AS t, COUNT(*) AS n, AVG(amount / 2.0) AS a \
             FROM orders WHERE amount > 10 AND customer <> 'x' GROUP BY upper(customer)",
            "orders",
            &schema,
        )
        .await
        .unwrap();
        let input = DFSchema::try_from_qualified_schema("orders", &schema.arrow_schema()).unwrap();
        check(&ok, &input).unwrap();
        for (sql, named) in [
            (
                "SELECT customer, SUM(CAST(amount AS BIGINT) / 3) AS t FROM orders GROUP BY customer",
                "divides integers",
            ),
            (
                "SELECT reverse(customer) AS c, COUNT(*) AS n FROM orders GROUP BY reverse(customer)",
                "`reverse`",
            ),
            (
                "SELECT CAST(amount / 2.0 AS VARCHAR) AS c, COUNT(*) AS n FROM orders GROUP BY CAST(amount / 2.0 AS VARCHAR)",
                "double as text",
            ),
        ] {
            let def = ViewDef::compile("w", sql, "orders", &schema).await.unwrap();
            let err = check(&def, &input).unwrap_err().to_string();
            assert!(
                err.contains("view `w`") && err.contains(named),
                "{sql}: {err}"
            );
        }
    }

    #[test]
    fn literals_and_identifiers_are_escaped() {
        assert_eq!(ident("a`b"), "`a``b`");
        assert_eq!(literal(r"it's \ here"), r"'it\'s \\ here'");
        assert_eq!(path("amount"), r"'$[\'amount\']'");
    }
}
