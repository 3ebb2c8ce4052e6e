//! The dashboard in headless Chromium and the HTTP API under a property-based fuzzer, both
//! against the running binary and the real broker. Chromium (Debian's `chromium`) and the
//! fuzzer (schemathesis, from PyPI) are installed by `.ci/run` and `scripts/test-tools.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{self, Env, get_json, terminate};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tool(path: PathBuf, install: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: run `{install}` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Headless Chromium (`$CHROMIUM`, else Debian's) and the test's Playwright client, checked.
fn chromium() -> String {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    tool(PathBuf::from(&chromium), "apt-get install chromium");
    tool(
        repo().join("tests/browser/node_modules/playwright-core"),
        "scripts/test-tools.sh",
    );
    chromium
}

#[test]
fn the_dashboard_updates_live_when_a_message_is_produced() {
    let chromium = chromium();
    let addr = format!("127.0.0.1:{}", util::free_port());
    let env = Env::new("browser", &format!("[serving]\nlisten = \"{addr}\"\n"));
    env.create_topic(1);
    let run = env.spawn("run", &["run"]);
    let body = get_json(&addr, "/api/views/customer_totals?key=Ali");
    assert_eq!(body["rows"][0]["total_amount"], 320, "{body}");
    std::fs::write(
        env.path("one.jsonl"),
        "{\"customer\":\"Ali\",\"amount\":80}\n",
    )
    .unwrap();
    // `LAMBDAFLOW_SCREENSHOT=docs/dashboard.png` refreshes the README's picture.
    let shot = std::env::var("LAMBDAFLOW_SCREENSHOT")
        .map(|p| repo().join(p))
        .unwrap_or_else(|_| env.path("dashboard.png"));
    let out = Command::new("node")
        .arg(repo().join("tests/browser/dashboard.mjs"))
        .arg(format!("http://{addr}/"))
        .args(["Ali", "400"])
        .arg(&shot)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_lambdaflow"))
        .arg("--config")
        .arg(env.path("lambdaflow.toml"))
        .args(["produce", "--file"])
        .arg(env.path("one.jsonl"))
        .env("CHROMIUM", &chromium)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "browser test failed:\n{}\n{}\n{}",
        util::stdout(&out),
        util::stderr(&out),
        env.log("run")
    );
    assert!(util::stdout(&out).contains("Ali: 320 -> 400 without a reload"));
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    terminate(run);
}

#[test]
fn the_api_survives_a_property_based_fuzzer() {
    let st = tool(
        repo().join(".cache/venv/bin/schemathesis"),
        "scripts/test-tools.sh",
    );
    let addr = format!("127.0.0.1:{}", util::free_port());
    let env = Env::new("fuzz-api", &format!("[serving]\nlisten = \"{addr}\"\n"));
    env.create_topic(1);
    env.ok(&["batch"]);
    let serve = env.spawn("serve", &["serve"]);
    get_json(&addr, "/health");
    let out = Command::new(st)
        .args(["run", &format!("http://{addr}/api/openapi.json")])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,content_type_conformance",
        ])
        .args(["--exclude-path", "/api/views/{view}/stream"])
        .args(["--max-examples", "60", "--seed", "7"])
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    let text = format!("{}\n{}", util::stdout(&out), util::stderr(&out));
    assert!(out.status.success(), "schemathesis found failures:\n{text}");
    // The SSE endpoint, excluded above because it never ends, answers errors as JSON too.
    let (s, b) = util::http(&addr, "GET", "/api/views/nope/stream", &[]);
    assert_eq!(s, 404);
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert!(v["error"].is_string() && v["detail"].is_string(), "{b}");
    terminate(serve);
}

#[test]
fn the_stream_sends_one_event_per_change() {
    use std::io::{BufRead, BufReader, Write};
    let addr = format!("127.0.0.1:{}", util::free_port());
    let env = Env::new("sse", &format!("[serving]\nlisten = \"{addr}\"\n"));
    env.create_topic(1);
    let run = env.spawn("run", &["run"]);
    get_json(&addr, "/health");
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        s,
        "GET /api/views/customer_totals/stream?key=Ali HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut lines = BufReader::new(s).lines();
    let mut next_event = || -> serde_json::Value {
        let mut event = String::new();
        loop {
            let line = lines.next().unwrap().unwrap();
            if let Some(v) = line.strip_prefix("event: ") {
                event = v.to_string();
            } else if let Some(d) = line.strip_prefix("data: ")
                && event == "view"
            {
                return serde_json::from_str(d).unwrap();
            }
        }
    };
    let first = next_event();
    assert_eq!(first["rows"][0]["total_amount"], 320, "{first}");
    env.send_raw(&[br#"{"customer":"Ali","amount":80}"#.to_vec()]);
    let second = next_event();
    assert_eq!(second["rows"][0]["total_amount"], 400, "{second}");
    assert_eq!(second["freshness"]["speed_offsets"]["0"], 1, "{second}");
    terminate(run);
}

/// A windowed view with a watermark on the dashboard: the time series of a key's windows, each
/// bar in its window's state — exact for the windows the batch view holds whole, open for the
/// one the watermark has not passed.
#[test]
fn the_dashboard_draws_a_windowed_view_as_a_time_series() {
    let chromium = chromium();
    let addr = format!("127.0.0.1:{}", util::free_port());
    let env = Env::new(
        "browser-series",
        &format!(
            "[serving]\nlisten = \"{addr}\"\n\n[schema]\nfields = [\n  {{ name = \"customer\", type = \"string\" }},\n  {{ name = \"amount\", type = \"integer\" }},\n  {{ name = \"ts\", type = \"timestamp\" }},\n]\n\n[[views]]\nname = \"hourly\"\nsql = \"SELECT window.start, window.end, customer, SUM(amount) AS total FROM events GROUP BY window(ts, '1 hour'), customer\"\nwatermark = \"30 minutes\"\n"
        ),
    );
    // Ali in five hours of the historical files; then one event from Kafka five hours later,
    // which moves the watermark past them.
    let history: Vec<String> = (0..5)
        .map(|h| {
            format!(
                r#"{{"customer": "Ali", "amount": {}, "ts": "2026-12-01T{:02}:10:00Z"}}"#,
                10 + h,
                8 + h
            )
        })
        .collect();
    std::fs::write(env.path("transactions.json"), history.join("\n") + "\n").unwrap();
    env.create_topic(1);
    let run = env.spawn("run", &["run"]);
    get_json(&addr, "/health");
    env.send_raw(&[br#"{"customer": "Ali", "amount": 7, "ts": "2026-12-01T18:05:00Z"}"#.to_vec()]);
    util::eventually(
        30,
        || get_json(&addr, "/api/views/hourly?key=Ali")["freshness"]["watermark"].is_string(),
        || env.log("run"),
    );
    let out = Command::new("node")
        .arg(repo().join("tests/browser/series.mjs"))
        .arg(format!("http://{addr}/?view=hourly&key=Ali"))
        .arg("6")
        .env("CHROMIUM", &chromium)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "browser test failed:\n{}\n{}",
        util::stdout(&out),
        util::stderr(&out)
    );
    let bars: Vec<serde_json::Value> = serde_json::from_str(util::stdout(&out).trim()).unwrap();
    let states: Vec<&str> = bars.iter().map(|b| b["state"].as_str().unwrap()).collect();
    assert_eq!(
        states,
        ["exact", "exact", "exact", "exact", "exact", "open"],
        "{bars:?}"
    );
    assert_eq!(bars[0]["start"], "2026-12-01T08:00:00Z", "{bars:?}");
    terminate(run);
}
