//! `pg_catalog` as PostgreSQL clients read it, where datafusion-pg-catalog's differs
//! ([`PgCatalog`]): `pg_settings`, the one role ([`Owner`]), the views' keys in `pg_class`,
//! `pg_index` and `pg_constraint` ([`super::keys`]), the catalog's arrays as arrays; and the
//! `search_path` subquery of Grafana's pickers.
//!
//! [`register`] adds the functions clients' catalog queries call that datafusion-pg-catalog
//! has not: descriptions (lambdaflow has no `COMMENT`: none is set), `pg_table_size` (the
//! views are in memory, not in relation files: 0 bytes on disk, as datafusion-pg-catalog's
//! `pg_relation_size` says), `pg_size_pretty`, the visibility of functions and types (all
//! are `pg_catalog`'s, on every search path), `format` and `json_build_object`.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int32Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
    new_null_array,
};
use datafusion::arrow::compute::{CastOptions, cast, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::catalog::{MemTable, SchemaProvider, Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::common::{DataFusionError, Result, exec_err, plan_err};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::functions::utils::make_scalar_function;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionImplementation, ScalarUDF, Signature, SimpleScalarUDF,
    TypeSignature, Volatility,
};
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};
use datafusion_postgres::arrow_pg::datatypes::into_pg_type;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::{
    PgCatalogContextProvider, Role,
};
use datafusion_postgres::pgwire::api::Type;

use super::keys::{Keys, Table, UserTables, WithKeys, function_oids};
use super::server;

/// `pg_catalog` as datafusion-pg-catalog serves it, but for `pg_settings`: the parameters
/// every connection shares, as `SHOW` and `current_setting` answer them (datafusion-pg-catalog's
/// holds `standard_conforming_strings` alone; the JDBC driver's getImportedKeys reads
/// `max_index_keys` there); the served tables' primary keys in `pg_class`, `pg_index` and
/// `pg_constraint` ([`WithKeys`]); and [`ARRAYS`] as arrays.
#[derive(Debug)]
pub struct PgCatalog {
    inner: Arc<dyn SchemaProvider>,
    settings: Arc<dyn TableProvider>,
    keys: Arc<Keys>,
}

impl PgCatalog {
    /// Over `inner`, datafusion-pg-catalog's `pg_catalog`, with the served tables' primary
    /// keys `keys` finds ([`keys`](super::keys)).
    pub async fn over(inner: Arc<dyn SchemaProvider>, keys: Arc<Keys>) -> Result<PgCatalog> {
        let Some(theirs) = inner.table("pg_settings").await? else {
            return plan_err!("pg_catalog has no pg_settings");
        };
        // Their `bool_val` is PostgreSQL's `boot_val` (psql's `\dconfig` reads it).
        let schema = theirs.schema();
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| match f.name().as_str() {
                "bool_val" => f.as_ref().clone().with_name("boot_val"),
                _ => f.as_ref().clone(),
            })
            .collect();
        let schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
        let rows = server::settings().count();
        let each = |v: fn(&'static str, &'static str) -> &'static str| {
            Arc::new(
                server::settings()
                    .map(|(n, s)| Some(v(n, s)))
                    .collect::<StringArray>(),
            ) as ArrayRef
        };
        // Each is fixed by the server, its value built in: PostgreSQL's `internal` context
        // and `default` source.
        let columns = schema
            .fields()
            .iter()
            .map(|f| match f.name().as_str() {
                "name" => each(|n, _| n),
                "setting" | "reset_val" | "boot_val" => each(|_, s| s),
                "vartype" => each(|_, s| match s {
                    "on" | "off" => "bool",
                    s if s.parse::<i64>().is_ok() => "integer",
                    _ => "string",
                }),
                "context" => each(|_, _| "internal"),
                "source" => each(|_, _| "default"),
                "category" => each(|_, _| "Preset Options"),
                _ => new_null_array(f.data_type(), rows),
            })
            .collect();
        // pg_proc's functions, read now: a scan of pg_type reads them ([`function_oids`]),
        // and may run inside another executor (a rewrite that reads a catalog table).
        keys.procedures(&SessionContext::new().state()).await?;
        keys.descriptions(&SessionContext::new().state()).await?;
        let settings = MemTable::try_new(
            Arc::clone(&schema),
            vec![vec![RecordBatch::try_new(schema, columns)?]],
        )?;
        Ok(PgCatalog {
            inner,
            settings: Arc::new(settings),
            keys,
        })
    }
}

