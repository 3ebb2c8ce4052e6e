//! The views' keys as PostgreSQL's catalog shows a table's primary key, for the tools that
//! read keys there: psql's `\d` (its `Indexes:` line), the JDBC driver's getPrimaryKeys and
//! getIndexInfo (which DBeaver and Metabase call to tell rows apart and offer joins), and
//! the many tools that copy the driver's query.
//!
//! A view's key is its GROUP BY columns, a window by its start
//! ([`crate::view::ViewDef::primary_key`]); one version of a view holds one row per key. In
//! the catalog it is a unique index `<view>_pkey` (`pg_class` with relkind `i`, `pg_index`)
//! and its `PRIMARY KEY` constraint (`pg_constraint`), as `CREATE TABLE … (… PRIMARY KEY)`
//! makes them; the index's access method is `btree`, as PostgreSQL's primary keys' are
//! (serving answers equality on the key from a hash index, and ranges on a window's start
//! from its time index: `EXPLAIN` says which). `pg_get_indexdef` and
//! `pg_get_constraintdef` give their definitions.
//!
//! The driver expands `pg_index.indkey` with `information_schema._pg_expandarray`, a
//! set-returning function in a SELECT list whose rows are records, `(keys).x`:
//! [`super::syntax::planned`] turns these into what DataFusion plans, `unnest` over
//! [`EXPAND_ARRAY`]'s list of structs and `keys['x']`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int16Builder, Int32Array, Int32Builder,
    ListBuilder, RecordBatch, StringArray, StringBuilder, StructBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::compute::kernels::zip::zip;
use datafusion::arrow::datatypes::{
    DataType, Field, Fields, Float64Type, Int16Type, Int32Type, Int64Type, Schema, SchemaRef,
};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err, plan_err};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::{Expr, Signature, TypeSignature, Volatility};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

use super::catalog::{self, Function, Mapped, every_row};
use super::procedures::{self, Procedures};
use super::server;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::oid_field::{kind, oid_field};

/// A served table's primary key: where the table is, and its key columns (number from 1, as
/// `attnum`, and name), in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryKey {
    pub schema: String,
    pub table: String,
    pub columns: Vec<(i16, String)>,
}

impl PrimaryKey {
    /// The name of the key's constraint and index, as PostgreSQL names a table's: `<table>_pkey`.
    pub fn name(&self) -> String {
        format!("{}_pkey", self.table)
    }
}

/// The primary keys of what is served now.
pub type KeysOf = Arc<dyn Fn() -> Vec<PrimaryKey> + Send + Sync>;

/// The rows of each table served now, by name (all in `public`).
pub type RowsOf = Arc<dyn Fn() -> Vec<(String, usize)> + Send + Sync>;

/// The oids of a key's index and constraint: the table's with a bit set that the oids
/// datafusion-pg-catalog gives (counted up from 16,384, one per catalog object) never reach.
const INDEX_OID: i32 = 1 << 30;
const CONSTRAINT_OID: i32 = 1 << 29;

/// `btree`'s oid in `pg_am`.
const BTREE: i32 = 403;

/// A primary key as the catalog shows it, with the oids of its table and schema there.
#[derive(Debug)]
struct Shown {
    key: PrimaryKey,
    table: i32,
    namespace: i32,
}

impl Shown {
    fn index(&self) -> i32 {
        self.table | INDEX_OID
    }

    fn constraint(&self) -> i32 {
        self.table | CONSTRAINT_OID
    }

    fn name(&self) -> String {
        self.key.name()
    }

    fn columns(&self) -> String {
        let names: Vec<_> = self.key.columns.iter().map(|(_, c)| quoted(c)).collect();
        names.join(", ")
    }

    /// `pg_get_indexdef` of the index.
    fn index_definition(&self) -> String {
        format!(
            "CREATE UNIQUE INDEX {} ON {}.{} USING btree ({})",
            quoted(&self.name()),
            quoted(&self.key.schema),
            quoted(&self.key.table),
            self.columns()
        )
    }

    /// `pg_get_constraintdef` of the constraint.
    fn constraint_definition(&self) -> String {
        format!("PRIMARY KEY ({})", self.columns())
    }
}

/// PostgreSQL's reserved key words: an identifier that is one is written quoted.
const RESERVED: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "column",
    "constraint",
    "create",
    "current_catalog",
    "current_date",
    "current_role",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "from",
    "grant",
    "group",
    "having",
    "in",
    "initially",
    "intersect",
    "into",
    "lateral",
    "leading",
    "limit",
    "localtime",
    "localtimestamp",
    "not",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "placing",
    "primary",
    "references",
    "returning",
    "select",
    "session_user",
    "some",
    "symmetric",
    "system_user",
    "table",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "when",
    "where",
    "window",
    "with",
];

/// An identifier as PostgreSQL writes it in a definition: quoted unless it is lower case
/// letters, digits and `_` (not first a digit) and no reserved word.
pub(super) fn quoted(name: &str) -> String {
    let plain = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$')
        && !RESERVED.contains(&name);
    match plain {
        true => name.to_string(),
        false => format!("\"{}\"", name.replace('"', "\"\"")),
    }
}

/// The primary keys of the served tables, found in datafusion-pg-catalog's `pg_class`; the
/// last ones found by their index's and constraint's oid, for `pg_get_indexdef` and
/// `pg_get_constraintdef` (a client has these oids from a catalog table, which finds them).
pub struct Keys {
    catalog: Arc<dyn SchemaProvider>,
    of: KeysOf,
    rows_of: RowsOf,
    shown: RwLock<HashMap<i32, Arc<Shown>>>,
    /// `pg_proc`'s functions (its rows are PostgreSQL's own, made once: read once).
    procedures: OnceLock<Procedures>,
    /// `pg_description`'s comments by catalog (PostgreSQL's oid of it), object and
    /// sub-object (read once: PostgreSQL's own, as the functions are).
    descriptions: OnceLock<HashMap<(i32, i32, i32), String>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").finish_non_exhaustive()
    }
}

impl Keys {
    /// The keys `of` gives, and the rows `rows_of` counts, in `catalog`
    /// (datafusion-pg-catalog's `pg_catalog`).
    pub fn new(catalog: Arc<dyn SchemaProvider>, of: KeysOf, rows_of: RowsOf) -> Keys {
        Keys {
            catalog,
            of,
            rows_of,
            shown: RwLock::default(),
            procedures: OnceLock::new(),
            descriptions: OnceLock::new(),
        }
    }

