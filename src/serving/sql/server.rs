//! The server as PostgreSQL clients probe it when they connect: `version()`,
//! `current_setting()`, `SHOW` of the parameters every connection shares, and `to_regtype()`.
//!
//! Clients decide what they talk to from these: SQLAlchemy (pandas' `read_sql`, Superset)
//! parses `PostgreSQL <major>.<minor>` out of `version()` and refuses to connect without it,
//! and its psycopg dialect then looks the `hstore` type up with `to_regtype()`; Grafana's data
//! source reads `current_setting('server_version_num')`. DataFusion's own
//! `version()` names DataFusion, and it has no `current_setting`. A connection's own
//! parameters (`TimeZone`, `DateStyle`, `statement_timeout`, …, which `SET` changes) are
//! answered by `SHOW` (datafusion-postgres's hook); `current_setting` names `SHOW` for them
//! instead of answering a value that may not be the connection's.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int32Array, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, Signature, TypeSignature, Volatility};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::pgwire::api::Type;

use super::catalog;

/// The PostgreSQL version lambdaflow answers as (its protocol, catalog and SQL dialect).
const PG_VERSION: &str = "16.0";

/// `server_version`, as the startup message and `SHOW` give it.
pub const SERVER_VERSION: &str = "16.0 (lambdaflow)";

/// The parameters every connection shares, by their lower-case names.
const SERVER: &[(&str, &str)] = &[
    ("server_version", SERVER_VERSION),
    ("server_version_num", "160000"),
    ("server_encoding", "UTF8"),
    ("client_encoding", "UTF8"),
    // Tables resolve in `public` whatever a client sets.
    ("search_path", "public"),
    ("standard_conforming_strings", "on"),
    ("integer_datetimes", "on"),
    ("max_identifier_length", "63"),
    ("default_transaction_read_only", "on"),
    ("transaction_read_only", "on"),
    ("lc_collate", "C"),
    ("lc_ctype", "C"),
    ("is_superuser", "off"),
    // PostgreSQL's build constant, which the JDBC driver reads from pg_settings.
    ("max_index_keys", "32"),
];

/// The parameters every connection shares: name and value.
pub fn settings() -> impl Iterator<Item = (&'static str, &'static str)> {
    SERVER.iter().copied()
}

/// The parameters `SET` changes per connection: `SHOW` answers them.
const PER_CONNECTION: &[&str] = &[
    "timezone",
    "datestyle",
    "intervalstyle",
    "statement_timeout",
    "application_name",
    "extra_float_digits",
    "bytea_output",
];

/// The value of a parameter every connection shares (any case), or `None`.
pub fn server_setting(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase();
    SERVER.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// What `version()` answers: PostgreSQL's form, which clients parse, then what runs it.
fn version() -> String {
    format!(
        "PostgreSQL {PG_VERSION} (lambdaflow {}, Apache DataFusion {}) on {}-linux, 64-bit",
        env!("CARGO_PKG_VERSION"),
        datafusion::DATAFUSION_VERSION,
        std::env::consts::ARCH,
    )
}

/// Registers `version()`, `current_setting(name [, missing_ok])` and `to_regtype(name)` in
/// `ctx`, over DataFusion's `version()`.
pub fn register(ctx: &SessionContext) {
    let version = ScalarValue::Utf8(Some(version()));
    let functions: [catalog::Function; 3] = [
        (
            "version",
            Signature::nullary(Volatility::Immutable),
            DataType::Utf8,
            Arc::new(move |_| Ok(ColumnarValue::Scalar(version.clone()))),
        ),
        (
            "current_setting",
            Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::Utf8]),
                    TypeSignature::Exact(vec![DataType::Utf8, DataType::Boolean]),
                ],
                Volatility::Stable,
            ),
            DataType::Utf8,
            catalog::over_columns(current_settings),
        ),
        (
            "to_regtype",
            Signature::exact(vec![DataType::Utf8], Volatility::Stable),
            // The OID, as `pg_type.oid` holds it.
            DataType::Int32,
            catalog::over_columns(|args: &[ArrayRef]| {
                let names = args[0].as_string::<i32>();
                let oids: Int32Array = names.iter().map(|n| n.and_then(type_oid)).collect();
                Ok(Arc::new(oids) as ArrayRef)
            }),
        ),
    ];
    catalog::register_functions(ctx, functions);
}