#[async_trait]
impl SchemaProvider for PgCatalog {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        names.extend(OURS.map(String::from));
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        match name {
            "pg_settings" => Ok(Some(Arc::clone(&self.settings))),
            "pg_class" | "pg_index" | "pg_constraint" | "pg_attribute" | "pg_depend"
            | "pg_description" => {
                let Some(inner) = self.inner.table(name).await? else {
                    return Ok(None);
                };
                let (inner, table) = match name {
                    "pg_class" => (Arc::new(with_class_columns(inner)) as _, Table::Class),
                    "pg_index" => (with_arrays(inner), Table::Index),
                    "pg_attribute" => (with_arrays(inner), Table::Attribute),
                    "pg_depend" | "pg_description" => (inner, Table::Catalogs),
                    _ => (with_arrays(inner), Table::Constraint),
                };
                Ok(Some(Arc::new(WithKeys {
                    inner,
                    table,
                    keys: Arc::clone(&self.keys),
                })))
            }
            "pg_stat_user_tables" => Ok(self.inner.table(name).await?.map(|inner| {
                Arc::new(UserTables {
                    schema: inner.schema(),
                    keys: Arc::clone(&self.keys),
                }) as Arc<dyn TableProvider>
            })),
            AVAILABLE_EXTENSIONS => Ok(self
                .inner
                .table("pg_extension")
                .await?
                .map(|inner| Arc::new(available_extensions(inner)) as Arc<dyn TableProvider>)),
            PARAMETER_ACL | USER_MAPPINGS => {
                let (oid, text) = (DataType::Int32, DataType::Utf8);
                let texts = DataType::new_list(DataType::Utf8, true);
                let columns = match name {
                    // No parameter is granted to anyone: the server's are fixed (psql's
                    // `\\dconfig+` reads their privileges here, PostgreSQL 15's table).
                    PARAMETER_ACL => vec![("oid", oid), ("parname", text), ("paracl", texts)],
                    // No foreign server, so no user mapping (psql's `\\deu+`).
                    _ => vec![
                        ("umid", oid.clone()),
                        ("srvid", oid.clone()),
                        ("srvname", text.clone()),
                        ("umuser", oid),
                        ("usename", text),
                        ("umoptions", texts),
                    ],
                };
                let schema = Schema::new(
                    (columns.into_iter())
                        .map(|(c, t)| Field::new(c, t.clone(), t.is_nested()))
                        .collect::<Vec<_>>(),
                );
                Ok(Some(Arc::new(MemTable::try_new(
                    Arc::new(schema),
                    vec![vec![]],
                )?)))
            }
            "pg_collation" => Ok(self.inner.table(name).await?.map(|inner| {
                // PostgreSQL 17's name of the column; 16's, which lambdaflow answers as (psql's
                // `\\dO` asks for it), is `colliculocale`.
                Arc::new(renamed(inner, "colllocale", "colliculocale")) as Arc<dyn TableProvider>
            })),
            _ => Ok(self
                .inner
                .table(name)
                .await?
                .map(|inner| function_oids(with_arrays(inner), Arc::clone(&self.keys)))),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        OURS.contains(&name) || self.inner.table_exist(name)
    }
}

/// The keys (and functions) of `ctx`'s `pg_catalog`, when it is lambdaflow's.
pub fn keys_of(ctx: &SessionContext) -> Option<Arc<Keys>> {
    let schema = ctx.catalog(super::DATABASE)?.schema("pg_catalog")?;
    schema
        .downcast_ref::<PgCatalog>()
        .map(|c| Arc::clone(&c.keys))
}

/// The one role `pg_roles` lists (psql's `\du`): `postgres` ([`OWNER`]), which the catalog names as the
/// owner of every table (`\dt`'s Owner) and `current_user` answers. Any user name logs in
/// (with `serving.token` as the password when one is set) as this role; it can log in, and
/// is no superuser (`is_superuser` is `off`: the server only reads).
#[derive(Debug, Clone)]
pub struct Owner;

/// [`Owner`]'s name.
const OWNER: &str = "postgres";

#[async_trait]
impl PgCatalogContextProvider for Owner {
    async fn roles(&self) -> Vec<String> {
        vec![OWNER.to_string()]
    }

    async fn role(&self, name: &str) -> Option<Role> {
        (name == OWNER).then(|| Role {
            name: OWNER.to_string(),
            is_superuser: false,
            can_login: true,
            can_create_db: false,
            can_create_role: false,
            can_create_user: false,
            can_replication: false,
            grants: vec![],
            inherited_roles: vec![],
        })
    }
}