    /// Each table served now, as `relations` (of `pg_class` now) name it: its oid, name and
    /// rows.
    fn served_rows(&self, relations: &Relations) -> Vec<(i32, String, usize)> {
        let (namespaces, tables) = relations;
        let Some(public) = namespaces.get("public").copied() else {
            return vec![];
        };
        (self.rows_of)()
            .into_iter()
            .filter_map(|(table, rows)| {
                let oid = *tables.get(&(public, table.clone()))?;
                Some((oid, table, rows))
            })
            .collect()
    }

    /// `keys` as `relations` (of `pg_class` now) show them, kept for the functions that read
    /// them by oid.
    fn shown_in(&self, keys: Vec<PrimaryKey>, relations: &Relations) -> Vec<Arc<Shown>> {
        let (namespaces, tables) = relations;
        let found: Vec<Arc<Shown>> = keys
            .into_iter()
            .filter_map(|key| {
                let namespace = *namespaces.get(&key.schema)?;
                let table = *tables.get(&(namespace, key.table.clone()))?;
                Some(Arc::new(Shown {
                    key,
                    table,
                    namespace,
                }))
            })
            .collect();
        let mut shown = self.shown.write().unwrap_or_else(|e| e.into_inner());
        for s in &found {
            shown.insert(s.index(), Arc::clone(s));
            shown.insert(s.constraint(), Arc::clone(s));
        }
        found
    }

    /// The oids of the schemas by name, and of the relations `pg_class` lists now by schema
    /// oid and name.
    async fn relations(&self, state: &dyn Session) -> Result<Relations> {
        let mut namespaces = HashMap::new();
        for b in self.rows("pg_namespace", state).await? {
            let (oid, name) = (int32(&b, "oid")?, text(&b, "nspname")?);
            for i in 0..b.num_rows() {
                namespaces.insert(name.value(i).to_string(), oid.value(i));
            }
        }
        let mut tables = HashMap::new();
        for b in self.rows("pg_class", state).await? {
            let (oid, name, namespace) = (
                int32(&b, "oid")?,
                text(&b, "relname")?,
                int32(&b, "relnamespace")?,
            );
            for i in 0..b.num_rows() {
                tables.insert(
                    (namespace.value(i), name.value(i).to_string()),
                    oid.value(i),
                );
            }
        }
        Ok((namespaces, tables))
    }

    /// Whether each relation of `oids` is visible: in a schema on the search path (after
    /// `pg_catalog`, which PostgreSQL searches first, the server's `search_path`), and not
    /// behind one of the same name in a schema before it. `information_schema`'s tables are
    /// not, as in PostgreSQL (SQLAlchemy's and psql's lists of tables ask so).
    fn visible(&self, oids: &ArrayRef) -> Result<ArrayRef> {
        let oids = cast(oids, &DataType::Int32)?;
        let state = SessionContext::new().state();
        // The catalog's tables are made in memory: nothing to wait for.
        let relations = futures::executor::block_on(self.relations(&state))?;
        let shown = self.shown_in((self.of)(), &relations);
        let (namespaces, mut tables) = relations;
        for s in shown {
            tables.insert((s.namespace, s.name()), s.index());
        }
        let search_path = server::settings()
            .find(|(name, _)| *name == "search_path")
            .map_or("", |(_, path)| path);
        let path: Vec<i32> = ["pg_catalog"]
            .into_iter()
            .chain(search_path.split(',').map(str::trim))
            .filter_map(|schema| namespaces.get(schema).copied())
            .collect();
        let named: HashMap<i32, &(i32, String)> = tables
            .iter()
            .map(|(relation, oid)| (*oid, relation))
            .collect();
        let visible: BooleanArray = oids
            .as_primitive::<Int32Type>()
            .iter()
            .map(|oid| {
                let (namespace, name) = named.get(&oid?)?;
                let first = path
                    .iter()
                    .find(|schema| tables.contains_key(&(**schema, name.clone())))?;
                Some(first == namespace)
            })
            .map(|v| Some(v.unwrap_or(false)))
            .collect();
        Ok(Arc::new(visible))
    }

    /// `pg_proc`'s functions.
    pub async fn procedures(&self, state: &dyn Session) -> Result<&Procedures> {
        if let Some(procedures) = self.procedures.get() {
            return Ok(procedures);
        }
        let (schemas, _) = self.relations(state).await?;
        let schemas = schemas.into_iter().map(|(name, oid)| (oid, name)).collect();
        let procedures = Procedures::of(&self.rows("pg_proc", state).await?, &schemas)?;
        Ok(self.procedures.get_or_init(|| procedures))
    }

    /// `pg_description`'s comments ([`Keys::descriptions`]).
    pub async fn descriptions(
        &self,
        state: &dyn Session,
    ) -> Result<&HashMap<(i32, i32, i32), String>> {
        if let Some(d) = self.descriptions.get() {
            return Ok(d);
        }
        let mut descriptions = HashMap::new();
        for b in self.rows("pg_description", state).await? {
            let int = |c: &str| -> Result<ArrayRef> {
                match b.column_by_name(c) {
                    Some(c) => Ok(cast(c, &DataType::Int32)?),
                    None => exec_err!("pg_catalog.pg_description: no column {c}"),
                }
            };
            let (class, object, sub) = (int("classoid")?, int("objoid")?, int("objsubid")?);
            let [class, object, sub] =
                [&class, &object, &sub].map(|a| a.as_primitive::<Int32Type>());
            let text = text(&b, "description")?;
            for i in 0..b.num_rows() {
                let key = (class.value(i), object.value(i), sub.value(i));
                descriptions.insert(key, text.value(i).to_string());
            }
        }
        Ok(self.descriptions.get_or_init(|| descriptions))
    }

