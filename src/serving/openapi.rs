//! The OpenAPI 3.0 document of the HTTP API (`GET /api/openapi.json`), next to the routes it
//! describes in [`super::http`]. The view names of the running config are listed as the
//! `view` path parameter's values, so generated clients and fuzzers know them.

use serde_json::{Value, json};

/// The document for a pipeline with these views.
pub fn document(views: &[&str]) -> Value {
    let error = json!({ "$ref": "#/components/schemas/Error" });
    let err = |desc: &str| json!({ "description": desc, "content": { "application/json": { "schema": error } } });
    let sql_err = |desc: &str| json!({ "description": desc, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/SqlError" } } } });
    let view_param = json!({
        "name": "view", "in": "path", "required": true,
        "schema": { "type": "string", "enum": views },
        "description": "A view name from the config (`[[views]] name`)."
    });
    let query = |name: &str, schema: Value, desc: &str| json!({ "name": name, "in": "query", "required": false, "schema": schema, "description": desc });
    let view_params = json!([
        view_param,
        query(
            "key",
            json!({ "type": "string" }),
            "Only the row of this group key (several key columns: values separated by `,`). In a view with a window(): the group keys besides the window, and the answer is that key's windows in time order."
        ),
        query(
            "from",
            json!({ "type": "string", "format": "date-time" }),
            "A view with a window(): only the windows starting at or after this time (RFC 3339), in time order."
        ),
        query(
            "to",
            json!({ "type": "string", "format": "date-time" }),
            "A view with a window(): only the windows starting before this time (RFC 3339), in time order."
        ),
        query(
            "limit",
            json!({ "oneOf": [ { "type": "integer", "minimum": 0 }, { "type": "string", "enum": ["all"] } ] }),
            "At most this many rows (default 1000; `all` for every row)."
        ),
        query(
            "offset",
            json!({ "type": "integer", "minimum": 0 }),
            "Skip this many rows first (paging: the answer's `next_offset`)."
        ),
        query(
            "order_by",
            json!({ "type": "string", "pattern": "^-?[^:]+(:(asc|desc))?$" }),
            "A column to sort by: `col`, `col:desc` or `-col`."
        ),
        query(
            "explain",
            json!({ "type": "boolean" }),
            "Add each row's batch part and speed part under `_explain`."
        ),
    ]);
    let mut get_params = view_params.clone();
    get_params.as_array_mut().expect("a list").push(query(
        "as_of",
        json!({ "type": "string", "pattern": "^([0-9]+|[0-9]{4}-.+)$" }),
        "The view as the master dataset was at this Delta table version (a number) or time (RFC 3339): the batch layer's answer over that version, computed on first request, no speed part. The answer's `as_of.table_version` says which version.",
    ));
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "lambdaflow serving API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The serving layer of a Lambda architecture: each view is the batch view merged exactly with the speed layer's state over the events after the batch view's offsets."
        },
        "paths": {
            "/health": { "get": {
                "summary": "Ready once the views are loaded (never requires the token).",
                "security": [],
                "responses": {
                    "200": { "description": "Ready", "content": { "application/json": { "schema": { "type": "object" } } } },
                    "503": err("The views are not loaded yet")
                }
            }},
            "/metrics": { "get": {
                "summary": "Prometheus metrics (OpenMetrics text format).",
                "responses": {
                    "200": { "description": "Metrics", "content": { "application/openmetrics-text": { "schema": { "type": "string" } } } },
                    "401": err("Missing or wrong bearer token")
                }
            }},
            "/api/openapi.json": { "get": {
                "summary": "This document.",
                "responses": {
                    "200": { "description": "OpenAPI 3.0", "content": { "application/json": { "schema": { "type": "object" } } } },
                    "401": err("Missing or wrong bearer token")
                }
            }},
            "/api/status": { "get": {
                "summary": "Pipeline status: speed-layer progress, lag and dead letters, the batch run in service and the scheduler, events per second.",
                "responses": {
                    "200": { "description": "Status", "content": { "application/json": { "schema": { "type": "object" } } } },
                    "401": err("Missing or wrong bearer token")
                }
            }},
            "/api/batch": { "post": {
                "summary": "Start a batch recompute now (`lambdaflow run` only).",
                "responses": {
                    "202": { "description": "A run starts", "content": { "application/json": { "schema": { "type": "object" } } } },
                    "401": err("Missing or wrong bearer token"),
                    "409": err("This process does not schedule batch runs (`lambdaflow serve`)")
                }
            }},
            "/api/sql": { "post": {
                "summary": "One read-only SQL statement over the views (every view a table; `lambdaflow_freshness` beside them), run by DataFusion.",
                "requestBody": { "required": true, "content": { "application/json": { "schema": {
                    "type": "object", "required": ["sql"],
                    "properties": { "sql": { "type": "string", "example": "SELECT customer, total_amount FROM customer_totals ORDER BY total_amount DESC LIMIT 10" } } } } } },
                "responses": {
                    "200": { "description": "The rows, with each view's freshness; an Arrow IPC stream with `Accept: application/vnd.apache.arrow.stream`",
                        "content": {
                            "application/json": { "schema": { "$ref": "#/components/schemas/SqlAnswer" } },
                            "application/vnd.apache.arrow.stream": { "schema": { "type": "string", "format": "binary" } } } },
                    "400": sql_err("A bad body or a bad query (its SQLSTATE and position)"),
                    "401": err("Missing or wrong bearer token"),
                    "403": sql_err("A statement that writes (SQLSTATE 25006)"),
                    "404": err("SQL is not served by this process"),
                    "408": sql_err("Past `serving.sql-timeout` (SQLSTATE 57014)"),
                    "413": sql_err("More than 100,000 rows (SQLSTATE 54000): add a LIMIT"),
                    "503": sql_err("Out of SQL memory (SQLSTATE 53200)")
                }
            }},
            "/api/views": { "get": {
                "summary": "The views, with their SQL, columns and freshness.",
                "responses": {
                    "200": { "description": "Views", "content": { "application/json": { "schema": {
                        "type": "array", "items": { "$ref": "#/components/schemas/ViewInfo" } } } } },
                    "401": err("Missing or wrong bearer token")
                }
            }},
            "/api/views/{view}": { "get": {
                "summary": "The view's final rows (batch ⊕ speed) and what they are made of.",
                "parameters": get_params,
                "responses": {
                    "200": { "description": "The view", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/View" } } } },
                    "400": err("A bad parameter"),
                    "401": err("Missing or wrong bearer token"),
                    "404": err("No such view, or no table version as of `as_of`"),
                    "410": err("The files of the `as_of` version were removed by `lambdaflow compact` (VACUUM)")
                }
            }},
            "/api/views/{view}/stream": { "get": {
                "summary": "Server-Sent Events. A `view` event (the body of GET /api/views/{view}) now, after a batch swap, and when the subscriber fell behind. Then, without parameters: one `changes` event per change, the same bytes for every subscriber ({view, version, rows: the rows inserted or updated, removed: the rows that left the view, freshness}); with parameters: a `view` event whenever the selected rows change.",
                "parameters": view_params,
                "responses": {
                    "200": { "description": "An event stream", "content": { "text/event-stream": { "schema": { "type": "string" } } } },
                    "400": err("A bad parameter"),
                    "401": err("Missing or wrong bearer token"),
                    "404": err("No such view")
                }
            }}
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer",
                "description": "Required on every endpoint but /health when `serving.token` is set." } },
            "schemas": {
                "Error": { "type": "object", "required": ["error", "detail"], "properties": {
                    "error": { "type": "string", "description": "A stable code: bad_request, unauthorized, not_found, gone, method_not_allowed, conflict, not_ready, uri_too_long, headers_too_large, internal." },
                    "detail": { "type": "string", "description": "What is wrong, for a person." } } },
                "SqlError": { "type": "object", "required": ["error", "detail"], "properties": {
                    "error": { "type": "string", "description": "`sql` for a failed query; as in Error for a bad body." },
                    "detail": { "type": "string" },
                    "sqlstate": { "type": "string", "description": "PostgreSQL's error code, e.g. 42601 (syntax), 42P01 (no such table), 42703 (no such column), 25006 (a write)." },
                    "position": { "type": "integer", "nullable": true, "description": "Where a syntax error is in the query (1-based characters)." } } },
                "SqlAnswer": { "type": "object", "required": ["columns", "rows", "row_count", "freshness"], "properties": {
                    "columns": { "type": "array", "items": { "type": "object", "properties": {
                        "name": { "type": "string" }, "type": { "type": "string" } } } },
                    "rows": { "type": "array", "items": { "type": "object" } },
                    "row_count": { "type": "integer" },
                    "freshness": { "type": "object", "additionalProperties": { "$ref": "#/components/schemas/Freshness" },
                        "description": "Per view, what its rows are made of now." } } },
                "Freshness": { "type": "object", "properties": {
                    "batch_run": { "type": "string", "nullable": true },
                    "batch_started_at": { "type": "string", "nullable": true },
                    "batch_age_seconds": { "type": "number", "nullable": true },
                    "batch_offsets": { "type": "object", "additionalProperties": { "type": "integer" },
                        "description": "Per partition: events before this offset are in the batch view." },
                    "speed_offsets": { "type": "object", "additionalProperties": { "type": "integer" },
                        "description": "Per partition: the speed layer has consumed up to this offset." },
                    "speed_events_after_batch": { "type": "integer" },
                    "watermark": { "type": "string", "format": "date-time",
                        "description": "A view with a watermark, under `run`: the speed layer's event-time watermark (docs/time.md)." } } },
                "ViewInfo": { "type": "object", "properties": {
                    "name": { "type": "string" }, "sql": { "type": "string" },
                    "columns": { "type": "array", "items": { "type": "object" } },
                    "rows": { "type": "integer" },
                    "window": { "type": "object", "nullable": true,
                        "description": "A view with a window() in GROUP BY: its size and slide, and whether it has a watermark.",
                        "properties": { "size_seconds": { "type": "number" }, "slide_seconds": { "type": "number" },
                            "watermark": { "type": "boolean" } } },
                    "freshness": { "$ref": "#/components/schemas/Freshness" } } },
                "View": { "type": "object", "required": ["view", "rows", "freshness"], "properties": {
                    "view": { "type": "string" },
                    "columns": { "type": "array", "items": { "type": "object" } },
                    "rows": { "type": "array", "items": { "type": "object",
                        "description": "One final row; with explain, `_explain` holds {batch, speed}: the row's columns computed from each part alone; for a view with a watermark, `_window` is open, closed or exact." } },
                    "total_rows": { "type": "integer", "description": "Rows the selection has in all (paging)." },
                    "offset": { "type": "integer" },
                    "next_offset": { "type": "integer", "nullable": true, "description": "The `offset` of the next page; null on the last." },
                    "freshness": { "$ref": "#/components/schemas/Freshness" },
                    "version": { "type": "integer" },
                    "as_of": { "type": "object", "description": "With `?as_of=`: the table version answered.",
                        "properties": { "table_version": { "type": "integer" } } } } }
            }
        },
        "security": [ { "bearer": [] } ]
    })
}
