//! The master dataset as a Delta Lake table, against the real broker: what the speed layer
//! archives is read by another tool through the Delta log; `compact` merges and vacuums while
//! the speed layer appends, without changing a served number; an archive written before the
//! log existed is migrated.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::util::{self, Env, eventually, get_json, map, rows_of, terminate};

pub(crate) const FAST: &str =
    "[speed]\nmax-batch-rows = 500\nlinger = \"2ms\"\ncheckpoint-interval = \"50ms\"\n";

pub(crate) fn seed_truth() -> BTreeMap<String, i64> {
    map(&[("Ali", 320), ("Sara", 140), ("Mounir", 150)])
}

/// Sends events `range` (6 customers) in chunks of `chunk`, adding them to `truth`.
pub(crate) fn send(
    env: &Env,
    range: std::ops::Range<usize>,
    chunk: usize,
    truth: &mut BTreeMap<String, i64>,
) {
    let payloads: Vec<Vec<u8>> = range
        .map(|i| {
            let c = ["Ali", "Sara", "Mounir", "d3", "d4", "d5"][i % 6];
            let a = (i % 13) as i64 + 1;
            *truth.entry(c.to_string()).or_default() += a;
            format!("{{\"customer\":\"{c}\",\"amount\":{a}}}").into_bytes()
        })
        .collect();
    for part in payloads.chunks(chunk) {
        env.send_raw(part);
        std::thread::sleep(Duration::from_millis(60));
    }
}

/// The table as `tests/delta_read.py` reads it (Delta log replay + DuckDB).
fn read_table(dir: &Path) -> serde_json::Value {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(repo.join(".cache/venv/bin/python"))
        .arg(repo.join("tests/delta_read.py"))
        .arg(dir)
        .args(["customer", "amount"])
        .output()
        .expect("the test venv (scripts/test-tools.sh installs duckdb into .cache/venv)");
    assert!(
        out.status.success(),
        "delta_read.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sums(v: &serde_json::Value) -> BTreeMap<String, i64> {
    v["sums"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, s)| (k.clone(), s.as_i64().unwrap()))
        .collect()
}

/// Waits until the table holds `rows` events (its commit follows the checkpoint), returns it.
fn table_with(env: &Env, rows: u64) -> serde_json::Value {
    let dir = env.path("output/master");
    let mut last = serde_json::Value::Null;
    eventually(
        30,
        || {
            last = read_table(&dir);
            last["rows"].as_u64() == Some(rows)
        },
        || {
            format!(
                "the table does not hold {rows} events: {}",
                read_table(&dir)
            )
        },
    );
    last
}