    /// `obj_description(oid, catalog)` of each row of `args`: the comment on the object of
    /// that catalog (`'pg_proc'`, `'pg_catalog.pg_proc'`), NULL for none; with one argument
    /// (PostgreSQL's deprecated form), the comment of that oid in any catalog.
    fn comment(&self, args: &[ArrayRef]) -> Result<ArrayRef> {
        let state = SessionContext::new().state();
        // pg_description is made in memory: nothing to wait for.
        let descriptions = futures::executor::block_on(self.descriptions(&state))?;
        let oids = cast(&args[0], &DataType::Int32)?;
        let catalogs = args.get(1).map(|c| cast(c, &DataType::Utf8)).transpose()?;
        let catalogs = catalogs.as_ref().map(|c| c.as_string::<i32>());
        let comments: StringArray = oids
            .as_primitive::<Int32Type>()
            .iter()
            .enumerate()
            .map(|(i, oid)| {
                let oid = oid?;
                let classes: Vec<i32> = match catalogs {
                    Some(c) => {
                        let name = c.is_valid(i).then(|| c.value(i))?;
                        let name = name.strip_prefix("pg_catalog.").unwrap_or(name);
                        let (class, _) = CATALOG_OIDS.iter().find(|(_, n)| *n == name)?;
                        vec![*class]
                    }
                    None => CATALOG_OIDS.iter().map(|(class, _)| *class).collect(),
                };
                classes
                    .into_iter()
                    .find_map(|class| descriptions.get(&(class, oid, 0)).cloned())
            })
            .collect();
        Ok(Arc::new(comments))
    }

    /// [`Keys::procedures`] where no query's session is at hand (read once, then kept).
    pub fn procedures_now(&self) -> Result<&Procedures> {
        if let Some(procedures) = self.procedures.get() {
            return Ok(procedures);
        }
        let state = SessionContext::new().state();
        // pg_proc is made in memory: nothing to wait for.
        futures::executor::block_on(self.procedures(&state))
    }

    /// The oid of each function `names` names (`array_in`, `pg_catalog.array_in`), as a cast
    /// to `regproc` resolves it: one function of the name, or an error. An oid stays itself.
    fn regproc(&self, names: &ArrayRef) -> Result<ArrayRef> {
        if names.data_type().is_integer() {
            return Ok(cast(names, &DataType::Int32)?);
        }
        let names = cast(names, &DataType::Utf8)?;
        let procedures = self.procedures_now()?;
        names
            .as_string::<i32>()
            .iter()
            .map(|name| {
                let Some(name) = name else { return Ok(None) };
                // `-` is no function (0); a number, the oid itself.
                if name == "-" || name.bytes().all(|b| b.is_ascii_digit()) {
                    return Ok(procedures.oid(name));
                }
                // `lower(text)`, a cast to `regprocedure`: the function of those arguments.
                let (name, arguments) = match name.split_once('(') {
                    Some((n, a)) => (n, Some(a.trim_end().trim_end_matches(')'))),
                    None => (name, None),
                };
                let parts = relation_name(name).unwrap_or_default();
                let function = match parts.as_slice() {
                    [schema, f] if schema == "pg_catalog" => f.as_str(),
                    [f] => f.as_str(),
                    _ => "",
                };
                if let Some(arguments) = arguments {
                    return match procedures.with_arguments(function, arguments) {
                        Some(oid) => Ok(Some(oid)),
                        None => exec_err!("function \"{name}({arguments})\" does not exist"),
                    };
                }
                match procedures.by_name.get(function) {
                    Some((oid, 1)) => Ok(Some(*oid)),
                    Some(_) => exec_err!("more than one function named \"{name}\""),
                    None => exec_err!("function \"{name}\" does not exist"),
                }
            })
            .collect::<Result<Int32Array>>()
            .map(|oids| Arc::new(oids) as ArrayRef)
    }

    /// `pg_describe_object(classid, objid, objsubid)` of each row of `args`: `function
    /// plpgsql_validator(oid)`, `language plpgsql`, `schema public`, `table customer_totals`,
    /// `index customer_totals_pkey`, `type integer`, `extension plpgsql` (psql's `\\dx+`
    /// lists an extension's objects so). NULL for a column (`objsubid` > 0), an object of
    /// another catalog or of none.
    fn describe(&self, args: &[ArrayRef]) -> Result<ArrayRef> {
        let int = |a: &ArrayRef| cast(a, &DataType::Int32);
        let (classes, objects) = (int(&args[0])?, int(&args[1])?);
        let subs = match args.get(2) {
            Some(s) => int(s)?,
            None => Arc::new(Int32Array::from(vec![0; classes.len()])),
        };
        let [classes, objects, subs] =
            [&classes, &objects, &subs].map(|a| a.as_primitive::<Int32Type>());
        let procedures = self.procedures_now()?;
        let state = SessionContext::new().state();
        // A catalog table's names by oid (with a second column: pg_class's relkind), read
        // when a row first asks for it. The catalog's tables are made in memory.
        let mut read: HashMap<i32, HashMap<i32, (String, String)>> = HashMap::new();
        let mut names = |class: i32, table: &str, name: &str, kind: Option<&str>, oid: i32| {
            let by_oid = match read.entry(class) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    let mut by_oid = HashMap::new();
                    for b in futures::executor::block_on(self.rows(table, &state))? {
                        let (oids, names) = (int32(&b, "oid")?, text(&b, name)?);
                        let kinds = kind.map(|k| text(&b, k)).transpose()?;
                        for i in 0..b.num_rows() {
                            let kind = kinds.map_or("", |k| k.value(i)).to_string();
                            by_oid.insert(oids.value(i), (names.value(i).to_string(), kind));
                        }
                    }
                    v.insert(by_oid)
                }
            };
            Ok::<_, DataFusionError>(by_oid.get(&oid).cloned())
        };
        let mut described = StringBuilder::new();
        for i in 0..classes.len() {
            if classes.is_null(i) || objects.is_null(i) || subs.is_valid(i) && subs.value(i) != 0 {
                described.append_null();
                continue;
            }
            let (class, oid) = (classes.value(i), objects.value(i));
            // The catalog by its name: PostgreSQL's oid of it, or the catalog's own.
            let catalog = match CATALOG_OIDS.iter().find(|(o, _)| *o == class) {
                Some((_, name)) => Some(name.to_string()),
                None => names(PG_CLASS, "pg_class", "relname", Some("relkind"), class)?
                    .map(|(name, _)| name),
            };
            let text = match catalog.as_deref().unwrap_or("") {
                "pg_proc" => procedures.identity(oid).map(|f| format!("function {f}")),
                "pg_type" => Some(procedures::type_name(oid))
                    .filter(|t| t != "???")
                    .map(|t| format!("type {t}")),
                "pg_language" => names(PG_LANGUAGE, "pg_language", "lanname", None, oid)?
                    .map(|(n, _)| format!("language {n}")),
                "pg_namespace" => names(PG_NAMESPACE, "pg_namespace", "nspname", None, oid)?
                    .map(|(n, _)| format!("schema {n}")),
                "pg_extension" => names(PG_EXTENSION, "pg_extension", "extname", None, oid)?
                    .map(|(n, _)| format!("extension {n}")),
                "pg_class" => match self.shown(oid).filter(|s| s.index() == oid) {
                    Some(s) => Some(format!("index {}", s.name())),
                    None => names(PG_CLASS, "pg_class", "relname", Some("relkind"), oid)?
                        .map(|(n, kind)| format!("{} {n}", relation_kind(&kind))),
                },
                _ => None,
            };
            described.append_option(text);
        }
        Ok(Arc::new(described.finish()))
    }

    /// The oid of each relation `names` names (`customer_totals`, `public.customer_totals`,
    /// `"Quoted"`), as a cast to `regclass` resolves it: in `pg_catalog`, then `public`,
    /// where the name has no schema. An oid stays itself.
    fn regclass(&self, names: &ArrayRef) -> Result<ArrayRef> {
        if names.data_type().is_integer() {
            return Ok(cast(names, &DataType::Int32)?);
        }
        let names = cast(names, &DataType::Utf8)?;
        let state = SessionContext::new().state();
        // The catalog's tables are made in memory: nothing to wait for.
        let (namespaces, tables) = futures::executor::block_on(self.relations(&state))?;
        let oid = |schema: &str, table: &str| {
            let namespace = namespaces.get(schema)?;
            tables.get(&(*namespace, table.to_string())).copied()
        };
        names
            .as_string::<i32>()
            .iter()
            .map(|name| {
                let Some(name) = name else { return Ok(None) };
                let found = match relation_name(name).as_deref() {
                    Some([schema, table]) => oid(schema, table),
                    Some([table]) => oid("pg_catalog", table).or_else(|| oid("public", table)),
                    _ => None,
                };
                match found {
                    Some(oid) => Ok(Some(oid)),
                    None => exec_err!("relation \"{name}\" does not exist"),
                }
            })
            .collect::<Result<Int32Array>>()
            .map(|oids| Arc::new(oids) as ArrayRef)
    }

    /// Every row of datafusion-pg-catalog's table `name`.
    async fn rows(&self, name: &str, state: &dyn Session) -> Result<Vec<RecordBatch>> {
        let Some(t) = self.catalog.table(name).await? else {
            return plan_err!("pg_catalog has no {name}");
        };
        every_row(t.as_ref(), state).await
    }

    /// The key an index's or a constraint's oid is of.
    fn shown(&self, oid: i32) -> Option<Arc<Shown>> {
        let shown = self.shown.read().unwrap_or_else(|e| e.into_inner());
        shown.get(&oid).cloned()
    }
}