/// Registers the catalog functions of the module's documentation in `ctx`.
pub fn register(ctx: &SessionContext) {
    let any = |n: &[usize]| {
        Signature::one_of(
            n.iter().map(|&n| TypeSignature::Any(n)).collect(),
            Volatility::Stable,
        )
    };
    let constant = |v: ScalarValue| -> ScalarFunctionImplementation {
        Arc::new(move |_| Ok(ColumnarValue::Scalar(v.clone())))
    };
    let no_comment = constant(ScalarValue::Utf8(None));
    let functions: [Function; 12] = [
        (
            "col_description",
            any(&[2]),
            DataType::Utf8,
            Arc::clone(&no_comment),
        ),
        ("shobj_description", any(&[2]), DataType::Utf8, no_comment),
        // NULL for no expression (an index without a predicate: Metabase reads its indexes so);
        // datafusion-pg-catalog's gives '' for every one, and it cannot decompile the others.
        (
            "pg_get_expr",
            any(&[2, 3]),
            DataType::Utf8,
            over_columns(|args: &[ArrayRef]| {
                let none: StringArray = (0..args[0].len())
                    .map(|i| args[0].is_valid(i).then_some(""))
                    .collect();
                Ok(Arc::new(none) as ArrayRef)
            }),
        ),
        // No column takes its values from a sequence: none is serial.
        (
            "pg_get_serial_sequence",
            any(&[2]),
            DataType::Utf8,
            constant(ScalarValue::Utf8(None)),
        ),
        (
            "format_type",
            any(&[2]),
            DataType::Utf8,
            over_columns(super::procedures::format_type),
        ),
        // No view has a definition in SQL: the served views are tables (their definition is
        // lambdaflow's view file), `information_schema`'s are DataFusion's, of no SQL text.
        (
            "pg_get_viewdef",
            any(&[1, 2]),
            DataType::Utf8,
            constant(ScalarValue::Utf8(None)),
        ),
        // No function has a body in SQL (pg_proc's rows are PostgreSQL's built-in functions,
        // in C or internal: their `prosqlbody` is NULL); psql's `\\df+` reads it.
        (
            "pg_get_function_sqlbody",
            any(&[1]),
            DataType::Utf8,
            constant(ScalarValue::Utf8(None)),
        ),
        (
            "format",
            Signature::variadic_any(Volatility::Stable),
            DataType::Utf8,
            over_columns(format),
        ),
        // An identifier quoted where PostgreSQL quotes one (`"Host"`, which
        // datafusion-pg-catalog's leaves bare), and a literal (psql's `\\des+`).
        (
            "quote_ident",
            any(&[1]),
            DataType::Utf8,
            over_texts::<_, StringArray>(super::keys::quoted),
        ),
        (
            "quote_literal",
            any(&[1]),
            DataType::Utf8,
            over_texts::<_, StringArray>(literal),
        ),
        (
            "json_build_object",
            Signature::variadic_any(Volatility::Stable),
            DataType::Utf8,
            over_columns(json_build_object),
        ),
        (
            "pg_size_pretty",
            Signature::uniform(1, vec![DataType::Int64], Volatility::Immutable),
            DataType::Utf8,
            over_columns(|args: &[ArrayRef]| {
                let sizes = args[0].as_primitive::<Int64Type>();
                let pretty: StringArray = sizes.iter().map(|s| s.map(size_pretty)).collect();
                Ok(Arc::new(pretty) as ArrayRef)
            }),
        ),
    ];
    // The database's encoding (UTF8), and the encodings by PostgreSQL's numbers
    // (datafusion-pg-catalog's writes UTF8 as
    // `UTF-8`, which psql's `\\l` shows; it has no `pg_char_to_encoding`, which `\\dO` calls).
    let encodings: [Function; 3] = [
        (
            "getdatabaseencoding",
            Signature::exact(vec![], Volatility::Stable),
            DataType::Utf8,
            constant(ScalarValue::Utf8(Some(ENCODINGS[6].into()))),
        ),
        (
            "pg_encoding_to_char",
            any(&[1]),
            DataType::Utf8,
            over_columns(|args: &[ArrayRef]| {
                let ids = cast(&args[0], &DataType::Int64)?;
                let names: StringArray = ids
                    .as_primitive::<Int64Type>()
                    .iter()
                    .map(|id| id.map(|id| usize::try_from(id).ok().and_then(|i| ENCODINGS.get(i))))
                    .map(|name| name.map(|n| n.copied().unwrap_or("")))
                    .collect();
                Ok(Arc::new(names) as ArrayRef)
            }),
        ),
        (
            "pg_char_to_encoding",
            any(&[1]),
            DataType::Int32,
            over_texts::<_, Int32Array>(encoding_id),
        ),
    ];
    // The objects of pg_catalog are on every search path (PostgreSQL searches it first).
    let visible = VISIBLE.map(|name| -> Function {
        (
            name,
            any(&[1]),
            DataType::Boolean,
            constant(ScalarValue::Boolean(Some(true))),
        )
    });
    // The views are in memory, in no relation file: no byte on disk.
    let sizes = SIZES.map(|name| -> Function {
        (
            name,
            any(&[1]),
            DataType::Int64,
            constant(ScalarValue::Int64(Some(0))),
        )
    });
    // The one tablespace is the default one, whose location PostgreSQL gives as ''.
    let location: Function = (
        "pg_tablespace_location",
        any(&[1]),
        DataType::Utf8,
        constant(ScalarValue::Utf8(Some(String::new()))),
    );
    register_functions(
        ctx,
        functions
            .into_iter()
            .chain(visible)
            .chain(sizes)
            .chain(encodings)
            .chain([location]),
    );
}

/// PostgreSQL's encodings, by their numbers (`pg_encoding_to_char`).
const ENCODINGS: [&str; 42] = [
    "SQL_ASCII",
    "EUC_JP",
    "EUC_CN",
    "EUC_KR",
    "EUC_TW",
    "EUC_JIS_2004",
    "UTF8",
    "MULE_INTERNAL",
    "LATIN1",
    "LATIN2",
    "LATIN3",
    "LATIN4",
    "LATIN5",
    "LATIN6",
    "LATIN7",
    "LATIN8",
    "LATIN9",
    "LATIN10",
    "WIN1256",
    "WIN1258",
    "WIN866",
    "WIN874",
    "KOI8R",
    "WIN1251",
    "WIN1252",
    "ISO_8859_5",
    "ISO_8859_6",
    "ISO_8859_7",
    "ISO_8859_8",
    "WIN1250",
    "WIN1253",
    "WIN1254",
    "WIN1255",
    "WIN1257",
    "KOI8U",
    "SJIS",
    "BIG5",
    "GBK",
    "UHC",
    "GB18030",
    "JOHAB",
    "SHIFT_JIS_2004",
];

