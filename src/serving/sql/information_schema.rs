//! `information_schema` as PostgreSQL has it, over DataFusion's ([`InformationSchema`]).
//!
//! DataFusion's `columns` names types as Arrow does (`Utf8`, `Timestamp(µs, "UTC")`) and has
//! no `udt_name` nor `is_identity`; it has no `table_constraints` nor `key_column_usage`.
//! Tools that read `information_schema` — Grafana's query builder, which finds a panel's time
//! column by its type; Metabase's sync, which reads each column's `udt_name`, `is_identity`
//! and whether it is in the primary key; dbt, pandas' and SQLAlchemy's helpers — expect
//! PostgreSQL's: `text`, `timestamp with time zone`, `int8`, and the views' keys
//! ([`super::keys`]) as `PRIMARY KEY` constraints.

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, AsArray, Int32Array, RecordBatch, Scalar, StringArray, UInt64Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::compute::kernels::numeric::add;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::information_schema::InformationSchemaProvider;
use datafusion::catalog::view::ViewTable;
use datafusion::catalog::{MemTable, SchemaProvider, TableProvider};
use datafusion::common::Result;
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::LogicalPlanBuilder;
use datafusion_postgres::arrow_pg::datatypes::into_pg_type;

use super::DATABASE;
use super::catalog::{Mapped, data_type_name};
use super::keys::{KeysOf, PrimaryKey};

/// `columns`' columns that DataFusion's has not, after its own: the type's name as
/// PostgreSQL's catalog has it (`int8`, `text`, `timestamptz`, `_int8`), and that no column
/// is an identity, generated or updatable (the views are read-only).
const COLUMN_FACTS: [&str; 6] = [
    "udt_catalog",
    "udt_schema",
    "udt_name",
    "is_identity",
    "is_generated",
    "is_updatable",
];

/// `information_schema`: DataFusion's tables, `columns` as PostgreSQL's, and the served
/// tables' primary keys in `table_constraints` and `key_column_usage`.
pub struct InformationSchema {
    pub inner: InformationSchemaProvider,
    pub keys: KeysOf,
}

impl std::fmt::Debug for InformationSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InformationSchema").finish_non_exhaustive()
    }
}

/// The tables added to DataFusion's.
const CONSTRAINTS: [&str; 2] = ["table_constraints", "key_column_usage"];

#[async_trait]
impl SchemaProvider for InformationSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        names.extend(CONSTRAINTS.map(String::from));
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        match name {
            "columns" => Ok(self.inner.table(name).await?.map(|inner| {
                let theirs = inner.schema();
                let fields: Vec<Field> = theirs
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone())
                    .chain(COLUMN_FACTS.map(|c| Field::new(c, DataType::Utf8, true)))
                    .collect();
                Arc::new(Mapped {
                    inner,
                    schema: Arc::new(Schema::new(fields)),
                    map: Arc::new(pg_columns),
                }) as Arc<dyn TableProvider>
            })),
            "table_constraints" => Ok(Some(table_constraints(&(self.keys)())?)),
            "key_column_usage" => Ok(Some(key_column_usage(&(self.keys)())?)),
            _ => self.inner.table(name).await,
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        CONSTRAINTS.contains(&name) || self.inner.table_exist(name)
    }
}