/// Schemas' oids by name; relations' oids by schema oid and name.
type Relations = (HashMap<String, i32>, HashMap<(i32, String), i32>);

/// The parts of a relation's name as PostgreSQL reads it: split at the dots outside double
/// quotes, quoted parts as written, the others in lower case.
fn relation_name(name: &str) -> Option<Vec<String>> {
    let (mut parts, mut part, mut quoted, mut chars) =
        (vec![], String::new(), false, name.trim().chars().peekable());
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                part.push('"');
            }
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(std::mem::take(&mut part)),
            c if quoted => part.push(c),
            c => part.extend(c.to_lowercase()),
        }
    }
    parts.push(part);
    (!quoted && parts.iter().all(|p| !p.is_empty())).then_some(parts)
}

/// The catalogs `pg_depend` and `pg_description` name by PostgreSQL's oids, which
/// datafusion-pg-catalog's rows keep, where its `pg_class` gives them oids of its own.
const CATALOG_OIDS: [(i32, &str); 16] = [
    (1247, "pg_type"),
    (1255, "pg_proc"),
    (1259, "pg_class"),
    (2601, "pg_am"),
    (2606, "pg_constraint"),
    (2607, "pg_conversion"),
    (2612, "pg_language"),
    (2615, "pg_namespace"),
    (2617, "pg_operator"),
    (2618, "pg_rewrite"),
    (3079, "pg_extension"),
    (3456, "pg_collation"),
    (3600, "pg_ts_dict"),
    (3601, "pg_ts_parser"),
    (3602, "pg_ts_config"),
    (3764, "pg_ts_template"),
];

/// Keys of the catalogs `pg_describe_object` reads names from (PostgreSQL's oids of them).
const PG_CLASS: i32 = 1259;
const PG_LANGUAGE: i32 = 2612;
const PG_NAMESPACE: i32 = 2615;
const PG_EXTENSION: i32 = 3079;

/// `pg_depend`'s and `pg_description`'s rows with their catalogs' oids (`classid`,
/// `refclassid`, `classoid`) as `pg_class` gives them ([`CATALOG_OIDS`]): psql's `\\dx+`
/// finds an extension's objects by `refclassid = 'pg_extension'::regclass`, `\\dL+` a
/// language's description by `classoid = l.tableoid`.
fn catalog_classes(b: RecordBatch, relations: &Relations) -> Result<RecordBatch> {
    let (namespaces, tables) = relations;
    let Some(catalog) = namespaces.get("pg_catalog") else {
        return Ok(b);
    };
    let own: HashMap<i32, i32> = CATALOG_OIDS
        .iter()
        .filter_map(|(oid, name)| Some((*oid, *tables.get(&(*catalog, name.to_string()))?)))
        .collect();
    let columns = b
        .schema()
        .fields()
        .iter()
        .zip(b.columns())
        .map(|(f, c)| {
            if !matches!(f.name().as_str(), "classid" | "refclassid" | "classoid") {
                return Ok(Arc::clone(c));
            }
            let oids = cast(c, &DataType::Int32)?;
            let mapped: Int32Array = oids
                .as_primitive::<Int32Type>()
                .iter()
                .map(|o| o.map(|o| own.get(&o).copied().unwrap_or(o)))
                .collect();
            Ok(cast(&(Arc::new(mapped) as ArrayRef), c.data_type())?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(b.schema(), columns)?)
}

/// A relation's kind (`pg_class.relkind`) as `pg_describe_object` words it.
fn relation_kind(relkind: &str) -> &'static str {
    match relkind {
        "i" | "I" => "index",
        "v" => "view",
        "m" => "materialized view",
        "S" => "sequence",
        "f" => "foreign table",
        "c" => "composite type",
        "t" => "toast table",
        _ => "table",
    }
}

fn int32<'b>(b: &'b RecordBatch, column: &str) -> Result<&'b datafusion::arrow::array::Int32Array> {
    match b.column_by_name(column) {
        Some(c) => c.as_primitive_opt::<Int32Type>(),
        None => None,
    }
    .map_or_else(|| exec_err!("pg_catalog: no int4 column {column}"), Ok)
}