/// The OID of a built-in type by its name (`int4`, `_text`), or by the SQL names PostgreSQL
/// also takes (`integer`, `text[]`): what `to_regtype` answers; `None` for any other name
/// (lambdaflow has no types of its own: `hstore`, for one, is not there).
pub fn type_oid(name: &str) -> Option<i32> {
    static BUILT_IN: OnceLock<HashMap<String, i32>> = OnceLock::new();
    let names = BUILT_IN.get_or_init(|| {
        // Built-in types have OIDs below 10,000 (`FirstGenbkiObjectId`).
        (0..10_000u32)
            .filter_map(|oid| Type::from_oid(oid).map(|t| (t.name().to_string(), oid as i32)))
            .collect()
    });
    let name = name.trim().to_ascii_lowercase();
    let (base, array) = match name.strip_suffix("[]") {
        Some(base) => (base.trim_end(), true),
        None => (name.as_str(), false),
    };
    // The SQL names, and the other names PostgreSQL takes for the same types.
    let base = match base {
        "int" => "int4",
        "decimal" => "numeric",
        "char" => "bpchar",
        sql => catalog::SQL_NAMES
            .iter()
            .find(|(_, name)| *name == sql)
            .map_or(sql, |(internal, _)| internal),
    };
    match array {
        true => names.get(&format!("_{base}")).copied(),
        false => names.get(base).copied(),
    }
}

/// `current_setting(name, missing_ok)`: the parameter, NULL for an unknown one when
/// `missing_ok`, else an error naming it (for a connection's own parameter, naming `SHOW`).
fn current_setting(name: &str, missing_ok: bool) -> Result<Option<&'static str>> {
    if let Some(v) = server_setting(name) {
        return Ok(Some(v));
    }
    if PER_CONNECTION.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(DataFusionError::NotImplemented(format!(
            "current_setting('{name}'): {name} is a connection's own parameter; SHOW {name} \
             answers it"
        )));
    }
    if missing_ok {
        return Ok(None);
    }
    Err(DataFusionError::Execution(format!(
        "{UNRECOGNIZED} \"{name}\""
    )))
}

/// The start of the error of an unknown parameter, as PostgreSQL words it (SQLSTATE 42704).
pub const UNRECOGNIZED: &str = "unrecognized configuration parameter";

/// `current_setting` over a column of names (and one of `missing_ok`).
fn current_settings(args: &[ArrayRef]) -> Result<ArrayRef> {
    let names = args[0].as_string::<i32>();
    let missing_ok = |i: usize| {
        args.get(1)
            .is_some_and(|a| a.is_valid(i) && a.as_boolean().value(i))
    };
    let values = (0..names.len())
        .map(|i| match names.is_valid(i) {
            true => current_setting(names.value(i), missing_ok(i)),
            false => Ok(None),
        })
        .collect::<Result<StringArray>>()?;
    Ok(Arc::new(values))
}

/// The parameter a `SHOW` asks for and its value, when every connection shares it (a
/// connection's own parameters are datafusion-postgres's `SHOW`, which names DataFusion as
/// the server's version and knows no `server_version_num`).
pub fn shown(statement: &Statement) -> Option<(String, &'static str)> {
    let Statement::ShowVariable { variable } = statement else {
        return None;
    };
    let [name] = variable.as_slice() else {
        return None;
    };
    Some((
        name.value.to_ascii_lowercase(),
        server_setting(&name.value)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_regtype_knows_the_built_in_types_by_their_names() {
        assert_eq!(type_oid("int4"), Some(23));
        assert_eq!(type_oid("Integer"), Some(23));
        assert_eq!(type_oid("text[]"), Some(1009));
        assert_eq!(type_oid("timestamp with time zone"), Some(1184));
        assert_eq!(type_oid("hstore"), None);
    }

    /// SQLAlchemy's test of `version()` (its PostgreSQL dialect refuses a server without it).
    #[test]
    fn version_reads_as_postgresql_16() {
        let v = version();
        assert!(v.starts_with("PostgreSQL 16.0 "), "{v}");
        assert!(SERVER_VERSION.starts_with(PG_VERSION));
        assert!(v.contains("lambdaflow") && v.contains("DataFusion"), "{v}");
    }

    #[tokio::test]
    async fn current_setting_answers_the_servers_parameters_and_names_the_others() {
        let ctx = SessionContext::new();
        register(&ctx);
        let one = |sql: &'static str| {
            let ctx = ctx.clone();
            async move {
                let batches = ctx.sql(sql).await?.collect().await?;
                let c = datafusion::arrow::compute::cast(batches[0].column(0), &DataType::Utf8)?;
                Ok::<_, DataFusionError>(
                    (!c.is_null(0)).then(|| c.as_string::<i32>().value(0).to_string()),
                )
            }
        };
        let v = one("SELECT (current_setting('server_version_num')::int / 100)::text").await;
        assert_eq!(v.unwrap().as_deref(), Some("1600"));
        let v = one("SELECT current_setting('Server_Version')")
            .await
            .unwrap();
        assert_eq!(v.as_deref(), Some(SERVER_VERSION));
        let v = one("SELECT current_setting('no_such', true)")
            .await
            .unwrap();
        assert_eq!(v, None);
        let e = one("SELECT current_setting('no_such')").await.unwrap_err();
        assert!(
            e.to_string()
                .contains("unrecognized configuration parameter \"no_such\""),
            "{e}"
        );
        let e = one("SELECT current_setting('TimeZone')").await.unwrap_err();
        assert!(e.to_string().contains("SHOW TimeZone"), "{e}");
    }
}
