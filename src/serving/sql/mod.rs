//! SQL over the served views: every view is a table of database `lambdaflow` (schema
//! `public`), with `lambdaflow_freshness` beside them; DataFusion plans and runs any read-only
//! query over them (WHERE, ORDER BY, aggregates, joins between views). Two doors share this
//! one engine: `POST /api/sql` (in [`crate::serving::http`]) and the PostgreSQL wire protocol
//! ([`pg`], `serving.pg-listen`), where `pg_catalog` and `information_schema` answer what
//! psql, JDBC and Grafana ask besides the query.
//!
//! - [`tables`]: the views and the freshness table as DataFusion tables.
//! - [`pg`]: the PostgreSQL server (pgwire with datafusion-postgres's handlers).
//! - `server`, `catalog`, `names` and `subquery`: where DataFusion answers otherwise than
//!   PostgreSQL, as clients see it (`version()`, `current_setting`, `information_schema`'s
//!   types, the columns' names, scalar subqueries).
//!
//! Only reads: a statement that would write (INSERT, UPDATE, DDL, COPY FROM…) is refused with
//! SQLSTATE `25006` naming it, before DataFusion sees it. Errors carry a SQLSTATE and, for a
//! syntax error, the position in the query.

mod catalog;
mod elements;
mod information_schema;
mod keys;
mod memory;
mod names;
pub mod pg;
mod procedures;
mod server;
mod subquery;
mod syntax;
pub mod tables;
mod texts;
pub mod wire;

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::information_schema::{INFORMATION_SCHEMA, InformationSchemaProvider};
use datafusion::common::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use tokio::sync::watch;

use crate::config::Pipeline;
use crate::serving::ServingState;
use subquery::Subqueries;

/// The database clients connect to, and the catalog the views are in.
pub const DATABASE: &str = "lambdaflow";

/// Memory DataFusion's operators (sorts, joins, aggregates) may hold over all SQL queries at
/// once; a query that needs more fails with SQLSTATE `53200` and the others go on.
const MEMORY_LIMIT: usize = 1 << 30;

/// Memory one query's operators may hold at once, within [`MEMORY_LIMIT`] (see [`memory`]):
/// a quarter of it, so that no one query takes what the others share.
const QUERY_MEMORY: usize = MEMORY_LIMIT / 4;

/// Rows `POST /api/sql` answers at most (the wire protocol streams any number).
pub const HTTP_MAX_ROWS: usize = 100_000;

/// A query's failure as PostgreSQL reports one.
#[derive(Debug, Clone)]
pub struct SqlError {
    /// The SQLSTATE (e.g. `42601` syntax error, `42P01` no such table, `25006` a write).
    pub code: &'static str,
    /// What is wrong, as the client shows it.
    pub message: String,
    /// A syntax error's position in the query (1-based characters), as PostgreSQL's `P` field.
    pub position: Option<usize>,
}

