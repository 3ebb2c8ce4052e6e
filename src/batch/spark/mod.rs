//! The batch layer on Apache Spark, through Spark Connect (`batch.engine = "spark"`).
//!
//! ```text
//!  dataset files ─► Spark text reader ─► lines (file, split, row id) ─► try_parse_json ─┐
//!                                       │ bad lines (few) ─► lambdaflow: file, line, reason
//!  segments of the pinned table version ─► Spark Parquet reader ────────────────────────┴─► events view
//!        ▼
//!  the view's state query (the embedded engine's plan, unparsed to Spark SQL)
//!        ▼ Arrow IPC over Spark Connect
//!  ViewState ─► published by the batch layer as with the embedded engine
//! ```
//!
//! Spark reads the files itself, so they must be at the same paths on the Spark side (a local
//! server, or a shared file system). Lines are checked by the decoder's rules written in Spark
//! SQL (`sql::checked_view`); the few that fail come back to lambdaflow with their position, and
//! lambdaflow's own decoder says why, so the dead-letter records read as with the embedded
//! engine. Line numbers come from each file split's first row id: Spark numbers the rows of a
//! task consecutively (`monotonically_increasing_id`) and reads a split's lines in order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::DFSchema;
use tracing::{info, warn};

use super::{Computed, ROW_COL, embedded, state_from};
use crate::config::Pipeline;
use crate::error::{Error, Result};
use crate::event::{EventDecoder, EventSchema};
use crate::storage;
use crate::storage::batch_view::FileReport;
use crate::storage::segments::Segment;
use crate::view::ViewDef;

mod connect;
mod sql;

pub use connect::Spark;

/// The temporary views the engine creates in its Spark session.
const LINES: &str = "__lambdaflow_lines";
const CHECKED: &str = "__lambdaflow_checked";
const SEGMENTS: &str = "__lambdaflow_segments";
const INPUTS: &str = "__lambdaflow_inputs";

/// Checks at start-up that `batch.spark-remote` is a Spark Connect URL and that the schema and
/// every view can run on Spark: refuses, naming it, a construct Spark would compute differently,
/// and plans the state query's Spark SQL.
pub async fn check(p: &Pipeline) -> Result<()> {
    let remote = &p.config.batch.spark_remote;
    spark_connect_core::ChannelBuilder::parse(remote).map_err(|e| {
        Error::config(format!(
            "batch.spark-remote `{remote}`: {e} (expected sc://HOST:PORT, e.g. sc://127.0.0.1:15002)"
        ))
    })?;
    let table = &p.config.schema.table;
    sql::check_schema(&p.schema)?;
    let input = DFSchema::try_from_qualified_schema(table, &p.schema.arrow_schema())?;
    let ctx = embedded::planning_session(table, &p.schema)?;
    for def in &p.views {
        sql::check(def, &input)?;
        state_sql(&ctx, table, def).await?;
    }
    Ok(())
}

/// A view's state query as Spark SQL.
async fn state_sql(
    ctx: &datafusion::prelude::SessionContext,
    table: &str,
    def: &ViewDef,
) -> Result<String> {
    let df = embedded::state_query(ctx, table, def).await?;
    sql::unparse(df.logical_plan()).map_err(|e| Error::View {
        view: def.name.clone(),
        msg: format!("cannot be written as Spark SQL: {e}"),
    })
}

/// Computes every view's state on Spark over `files` (JSON lines) and `segments` (Parquet).
pub(super) async fn compute(
    p: &Pipeline,
    files: &[PathBuf],
    segments: &[Segment],
) -> Result<Computed> {
    let started = Instant::now();
    let spark = Spark::connect(&p.config.batch.spark_remote).await?;
    // Timestamps are instants in UTC, as lambdaflow keeps them (`date_trunc('day', ts)` is a
    // UTC day on both engines).
    spark.sql("SET spark.sql.session.timeZone = UTC").await?;
    info!(
        remote = spark.remote(),
        files = files.len(),
        segments = segments.len(),
        "batch layer: computing on Spark"
    );
    let (index, splits, segment_rows) = register_inputs(&spark, p, files, segments).await?;
    info!(
        ms = started.elapsed().as_millis() as u64,
        "batch layer: Spark has the events"
    );
    let per_file = index.dead_letters(&p.schema, files, &splits)?;
    let ctx = embedded::planning_session(&p.config.schema.table, &p.schema)?;
    let mut states = Vec::new();
    for def in &p.views {
        let query = state_sql(&ctx, &p.config.schema.table, def).await?;
        tracing::debug!(view = %def.name, sql = %query, "batch layer: the state query on Spark");
        let t = Instant::now();
        let batches = spark.sql(&query).await?;
        states.push(state_from(def, &batches)?);
        info!(view = %def.name, ms = t.elapsed().as_millis() as u64, "batch layer: state computed on Spark");
    }
    // The session's temporary views go with it (a failed run's session expires on its own).
    spark.close().await;
    let report = index.file_reports(files, &per_file);
    for (f, records) in files.iter().zip(&per_file) {
        super::read::warn_rejected(f, records);
    }
    let bad: Vec<serde_json::Value> = per_file.into_iter().flatten().collect();
    let lines: u64 = report.iter().map(|r| r.lines).sum();
    let rows = lines - bad.len() as u64 + segment_rows.iter().map(|(_, n)| n).sum::<u64>();
    Ok(Computed {
        files: report,
        bad,
        rows,
        states,
    })
}