/// `columns`' rows as PostgreSQL's: each `data_type` by its SQL name, `ordinal_position` from
/// 1, and [`COLUMN_FACTS`].
fn pg_columns(b: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let at = b.schema().index_of("data_type")?;
    let types: Vec<Option<DataType>> = b
        .column(at)
        .as_string::<i32>()
        .iter()
        .map(|t| t.and_then(|t| DataType::from_str(t).ok()))
        .collect();
    let text = |v: Vec<Option<String>>| Arc::new(StringArray::from(v)) as ArrayRef;
    let each = |v: &str| text(vec![Some(v.to_string()); b.num_rows()]);
    let mut columns = b.columns().to_vec();
    columns[at] = text(
        types
            .iter()
            .map(|t| t.as_ref().map(data_type_name))
            .collect(),
    );
    // DataFusion counts a column's position from 0, PostgreSQL from 1.
    let position = b.schema().index_of("ordinal_position")?;
    let from_one = add(&columns[position], &Scalar::new(UInt64Array::from(vec![1])))?;
    columns[position] = cast(&from_one, b.schema().field(position).data_type())?;
    let udt_name = types
        .iter()
        .map(|t| {
            let pg = into_pg_type(t.as_ref()?).ok()?;
            Some(pg.name().to_string())
        })
        .collect();
    columns.extend([
        Arc::clone(b.column(b.schema().index_of("table_catalog")?)),
        each("pg_catalog"),
        text(udt_name),
        each("NO"),
        each("NEVER"),
        each("NO"),
    ]);
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// A table of text columns `names`, and of `ordinal_position` where it is one.
fn text_table(names: &[&str], rows: Vec<Vec<Option<String>>>) -> Result<Arc<dyn TableProvider>> {
    let schema = Arc::new(Schema::new(
        names
            .iter()
            .map(|n| match *n {
                "ordinal_position" => Field::new(*n, DataType::Int32, false),
                _ => Field::new(*n, DataType::Utf8, true),
            })
            .collect::<Vec<_>>(),
    ));
    let columns: Vec<ArrayRef> = (0..names.len())
        .map(|c| {
            let values = rows.iter().map(|r| r[c].clone());
            match names[c] {
                "ordinal_position" => Arc::new(Int32Array::from_iter(
                    values.map(|v| v.and_then(|v| v.parse::<i32>().ok())),
                )) as ArrayRef,
                _ => Arc::new(StringArray::from_iter(values)) as ArrayRef,
            }
        })
        .collect();
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
    let rows = MemTable::try_new(schema, vec![vec![batch]])?;
    // A view, as `information_schema`'s tables are (`pg_class` says `v`).
    let plan = LogicalPlanBuilder::scan("rows", provider_as_source(Arc::new(rows)), None)?;
    Ok(Arc::new(ViewTable::new(plan.build()?, None)))
}

/// Where a key's constraint is and what it is called: catalog, schema and name, for the
/// constraint and for its table.
fn constraint_of(k: &PrimaryKey) -> [Option<String>; 6] {
    [
        Some(DATABASE.into()),
        Some(k.schema.clone()),
        Some(k.name()),
        Some(DATABASE.into()),
        Some(k.schema.clone()),
        Some(k.table.clone()),
    ]
}

const CONSTRAINT_COLUMNS: [&str; 6] = [
    "constraint_catalog",
    "constraint_schema",
    "constraint_name",
    "table_catalog",
    "table_schema",
    "table_name",
];

/// `table_constraints`: each key's `PRIMARY KEY` constraint, enforced, not deferrable.
fn table_constraints(keys: &[PrimaryKey]) -> Result<Arc<dyn TableProvider>> {
    let mut names = CONSTRAINT_COLUMNS.to_vec();
    names.extend([
        "constraint_type",
        "is_deferrable",
        "initially_deferred",
        "enforced",
        "nulls_distinct",
    ]);
    let rows = keys
        .iter()
        .map(|k| {
            let mut row = constraint_of(k).to_vec();
            row.extend(
                [
                    Some("PRIMARY KEY"),
                    Some("NO"),
                    Some("NO"),
                    Some("YES"),
                    None,
                ]
                .map(|v| v.map(String::from)),
            );
            row
        })
        .collect();
    text_table(&names, rows)
}

/// `key_column_usage`: each key's columns, numbered from 1 in the key.
fn key_column_usage(keys: &[PrimaryKey]) -> Result<Arc<dyn TableProvider>> {
    let mut names = CONSTRAINT_COLUMNS.to_vec();
    names.extend([
        "column_name",
        "ordinal_position",
        "position_in_unique_constraint",
    ]);
    let rows = keys
        .iter()
        .flat_map(|k| {
            k.columns.iter().enumerate().map(move |(i, (_, column))| {
                let mut row = constraint_of(k).to_vec();
                row.extend([Some(column.clone()), Some((i + 1).to_string()), None]);
                row
            })
        })
        .collect();
    text_table(&names, rows)
}