/// Per customer, the streamed part of `truth` (the seed dataset taken out).
fn streamed(truth: &BTreeMap<String, i64>) -> BTreeMap<String, i64> {
    let seed = seed_truth();
    truth
        .iter()
        .map(|(k, v)| (k.clone(), v - seed.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v != 0)
        .collect()
}

#[test]
fn the_archive_is_a_delta_table_that_compacts_while_the_speed_layer_appends() {
    let env = Env::new("delta", FAST);
    env.create_topic(2);
    let mut truth = seed_truth();
    let speed = env.spawn("speed", &["speed", "--quiet"]);
    send(&env, 0..6_000, 300, &mut truth);
    // Another tool reads the same events through the Delta log.
    let table = table_with(&env, 6_000);
    assert_eq!(sums(&table), streamed(&truth));
    env.ok(&["batch"]);
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(env.path("output/batch_view/_manifest.json")).unwrap(),
    )
    .unwrap();
    // The batch run read the latest version; its offsets are the per-partition txn versions.
    assert_eq!(manifest["table_version"], table["version"], "{manifest}");
    assert!(
        table["version"].as_i64().unwrap() >= 2,
        "a commit per checkpoint: {table}"
    );
    for part in ["0", "1"] {
        let app = format!("lambdaflow/{}/{part}", env.topic);
        assert_eq!(
            table["txns"][&app], manifest["offsets"][&env.topic][part],
            "{table}"
        );
    }
    let files_before = table["files"].as_array().unwrap().len();
    assert!(files_before > 4, "many small segments: {table}");

    // Compact while events keep flowing into the speed layer and batch runs read the table.
    let counts = |out: &str| -> (usize, usize, usize) {
        let n = |after: &str| -> usize {
            let rest = &out[out.find(after).unwrap() + after.len()..];
            rest.split_whitespace().next().unwrap().parse().unwrap()
        };
        (n("compact:"), n("merged into"), n("file(s),"))
    };
    let merged = std::thread::scope(|s| {
        let producer = s.spawn(|| {
            let mut more = BTreeMap::new();
            send(&env, 6_000..9_000, 300, &mut more);
            more
        });
        let batches = s.spawn(|| {
            for _ in 0..3 {
                env.ok(&["batch"]);
            }
        });
        let out = env.ok(&["compact", "--retention", "1h"]);
        let (merged, written, deleted) = counts(&out);
        assert!(merged > written && written >= 1, "{out}");
        assert_eq!(
            deleted, 0,
            "the replaced files are younger than the retention: {out}"
        );
        batches.join().unwrap();
        for (k, v) in producer.join().unwrap() {
            *truth.entry(k).or_default() += v;
        }
        merged
    });
    let table = table_with(&env, 9_000);
    assert_eq!(sums(&table), streamed(&truth));
    // VACUUM with no retention deletes the replaced originals: on disk remain the table's files.
    let out = env.ok(&["compact", "--retention", "0s"]);
    assert!(counts(&out).2 >= merged, "{out}");
    let table = read_table(&env.path("output/master"));
    assert_eq!(table["rows"], 9_000, "{table}");
    let parquet = walk(&env.path("output/master"));
    assert_eq!(
        parquet.len(),
        table["files"].as_array().unwrap().len(),
        "files on disk: {parquet:?}\nin the table: {table}"
    );

    // Serving and verify are exact over the compacted table; a new batch run too.
    env.assert_served_and_verified(&truth);
    env.ok(&["batch"]);
    env.ok(&["serve", "--once"]);
    assert_eq!(
        env.view("serving_view.json", "customer", "total_amount"),
        truth
    );
    terminate(speed);
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if p.is_dir() && name != "_delta_log" {
            out.extend(walk(&p));
        } else if name.ends_with(".parquet") {
            out.push(p.display().to_string());
        }
    }
    out
}

#[test]
fn an_archive_written_before_the_delta_log_is_migrated() {
    let env = Env::new("delta-migrate", FAST);
    env.create_topic(1);
    let err = env.fails(&["batch", "--as-of", "0"]);
    assert!(err.contains("no Delta table there yet"), "{err}");
    let mut truth = seed_truth();
    let speed = env.spawn("speed", &["speed", "--quiet"]);
    send(&env, 0..1_200, 200, &mut truth);
    table_with(&env, 1_200);
    terminate(speed);
    // What an older lambdaflow left: the same segment files, no Delta log.
    std::fs::remove_dir_all(env.path("output/master/_delta_log")).unwrap();
    let out = env.ok(&["batch"]);
    assert!(out.contains("master table version 1,"), "{out}");
    let table = read_table(&env.path("output/master"));
    assert_eq!(table["rows"], 1_200, "{table}");
    assert_eq!(sums(&table), streamed(&truth));
    env.ok(&["serve", "--once"]);
    assert_eq!(
        env.view("serving_view.json", "customer", "total_amount"),
        truth
    );
    // The speed layer resumes on the migrated table without archiving anything twice.
    let then = truth.clone();
    let speed = env.spawn("speed", &["speed", "--quiet"]);
    send(&env, 1_200..1_500, 100, &mut truth);
    table_with(&env, 1_500);
    terminate(speed);
    // Time travel: the view as the table was at version 1 (the migration), not published.
    let out = env.ok(&["batch", "--as-of", "1"]);
    assert!(out.contains("printed, not published"), "{out}");
    for (k, v) in &then {
        assert!(
            out.contains(&format!("|{k:<8}|{v:<12}|")),
            "{k} {v} missing:\n{out}"
        );
    }
    let err = env.fails(&["batch", "--as-of", "99"]);
    assert!(err.contains("as of version 99"), "{err}");
    let err = env.fails(&["batch", "--as-of", "2001-01-01T00:00:00Z"]);
    assert!(
        err.contains("no version was committed at or before 2001"),
        "{err}"
    );
    let out = env.ok(&["verify"]);
    assert!(out.contains(": 0 difference(s)"), "{out}");
    the_api_answers_as_of_a_table_version(&env, &then, &truth);
}