/// Makes the inputs views of the session — the checked lines of the dataset files, the
/// segments, and over both the events view the state queries read — and returns where each
/// input is, each split of the files with its bad lines, and each segment's row count.
async fn register_inputs(
    spark: &Spark,
    p: &Pipeline,
    files: &[PathBuf],
    segments: &[Segment],
) -> Result<(Index, Vec<SplitRow>, Vec<(String, u64)>)> {
    // lambdaflow's decoder keeps the last of two equal keys; so does Spark with this.
    spark
        .sql("SET spark.sql.variant.allowDuplicateKeys = true")
        .await?;
    let mut inputs: Vec<PathBuf> = files.iter().map(|f| absolute(f)).collect::<Result<_>>()?;
    inputs.extend(
        segments
            .iter()
            .map(|s| match s.table.local_dir() {
                Some(d) => absolute(&d.join(&s.key)),
                // On a bucket, Spark reads the object itself, through Hadoop's S3A.
                None => Ok(PathBuf::from(s3a(s.table.url_of(&s.key)))),
            })
            .collect::<Result<Vec<_>>>()?,
    );
    let splits = if files.is_empty() {
        Vec::new()
    } else {
        read_lines(spark, &p.schema, &inputs[..files.len()]).await?
    };
    let segment_rows = if segments.is_empty() {
        Vec::new()
    } else {
        read_segments(spark, &p.schema, &inputs[files.len()..]).await?
    };
    let index = Index::new(&inputs, &splits, &segment_rows)?;
    index.register(spark).await?;
    events_view(spark, p, !files.is_empty(), !segments.is_empty()).await?;
    Ok((index, splits, segment_rows))
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(|e| Error::io(p, e))
}

/// An object's URL as Hadoop names it: `s3a://bucket/key` for `s3://bucket/key`.
fn s3a(mut url: url::Url) -> String {
    if url.scheme() == "s3" {
        // Both schemes are of the same (non-special) kind: the change cannot fail.
        let _ = url.set_scheme("s3a");
    }
    url.to_string()
}

/// An input as lambdaflow gave it to Spark, or as Spark's `_metadata.file_path` names it, in
/// one form to compare them: a local file by its path (Spark says `file:/…`), an object by its
/// URL as the `url` crate writes it.
fn input_key(s: &str) -> String {
    match url::Url::parse(s) {
        Ok(u) if u.scheme() == "file" => u
            .to_file_path()
            .map_or_else(|()| s.to_string(), |p| p.display().to_string()),
        Ok(u) => u.to_string(),
        Err(_) => s.to_string(),
    }
}

/// One split of a dataset file as Spark read it.
struct SplitRow {
    /// The file's URL.
    url: String,
    /// Where the split starts in the file (bytes).
    block: i64,
    /// The row id of its first line.
    first: i64,
    /// Its lines.
    lines: u64,
    /// Its lines that are not blank.
    nonblank: u64,
    /// Its bad lines: (row id, line).
    bad: Vec<(i64, String)>,
}

/// Registers the JSON-lines files as numbered lines and the checked view of them, and returns
/// each split's place and bad lines — one pass over the files.
async fn read_lines(
    spark: &Spark,
    schema: &EventSchema,
    files: &[PathBuf],
) -> Result<Vec<SplitRow>> {
    spark
        .file_view(&connect::FileView {
            name: LINES,
            format: "text",
            schema: None,
            // Lines end at \n only (a \r before it is dropped), as lambdaflow reads them.
            options: &[("lineSep", "\n")],
            paths: files.iter().map(|f| f.display().to_string()).collect(),
            columns: vec![
                "_metadata.file_path AS p".into(),
                "_metadata.file_block_start AS b".into(),
                r"regexp_replace(value, '\r$', '') AS line".into(),
            ],
        })
        .await?;
    spark
        .sql(&sql::checked_view(CHECKED, LINES, schema))
        .await?;
    let rows = spark
        .sql(&format!(
            "SELECT p, b, min(m), count(*), count_if(NOT blank), \
             collect_list(IF(blank OR ok, NULL, named_struct('m', m, 'line', line))) \
             FROM {CHECKED} GROUP BY p, b"
        ))
        .await?;
    let mut out = Vec::new();
    for r in &rows {
        let (p, b, m) = (strings(r, 0)?, ints(r, 1)?, ints(r, 2)?);
        let (n, nonblank) = (ints(r, 3)?, ints(r, 4)?);
        let bad = r
            .column(5)
            .as_list_opt::<i32>()
            .ok_or_else(|| Error::Internal("Spark sent the bad lines in another type".into()))?;
        for i in 0..r.num_rows() {
            let list = bad.value(i);
            let list = list.as_struct();
            let (bm, bl) = (ints_of(list.column(0))?, strings_of(list.column(1))?);
            out.push(SplitRow {
                url: p[i].clone(),
                block: b[i],
                first: m[i],
                lines: n[i] as u64,
                nonblank: nonblank[i] as u64,
                bad: bm.into_iter().zip(bl).collect(),
            });
        }
    }
    Ok(out)
}