fn text<'b>(b: &'b RecordBatch, column: &str) -> Result<&'b StringArray> {
    match b.column_by_name(column) {
        Some(c) => c.as_string_opt::<i32>(),
        None => None,
    }
    .map_or_else(|| exec_err!("pg_catalog: no text column {column}"), Ok)
}

/// Which catalog table [`WithKeys`] adds the keys' rows to.
#[derive(Debug, Clone, Copy)]
pub enum Table {
    /// `pg_class`: each key's index, and `relhasindex` of its table.
    Class,
    /// `pg_index`: each key's index.
    Index,
    /// `pg_constraint`: each key's `PRIMARY KEY` constraint.
    Constraint,
    /// `pg_attribute`: no row added; the served tables' columns grant SELECT alone
    /// ([`read_only_columns`]).
    Attribute,
    /// `pg_depend`, `pg_description`: their catalogs' oids (`classid`, `refclassid`,
    /// `classoid`) are PostgreSQL's, where `pg_class` and `'pg_proc'::regclass` give the
    /// catalog's own ([`catalog_classes`]).
    Catalogs,
}

/// A table of `pg_catalog` with what it says of the tables served: the rows of their keys
/// added, their own rows changed where the catalog's differ. Catalog tables hold a few
/// hundred rows: a scan reads the whole table.
#[derive(Debug)]
pub struct WithKeys {
    pub inner: Arc<dyn TableProvider>,
    pub table: Table,
    pub keys: Arc<Keys>,
}

#[async_trait]
impl TableProvider for WithKeys {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
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
        let schema = self.schema();
        // pg_class and pg_namespace read once for the keys and the tables served.
        let relations = self.keys.relations(state).await?;
        let shown = self.keys.shown_in((self.keys.of)(), &relations);
        let mut batches = every_row(self.inner.as_ref(), state).await?;
        match self.table {
            Table::Class => {
                let indexed: Vec<i32> = shown.iter().map(|s| s.table).collect();
                let rows: HashMap<i32, usize> = self
                    .keys
                    .served_rows(&relations)
                    .into_iter()
                    .map(|(oid, _, rows)| (oid, rows))
                    .collect();
                batches = batches
                    .into_iter()
                    .map(|b| served_class(b, &indexed, &rows))
                    .collect::<Result<_>>()?;
            }
            Table::Attribute => {
                let oids: Vec<i32> = self
                    .keys
                    .served_rows(&relations)
                    .into_iter()
                    .map(|(oid, _, _)| oid)
                    .collect();
                batches = batches
                    .into_iter()
                    .map(|b| read_only_columns(b, &oids))
                    .collect::<Result<_>>()?;
            }
            Table::Catalogs => {
                batches = batches
                    .into_iter()
                    .map(|b| catalog_classes(b, &relations))
                    .collect::<Result<_>>()?;
            }
            Table::Index | Table::Constraint => {}
        }
        if matches!(self.table, Table::Class | Table::Index | Table::Constraint) {
            let rows: Vec<Vec<(&str, ScalarValue)>> =
                shown.iter().map(|s| self.row(s)).collect::<Result<_>>()?;
            batches.push(row_batch(&schema, &rows)?);
        }
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            schema,
            projection.cloned(),
        )?)
    }
}

impl WithKeys {
    /// The row of key `s` in this table, by column (the others NULL, or their type's zero).
    fn row(&self, s: &Shown) -> Result<Vec<(&'static str, ScalarValue)>> {
        let n = s.key.columns.len() as i16;
        let numbers: Vec<i16> = s.key.columns.iter().map(|(a, _)| *a).collect();
        let zeros = int2_array(&vec![0; numbers.len()]);
        Ok(match self.table {
            Table::Class => vec![
                ("oid", ScalarValue::from(s.index())),
                ("relname", ScalarValue::from(s.name())),
                ("relnamespace", ScalarValue::from(s.namespace)),
                ("relam", ScalarValue::from(BTREE)),
                ("relfilenode", ScalarValue::from(s.index())),
                ("relpages", ScalarValue::from(1)),
                ("relpersistence", ScalarValue::from("p")),
                ("relkind", ScalarValue::from("i")),
                ("relnatts", ScalarValue::from(n)),
                ("relispopulated", ScalarValue::from(true)),
                ("relreplident", ScalarValue::from("n")),
            ],
            Table::Index => vec![
                ("indexrelid", ScalarValue::from(s.index())),
                ("indrelid", ScalarValue::from(s.table)),
                ("indnatts", ScalarValue::from(n)),
                ("indnkeyatts", ScalarValue::from(n)),
                ("indisunique", ScalarValue::from(true)),
                ("indisprimary", ScalarValue::from(true)),
                ("indimmediate", ScalarValue::from(true)),
                ("indisvalid", ScalarValue::from(true)),
                ("indisready", ScalarValue::from(true)),
                ("indislive", ScalarValue::from(true)),
                ("indkey", int2_array(&numbers)),
                ("indcollation", zeros.clone()),
                ("indclass", zeros.clone()),
                ("indoption", zeros),
            ],
            Table::Attribute | Table::Catalogs => {
                return plan_err!(
                    "pg_attribute, pg_depend and pg_description have no row of a key"
                );
            }
            Table::Constraint => vec![
                ("oid", ScalarValue::from(s.constraint())),
                ("conname", ScalarValue::from(s.name())),
                ("connamespace", ScalarValue::from(s.namespace)),
                ("contype", ScalarValue::from("p")),
                ("convalidated", ScalarValue::from(true)),
                ("conrelid", ScalarValue::from(s.table)),
                ("conindid", ScalarValue::from(s.index())),
                ("confupdtype", ScalarValue::from(" ")),
                ("confdeltype", ScalarValue::from(" ")),
                ("confmatchtype", ScalarValue::from(" ")),
                ("conislocal", ScalarValue::from(true)),
                ("connoinherit", ScalarValue::from(true)),
                ("conkey", int2_array(&numbers)),
            ],
        })
    }
}