impl SqlError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            position: None,
        }
    }

    /// A syntax error of sqlparser's.
    pub fn syntax(e: &ParserError) -> Self {
        let message = e.to_string();
        Self {
            code: "42601",
            position: parser_position(&message),
            message,
        }
    }

    /// With the position of a syntax error found in `sql` when the parser gave none: the end
    /// for a statement cut short, else where the unexpected token first appears.
    pub fn locate(mut self, sql: &str) -> Self {
        if self.code != "42601" || self.position.is_some() {
            return self;
        }
        let Some(found) = self.message.rsplit_once("found: ").map(|(_, f)| f.trim()) else {
            return self;
        };
        self.position = if found == "EOF" {
            Some(sql.trim_end().chars().count() + 1)
        } else {
            sql.find(found).map(|b| sql[..b].chars().count() + 1)
        };
        self
    }

    /// A DataFusion error as PostgreSQL would class it.
    pub fn from_datafusion(e: &DataFusionError) -> Self {
        let root = e.find_root();
        if let DataFusionError::SQL(p, _) = root {
            return Self::syntax(p);
        }
        // Worded as PostgreSQL words it, without DataFusion's prefix.
        if let DataFusionError::Execution(m) = root
            && m.starts_with(server::UNRECOGNIZED)
        {
            return Self::new("42704", m.clone());
        }
        // A name a cast to regproc, regprocedure or regclass does not resolve, worded as
        // PostgreSQL words it.
        if let DataFusionError::Execution(m) = root {
            let code = match m.as_str() {
                m if m.starts_with("function \"") && m.ends_with("does not exist") => Some("42883"),
                m if m.starts_with("more than one function named") => Some("42725"),
                m if m.starts_with("relation \"") && m.ends_with("does not exist") => Some("42P01"),
                _ => None,
            };
            if let Some(code) = code {
                return Self::new(code, m.clone());
            }
        }
        // A scalar subquery of more than one row: correlated (lambdaflow's words) or not
        // (DataFusion's).
        if let DataFusionError::Execution(m) = root
            && (m.starts_with(subquery::MORE_THAN_ONE_ROW)
                || m.contains("Scalar subquery returned more than one row"))
        {
            return Self::new("21000", subquery::MORE_THAN_ONE_ROW.to_string());
        }
        let message = root.to_string();
        let code = match root {
            DataFusionError::SQL(..) => "42601",
            DataFusionError::SchemaError(..) => "42703",
            DataFusionError::NotImplemented(_) => "0A000",
            DataFusionError::ResourcesExhausted(_) => "53200",
            DataFusionError::Plan(m) if m.contains("not found") && m.contains("table") => "42P01",
            DataFusionError::Plan(_) => "42000",
            DataFusionError::ArrowError(a, _) if a.to_string().contains("Divide by zero") => {
                "22012"
            }
            DataFusionError::Execution(m) if m.contains("cancel") => "57014",
            DataFusionError::ArrowError(..) | DataFusionError::Execution(_) => "22000",
            _ => "XX000",
        };
        Self {
            code,
            message,
            position: None,
        }
    }

    /// The refusal of a statement that is not a read.
    fn read_only(statement: &Statement) -> Self {
        let text = statement.to_string();
        let words: Vec<&str> = text.split_whitespace().take(2).collect();
        let kind = match words.as_slice() {
            [a, b] if matches!(a.to_uppercase().as_str(), "CREATE" | "DROP" | "ALTER") => {
                format!("{} {}", a.to_uppercase(), b.to_uppercase())
            }
            [a, ..] => a.to_uppercase(),
            [] => "this statement".into(),
        };
        Self::new(
            "25006",
            format!(
                "cannot execute {kind} in a read-only transaction: lambdaflow's views are \
                 written by its batch and speed layers only"
            ),
        )
    }
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (SQLSTATE {})", self.message, self.code)
    }
}

/// sqlparser's `… at Line: 1, Column: 15` as a position in the query (first line only: the
/// column counts characters of that line).
fn parser_position(message: &str) -> Option<usize> {
    let rest = message.rsplit_once("Line: ")?.1;
    let (line, col) = rest.split_once(", Column: ")?;
    let col: String = col.chars().take_while(char::is_ascii_digit).collect();
    (line.trim() == "1").then(|| col.parse().ok()).flatten()
}

/// Whether `statement` only reads (queries, EXPLAIN, SHOW, SET of a session variable, and the
/// transaction and cursor statements clients send around them).
pub fn is_read(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::Query(_)
            | Statement::Explain { .. }
            | Statement::ExplainTable { .. }
            | Statement::ShowVariable { .. }
            | Statement::ShowVariables { .. }
            | Statement::ShowTables { .. }
            | Statement::ShowColumns { .. }
            | Statement::ShowStatus { .. }
            | Statement::Set(_)
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. }
            | Statement::Declare { .. }
            | Statement::Fetch { .. }
            | Statement::Close { .. }
            | Statement::Discard { .. }
            | Statement::Deallocate { .. }
    )
}