/// The number of the encoding `name` names as `pg_char_to_encoding` reads it: any case, with
/// or without its punctuation (`utf-8`), or `unicode`; -1 for none.
fn encoding_id(name: &str) -> i32 {
    let clean = |n: &str| -> String {
        n.chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let name = match clean(name) {
        n if n == "unicode" => "utf8".to_string(),
        n => n,
    };
    ENCODINGS
        .iter()
        .position(|e| clean(e) == name)
        .map_or(-1, |i| i as i32)
}

/// The visibility functions of pg_catalog's objects (psql's `\df`, `\dT`, `\do`, `\dF`…).
const VISIBLE: [&str; 12] = [
    "pg_function_is_visible",
    "pg_type_is_visible",
    "pg_collation_is_visible",
    "pg_operator_is_visible",
    "pg_opclass_is_visible",
    "pg_opfamily_is_visible",
    "pg_conversion_is_visible",
    "pg_statistics_obj_is_visible",
    "pg_ts_config_is_visible",
    "pg_ts_dict_is_visible",
    "pg_ts_parser_is_visible",
    "pg_ts_template_is_visible",
];

/// The size functions (psql's `\dt+`, `\di+`, `\l+`, `\db+`).
const SIZES: [&str; 4] = [
    "pg_table_size",
    "pg_indexes_size",
    "pg_database_size",
    "pg_tablespace_size",
];

/// PostgreSQL's `format(fmt, arg, …)` per row: `%s` an argument as text (NULL as nothing),
/// `%I` as an identifier (quoted where PostgreSQL quotes one), `%L` as a literal (NULL as
/// `NULL`), `%%` a `%`; `%n$s` the n-th argument. Metabase's sync writes a table's name so.
fn format(args: &[ArrayRef]) -> Result<ArrayRef> {
    let Some((template, values)) = args.split_first() else {
        return plan_err!("format() takes a format string");
    };
    let template = cast(template, &DataType::Utf8)?;
    let template = template.as_string::<i32>();
    let values = values
        .iter()
        .map(|v| match v.data_type() {
            // PostgreSQL writes a boolean `t` or `f`.
            DataType::Boolean => Ok(Arc::new(
                v.as_boolean()
                    .iter()
                    .map(|b| b.map(|b| if b { "t" } else { "f" }))
                    .collect::<StringArray>(),
            ) as ArrayRef),
            _ => cast(v, &DataType::Utf8),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let values: Vec<&StringArray> = values.iter().map(|v| v.as_string::<i32>()).collect();
    let mut out = datafusion::arrow::array::StringBuilder::new();
    for row in 0..template.len() {
        if template.is_null(row) {
            out.append_null();
            continue;
        }
        let (mut text, mut next) = (String::new(), 0);
        let mut chars = template.value(row).chars().peekable();
        while let Some(c) = chars.next() {
            if c != '%' {
                text.push(c);
                continue;
            }
            if chars.peek() == Some(&'%') {
                chars.next();
                text.push('%');
                continue;
            }
            let mut digits = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                digits.push(*d);
                chars.next();
            }
            let at = match (digits.is_empty(), chars.peek()) {
                (false, Some('$')) => {
                    chars.next();
                    digits.parse::<usize>().unwrap_or(0).checked_sub(1)
                }
                (true, _) => Some(next),
                (false, _) => None,
            };
            let (Some(at), Some(kind)) = (at, chars.next()) else {
                return exec_err!(
                    "format(): unrecognized conversion in {:?}",
                    template.value(row)
                );
            };
            let Some(value) = values.get(at) else {
                return exec_err!("format(): too few arguments for {:?}", template.value(row));
            };
            next = at + 1;
            let value = value.is_valid(row).then(|| value.value(row));
            match (kind, value) {
                ('s', v) => text.push_str(v.unwrap_or("")),
                ('I', Some(v)) => text.push_str(&super::keys::quoted(v)),
                ('I', None) => return exec_err!("format(): NULL cannot be an identifier (%I)"),
                ('L', Some(v)) => text.push_str(&literal(v)),
                ('L', None) => text.push_str("NULL"),
                (k, _) => {
                    return exec_err!("format(): unrecognized conversion type specifier \"{k}\"");
                }
            }
        }
        out.append_value(text);
    }
    Ok(Arc::new(out.finish()))
}

/// `json_build_object(key, value, …)`: per row, a JSON object of each key (as text) and its
/// value (a JSON number, boolean or null where the value is one, else its text), in order.
fn json_build_object(args: &[ArrayRef]) -> Result<ArrayRef> {
    if args.len() % 2 == 1 {
        return plan_err!(
            "json_build_object: an odd number of arguments; it takes keys and values"
        );
    }
    let rows = args.first().map_or(1, |a| a.len());
    let mut objects = datafusion::arrow::array::StringBuilder::new();
    for row in 0..rows {
        let mut object = serde_json::Map::new();
        for pair in args.chunks(2) {
            let key = ScalarValue::try_from_array(&pair[0], row)?;
            if key.is_null() {
                return plan_err!("json_build_object: a key is NULL");
            }
            let value = match ScalarValue::try_from_array(&pair[1], row)? {
                v if v.is_null() => serde_json::Value::Null,
                ScalarValue::Boolean(Some(b)) => b.into(),
                v if v.data_type().is_integer() => match v.cast_to(&DataType::Int64)? {
                    ScalarValue::Int64(Some(i)) => i.into(),
                    _ => v.to_string().into(),
                },
                v if v.data_type().is_floating() => match v.cast_to(&DataType::Float64)? {
                    ScalarValue::Float64(Some(f)) => f.into(),
                    _ => v.to_string().into(),
                },
                v => v.to_string().into(),
            };
            object.insert(key.to_string(), value);
        }
        objects.append_value(serde_json::Value::Object(object).to_string());
    }
    Ok(Arc::new(objects.finish()))
}

/// `v` as a string literal, as PostgreSQL's `quote_literal` (and `format()`'s `%L`) writes
/// it: quotes doubled, and with a backslash, an escape string whose backslashes are doubled
/// (`a\b` is `E'a\\b'`).
fn literal(v: &str) -> String {
    if v.contains('\\') {
        format!("E'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", v.replace('\'', "''"))
    }
}

/// A function of one argument: `f` of each of its values as text (NULL for NULL), in an
/// array of type `A`.
fn over_texts<T, A>(f: fn(&str) -> T) -> ScalarFunctionImplementation
where
    T: 'static,
    A: Array + FromIterator<Option<T>> + 'static,
{
    over_columns(move |args: &[ArrayRef]| {
        let texts = cast(&args[0], &DataType::Utf8)?;
        let out: A = texts.as_string::<i32>().iter().map(|v| v.map(f)).collect();
        Ok(Arc::new(out) as ArrayRef)
    })
}

/// A SQL function: its name, signature, return type, and what it computes.
pub type Function = (
    &'static str,
    Signature,
    DataType,
    ScalarFunctionImplementation,
);

/// Registers `functions` in `ctx`.
pub fn register_functions(ctx: &SessionContext, functions: impl IntoIterator<Item = Function>) {
    for (name, signature, returns, f) in functions {
        ctx.register_udf(ScalarUDF::from(SimpleScalarUDF::new_with_signature(
            name, signature, returns, f,
        )));
    }
}

/// What a function computes over columns of its arguments (for scalar arguments, a scalar).
pub fn over_columns(
    f: impl Fn(&[ArrayRef]) -> Result<ArrayRef> + Send + Sync + 'static,
) -> ScalarFunctionImplementation {
    Arc::new(make_scalar_function(f, vec![]))
}

/// A size in bytes as PostgreSQL's `pg_size_pretty` writes it: in the largest unit below
/// which it stays under 10,240 bytes or 20,480 of the unit, rounded half away from zero.
fn size_pretty(size: i64) -> String {
    const UNITS: [&str; 6] = ["bytes", "kB", "MB", "GB", "TB", "PB"];
    // `size` in the current unit, with one more bit than the unit once past bytes (to round).
    let mut size = size;
    for (i, unit) in UNITS.iter().enumerate() {
        let limit: u64 = if i == 0 { 10 * 1024 } else { 20 * 1024 - 1 };
        if i + 1 == UNITS.len() || size.unsigned_abs() < limit {
            if i > 0 {
                size = (size + size.signum()) / 2;
            }
            return format!("{size} {unit}");
        }
        size /= if i == 0 { 1 << 9 } else { 1 << 10 };
    }
    unreachable!("the last unit returns")
}

/// PostgreSQL's name of a built-in type as `format_type` and `information_schema` give it,
/// for the types whose SQL name is not their internal one (`int8` is `bigint`).
pub const SQL_NAMES: &[(&str, &str)] = &[
    ("int2", "smallint"),
    ("int4", "integer"),
    ("int8", "bigint"),
    ("bool", "boolean"),
    ("float4", "real"),
    ("float8", "double precision"),
    ("varchar", "character varying"),
    ("bpchar", "character"),
    ("timestamp", "timestamp without time zone"),
    ("timestamptz", "timestamp with time zone"),
    ("time", "time without time zone"),
    ("timetz", "time with time zone"),
];

/// What `information_schema.columns.data_type` says of a column of Arrow type `t`: the
/// PostgreSQL type the wire protocol sends it as, by its SQL name; as PostgreSQL says,
/// `ARRAY` for an array and `USER-DEFINED` for a type that is not built in (a struct).
pub fn data_type_name(t: &DataType) -> String {
    match into_pg_type(t) {
        // A built-in array type's internal name is its element's with `_` before it (`_int8`).
        Ok(pg) if pg.name().starts_with('_') => "ARRAY".into(),
        Ok(pg) if Type::from_oid(pg.oid()).as_ref() == Some(&pg) => sql_name(&pg).to_string(),
        _ => "USER-DEFINED".into(),
    }
}

fn sql_name(t: &Type) -> &str {
    SQL_NAMES
        .iter()
        .find(|(internal, _)| *internal == t.name())
        .map_or(t.name(), |(_, sql)| sql)
}

/// A catalog table read through a change of its rows: datafusion-pg-catalog's tables with
/// [`ARRAYS`] as arrays, DataFusion's `information_schema.columns`
/// as PostgreSQL's ([`super::information_schema`]). Catalog tables hold a few hundred rows: a
/// scan reads the whole table.
pub struct Mapped {
    pub inner: Arc<dyn TableProvider>,
    pub schema: SchemaRef,
    pub map: RowMap,
}

/// How [`Mapped`] changes a batch of rows into its schema.
pub type RowMap = Arc<dyn Fn(RecordBatch, &SchemaRef) -> Result<RecordBatch> + Send + Sync>;

impl std::fmt::Debug for Mapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapped")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl TableProvider for Mapped {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batches = every_row(self.inner.as_ref(), state)
            .await?
            .into_iter()
            .map(|b| (self.map)(b, &self.schema))
            .collect::<Result<Vec<_>>>()?;
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            self.schema(),
            projection.cloned(),
        )?)
    }
}