/// An `int2[]`.
fn int2_array(v: &[i16]) -> ScalarValue {
    let v: Vec<_> = v.iter().map(|a| ScalarValue::from(*a)).collect();
    ScalarValue::List(ScalarValue::new_list_nullable(&v, &DataType::Int16))
}

/// `pg_class`'s rows with `relhasindex` true for the tables of `indexed`, and `reltuples`
/// the rows of each table served (`rows`, by oid: PostgreSQL's estimate, exact here; DBeaver
/// shows it as the row count).
fn served_class(
    b: RecordBatch,
    indexed: &[i32],
    rows: &HashMap<i32, usize>,
) -> Result<RecordBatch> {
    let schema = b.schema();
    let (Some(has_index), Some(tuples), oids) = (
        schema.index_of("relhasindex").ok(),
        schema.index_of("reltuples").ok(),
        int32(&b, "oid")?,
    ) else {
        return Ok(b);
    };
    let has: BooleanArray = oids
        .iter()
        .zip(b.column(has_index).as_boolean())
        .map(|(oid, has)| Some(has == Some(true) || oid.is_some_and(|o| indexed.contains(&o))))
        .collect();
    let theirs = cast(b.column(tuples), &DataType::Float64)?;
    let counted: Float64Array = oids
        .iter()
        .zip(theirs.as_primitive::<Float64Type>())
        .map(|(oid, t)| match oid.and_then(|o| rows.get(&o)) {
            Some(&n) => Some(n as f64),
            None => t,
        })
        .collect();
    let mut columns = b.columns().to_vec();
    columns[has_index] = Arc::new(has);
    columns[tuples] = cast(&counted, schema.field(tuples).data_type())?;
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// `pg_attribute`'s rows with `attacl` [`catalog::select_only`] for the columns of the tables
/// `served` (by oid): the JDBC driver's getColumnPrivileges reads a NULL `attacl` as every
/// privilege of the owner.
fn read_only_columns(b: RecordBatch, served: &[i32]) -> Result<RecordBatch> {
    let schema = b.schema();
    let (Ok(at), tables, Some(numbers)) = (
        schema.index_of("attacl"),
        int32(&b, "attrelid")?,
        b.column_by_name("attnum")
            .map(|c| cast(c, &DataType::Int64)),
    ) else {
        return Ok(b);
    };
    let numbers = numbers?;
    let read_only: BooleanArray = tables
        .iter()
        .zip(numbers.as_primitive::<Int64Type>().iter())
        .map(|(t, n)| Some(t.is_some_and(|t| served.contains(&t)) && n.is_some_and(|n| n > 0)))
        .collect();
    let mut columns = b.columns().to_vec();
    let theirs = cast(&columns[at], schema.field(at).data_type())?;
    columns[at] = zip(&read_only, &catalog::select_only(b.num_rows())?, &theirs)?;
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// `rows` in `schema`: each named column's value (cast to its type), the others NULL or,
/// where the column is not nullable, its type's zero (`0`, `false`, `''`).
fn row_batch(schema: &SchemaRef, rows: &[Vec<(&str, ScalarValue)>]) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let values = rows
                .iter()
                .map(|row| match row.iter().find(|(name, _)| name == f.name()) {
                    Some((_, v)) => v.cast_to(f.data_type()),
                    None if f.is_nullable() => ScalarValue::try_new_null(f.data_type()),
                    None => ScalarValue::new_default(f.data_type()),
                })
                .collect::<Result<Vec<_>>>()?;
            match values.is_empty() {
                true => Ok(datafusion::arrow::array::new_empty_array(f.data_type())),
                false => ScalarValue::iter_to_array(values),
            }
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// `pg_stat_user_tables` (datafusion-pg-catalog's has no row) with a row per table served:
/// its oid, schema and name, `n_live_tup` its rows now (Metabase's estimated row count, the
/// statistics DBeaver shows) and `n_dead_tup` 0 (a view's rows are replaced in place); the
/// counters of scans and writes, which lambdaflow does not keep, 0, and the times of
/// vacuums and analyses NULL (there are none).
#[derive(Debug)]
pub struct UserTables {
    pub schema: SchemaRef,
    pub keys: Arc<Keys>,
}

#[async_trait]
impl TableProvider for UserTables {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let rows: Vec<Vec<(&str, ScalarValue)>> = self
            .keys
            .served_rows(&self.keys.relations(state).await?)
            .into_iter()
            .map(|(oid, table, rows)| {
                vec![
                    ("relid", ScalarValue::from(oid)),
                    ("schemaname", ScalarValue::from("public")),
                    ("relname", ScalarValue::from(table)),
                    ("n_live_tup", ScalarValue::from(rows as i64)),
                    ("n_dead_tup", ScalarValue::from(0i64)),
                ]
            })
            .collect();
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![row_batch(&self.schema, &rows)?]],
            self.schema(),
            projection.cloned(),
        )?)
    }
}

/// The function a cast to `regclass` of a computed name becomes ([`Keys::regclass`]).
pub const REGCLASS: &str = "regclass";

/// The function a cast to `regproc` becomes ([`Keys::regproc`]).
pub const REGPROC: &str = "regproc";

/// The text of a column of functions' oids cast to `regprocedure` (`syntax::planned`).
pub const REGPROCEDURE_TEXT: &str = "regprocedure_text";

/// The catalog's columns of functions (`regproc` in PostgreSQL: an oid, which clients compare
/// with a cast to `regproc` or join to `pg_proc.oid`, and which PostgreSQL writes as the
/// function's name), which datafusion-pg-catalog holds as the functions' names.
const FUNCTION_COLUMNS: [&str; 33] = [
    // pg_type
    "typinput",
    "typoutput",
    "typreceive",
    "typsend",
    "typmodin",
    "typmodout",
    "typanalyze",
    "typsubscript",
    // pg_aggregate
    "aggfnoid",
    "aggtransfn",
    "aggfinalfn",
    "aggcombinefn",
    "aggserialfn",
    "aggdeserialfn",
    "aggmtransfn",
    "aggminvtransfn",
    "aggmfinalfn",
    // pg_am, pg_amproc, pg_conversion, pg_proc, pg_range
    "amhandler",
    "amproc",
    "conproc",
    "prosupport",
    "rngcanonical",
    "rngsubdiff",
    // pg_operator
    "oprcode",
    "oprrest",
    "oprjoin",
    // pg_ts_parser, pg_ts_template
    "prsstart",
    "prstoken",
    "prsend",
    "prsheadline",
    "prslextype",
    "tmplinit",
    "tmpllexize",
];