/// The DataFusion session over what `served` serves: the views and the freshness table in
/// `lambdaflow.public`, `pg_catalog` and `information_schema`, every query planned over one
/// version of the views ([`tables::SnapshotPlanner`]), memory bounded by [`MEMORY_LIMIT`] and
/// each query's by [`QUERY_MEMORY`].
fn session(
    served: watch::Receiver<Arc<ServingState>>,
    topic: &str,
) -> crate::Result<SessionContext> {
    let config = SessionConfig::new()
        // `information_schema` is DataFusion's under ours (below), which PostgreSQL's
        // clients read as PostgreSQL's.
        .with_information_schema(false)
        .with_default_catalog_and_schema(DATABASE, "public")
        .with_create_default_catalog_and_schema(true);
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(MEMORY_LIMIT, 1.0)
        .build_arc()?;
    let planner = tables::SnapshotPlanner {
        served: served.clone(),
        topic: topic.to_string(),
        query_memory: QUERY_MEMORY,
    };
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_query_planner(Arc::new(planner))
        .build();
    let ctx = SessionContext::new_with_state(state);
    let keys_of: keys::KeysOf = {
        let served = served.clone();
        Arc::new(move || tables::primary_keys(&served.borrow()))
    };
    let rows_of: keys::RowsOf = {
        let served = served.clone();
        Arc::new(move || tables::row_counts(&served.borrow()))
    };
    let views = tables::Views {
        served,
        topic: topic.to_string(),
    };
    let database = ctx
        .catalog(DATABASE)
        .ok_or_else(|| crate::Error::Internal("the SQL catalog is missing".into()))?;
    database.register_schema("public", Arc::new(views))?;
    let state = ctx.state();
    let theirs = InformationSchemaProvider::new(Arc::clone(state.catalog_list()))
        .with_table_functions(state.table_functions().clone());
    database.register_schema(
        INFORMATION_SCHEMA,
        Arc::new(information_schema::InformationSchema {
            inner: theirs,
            keys: Arc::clone(&keys_of),
        }),
    )?;
    datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog(
        &ctx,
        DATABASE,
        catalog::Owner,
    )
    .map_err(|e| crate::Error::Internal(format!("pg_catalog: {e}")))?;
    if let Some(theirs) = database.schema("pg_catalog") {
        let keys = Arc::new(keys::Keys::new(Arc::clone(&theirs), keys_of, rows_of));
        keys::register(&ctx, &keys);
        // Its tables are made in memory: nothing to wait for.
        let ours = futures::executor::block_on(catalog::PgCatalog::over(theirs, keys))?;
        database.register_schema("pg_catalog", Arc::new(ours))?;
    }
    server::register(&ctx);
    catalog::register(&ctx);
    subquery::register(&ctx);
    elements::register(&ctx);
    syntax::register(&ctx);
    Ok(ctx)
}

/// The SQL engine over the served views.
pub struct SqlEngine {
    ctx: Arc<SessionContext>,
    served: watch::Receiver<Arc<ServingState>>,
    topic: String,
    timeout: Duration,
}

impl std::fmt::Debug for SqlEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlEngine").finish_non_exhaustive()
    }
}

/// One answer of `POST /api/sql`.
#[derive(Debug)]
pub struct Answer {
    /// The rows.
    pub batches: Vec<RecordBatch>,
    /// Their columns.
    pub schema: datafusion::arrow::datatypes::SchemaRef,
}

