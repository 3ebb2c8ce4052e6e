//! The HTTP API through the router, without a socket: views, parameters, errors, explain,
//! health, metrics, the OpenAPI document and the bearer token.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use lambdaflow::serving::{self, ServingState, http};
use lambdaflow::storage::Layout;
use serde_json::Value;
use tower::ServiceExt;

use crate::util::Env;

/// The app state over the seed's batch view (no speed layer yet), on `rt`.
fn app_state(env: &Env, rt: &tokio::runtime::Runtime) -> http::AppState {
    env.ok(&["batch"]);
    let p = Arc::new(env.pipeline());
    let layout = Layout::new(&p.config.output.dir, p.views.len());
    let views = serving::from_files(&p, &layout).unwrap();
    rt.block_on(async {
        let (tx, rx) = tokio::sync::watch::channel(Arc::new(ServingState {
            version: 1,
            views,
            ..Default::default()
        }));
        std::mem::forget(tx); // the state never changes in these tests
        http::AppState::new(p, rx, None)
    })
}

/// A router over the seed's batch view.
fn app(env: &Env) -> (tokio::runtime::Runtime, axum::Router) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let router = http::router(app_state(env, &rt));
    (rt, router)
}

async fn call(app: &axum::Router, uri: &str, auth: Option<&str>) -> (StatusCode, String) {
    let mut req = Request::builder().uri(uri);
    if let Some(t) = auth {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn assert_error(status: StatusCode, body: &str, want: StatusCode, code: &str) {
    assert_eq!(status, want, "{body}");
    let v = json(body);
    assert_eq!(v["error"], code, "{body}");
    assert!(!v["detail"].as_str().unwrap().is_empty(), "{body}");
}

#[test]
fn views_parameters_and_errors() {
    let env = Env::new("api", "");
    let (rt, app) = app(&env);
    rt.block_on(async {
        let (s, b) = call(&app, "/api/views", None).await;
        assert_eq!(s, StatusCode::OK);
        let v = json(&b);
        assert_eq!(v[0]["name"], "customer_totals");
        assert!(v[0]["sql"].as_str().unwrap().contains("SUM(amount)"));
        assert!(v[0]["freshness"]["batch_run"].is_string());

        let (s, b) = call(&app, "/api/views/customer_totals", None).await;
        assert_eq!(s, StatusCode::OK);
        let v = json(&b);
        assert_eq!(
            v["rows"][0],
            json(r#"{"customer":"Ali","total_amount":320}"#)
        );
        assert!(v["freshness"]["batch_age_seconds"].as_f64().unwrap() >= 0.0);

        let (_, b) = call(
            &app,
            "/api/views/customer_totals?key=Sara&explain=true",
            None,
        )
        .await;
        let v = json(&b);
        assert_eq!(v["rows"].as_array().unwrap().len(), 1);
        assert_eq!(v["rows"][0]["total_amount"], 140);
        assert_eq!(v["rows"][0]["_explain"]["batch"]["total_amount"], 140);
        assert_eq!(
            v["rows"][0]["_explain"]["speed"]["total_amount"],
            Value::Null
        );

        let (_, b) = call(
            &app,
            "/api/views/customer_totals?order_by=total_amount:desc&limit=2",
            None,
        )
        .await;
        let names: Vec<String> = json(&b)["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["customer"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["Ali", "Mounir"]);
        let (_, b) = call(&app, "/api/views/customer_totals?order_by=-customer", None).await;
        assert_eq!(json(&b)["rows"][0]["customer"], "Sara");

        let (s, b) = call(&app, "/api/views/nope", None).await;
        assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
        assert!(
            b.contains("customer_totals"),
            "the error lists the views: {b}"
        );
        for bad in [
            "limit=-1",
            "limit=abc",
            "order_by=nope",
            "order_by=customer:sideways",
            "explain=maybe",
            "colour=blue",
        ] {
            let (s, b) = call(&app, &format!("/api/views/customer_totals?{bad}"), None).await;
            assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
        }
        let (s, b) = call(&app, "/api/nothing/here", None).await;
        assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
        let resp = app
            .clone()
            .oneshot(
                Request::builder()
                    .method("DELETE")
                    .uri("/api/views")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        let (s, b) = call(&app, "/api/batch", None).await;
        assert_error(s, &b, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    });
}

#[test]
fn health_metrics_openapi_and_dashboard() {
    let env = Env::new("api-ops", "");
    let (rt, app) = app(&env);
    rt.block_on(async {
        let (s, b) = call(&app, "/health", None).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(json(&b)["status"], "ready");

        call(&app, "/api/views/customer_totals", None).await;
        let (s, m) = call(&app, "/metrics", None).await;
        assert_eq!(s, StatusCode::OK);
        assert!(m.contains("lambdaflow_http_requests_total{method=\"GET\",path=\"/api/views/{view}\",status=\"200\"} 1"), "{m}");
        assert!(m.contains("lambdaflow_http_request_duration_seconds_bucket"), "{m}");
        assert!(m.contains("lambdaflow_batch_view_age_seconds"), "{m}");

        let (s, b) = call(&app, "/api/openapi.json", None).await;
        assert_eq!(s, StatusCode::OK);
        let doc = json(&b);
        assert_eq!(doc["openapi"], "3.0.3");
        for path in ["/health", "/metrics", "/api/views", "/api/views/{view}", "/api/views/{view}/stream", "/api/status", "/api/batch"] {
            assert!(doc["paths"][path].is_object(), "{path} is not documented");
        }
        assert_eq!(
            doc["paths"]["/api/views/{view}"]["get"]["parameters"][0]["schema"]["enum"][0],
            "customer_totals"
        );

        let (s, b) = call(&app, "/", None).await;
        assert_eq!(s, StatusCode::OK);
        assert!(b.contains("<title>lambdaflow</title>") && b.contains("EventSource"));
        assert!(!b.contains("http://") && !b.contains("https://"), "the dashboard loads nothing from the internet");

        let (s, b) = call(&app, "/api/status", None).await;
        assert_eq!(s, StatusCode::OK);
        assert!(json(&b)["batch"]["last_run"]["run_id"].is_string(), "{b}");
    });
}

#[test]
fn a_token_guards_everything_but_health() {
    let env = Env::new("api-token", "[serving]\ntoken = \"s3cret\"\n");
    let (rt, app) = app(&env);
    rt.block_on(async {
        for uri in [
            "/api/views",
            "/api/views/customer_totals",
            "/metrics",
            "/",
            "/api/openapi.json",
        ] {
            let (s, b) = call(&app, uri, None).await;
            assert_error(s, &b, StatusCode::UNAUTHORIZED, "unauthorized");
            let (s, b) = call(&app, uri, Some("wrong")).await;
            assert_error(s, &b, StatusCode::UNAUTHORIZED, "unauthorized");
            let (s, _) = call(&app, uri, Some("s3cret")).await;
            assert_eq!(s, StatusCode::OK, "{uri}");
        }
        let (s, _) = call(&app, "/api/views?access_token=s3cret", None).await;
        assert_eq!(s, StatusCode::OK);
        let (s, _) = call(&app, "/health", None).await;
        assert_eq!(s, StatusCode::OK);
    });
}

#[test]
fn a_stream_ordered_by_a_column_sends_its_first_page() {
    // Building the column's order takes the table's write lock: the stream must not hold the
    // read lock meanwhile (it would wait for itself).
    let env = Env::new("api-stream-order", "");
    let (rt, app) = app(&env);
    let first = rt.block_on(async {
        use futures::StreamExt;
        let req = Request::builder()
            .uri("/api/views/customer_totals/stream?order_by=total_amount:desc&limit=2")
            .body(Body::empty())
            .unwrap();
        // On a task of its own: if the stream blocked its thread, the timeout still fires.
        let first = tokio::spawn(async move {
            let resp = app.oneshot(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            resp.into_body().into_data_stream().next().await
        });
        tokio::time::timeout(std::time::Duration::from_secs(10), first).await
    });
    let Ok(first) = first else {
        rt.shutdown_background(); // a blocked worker must not keep the test from failing
        panic!("the stream sent nothing within 10 s");
    };
    let text = String::from_utf8_lossy(&first.unwrap().unwrap().unwrap()).into_owned();
    assert!(text.starts_with("event: view"), "{text}");
    let data: Value = json(text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap());
    let names: Vec<&str> = data["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["customer"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Ali", "Mounir"]);
    assert_eq!(data["total_rows"], 3);
}

/// Requests hyper rejects before any handler runs (a 100 KB request line, too many headers)
/// get the same JSON error shape as every other error, on a fresh connection and on one that
/// already served a request.
#[test]
fn requests_too_large_to_parse_get_json_errors() {
    use std::io::{Read, Write};
    let env = Env::new("api-too-large", "");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let state = app_state(&env, &rt);
    let addr = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(http::serve(listener, state, std::future::pending()));
        addr
    });
    let answer = |requests: &[String]| -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        // A server that keeps the connection open fails the test instead of hanging it.
        s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        for r in requests {
            s.write_all(r.as_bytes()).unwrap();
        }
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let long = format!(
        "GET /api/views/customer_totals?key={} HTTP/1.1\r\nhost: x\r\n\r\n",
        "a".repeat(100_000)
    );
    // More headers than hyper takes (100): 431 whatever the timing of the reads (a head over
    // its ~400 KB buffer is not: a large read can bring it in whole).
    let many_headers = format!(
        "GET /health HTTP/1.1\r\nhost: x\r\n{}\r\n",
        (0..200)
            .map(|i| format!("x-{i}: y\r\n"))
            .collect::<String>()
    );
    let ok = "GET /health HTTP/1.1\r\nhost: x\r\n\r\n".to_string();
    for (requests, status, code) in [
        (vec![long.clone()], "414", "uri_too_long"),
        (vec![ok.clone(), long], "414", "uri_too_long"),
        (vec![many_headers], "431", "headers_too_large"),
        (vec!["NOT HTTP\r\n\r\n".to_string()], "400", "bad_request"),
    ] {
        let out = answer(&requests);
        let at = out.find(&format!("HTTP/1.1 {status} "));
        let at = at.unwrap_or_else(|| panic!("no {status}: {out:?}"));
        let (head, body) = out[at..].split_once("\r\n\r\n").unwrap();
        assert!(head.contains("application/json"), "{head}");
        assert_error(
            StatusCode::from_bytes(status.as_bytes()).unwrap(),
            body,
            StatusCode::from_bytes(status.as_bytes()).unwrap(),
            code,
        );
        if requests.len() == 2 {
            assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
        }
    }
}
