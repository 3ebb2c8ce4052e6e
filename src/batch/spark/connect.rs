//! One Spark Connect session: SQL statements, temporary views over files, and results read as
//! Arrow IPC bytes into DataFusion's Arrow (the client's own DataFrame layer is not used, so no
//! second Arrow version is built).

use std::collections::HashMap;
use std::io::Cursor;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::ipc::reader::StreamReader;
use spark_connect_core::{ChannelBuilder, RetryPolicy, SparkConnectClient};
use spark_connect_proto as pb;
use spark_connect_proto::execute_plan_response::ResponseType;

use crate::error::{Error, Result};

/// How long the first call may take before the remote counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// A session on a Spark Connect server.
pub struct Spark {
    client: SparkConnectClient,
    /// `sc://host:port`, without the token: for messages.
    remote: String,
}

/// Files to read as a temporary view: Spark's reader `format` over `paths`, then `columns`
/// (SQL expressions over the file's columns and its `_metadata`).
pub struct FileView<'a> {
    /// The view's name.
    pub name: &'a str,
    /// `text`, `parquet`, …
    pub format: &'a str,
    /// The reader's schema (DDL), when not inferred.
    pub schema: Option<String>,
    /// Reader options.
    pub options: &'a [(&'a str, &'a str)],
    /// The files.
    pub paths: Vec<String>,
    /// The view's columns, as SQL expressions.
    pub columns: Vec<String>,
}

impl Spark {
    /// Connects to `remote` (`sc://host:port/;token=…;use_ssl=true`) and checks that it
    /// answers: unreachable, it fails within seconds, naming the remote.
    pub async fn connect(remote: &str) -> Result<Spark> {
        let builder = ChannelBuilder::parse(remote)
            .map_err(|e| Error::spark(remote, "not a Spark Connect URL", e))?;
        let shown = format!("sc://{}", builder.endpoint());
        let mut client = SparkConnectClient::connect(&builder)
            .await
            .map_err(|e| Error::spark(&shown, "cannot connect", e))?;
        // A few quick retries, not Spark's default quarter of an hour: a batch run that cannot
        // reach Spark fails and keeps the previous view in service; the scheduler runs again.
        client.set_retry_policy(RetryPolicy {
            max_retries: Some(3),
            initial_backoff_ms: 500,
            max_backoff_ms: Some(2_000),
            max_retry_exception_elapsed_time_ms: Some(10_000),
            ..RetryPolicy::default()
        });
        let spark = Spark {
            client,
            remote: shown,
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, spark.sql("SELECT 1")).await {
            Ok(r) => r.map(drop),
            Err(_) => Err(Error::spark(
                &spark.remote,
                "no answer",
                format!("nothing answered within {} s", CONNECT_TIMEOUT.as_secs()),
            )),
        }?;
        Ok(spark)
    }

    /// Releases the session on the server (best effort: a session left behind expires).
    pub async fn close(self) {
        if let Err(e) = self.client.release_session().await {
            tracing::debug!(remote = %self.remote, error = %e, "Spark Connect: releasing the session failed");
        }
    }

    /// The remote, `sc://host:port`.
    pub fn remote(&self) -> &str {
        &self.remote
    }

    /// Runs one SQL statement or query and returns its rows.
    pub async fn sql(&self, query: &str) -> Result<Vec<RecordBatch>> {
        let rel = relation(pb::relation::RelType::Sql(pb::Sql {
            query: query.to_string(),
            ..Default::default()
        }));
        self.execute(pb::plan::OpType::Root(rel), query).await
    }

    /// Creates (or replaces) a session-scoped temporary view over files.
    pub async fn file_view(&self, v: &FileView<'_>) -> Result<()> {
        let read = relation(pb::relation::RelType::Read(pb::Read {
            is_streaming: false,
            read_type: Some(pb::read::ReadType::DataSource(pb::read::DataSource {
                format: Some(v.format.to_string()),
                schema: v.schema.clone(),
                options: v
                    .options
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<HashMap<_, _>>(),
                paths: v.paths.clone(),
                ..Default::default()
            })),
        }));
        let project = relation(pb::relation::RelType::Project(Box::new(pb::Project {
            input: Some(Box::new(read)),
            expressions: v.columns.iter().map(|c| expression(c)).collect(),
        })));
        let cmd = pb::Command {
            command_type: Some(pb::command::CommandType::CreateDataframeView(
                pb::CreateDataFrameViewCommand {
                    input: Some(project),
                    name: v.name.to_string(),
                    is_global: false,
                    replace: true,
                },
            )),
        };
        let what = format!(
            "a view `{}` over {} {} files",
            v.name,
            v.paths.len(),
            v.format
        );
        self.execute(pb::plan::OpType::Command(cmd), &what)
            .await
            .map(drop)
    }

    /// Executes a plan (resuming the result stream if it drops) and decodes its Arrow batches.
    async fn execute(&self, op: pb::plan::OpType, what: &str) -> Result<Vec<RecordBatch>> {
        let fail = |e: spark_connect_core::SparkError| {
            Error::spark(&self.remote, format!("running {}", brief(what)), e)
        };
        let request = pb::ExecutePlanRequest {
            session_id: self.client.session_id().to_string(),
            user_context: Some(pb::UserContext {
                user_id: "lambdaflow".into(),
                ..Default::default()
            }),
            plan: Some(pb::Plan { op_type: Some(op) }),
            client_type: Some(format!("lambdaflow/{}", env!("CARGO_PKG_VERSION"))),
            ..Default::default()
        };
        let started = std::time::Instant::now();
        let mut stream = self
            .client
            .execute_plan_reattachable(request)
            .await
            .map_err(fail)?;
        let mut out = Vec::new();
        while let Some(resp) = stream.message().await.map_err(fail)? {
            if let Some(ResponseType::ArrowBatch(b)) = resp.response_type {
                let reader = StreamReader::try_new(Cursor::new(b.data), None)?;
                for batch in reader {
                    out.push(batch?);
                }
            }
        }
        tracing::debug!(statement = %brief(what), ms = started.elapsed().as_millis() as u64, "Spark Connect");
        tracing::trace!(statement = %what, "Spark Connect");
        Ok(out)
    }
}

fn relation(rel_type: pb::relation::RelType) -> pb::Relation {
    pb::Relation {
        common: None,
        rel_type: Some(rel_type),
    }
}

fn expression(sql: &str) -> pb::Expression {
    pb::Expression {
        expr_type: Some(pb::expression::ExprType::ExpressionString(
            pb::expression::ExpressionString {
                expression: sql.to_string(),
            },
        )),
        ..Default::default()
    }
}

/// The first line of a statement, shortened: for error messages.
fn brief(what: &str) -> String {
    let line = what.trim().lines().next().unwrap_or_default();
    if line.len() > 80 {
        let cut = (0..=80)
            .rev()
            .find(|i| line.is_char_boundary(*i))
            .unwrap_or(0);
        format!("{}…", &line[..cut])
    } else {
        line.to_string()
    }
}