impl Answer {
    /// The answer of `statement` with its columns named as `POST /api/sql` names them
    /// ([`names::json_names`]).
    fn named(self, statement: &Statement) -> Result<Answer, DataFusionError> {
        let theirs: Vec<String> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let names = names::json_names(statement, theirs.clone());
        if names == theirs {
            return Ok(self);
        }
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new_with_metadata(
            self.schema
                .fields()
                .iter()
                .zip(names)
                .map(|(f, name)| f.as_ref().clone().with_name(name))
                .collect::<Vec<_>>(),
            self.schema.metadata().clone(),
        ));
        let batches = self
            .batches
            .into_iter()
            .map(|b| RecordBatch::try_new(Arc::clone(&schema), b.columns().to_vec()))
            .collect::<Result<_, _>>()?;
        Ok(Answer { batches, schema })
    }
}

impl SqlEngine {
    /// The engine over what `served` serves.
    pub fn new(p: &Pipeline, served: watch::Receiver<Arc<ServingState>>) -> crate::Result<Self> {
        let topic = &p.config.kafka.topic;
        Ok(Self {
            ctx: Arc::new(session(served.clone(), topic)?),
            served,
            topic: topic.clone(),
            timeout: p.config.serving.sql_timeout,
        })
    }

    /// The DataFusion session (shared by every connection).
    pub fn context(&self) -> Arc<SessionContext> {
        Arc::clone(&self.ctx)
    }