/// `inner` with its column `from` named `to`.
fn renamed(inner: Arc<dyn TableProvider>, from: &str, to: &str) -> Mapped {
    let theirs = inner.schema();
    let fields: Vec<Field> = theirs
        .fields()
        .iter()
        .map(|f| match f.name() == from {
            true => f.as_ref().clone().with_name(to),
            false => f.as_ref().clone(),
        })
        .collect();
    Mapped {
        inner,
        schema: Arc::new(Schema::new_with_metadata(fields, theirs.metadata().clone())),
        map: Arc::new(|b, schema| {
            Ok(RecordBatch::try_new(
                Arc::clone(schema),
                b.columns().to_vec(),
            )?)
        }),
    }
}

/// Every row of a catalog table.
pub async fn every_row(t: &dyn TableProvider, state: &dyn Session) -> Result<Vec<RecordBatch>> {
    collect(t.scan(state, None, &[], None).await?, state.task_ctx()).await
}

/// The extensions that may be installed (DBeaver lists them): here those installed, which
/// `pg_extension` holds — lambdaflow installs no other.
const AVAILABLE_EXTENSIONS: &str = "pg_available_extensions";

/// The privileges granted on the server's parameters.
const PARAMETER_ACL: &str = "pg_parameter_acl";

/// The user mappings of foreign servers (PostgreSQL's view over `pg_user_mapping`).
const USER_MAPPINGS: &str = "pg_user_mappings";

/// The tables of `pg_catalog` that lambdaflow makes, beside datafusion-pg-catalog's.
const OURS: [&str; 3] = [AVAILABLE_EXTENSIONS, PARAMETER_ACL, USER_MAPPINGS];

/// [`AVAILABLE_EXTENSIONS`] over `pg_extension`: each extension by name, its version as the
/// default and the installed one, no comment.
fn available_extensions(extensions: Arc<dyn TableProvider>) -> Mapped {
    let text = |name: &str| Field::new(name, DataType::Utf8, true);
    Mapped {
        inner: extensions,
        schema: Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            text("default_version"),
            text("installed_version"),
            text("comment"),
        ])),
        map: Arc::new(|b, schema| {
            let column = |name: &str| match b.column_by_name(name) {
                Some(c) => Ok(cast(c, &DataType::Utf8)?),
                None => exec_err!("pg_catalog.pg_extension: no column {name}"),
            };
            let (name, version) = (column("extname")?, column("extversion")?);
            let comment = new_null_array(&DataType::Utf8, b.num_rows());
            Ok(RecordBatch::try_new(
                Arc::clone(schema),
                vec![name, Arc::clone(&version), version, comment],
            )?)
        }),
    }
}

