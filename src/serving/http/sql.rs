//! `POST /api/sql`: one read-only SQL statement over the views ([`crate::serving::sql`]),
//! answered as JSON rows with each view's freshness, or as an Arrow IPC stream with
//! `Accept: application/vnd.apache.arrow.stream`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use crate::serving::sql::{Answer, SqlError};

/// The media type of an Arrow IPC stream.
const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// `POST /api/sql` with `{"sql": "SELECT …"}`.
pub(super) async fn query(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(engine) = st.sql.clone() else {
        return ApiError::not_found("SQL is not served here").into_response();
    };
    let sql = match serde_json::from_slice::<Value>(&body) {
        Ok(v) => match v.get("sql").and_then(Value::as_str) {
            Some(s) => s.to_string(),
            None => {
                return ApiError::bad_request(
                    r#"the body is JSON without a string "sql": send {"sql": "SELECT …"}"#,
                )
                .into_response();
            }
        },
        Err(e) => {
            return ApiError::bad_request(format!(
                "the body is not JSON ({e}): send {{\"sql\": \"SELECT …\"}}"
            ))
            .into_response();
        }
    };
    let arrow = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains(ARROW_STREAM));
    match engine.query(&sql).await {
        Ok(answer) if arrow => match ipc(&answer) {
            Ok(bytes) => (
                [(header::CONTENT_TYPE, HeaderValue::from_static(ARROW_STREAM))],
                bytes,
            )
                .into_response(),
            Err(e) => ApiError::internal(e).into_response(),
        },
        Ok(answer) => match rows(&answer) {
            Ok(rows) => {
                let columns: Vec<Value> = answer
                    .schema
                    .fields()
                    .iter()
                    .map(|f| json!({ "name": f.name(), "type": f.data_type().to_string() }))
                    .collect();
                let n: usize = answer.batches.iter().map(|b| b.num_rows()).sum();
                let rows = match std::str::from_utf8(&rows) {
                    Ok(r) => r,
                    Err(e) => return ApiError::internal(e).into_response(),
                };
                // The rows as Arrow's JSON writer makes them, spliced in once.
                let body = format!(
                    r#"{{"columns":{},"rows":{rows},"row_count":{n},"freshness":{}}}"#,
                    Value::from(columns),
                    engine.freshness()
                );
                (
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )],
                    body,
                )
                    .into_response()
            }
            Err(e) => ApiError::internal(e).into_response(),
        },
        Err(e) => sql_error(&e),
    }
}

/// A failed query: its SQLSTATE and position, with the status that fits.
fn sql_error(e: &SqlError) -> Response {
    let status = match e.code {
        "25006" => StatusCode::FORBIDDEN,
        "57014" => StatusCode::REQUEST_TIMEOUT,
        "54000" => StatusCode::PAYLOAD_TOO_LARGE,
        "53200" => StatusCode::SERVICE_UNAVAILABLE,
        c if c.starts_with("XX") => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    (
        status,
        Json(json!({
            "error": "sql",
            "detail": e.message,
            "sqlstate": e.code,
            "position": e.position,
        })),
    )
        .into_response()
}

/// The rows as one JSON array of objects (a null written `null`).
fn rows(a: &Answer) -> crate::Result<Vec<u8>> {
    let mut w = datafusion::arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, datafusion::arrow::json::writer::JsonArray>(Vec::new());
    for b in &a.batches {
        w.write(b)?;
    }
    w.finish()?;
    let out = w.into_inner();
    // No batch written: the writer leaves the buffer empty.
    Ok(if out.is_empty() { b"[]".to_vec() } else { out })
}

fn ipc(a: &Answer) -> crate::Result<Vec<u8>> {
    let mut w = datafusion::arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &a.schema)?;
    for b in &a.batches {
        w.write(b)?;
    }
    w.finish()?;
    Ok(w.into_inner()?)
}