/// `GET /api/views/{view}?as_of=` on `serve`: the view as of version 1 (`then`), the live one
/// (`now`) beside it; errors for a version or time the table does not have, a bad value, a
/// stream; 410 once `compact` has vacuumed the files of version 1.
fn the_api_answers_as_of_a_table_version(
    env: &Env,
    then: &BTreeMap<String, i64>,
    now: &BTreeMap<String, i64>,
) {
    let addr = format!("127.0.0.1:{}", util::free_port());
    let listen = format!("--listen={addr}");
    let serve = env.spawn("serve", &["serve", &listen]);
    let live = get_json(&addr, "/api/views/customer_totals");
    assert_eq!(&rows_of(&live, "customer", "total_amount"), now);
    let past = get_json(&addr, "/api/views/customer_totals?as_of=1");
    assert_eq!(&rows_of(&past, "customer", "total_amount"), then, "{past}");
    assert_eq!(past["as_of"]["table_version"], 1, "{past}");
    let key = get_json(&addr, "/api/views/customer_totals?as_of=1&key=Ali");
    assert_eq!(key["rows"][0]["total_amount"], then["Ali"], "{key}");
    // A time resolves to the version committed at or before it: now is the latest version.
    // (Whole seconds: wait one, so that the last commit is not in the second `t` rounds down to.)
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let t = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let latest = get_json(&addr, &format!("/api/views/customer_totals?as_of={t}"));
    assert_eq!(&rows_of(&latest, "customer", "total_amount"), now);
    for (path, status, detail) in [
        ("?as_of=99", 404, "no version as of version 99"),
        ("?as_of=2001-01-01T00:00:00Z", 404, "no version as of 2001"),
        ("?as_of=yesterday", 400, "neither a table version nor"),
        ("/stream?as_of=1", 400, "a stream follows the live view"),
    ] {
        let (s, body) = util::http(
            &addr,
            "GET",
            &format!("/api/views/customer_totals{path}"),
            &[],
        );
        assert_eq!(s, status, "{path}: {body}");
        assert!(body.contains(detail), "{path}: {body}");
    }
    // Compact merges what the batch view covers and, with no retention, deletes the originals.
    // A kept answer stays served (it is still that version's view); a server that does not
    // keep it cannot compute version 1 again, and says so.
    env.ok(&["batch"]);
    let out = env.ok(&["compact", "--retention", "0s"]);
    assert!(!out.contains(" 0 file(s) deleted"), "{out}");
    let kept = get_json(&addr, "/api/views/customer_totals?as_of=1");
    assert_eq!(&rows_of(&kept, "customer", "total_amount"), then);
    terminate(serve);
    let addr = format!("127.0.0.1:{}", util::free_port());
    let listen = format!("--listen={addr}");
    let serve = env.spawn("serve", &["serve", &listen]);
    get_json(&addr, "/health");
    let (s, body) = util::http(&addr, "GET", "/api/views/customer_totals?as_of=1", &[]);
    assert_eq!(s, 410, "{body}");
    assert!(body.contains("removed by `lambdaflow compact`"), "{body}");
    terminate(serve);
}