/// `n` access privileges that let [`OWNER`] read and nothing else, as granted by itself
/// (`{postgres=r/postgres}`): what the server allows on a served table and its columns.
pub fn select_only(n: usize) -> Result<ArrayRef> {
    let acl = ScalarValue::new_list_nullable(
        &[ScalarValue::from(format!("{OWNER}=r/{OWNER}"))],
        &DataType::Utf8,
    );
    ScalarValue::List(acl).to_array_of_size(n)
}

/// `pg_class`'s columns that datafusion-pg-catalog has not: `reloptions`, NULL (no storage
/// option; psql's `\d+` and SQLAlchemy's reflection of indexes read it), and `relacl`, the
/// privileges on the relation: [`Owner`] may read (`r`, SELECT), as granted by itself (the
/// JDBC driver's getTablePrivileges reads it; NULL would be the owner's every privilege).
const CLASS_COLUMNS: [&str; 2] = ["reloptions", "relacl"];

/// datafusion-pg-catalog's `pg_class` with [`CLASS_COLUMNS`] (`text[]`) after its own.
fn with_class_columns(inner: Arc<dyn TableProvider>) -> Mapped {
    let theirs = inner.schema();
    let text_array =
        |name: &str| Field::new_list(name, Field::new_list_field(DataType::Utf8, true), true);
    let fields: Vec<Field> = theirs
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .chain(
            CLASS_COLUMNS
                .iter()
                .filter(|c| theirs.column_with_name(c).is_none())
                .map(|c| text_array(c)),
        )
        .collect();
    Mapped {
        inner,
        schema: Arc::new(Schema::new_with_metadata(fields, theirs.metadata().clone())),
        map: Arc::new(|b, schema| {
            let mut columns = b.columns().to_vec();
            for f in &schema.fields()[columns.len()..] {
                columns.push(match f.name().as_str() {
                    "relacl" => select_only(b.num_rows())?,
                    _ => new_null_array(f.data_type(), b.num_rows()),
                });
            }
            Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
        }),
    }
}

/// PostgreSQL's array columns that datafusion-pg-catalog holds as text (`[1,2]`, `1 2`,
/// `{a,b}`, `['a', 'b']`), with their elements' type: clients index, unnest or join them.
/// - Numbers: `pg_constraint`'s column numbers (`int2[]`; the JDBC driver's getImportedKeys
///   reads `con.conkey[pos.n]`); `pg_index`'s `int2vector`s and `oidvector`s (SQLAlchemy's
///   reflection of keys and indexes reads `unnest(indkey)`, `unnest(indclass)`), whose
///   subscripts count from 0 as in PostgreSQL ([`super::syntax::planned`]; the JDBC driver's
///   getIndexInfo reads `indoption` under another name, counted from 1 here: the element
///   before, or NULL, where every index here has `0`, ascending, for every column, and NULL
///   reads as ascending too); the `oid[]` columns (`pg_proc.proallargtypes`…) with `int8`
///   elements, which the JDBC driver reads as it reads oids (`Long[]`, its getFunctionColumns).
///   `pg_proc.proargtypes`, an `oidvector`, stays text as PostgreSQL writes it (`114 25`),
///   which getFunctionColumns splits.
/// - Text: the access privileges (`aclitem[]`: psql's `\dp`, `\dn+`, `\db+` write them with
///   `array_to_string`), options and settings (`text[]`), `pg_proc`'s argument names and modes.
const ARRAYS: &[(&str, DataType)] = &[
    ("conkey", DataType::Int16),
    ("confkey", DataType::Int16),
    ("confdelsetcols", DataType::Int16),
    ("indkey", DataType::Int16),
    ("indoption", DataType::Int16),
    ("indcollation", DataType::Int32),
    ("indclass", DataType::Int32),
    ("proallargtypes", DataType::Int64),
    ("extconfig", DataType::Int64),
    ("protrftypes", DataType::Int64),
    ("polroles", DataType::Int64),
    ("conpfeqop", DataType::Int64),
    ("conppeqop", DataType::Int64),
    ("conffeqop", DataType::Int64),
    ("conexclop", DataType::Int64),
    ("stxkeys", DataType::Int16),
    ("tgattr", DataType::Int16),
    ("partattrs", DataType::Int16),
    ("partclass", DataType::Int32),
    ("partcollation", DataType::Int32),
    ("proargnames", DataType::Utf8),
    ("proargmodes", DataType::Utf8),
    ("proconfig", DataType::Utf8),
    ("proacl", DataType::Utf8),
    ("attacl", DataType::Utf8),
    ("attoptions", DataType::Utf8),
    ("attfdwoptions", DataType::Utf8),
    ("setconfig", DataType::Utf8),
    ("defaclacl", DataType::Utf8),
    ("fdwacl", DataType::Utf8),
    ("fdwoptions", DataType::Utf8),
    ("srvacl", DataType::Utf8),
    ("srvoptions", DataType::Utf8),
    ("ftoptions", DataType::Utf8),
    ("lanacl", DataType::Utf8),
    ("lomacl", DataType::Utf8),
    ("nspacl", DataType::Utf8),
    ("spcacl", DataType::Utf8),
    ("spcoptions", DataType::Utf8),
    ("typacl", DataType::Utf8),
    ("umoptions", DataType::Utf8),
    ("initprivs", DataType::Utf8),
    ("paracl", DataType::Utf8),
    ("extcondition", DataType::Utf8),
    ("evttags", DataType::Utf8),
    ("stxkind", DataType::Utf8),
    ("subpublications", DataType::Utf8),
];