/// Whether `f` is one of [`FUNCTION_COLUMNS`] held as names.
fn function_names(f: &Field) -> bool {
    FUNCTION_COLUMNS.contains(&f.name().as_str()) && !f.data_type().is_integer()
}

/// A table of datafusion-pg-catalog's with its [`FUNCTION_COLUMNS`] as `regproc` oids (`-`,
/// no function, is 0, as PostgreSQL has it; a name `pg_proc` lacks, 0 too): psql's `\\dAp`,
/// `\\dFp+` and `\\dFt+` join them to `pg_proc.oid`. The wire writes them as names again
/// (`super::texts`). The table itself when it has none.
pub fn function_oids(inner: Arc<dyn TableProvider>, keys: Arc<Keys>) -> Arc<dyn TableProvider> {
    let theirs = inner.schema();
    if !theirs.fields().iter().any(|f| function_names(f)) {
        return inner;
    }
    let fields: Vec<Field> = theirs
        .fields()
        .iter()
        .map(|f| match function_names(f) {
            true => oid_field(f.name(), kind::REGPROC, f.is_nullable()),
            false => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Mapped {
        inner,
        schema: Arc::new(Schema::new_with_metadata(fields, theirs.metadata().clone())),
        map: Arc::new(move |b, schema| {
            let procedures = keys.procedures_now()?;
            let columns = b
                .columns()
                .iter()
                .zip(schema.fields())
                .map(|(c, f)| {
                    if c.data_type() == f.data_type() {
                        return Ok(Arc::clone(c));
                    }
                    let names = cast(c, &DataType::Utf8)?;
                    let oids: Int32Array = names
                        .as_string::<i32>()
                        .iter()
                        .map(|n| n.map(|n| procedures.oid(n).unwrap_or(0)))
                        .collect();
                    Ok(Arc::new(oids) as ArrayRef)
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
        }),
    })
}

/// The function that expands an array into rows `(x, n)`, as `information_schema`'s does.
pub const EXPAND_ARRAY: &str = "_pg_expandarray";

/// `_pg_expandarray`'s record: an element and its position from 1.
fn expanded_fields() -> Fields {
    Fields::from(vec![
        Field::new("x", DataType::Int16, true),
        Field::new("n", DataType::Int32, false),
    ])
}

/// Registers `pg_get_indexdef`, `pg_get_constraintdef` (of the keys `keys` found) and
/// [`EXPAND_ARRAY`] in `ctx`.
pub fn register(ctx: &SessionContext, keys: &Arc<Keys>) {
    let definition = |keys: &Arc<Keys>, of: fn(&Shown, i32) -> Option<String>, or: &'static str| {
        let keys = Arc::clone(keys);
        catalog::over_columns(move |args: &[ArrayRef]| {
            let oids = cast(&args[0], &DataType::Int32)?;
            let column = match args.get(1) {
                Some(c) if c.data_type().is_integer() => Some(cast(c, &DataType::Int32)?),
                _ => None,
            };
            let column = column.as_ref().map(|c| c.as_primitive::<Int32Type>());
            let text: StringArray = (0..oids.len())
                .map(|i| {
                    let oid = oids.as_primitive::<Int32Type>();
                    if oid.is_null(i) {
                        return None;
                    }
                    let k = column.map_or(0, |c| c.value(i));
                    match keys.shown(oid.value(i)) {
                        Some(s) => of(&s, k),
                        None => (!or.is_empty()).then(|| or.to_string()),
                    }
                })
                .collect();
            Ok(Arc::new(text) as ArrayRef)
        })
    };
    let signature = |n: &[usize]| {
        Signature::one_of(
            n.iter().map(|&n| TypeSignature::Any(n)).collect(),
            Volatility::Stable,
        )
    };
    let expanded = DataType::new_list(DataType::Struct(expanded_fields()), true);
    let (relations, visibility, procedures) =
        (Arc::clone(keys), Arc::clone(keys), Arc::clone(keys));
    let (results, arguments, definitions) = (Arc::clone(keys), Arc::clone(keys), Arc::clone(keys));
    let (described, comments, signatures) = (Arc::clone(keys), Arc::clone(keys), Arc::clone(keys));
    let functions: [Function; 12] = [
        // psql's `\\dL+`: its handlers as `regprocedure`.
        (
            REGPROCEDURE_TEXT,
            signature(&[1]),
            DataType::Utf8,
            catalog::over_columns(move |args: &[ArrayRef]| {
                signatures.procedures_now()?.regprocedure_texts(&args[0])
            }),
        ),
        // psql's `\\df+`, `\\dT+`, `\\dn+`: the catalog's comments.
        (
            "obj_description",
            signature(&[1, 2]),
            DataType::Utf8,
            catalog::over_columns(move |args: &[ArrayRef]| comments.comment(args)),
        ),
        // psql's `\\dx+`.
        (
            "pg_describe_object",
            signature(&[3]),
            DataType::Utf8,
            catalog::over_columns(move |args: &[ArrayRef]| described.describe(args)),
        ),
        // A cast to regproc (the JDBC driver's `typinput = 'pg_catalog.array_in'::regproc`,
        // DBeaver's on connecting): `syntax::planned` calls this.
        (
            REGPROC,
            signature(&[1]),
            DataType::Int32,
            catalog::over_columns(move |args: &[ArrayRef]| procedures.regproc(&args[0])),
        ),
        // psql's `\\df`, the JDBC driver's getFunctions.
        (
            "pg_get_function_result",
            signature(&[1]),
            DataType::Utf8,
            catalog::over_columns(move |args: &[ArrayRef]| {
                results.procedures_now()?.results(&args[0])
            }),
        ),
        (
            "pg_get_function_arguments",
            signature(&[1]),
            DataType::Utf8,
            catalog::over_columns(move |args: &[ArrayRef]| {
                arguments.procedures_now()?.arguments(&args[0])
            }),
        ),
        // psql's `\\sf`, DBeaver's source of a function.
        (
            "pg_get_functiondef",
            signature(&[1]),
            DataType::Utf8,
            catalog::over_columns(move |args: &[ArrayRef]| {
                definitions.procedures_now()?.definitions(&args[0])
            }),
        ),
        (
            "pg_table_is_visible",
            signature(&[1]),
            DataType::Boolean,
            catalog::over_columns(move |args: &[ArrayRef]| visibility.visible(&args[0])),
        ),
        // A cast to regclass of a name computed in the query (Metabase's sync casts
        // format('%I.%I', schema, table) so): `syntax::planned` calls this.
        (
            REGCLASS,
            signature(&[1]),
            DataType::Int32,
            catalog::over_columns(move |args: &[ArrayRef]| relations.regclass(&args[0])),
        ),
        (
            "pg_get_indexdef",
            signature(&[1, 3]),
            DataType::Utf8,
            // Column k (from 1) alone, or the whole definition (0).
            definition(
                keys,
                |s, k| match usize::try_from(k) {
                    Ok(0) => Some(s.index_definition()),
                    Ok(k) => s.key.columns.get(k - 1).map(|(_, c)| quoted(c)),
                    Err(_) => None,
                },
                "",
            ),
        ),
        (
            "pg_get_constraintdef",
            signature(&[1, 2]),
            DataType::Utf8,
            // datafusion-pg-catalog's gives '' for every constraint: the others keep it.
            definition(keys, |s, _| Some(s.constraint_definition()), ""),
        ),
        (
            EXPAND_ARRAY,
            signature(&[1]),
            expanded,
            catalog::over_columns(|args: &[ArrayRef]| expand_arrays(&args[0])),
        ),
    ];
    catalog::register_functions(ctx, functions);
}

/// Each array of `arrays` as a list of `(x, n)`: an `int2vector` as PostgreSQL writes it
/// (`1 2`, `pg_index.indkey`), or an array of integers (`pg_constraint.conkey`).
fn expand_arrays(arrays: &ArrayRef) -> Result<ArrayRef> {
    let elements: Vec<Option<Vec<Option<i16>>>> = match arrays.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let text = cast(arrays, &DataType::Utf8)?;
            text.as_string::<i32>()
                .iter()
                .map(|t| t.map(int2vector).transpose())
                .collect::<Result<_>>()?
        }
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => {
            let lists = cast(arrays, &DataType::new_list(DataType::Int16, true))?;
            lists
                .as_list::<i32>()
                .iter()
                .map(|l| l.map(|l| l.as_primitive::<Int16Type>().iter().collect()))
                .collect()
        }
        t => return exec_err!("function {EXPAND_ARRAY}({t}) does not exist: it takes an array"),
    };
    let fields = expanded_fields();
    let mut out = ListBuilder::new(StructBuilder::from_fields(fields.clone(), 0))
        .with_field(Field::new_list_field(DataType::Struct(fields), true));
    for array in elements {
        let Some(array) = array else {
            out.append_null();
            continue;
        };
        let records = out.values();
        for (n, x) in array.into_iter().enumerate() {
            let x_of = records.field_builder::<Int16Builder>(0);
            x_of.expect("x is int2").append_option(x);
            let n_of = records.field_builder::<Int32Builder>(1);
            n_of.expect("n is int4").append_value(n as i32 + 1);
            records.append(true);
        }
        out.append(true);
    }
    Ok(Arc::new(out.finish()))
}