    /// `serving.sql-timeout`.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Each view's freshness as `GET /api/views/{view}` gives it.
    pub fn freshness(&self) -> serde_json::Value {
        let st = self.served.borrow().clone();
        st.views
            .iter()
            .map(|v| {
                let t = v.read();
                let f = st.freshness_of(v, &t, &self.topic);
                (
                    v.def.name.clone(),
                    serde_json::to_value(f).unwrap_or_default(),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    /// The rows of one read-only query (a key lookup skips the optimiser and the physical
    /// plan), at most [`HTTP_MAX_ROWS`] and one more.
    async fn answer(&self, sql: &str, options: SQLOptions) -> Result<Answer, DataFusionError> {
        let df = self.ctx.sql_with_options(sql, options).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let lookup = tables::KeyLookup::of(df.logical_plan(), &self.ctx);
        if let Some(row) = lookup.and_then(|l| l.run(&[])) {
            return Ok(Answer {
                batches: vec![row?],
                schema,
            });
        }
        let df = df.limit(0, Some(HTTP_MAX_ROWS + 1))?;
        Ok(Answer {
            batches: df.collect().await?,
            schema,
        })
    }

    /// Runs one read-only statement to its end, within `serving.sql-timeout`.
    pub async fn query(&self, sql: &str) -> Result<Answer, SqlError> {
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .map_err(|e| SqlError::syntax(&e).locate(sql))?;
        match statements.as_slice() {
            [] => return Err(SqlError::new("42601", "no statement")),
            [s] if !is_read(s) => return Err(SqlError::read_only(s)),
            [_] => {}
            _ => {
                return Err(SqlError::new(
                    "42601",
                    "one statement per request (it has more than one)",
                ));
            }
        }
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let run = async {
            let planned = planned(sql, &self.ctx);
            match self.answer(&planned, options).await {
                // A correlated scalar subquery of the catalog without an aggregate.
                Err(e) if subquery::refused(&e) => {
                    let all = subquery::aggregated(&planned, Subqueries::All, &self.ctx);
                    self.answer(&all, options).await
                }
                answer => answer,
            }
        };
        let answer = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| {
                SqlError::new(
                    "57014",
                    format!(
                        "canceling statement due to statement timeout (serving.sql-timeout = {})",
                        humantime::format_duration(self.timeout)
                    ),
                )
            })?
            .map_err(|e| SqlError::from_datafusion(&e).locate(sql))?;
        let answer = answer
            .named(&statements[0])
            .map_err(|e| SqlError::from_datafusion(&e))?;
        let rows: usize = answer.batches.iter().map(RecordBatch::num_rows).sum();
        if rows > HTTP_MAX_ROWS {
            return Err(SqlError::new(
                "54000",
                format!(
                    "the answer has more than {HTTP_MAX_ROWS} rows: add a LIMIT, or read it over \
                     the PostgreSQL protocol (serving.pg-listen), which streams"
                ),
            ));
        }
        Ok(answer)
    }
}

/// The text of a client's query as DataFusion is given it: Grafana's `search_path` subquery
/// answered ([`catalog::client_query`]), PostgreSQL's syntax where DataFusion plans another
/// ([`syntax::planned`]), scalar subqueries and
/// `ARRAY(SELECT …)` as PostgreSQL runs them ([`subquery::aggregated`]) — but for the client
/// queries datafusion-postgres answers with a stand-in ([`stood_in`]). Each step leaves a
/// query it has nothing to do with as it is, without copying it.
fn planned<'s>(sql: &'s str, ctx: &SessionContext) -> Cow<'s, str> {
    fn then<'s>(sql: Cow<'s, str>, step: impl FnOnce(&str) -> Cow<'_, str>) -> Cow<'s, str> {
        match sql {
            Cow::Borrowed(sql) => step(sql),
            Cow::Owned(sql) => Cow::Owned(step(&sql).into_owned()),
        }
    }
    let ours = |sql: &str| match then(syntax::planned(sql), |sql| {
        subquery::aggregated(sql, Subqueries::BeforePlanning, ctx)
    }) {
        Cow::Owned(rewritten) if !stood_in(sql) => Some(rewritten),
        _ => None,
    };
    match catalog::client_query(sql) {
        Cow::Borrowed(sql) => ours(sql).map_or(Cow::Borrowed(sql), Cow::Owned),
        Cow::Owned(answered) => Cow::Owned(ours(&answered).unwrap_or(answered)),
    }
}

/// Whether datafusion-postgres's parser answers `sql` with a stand-in: the catalog queries of
/// clients that DataFusion cannot plan and it knows by their text (psql's row policies and
/// publications in `\d`, pgcli's foreign keys…), each replaced with a query of no row. Such
/// a query is given to it as the client wrote it, for the stand-in to match (these queries
/// ask for what lambdaflow has none of).
fn stood_in(sql: &str) -> bool {
    static THEIRS: OnceLock<PostgresCompatibilityParser> = OnceLock::new();
    let theirs = THEIRS.get_or_init(PostgresCompatibilityParser::new);
    let (Ok(answered), Ok(written)) = (
        theirs.parse(sql),
        Parser::parse_sql(&PostgreSqlDialect {}, sql),
    ) else {
        return false;
    };
    answered.len() != written.len()
        || answered
            .into_iter()
            .zip(written)
            .any(|(answered, written)| answered != theirs.rewrite(written))
}

/// The SQL engine over `served`, with the PostgreSQL server on `serving.pg-listen` (when set)
/// as a task of `tasks`.
pub async fn start(
    p: &Arc<Pipeline>,
    served: watch::Receiver<Arc<ServingState>>,
    tasks: &crate::supervisor::Supervisor,
) -> crate::Result<Arc<SqlEngine>> {
    let engine = Arc::new(SqlEngine::new(p, served)?);
    if let Some(addr) = p.config.serving.pg_listen_addr()? {
        let s = &p.config.serving;
        let tls = match (&s.pg_tls_cert, &s.pg_tls_key) {
            (Some(cert), Some(key)) => Some(pg::tls(cert, key)?),
            _ => None,
        };
        let listener = pg::bind(addr).await?;
        let (e, token, stop) = (Arc::clone(&engine), s.token.clone(), tasks.stopping());
        tracing::info!(%addr, "serving layer: PostgreSQL protocol on {addr} (psql -h {} -p {} lambdaflow)", addr.ip(), addr.port());
        tasks.spawn("PostgreSQL server", async move {
            pg::serve(listener, &e, token, tls, stop).await
        });
    }
    Ok(engine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_datafusion_postgres_stands_in_for_are_given_as_written() {
        // psql's \d <table>: its row policies, an ARRAY(SELECT …) over pg_policy's text.
        let policies = "SELECT pol.polname, pol.polpermissive,\n  CASE WHEN pol.polroles = '{0}' \
            THEN NULL ELSE pg_catalog.array_to_string(array(select rolname from \
            pg_catalog.pg_roles where oid = any (pol.polroles) order by 1),',') END,\n  \
            pg_catalog.pg_get_expr(pol.polqual, pol.polrelid),\n  \
            pg_catalog.pg_get_expr(pol.polwithcheck, pol.polrelid),\n  CASE pol.polcmd\n    \
            WHEN 'r' THEN 'SELECT'\n    WHEN 'a' THEN 'INSERT'\n    WHEN 'w' THEN 'UPDATE'\n    \
            WHEN 'd' THEN 'DELETE'\n    END AS cmd\nFROM pg_catalog.pg_policy pol\nWHERE \
            pol.polrelid = '16386' ORDER BY 1;";
        assert!(stood_in(policies));
        let ctx = SessionContext::new();
        assert!(matches!(planned(policies, &ctx), Cow::Borrowed(_)));
        let roles = "SELECT r.rolname, ARRAY(SELECT b.rolname FROM pg_catalog.pg_auth_members m \
                     JOIN pg_catalog.pg_roles b ON (m.roleid = b.oid) WHERE m.member = r.oid) \
                     as memberof FROM pg_catalog.pg_roles r";
        assert!(!stood_in(roles));
        assert!(planned(roles, &ctx).contains("array_agg(b.rolname)"));
    }

    #[test]
    fn a_syntax_errors_position_is_its_column_on_the_first_line() {
        assert_eq!(
            parser_position(
                "sql parser error: Expected: end of statement, found: x at Line: 1, Column: 15"
            ),
            Some(15)
        );
        assert_eq!(parser_position("at Line: 2, Column: 3"), None);
        assert_eq!(parser_position("no position"), None);
        let e = |m: &str| SqlError::new("42601", m);
        let sql = "SELECT a FROM t WHERE";
        assert_eq!(
            e("Expected: an expression, found: EOF")
                .locate(sql)
                .position,
            Some(22)
        );
        let sql = "SELECT a FRM t";
        assert_eq!(
            e("Expected: end of statement, found: t")
                .locate(sql)
                .position,
            Some(14)
        );
        assert_eq!(e("Expected: x, found: FRM").locate(sql).position, Some(10));
    }

    /// `customer_totals` over one event per `(customer c<n>, amount)`, served at version 1:
    /// a session over it, the served view, its state (a delta that adds the events again) and
    /// the sender that keeps it served.
    async fn customer_totals(
        events: impl Iterator<Item = (i64, i64)>,
    ) -> (
        SessionContext,
        Arc<crate::serving::ServedView>,
        crate::view::ViewState,
        watch::Sender<Arc<ServingState>>,
    ) {
        use crate::config::default_fields;
        use crate::event::{EventDecoder, EventSchema};
        use crate::serving::ServedView;
        use crate::view::ViewDef;

        let schema = EventSchema::new(default_fields()).unwrap();
        let sql = "SELECT customer, SUM(amount) AS total_amount FROM events GROUP BY customer";
        let def = Arc::new(
            ViewDef::compile("customer_totals", sql, "events", &schema)
                .await
                .unwrap(),
        );
        let mut d = EventDecoder::new(&schema);
        for (c, amount) in events {
            d.push(format!(r#"{{"customer":"c{c}","amount":{amount}}}"#).as_bytes())
                .unwrap();
        }
        let mut state = def.new_state();
        state.update(&def, &d.finish()).unwrap();
        let view = ServedView::build(&def, None, state.clone(), Default::default()).unwrap();
        let view = Arc::new(view);
        let (tx, rx) = watch::channel(Arc::new(ServingState {
            version: 1,
            views: vec![Arc::clone(&view)],
            ..Default::default()
        }));
        (session(rx, "t").unwrap(), view, state, tx)
    }

    /// A view joined with itself while another thread applies deltas that change every row,
    /// as the speed layer's updates do (under the fence): the two scans of each query read one
    /// version, so no row's two sides differ.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_scans_of_one_query_read_one_version_while_updates_go_on() {
        use std::collections::BTreeMap;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

        // One event for each of 2,000 customers: each delta changes every row.
        let (ctx, view, delta, _served) = customer_totals((0..2_000).map(|c| (c, 1))).await;

        let stop = Arc::new(AtomicBool::new(false));
        let applied = Arc::new(AtomicUsize::new(0));
        let writer = {
            let (stop, applied) = (Arc::clone(&stop), Arc::clone(&applied));
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    {
                        let _fence = crate::serving::updating();
                        view.apply_delta(&delta, &BTreeMap::new(), "t").unwrap();
                    }
                    applied.fetch_add(1, Ordering::SeqCst);
                    // Micro-batches come one after the other, not back to back.
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            })
        };
        let join = "SELECT count(*) AS n FROM customer_totals a JOIN customer_totals b \
                    ON a.customer = b.customer WHERE a.total_amount <> b.total_amount";
        let before = applied.load(Ordering::SeqCst);
        for _ in 0..30 {
            let batches = ctx.sql(join).await.unwrap().collect().await.unwrap();
            let n = batches[0]
                .column(0)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .unwrap()
                .value(0);
            assert_eq!(n, 0, "rows whose two sides differ");
        }
        stop.store(true, Ordering::SeqCst);
        writer.join().unwrap();
        assert!(
            applied.load(Ordering::SeqCst) > before,
            "the view changed while queried"
        );
    }

    /// A simple query's literals as parameters ([`pg::literals_as_parameters`]): the lookup
    /// of that statement, run with the literals' values, answers what DataFusion's plan of
    /// the query itself does.
    #[tokio::test]
    async fn a_simple_querys_lookup_answers_as_the_query_does() {
        let (ctx, _, _, _served) = customer_totals((0..10).map(|c| (c, 10 + c))).await;
        let rows = |batches: &[RecordBatch]| match batches.iter().map(|b| b.num_rows()).sum() {
            0 => "no row".to_string(),
            _ => datafusion::arrow::util::pretty::pretty_format_batches(batches)
                .unwrap()
                .to_string(),
        };
        for sql in [
            "SELECT total_amount FROM customer_totals WHERE customer = 'c3'",
            "SELECT total_amount AS t, customer AS who FROM customer_totals \
             WHERE customer = 'c' || 7",
            "SELECT * FROM customer_totals WHERE customer = 'c' || lpad(5::text, 1, '0')",
            "SELECT * FROM customer_totals t WHERE t.customer = concat('c', 2 + 2)",
            "SELECT total_amount FROM customer_totals WHERE customer = 'c42'",
        ] {
            let (text, values) = pg::literals_as_parameters(sql).unwrap();
            let plan = ctx.state().create_logical_plan(&text).await.unwrap();
            let lookup = tables::KeyLookup::of(&plan, &ctx).expect(sql);
            let got = lookup.run(&values).unwrap().unwrap();
            let want = ctx.sql(sql).await.unwrap().collect().await.unwrap();
            assert_eq!(rows(&[got]), rows(&want), "{sql}");
        }
    }

    /// A key lookup understood once with its parameters unbound, run with several: each run
    /// answers what DataFusion's plan of the bound query does; what is not a lookup of one
    /// key is left to the plan.
    #[tokio::test]
    async fn a_prepared_key_lookup_runs_with_each_executions_parameters() {
        use datafusion::common::ScalarValue;
        use datafusion::prelude::SessionContext;

        let (ctx, _, _, _served) = customer_totals((0..10).map(|c| (c, 10 + c))).await;
        let lookup = |sql: &str| {
            let ctx: &SessionContext = &ctx;
            let sql = sql.to_string();
            async move {
                let plan = ctx.state().create_logical_plan(&sql).await.unwrap();
                tables::KeyLookup::of(&plan, ctx)
            }
        };
        let planned = |sql: String| {
            let ctx: &SessionContext = &ctx;
            async move { ctx.sql(&sql).await.unwrap().collect().await.unwrap() }
        };
        let rows = |batches: &[RecordBatch]| match batches.iter().map(|b| b.num_rows()).sum() {
            0 => "no row".to_string(),
            _ => datafusion::arrow::util::pretty::pretty_format_batches(batches)
                .unwrap()
                .to_string(),
        };

        let prepared = "SELECT total_amount, customer AS who FROM customer_totals \
                        WHERE customer = 'c' || $1::text";
        let l = lookup(prepared).await.expect("a lookup of one key");
        for (param, key) in [
            (ScalarValue::from("3"), "c3"),
            (ScalarValue::from("7"), "c7"),
            // Cast to the parameter's type, as a bound value is.
            (ScalarValue::Int64(Some(5)), "c5"),
            // Not served: no row.
            (ScalarValue::from("42"), "c42"),
        ] {
            let got = l.run(&[param]).unwrap().unwrap();
            let want = planned(format!(
                "SELECT total_amount, customer AS who FROM customer_totals WHERE customer = '{key}'"
            ))
            .await;
            assert_eq!(rows(&[got]), rows(&want), "{key}");
        }
        // NULL is no key: the plan answers (no row).
        assert!(l.run(&[ScalarValue::Utf8(None)]).is_none());
        // A constant key (`/api/sql`'s lookups).
        let c = lookup("SELECT * FROM customer_totals WHERE customer = 'c1'").await;
        let got = c.unwrap().run(&[]).unwrap().unwrap();
        let want = planned("SELECT * FROM customer_totals WHERE customer = 'c1'".into()).await;
        assert_eq!(rows(&[got]), rows(&want));

        for other in [
            "SELECT sum(total_amount) FROM customer_totals WHERE customer = $1",
            "SELECT * FROM customer_totals WHERE total_amount = $1",
            "SELECT * FROM customer_totals WHERE customer = $1 AND customer = 'c1'",
            "SELECT * FROM customer_totals WHERE customer = total_amount",
            "SELECT * FROM customer_totals WHERE customer <> $1",
            "SELECT * FROM customer_totals WHERE customer = $1 LIMIT 1",
        ] {
            assert!(lookup(other).await.is_none(), "{other}");
        }
    }

    #[test]
    fn writes_are_refused_by_name() {
        for (sql, kind) in [
            ("INSERT INTO t VALUES (1)", "INSERT"),
            ("UPDATE t SET a = 1", "UPDATE"),
            ("DELETE FROM t", "DELETE"),
            ("CREATE TABLE x (a INT)", "CREATE TABLE"),
            ("DROP VIEW v", "DROP VIEW"),
            ("TRUNCATE t", "TRUNCATE"),
        ] {
            let s = &Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap()[0];
            assert!(!is_read(s), "{sql}");
            let e = SqlError::read_only(s);
            assert_eq!(e.code, "25006");
            assert!(
                e.message.starts_with(&format!("cannot execute {kind} ")),
                "{}",
                e.message
            );
        }
        for sql in [
            "SELECT 1",
            "EXPLAIN SELECT 1",
            "SHOW search_path",
            "BEGIN",
            "COMMIT",
            "SAVEPOINT a",
            "RELEASE SAVEPOINT a",
            "ROLLBACK TO SAVEPOINT a",
        ] {
            let s = &Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap()[0];
            assert!(is_read(s), "{sql}");
        }
    }
}