/// The elements' type of the catalog's array column `name`: one of [`ARRAYS`] or of
/// [`CLASS_COLUMNS`].
pub fn array_element(name: &str) -> Option<DataType> {
    match ARRAYS.iter().find(|(n, _)| *n == name) {
        Some((_, t)) => Some(t.clone()),
        None => CLASS_COLUMNS.contains(&name).then_some(DataType::Utf8),
    }
}

/// PostgreSQL's type of the catalog column `f` when it is one of [`ARRAYS`] held as
/// something else.
fn array_type(f: &Field) -> Option<DataType> {
    let (_, element) = ARRAYS.iter().find(|(name, _)| name == f.name())?;
    let t = DataType::new_list(element.clone(), true);
    (f.data_type() != &t).then_some(t)
}

/// A catalog table with its [`ARRAYS`] as arrays; the table itself when it has none.
pub fn with_arrays(inner: Arc<dyn TableProvider>) -> Arc<dyn TableProvider> {
    let theirs = inner.schema();
    if !theirs.fields().iter().any(|f| array_type(f).is_some()) {
        return inner;
    }
    let fields: Vec<Field> = theirs
        .fields()
        .iter()
        .map(|f| match array_type(f) {
            Some(t) => Field::new(f.name(), t, true),
            None => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Mapped {
        inner,
        schema: Arc::new(Schema::new_with_metadata(fields, theirs.metadata().clone())),
        map: Arc::new(arrays),
    })
}

/// Rows with [`ARRAYS`] parsed from their text ([`elements`]).
fn arrays(b: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = b
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                return Ok(Arc::clone(c));
            }
            let text = cast(c, &DataType::Utf8)?;
            let mut list = ListBuilder::new(StringBuilder::new());
            for t in text.as_string::<i32>() {
                match t {
                    None => list.append_null(),
                    Some(t) => {
                        for e in elements(t) {
                            list.values().append_value(e);
                        }
                        list.append(true);
                    }
                }
            }
            let options = CastOptions {
                safe: false,
                ..Default::default()
            };
            cast_with_options(&list.finish(), f.data_type(), &options)
                .map_err(|e| DataFusionError::Execution(format!("pg_catalog's {}: {e}", f.name())))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// The elements of an array written as text: PostgreSQL's `{a,b}` (an element in double
/// quotes may hold a comma), a list `[1, 2]` or `['a', 'b']`, or a vector `1 2`.
pub fn elements(t: &str) -> Vec<String> {
    let t = t.trim();
    let Some(inner) = t
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .or_else(|| t.strip_prefix('[').and_then(|t| t.strip_suffix(']')))
    else {
        return t.split_whitespace().map(str::to_string).collect();
    };
    let (mut out, mut e, mut quote) = (Vec::new(), String::new(), None);
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (_, '\\') => e.extend(chars.next()),
            (Some(_), c) => e.push(c),
            (None, '"' | '\'') => quote = Some(c),
            (None, ',') => out.push(std::mem::take(&mut e).trim().to_string()),
            (None, c) => e.push(c),
        }
    }
    if !inner.trim().is_empty() {
        out.push(e.trim().to_string());
    }
    out
}