/// The numbers of an `int2vector` as PostgreSQL writes it: `1 2`.
fn int2vector(t: &str) -> Result<Vec<Option<i16>>> {
    t.split_ascii_whitespace()
        .map(|n| match n.parse() {
            Ok(n) => Ok(Some(n)),
            Err(e) => exec_err!("invalid int2vector {t:?}: {n:?}: {e}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expandarray_numbers_an_int2vector_or_an_arrays_elements() {
        let text: ArrayRef = Arc::new(StringArray::from(vec![Some("3 1"), None, Some("")]));
        let lists = expand_arrays(&text).unwrap();
        let lists = lists.as_list::<i32>();
        let first = lists.value(0);
        let records = first.as_struct();
        let x = records.column(0).as_primitive::<Int16Type>();
        let n = records.column(1).as_primitive::<Int32Type>();
        assert_eq!(
            (x.values().to_vec(), n.values().to_vec()),
            (vec![3, 1], vec![1, 2])
        );
        assert!(lists.is_null(1));
        assert_eq!(lists.value(2).len(), 0);
        let conkey = ScalarValue::List(ScalarValue::new_list_nullable(
            &[ScalarValue::from(2i16)],
            &DataType::Int16,
        ));
        let lists = expand_arrays(&conkey.to_array().unwrap()).unwrap();
        assert_eq!(lists.as_list::<i32>().value(0).len(), 1);
        assert!(expand_arrays(&text.slice(0, 0)).is_ok());
        let bad: ArrayRef = Arc::new(StringArray::from(vec!["1 x"]));
        assert!(
            expand_arrays(&bad)
                .unwrap_err()
                .to_string()
                .contains("int2vector")
        );
    }

    #[test]
    fn a_relations_name_is_read_as_postgresql_reads_it() {
        let parts = |n: &str| relation_name(n);
        assert_eq!(
            parts("Public.Hourly"),
            Some(vec!["public".into(), "hourly".into()])
        );
        assert_eq!(
            parts("public.\"Hourly \"\"x\"\".y\""),
            Some(vec!["public".into(), "Hourly \"x\".y".into()])
        );
        assert_eq!(
            parts("customer_totals"),
            Some(vec!["customer_totals".into()])
        );
        for bad in ["", "a..b", "\"open", "a."] {
            assert_eq!(parts(bad), None, "{bad}");
        }
    }

    #[test]
    fn definitions_quote_names_as_postgresql_does() {
        let s = Shown {
            key: PrimaryKey {
                schema: "public".into(),
                table: "Hourly".into(),
                columns: vec![(3, "end".into()), (1, "customer".into())],
            },
            table: 16_400,
            namespace: 2200,
        };
        assert_eq!(
            s.index_definition(),
            "CREATE UNIQUE INDEX \"Hourly_pkey\" ON public.\"Hourly\" USING btree (\"end\", customer)"
        );
        assert_eq!(s.constraint_definition(), "PRIMARY KEY (\"end\", customer)");
        assert_ne!(s.index(), s.constraint());
        assert_eq!(quoted("start"), "start");
        assert_eq!(quoted("a\"b"), "\"a\"\"b\"");
    }
}