/// Registers the segments (in the declared schema: a field a segment lacks is null) and
/// returns each one's URL and row count.
async fn read_segments(
    spark: &Spark,
    schema: &EventSchema,
    paths: &[PathBuf],
) -> Result<Vec<(String, u64)>> {
    let mut columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| sql::ident(&f.name))
        .chain(sql::kafka_columns().iter().map(|(c, _)| sql::ident(c)))
        .collect();
    columns.extend([
        "_metadata.file_path AS p".into(),
        "_metadata.file_block_start AS b".into(),
        "monotonically_increasing_id() AS m".into(),
    ]);
    spark
        .file_view(&connect::FileView {
            name: SEGMENTS,
            format: "parquet",
            schema: Some(sql::ddl(schema)),
            options: &[],
            paths: paths.iter().map(|f| f.display().to_string()).collect(),
            columns,
        })
        .await?;
    let rows = spark
        .sql(&format!("SELECT p, count(*) FROM {SEGMENTS} GROUP BY p"))
        .await?;
    let mut out = Vec::new();
    for r in &rows {
        let (p, n) = (strings(r, 0)?, ints(r, 1)?);
        for i in 0..r.num_rows() {
            out.push((p[i].clone(), n[i] as u64));
        }
    }
    Ok(out)
}

/// The events view, under the configured table name: the typed events of the lines that pass
/// the checks, then the segments' events, each with its position (input, split, row id) as
/// the hidden order column the state query takes the minimum of.
async fn events_view(spark: &Spark, p: &Pipeline, lines: bool, segments: bool) -> Result<()> {
    let schema = &p.schema;
    let fields: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| sql::ident(&f.name))
        .collect();
    let fields = fields.join(", ");
    let kafka: Vec<String> = sql::kafka_columns()
        .iter()
        .map(|(c, _)| sql::ident(c))
        .collect();
    let kafka = kafka.join(", ");
    let nulls = sql::kafka_nulls();
    let order = format!(
        "named_struct('i', i.i, 'b', e.b, 'm', e.m) AS {}",
        sql::ident(ROW_COL)
    );
    let mut parts = Vec::new();
    if lines {
        parts.push(format!(
            "SELECT {fields}, {nulls}, {order} FROM {CHECKED} e JOIN {INPUTS} i ON e.p = i.p WHERE e.ok"
        ));
    }
    if segments {
        parts.push(format!(
            "SELECT {fields}, {kafka}, {order} FROM {SEGMENTS} e JOIN {INPUTS} i ON e.p = i.p"
        ));
    }
    if parts.is_empty() {
        let nulls: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| {
                format!(
                    "CAST(NULL AS {}) AS {}",
                    sql::spark_type(f.ty),
                    sql::ident(&f.name)
                )
            })
            .collect();
        parts.push(format!(
            "SELECT {}, {}, named_struct('i', 0L, 'b', 0L, 'm', 0L) AS {} WHERE FALSE",
            nulls.join(", "),
            sql::kafka_nulls(),
            sql::ident(ROW_COL)
        ));
    }
    spark
        .sql(&format!(
            "CREATE OR REPLACE TEMPORARY VIEW {} AS {}",
            sql::ident(&p.config.schema.table),
            parts.join(" UNION ALL ")
        ))
        .await
        .map(drop)
}

/// Where the inputs are in Spark's terms: each file URL's input number, and where each split
/// of a dataset file starts in lines.
struct Index {
    /// Spark's URL of each input → its position (dataset files first, then segments).
    inputs: HashMap<String, usize>,
    /// (URL, split start) → (input, first line of the split (0-based), first row id).
    splits: HashMap<(String, i64), (usize, u64, i64)>,
    /// Per dataset file: non-blank lines.
    lines: Vec<u64>,
}