/// Grafana's subquery of the schemas on the `search_path` (in its table and column pickers),
/// which DataFusion cannot plan (`user`, and a function's array as a table in FROM).
/// datafusion-postgres replaces it with `''` — no schema, so the table picker qualifies every
/// table and the column picker lists no column — where PostgreSQL gives `public`.
const GRAFANA_SEARCH_PATH: &str = r#"SELECT
            CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
        FROM
            generate_series(
                array_lower(string_to_array(current_setting('search_path'),','),1),
                array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s"#;

/// `sql` with Grafana's `search_path` subquery answered: the schemas on the server's
/// `search_path`, as a list of literals (`IN (SELECT …)` becomes `IN ('public')`). Other
/// queries are returned as they are; the rest of the text is untouched.
pub fn client_query(sql: &str) -> Cow<'_, str> {
    if !sql.contains("search_path") {
        return Cow::Borrowed(sql);
    }
    static PATTERN: OnceLock<Vec<Token>> = OnceLock::new();
    let pattern = PATTERN.get_or_init(|| {
        tokens(GRAFANA_SEARCH_PATH)
            .unwrap_or_default()
            .into_iter()
            .map(|t| t.token)
            .collect()
    });
    let Some(input) = tokens(sql) else {
        return Cow::Borrowed(sql);
    };
    let schemas = server::server_setting("search_path")
        .unwrap_or("public")
        .split(',')
        .map(|s| format!("'{}'", s.trim().replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ");
    let mut out = String::with_capacity(sql.len());
    let mut copied = 0;
    let mut i = 0;
    while i + pattern.len() <= input.len() {
        if input[i..i + pattern.len()]
            .iter()
            .zip(pattern)
            .all(|(a, b)| a.token == *b)
        {
            let start = byte_at(sql, input[i].span.start);
            let end = input
                .get(i + pattern.len())
                .map_or(sql.len(), |next| byte_at(sql, next.span.start));
            out.push_str(&sql[copied..start]);
            out.push_str(&schemas);
            // What followed the subquery (spaces and the closing parenthesis) stays.
            out.push_str(trailing_space(&sql[start..end]));
            copied = end;
            i += pattern.len();
        } else {
            i += 1;
        }
    }
    if copied == 0 {
        return Cow::Borrowed(sql);
    }
    out.push_str(&sql[copied..]);
    Cow::Owned(out)
}

/// The tokens of `sql` but white space, with where each starts; `None` when it does not
/// tokenize (DataFusion then reports the error).
fn tokens(sql: &str) -> Option<Vec<TokenWithSpan>> {
    let all = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .ok()?;
    Some(
        all.into_iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .collect(),
    )
}

/// The white space at the end of `s`.
fn trailing_space(s: &str) -> &str {
    &s[s.trim_end().len()..]
}

/// The byte offset in `sql` of a tokenizer location (line and column in characters, from 1).
fn byte_at(sql: &str, at: Location) -> usize {
    let mut line = 1;
    let mut column = 1;
    for (i, c) in sql.char_indices() {
        if line == at.line && column == at.column {
            return i;
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    sql.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Fields, TimeUnit};

    /// PostgreSQL 15's answers to `pg_char_to_encoding`.
    #[test]
    fn encodings_are_read_as_postgresql_reads_them() {
        for (name, id) in [
            ("UTF8", 6),
            ("UTF-8", 6),
            ("unicode", 6),
            ("latin1", 8),
            ("Shift_JIS_2004", 41),
            ("SQL_ASCII", 0),
            ("nope", -1),
        ] {
            assert_eq!(encoding_id(name), id, "{name}");
        }
    }

    #[test]
    fn types_are_named_as_postgresql_names_them() {
        let tz = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        assert_eq!(data_type_name(&tz), "timestamp with time zone");
        let naive = DataType::Timestamp(TimeUnit::Microsecond, None);
        assert_eq!(data_type_name(&naive), "timestamp without time zone");
        assert_eq!(data_type_name(&DataType::Utf8), "text");
        assert_eq!(data_type_name(&DataType::Int64), "bigint");
        assert_eq!(data_type_name(&DataType::Float64), "double precision");
        assert_eq!(data_type_name(&DataType::Boolean), "boolean");
        let list = DataType::List(Arc::new(Field::new("item", DataType::Int64, true)));
        assert_eq!(data_type_name(&list), "ARRAY");
        let record = DataType::Struct(Fields::from(vec![Field::new("a", DataType::Int64, true)]));
        assert_eq!(data_type_name(&record), "USER-DEFINED");
        // What DataFusion's information_schema writes parses back (ours reads it so).
        assert_eq!(
            <DataType as std::str::FromStr>::from_str(&tz.to_string()).unwrap(),
            tz
        );
    }

    #[test]
    fn arrays_held_as_text_are_read_in_each_of_their_writings() {
        for (text, want) in [
            (
                "{postgres=r/postgres,=X/postgres}",
                vec!["postgres=r/postgres", "=X/postgres"],
            ),
            ("['acl', 'grantor']", vec!["acl", "grantor"]),
            ("[1, 2]", vec!["1", "2"]),
            ("2205 23 25", vec!["2205", "23", "25"]),
            ("{\"a,b\",c\\\"d}", vec!["a,b", "c\"d"]),
            ("{}", vec![]),
            ("", vec![]),
        ] {
            assert_eq!(elements(text), want, "{text}");
        }
    }

    #[test]
    fn format_writes_text_identifiers_and_literals_as_postgresql_does() {
        let text = |v: &[Option<&str>]| Arc::new(StringArray::from(v.to_vec())) as ArrayRef;
        let template = text(&[Some("%s|%I|%L|%%|%1$s|%L|%s")]);
        let args = [
            template,
            text(&[Some("public")]),
            text(&[Some("Hourly Totals")]),
            text(&[Some("it's")]),
            text(&[None]),
        ];
        let out = format(&args).unwrap();
        // quote_literal's (and %L's): an escape string where the value has a backslash.
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal(r"C:\d's"), r"E'C:\\d''s'");
        // After %1$s, the next argument is the second.
        assert_eq!(
            out.as_string::<i32>().value(0),
            "public|\"Hourly Totals\"|'it''s'|%|public|'Hourly Totals'|it's"
        );
        let e = format(&[text(&[Some("%s %s")]), text(&[Some("a")])]).unwrap_err();
        assert!(e.to_string().contains("too few arguments"), "{e}");
        let e = format(&[text(&[Some("%I")]), text(&[None])]).unwrap_err();
        assert!(
            e.to_string().contains("NULL cannot be an identifier"),
            "{e}"
        );
    }

    #[test]
    fn sizes_are_written_as_pg_size_pretty_writes_them() {
        // PostgreSQL 16's answers.
        for (size, pretty) in [
            (0, "0 bytes"),
            (8192, "8192 bytes"),
            (10239, "10239 bytes"),
            (10240, "10 kB"),
            (16384, "16 kB"),
            (1_000_000, "977 kB"),
            (20_970_000, "20 MB"),
            (123_456_789_012, "115 GB"),
            (-10240, "-10 kB"),
        ] {
            assert_eq!(size_pretty(size), pretty, "{size}");
        }
    }

    #[test]
    fn grafanas_search_path_subquery_is_answered_and_nothing_else_changes() {
        let grafana = format!(
            "SELECT CASE WHEN quote_ident(table_schema) IN ({GRAFANA_SEARCH_PATH}) THEN \
             quote_ident(table_name) ELSE quote_ident(table_schema) || '.' || \
             quote_ident(table_name) END AS \"table\" FROM information_schema.tables \
             WHERE quote_ident(table_schema) NOT IN ('information_schema', 'pg_catalog') \
             ORDER BY CASE WHEN quote_ident(table_schema) IN (\n{}\n) THEN 0 ELSE 1 END, 1",
            // The same subquery as Grafana formats it elsewhere: one line, other spaces.
            GRAFANA_SEARCH_PATH
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        );
        let answered = client_query(&grafana);
        assert!(!answered.contains("generate_series"), "{answered}");
        assert_eq!(answered.matches("IN ('public')").count(), 1, "{answered}");
        assert_eq!(
            answered.matches("IN (\n'public'\n)").count(),
            1,
            "{answered}"
        );
        assert!(answered.starts_with("SELECT CASE WHEN quote_ident(table_schema) IN ("));
        assert!(answered.ends_with("THEN 0 ELSE 1 END, 1"));
        for other in [
            "SELECT current_setting('search_path')",
            "SELECT 'é' AS search_path, 1",
            "SELECT 1",
        ] {
            assert!(matches!(client_query(other), Cow::Borrowed(s) if s == other));
        }
    }
}