impl Index {
    fn new(inputs: &[PathBuf], splits: &[SplitRow], segments: &[(String, u64)]) -> Result<Index> {
        let by_key: HashMap<String, usize> = inputs
            .iter()
            .enumerate()
            .map(|(i, p)| (input_key(&p.display().to_string()), i))
            .collect();
        let mut index = Index {
            inputs: HashMap::new(),
            splits: HashMap::new(),
            lines: vec![0; inputs.len()],
        };
        let urls = splits
            .iter()
            .map(|s| &s.url)
            .chain(segments.iter().map(|s| &s.0));
        for url in urls {
            let i = by_key.get(&input_key(url)).copied().ok_or_else(|| {
                Error::Internal(format!("Spark read a file that is not an input: {url}"))
            })?;
            index.inputs.insert(url.clone(), i);
        }
        let mut sorted: Vec<&SplitRow> = splits.iter().collect();
        sorted.sort_by(|a, b| (&a.url, a.block).cmp(&(&b.url, b.block)));
        let mut base: HashMap<&str, u64> = HashMap::new();
        for s in sorted {
            let i = index.inputs[&s.url];
            let at = base.entry(&s.url).or_default();
            index
                .splits
                .insert((s.url.clone(), s.block), (i, *at, s.first));
            *at += s.lines;
            index.lines[i] += s.nonblank;
        }
        Ok(index)
    }

    /// Makes the URL → input table a view in the session.
    async fn register(&self, spark: &Spark) -> Result<()> {
        let mut rows: Vec<String> = self
            .inputs
            .iter()
            .map(|(url, i)| format!("({}, {i}L)", sql::literal(url)))
            .collect();
        if rows.is_empty() {
            rows.push("(NULL, 0L)".into());
        }
        spark
            .sql(&format!(
                "CREATE OR REPLACE TEMPORARY VIEW {INPUTS} AS SELECT * FROM VALUES {} AS t(p, i)",
                rows.join(", ")
            ))
            .await
            .map(drop)
    }

    /// The dead-letter records of the lines Spark found bad, per dataset file in line order,
    /// each with lambdaflow's decoder's reason.
    fn dead_letters(
        &self,
        schema: &EventSchema,
        files: &[PathBuf],
        splits: &[SplitRow],
    ) -> Result<Vec<Vec<serde_json::Value>>> {
        let mut found = Vec::new();
        for s in splits {
            let (input, base, first) = self.splits[&(s.url.clone(), s.block)];
            for (m, line) in &s.bad {
                found.push((input, base + (m - first) as u64 + 1, line.clone()));
            }
        }
        found.sort();
        let mut decoder = EventDecoder::new(schema);
        let mut per_file = vec![Vec::new(); files.len()];
        for (input, line, raw) in found {
            let reason = match decoder.push(raw.as_bytes()) {
                Err(e) => e.0,
                Ok(()) => {
                    warn!(file = %files[input].display(), line, "Spark rejected a line that lambdaflow's decoder accepts");
                    "rejected by the spark engine's checks (lambdaflow's decoder accepts it)".into()
                }
            };
            let (k, v) = storage::payload_fields(raw.as_bytes());
            let mut rec = serde_json::json!({
                "file": files[input].display().to_string(),
                "line": line,
                "reason": reason,
            });
            rec[k] = v;
            per_file[input].push(rec);
        }
        Ok(per_file)
    }

    /// Per dataset file: bytes (from the file system), non-blank lines and rejected lines.
    fn file_reports(&self, files: &[PathBuf], bad: &[Vec<serde_json::Value>]) -> Vec<FileReport> {
        files
            .iter()
            .zip(bad)
            .enumerate()
            .map(|(i, (f, bad))| FileReport {
                path: f.clone(),
                bytes: f.metadata().map_or(0, |m| m.len()),
                lines: self.lines[i],
                bad: bad.len() as u64,
            })
            .collect()
    }
}

/// Column `i` of a result batch as strings.
fn strings(b: &RecordBatch, i: usize) -> Result<Vec<String>> {
    strings_of(b.column(i))
}

fn strings_of(c: &ArrayRef) -> Result<Vec<String>> {
    let c = cast(c, &DataType::Utf8)?;
    let a = c.as_string::<i32>();
    Ok((0..a.len()).map(|j| a.value(j).to_string()).collect())
}

/// Column `i` of a result batch as 64-bit integers.
fn ints(b: &RecordBatch, i: usize) -> Result<Vec<i64>> {
    ints_of(b.column(i))
}

fn ints_of(c: &ArrayRef) -> Result<Vec<i64>> {
    let c = cast(c, &DataType::Int64)?;
    Ok(c.as_primitive::<Int64Type>().values().to_vec())
}
