//! Event time through every layer, against the real broker: a view grouped by Spark's
//! `window()` over a timestamp field, computed by the batch layer from the historical files,
//! kept up by the speed layer from Kafka (events out of order and hours late), served as JSON
//! with the window bounds as RFC 3339 strings, and unchanged by a `kill -9` and a batch run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lambdaflow::storage::{Layout, delta};

use crate::util::{self, Env, get_json, kill9};

const CONFIG: &str = r#"
[speed]
linger = "2ms"
checkpoint-interval = "100ms"

[schema]
fields = [
  { name = "customer", type = "string" },
  { name = "amount", type = "integer" },
  { name = "ts", type = "timestamp", unit = "ms", nullable = true },
]

[[views]]
name = "hourly"
sql = "SELECT window.start, window.end, customer, SUM(amount) AS total FROM events GROUP BY window(ts, '1 hour'), customer"
watermark = "30 minutes"

[[views]]
name = "recent"
sql = "SELECT window.start, window.end, customer, SUM(amount) AS total FROM events GROUP BY window(ts, '1 hour'), customer"
watermark = "30 minutes"
retention = "6 hours"

[[views]]
name = "per_partition"
sql = "SELECT _kafka_partition AS p, COUNT(*) AS n, MAX(_kafka_offset) AS last FROM events GROUP BY _kafka_partition"

[[views]]
name = "by_arrival"
sql = "SELECT window.start, COUNT(*) AS n FROM events GROUP BY window(_kafka_timestamp, '1 minute')"

[[views]]
name = "hopping"
sql = "SELECT window, COUNT(*) AS n FROM events GROUP BY window(ts, '1 hour', '30 minutes')"
"#;

/// 2026-12-01T00:00:00Z in milliseconds.
const DAY: i64 = 1_796_083_200_000;
const HOUR: i64 = 3_600_000;

/// The event of `i`: a customer, an amount and a time within the day, as JSON, with its time
/// written one of three ways.
fn event(i: i64) -> (String, i64, i64, String) {
    let customer = format!("c{}", i % 7);
    let amount = i % 11 + 1;
    // Out of order: times jump around the day; event 1000 is ten years ahead (a mistyped
    // year), event 1400 from the day's first minute (late by then).
    let ms = match i {
        1000 => DAY + 3_653 * 24 * HOUR,
        1400 => DAY + 60_000,
        _ => DAY + (i * 7_919_000) % (24 * HOUR),
    };
    let at = chrono::DateTime::from_timestamp_millis(ms).unwrap();
    let ts = match i % 3 {
        0 => ms.to_string(),
        1 => format!("\"{}\"", at.format("%Y-%m-%dT%H:%M:%S%.3fZ")),
        _ => format!(
            "\"{}\"",
            at.with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap())
                .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
        ),
    };
    let line = format!(r#"{{"customer": "{customer}", "amount": {amount}, "ts": {ts}}}"#);
    (customer, amount, ms, line)
}

/// The events of a Server-Sent Events stream, as (event, data) on a channel, read by a thread.
fn sse(addr: &str, path: &str) -> std::sync::mpsc::Receiver<(String, serde_json::Value)> {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut event = String::new();
        for line in BufReader::new(s).lines() {
            let Ok(line) = line else { return };
            if let Some(v) = line.strip_prefix("event: ") {
                event = v.to_string();
            } else if let Some(d) = line.strip_prefix("data: ")
                && let Ok(v) = serde_json::from_str(d)
                && tx.send((event.clone(), v)).is_err()
            {
                return;
            }
        }
    });
    rx
}

/// A row of the hourly views: (window start, customer, total).
fn window_row(r: &serde_json::Value) -> (String, String, i64) {
    (
        r["start"].as_str().unwrap().to_string(),
        r["customer"].as_str().unwrap().to_string(),
        r["total"].as_i64().unwrap(),
    )
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The hourly view of events `0..n`: (window start, customer) → total.
fn hourly_truth(n: i64) -> BTreeMap<(String, String), i64> {
    hourly_of((0..n).map(event))
}

/// The hourly view of `events`.
fn hourly_of(
    events: impl Iterator<Item = (String, i64, i64, String)>,
) -> BTreeMap<(String, String), i64> {
    let mut out = BTreeMap::new();
    for (c, a, ms, _) in events {
        let start = ms - ms.rem_euclid(HOUR);
        *out.entry((rfc3339(start), c)).or_default() += a;
    }
    out
}

/// The hopping view of events `0..n`: window start → count (each event in two windows).
fn hopping_truth(n: i64) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for i in 0..n {
        let (_, _, ms, _) = event(i);
        let last = ms - ms.rem_euclid(HOUR / 2);
        for start in [last, last - HOUR / 2] {
            *out.entry(rfc3339(start)).or_default() += 1;
        }
    }
    out
}

fn served_hourly(addr: &str) -> BTreeMap<(String, String), i64> {
    served_windows(addr, "hourly")
}

fn served_windows(addr: &str, view: &str) -> BTreeMap<(String, String), i64> {
    let body = get_json(addr, &format!("/api/views/{view}?limit=all"));
    body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let (start, customer, total) = window_row(r);
            let end = r["end"].as_str().unwrap();
            assert_eq!(
                chrono::DateTime::parse_from_rfc3339(end).unwrap()
                    - chrono::DateTime::parse_from_rfc3339(&start).unwrap(),
                chrono::Duration::hours(1),
                "{r}"
            );
            ((start, customer), total)
        })
        .collect()
}

fn served_hopping(addr: &str) -> BTreeMap<String, i64> {
    let body = get_json(addr, "/api/views/hopping?limit=all");
    body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["window"]["start"].as_str().unwrap().to_string(),
                r["n"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Waits until both views serve the truth of events `0..n`.
fn wait_for_truth(env: &Env, addr: &str, n: i64, run: &str) {
    let (hourly, hopping) = (hourly_truth(n), hopping_truth(n));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (h, p) = (served_hourly(addr), served_hopping(addr));
        if h == hourly && p == hopping {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the windowed views never reached the truth of {n} events: {} of {} hourly rows \
             and {} of {} hopping rows equal\n{}",
            h.iter().filter(|(k, v)| hourly.get(*k) == Some(v)).count(),
            hourly.len(),
            p.iter().filter(|(k, v)| hopping.get(*k) == Some(v)).count(),
            hopping.len(),
            env.log(run)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the server at `addr` serves `hourly` with its batch view taken up (nothing in the
/// speed part).
fn wait_for_batch(addr: &str) {
    let freshness = || get_json(addr, "/api/views/hourly?limit=1")["freshness"].clone();
    util::eventually(
        60,
        || freshness()["speed_events_after_batch"] == 0,
        || format!("the batch view taken up: {}", freshness()),
    );
}

/// Checks each row's `_window` in an `explain=true` answer against the watermark `wm`: `open`
/// before its end passed, then `closed` with a speed part or `exact` without. Returns how many
/// rows are in each state.
fn window_states(body: &serde_json::Value, wm: &str) -> BTreeMap<&'static str, usize> {
    let wm_at = chrono::DateTime::parse_from_rfc3339(wm).unwrap();
    let mut seen = BTreeMap::new();
    for r in body["rows"].as_array().unwrap() {
        let end = chrono::DateTime::parse_from_rfc3339(r["end"].as_str().unwrap()).unwrap();
        let state = r["_window"].as_str().unwrap_or_default();
        let speed_part = r["_explain"]["speed"]["total"].as_i64().is_some();
        let want = if end > wm_at {
            "open"
        } else if speed_part {
            "closed"
        } else {
            "exact"
        };
        assert_eq!(state, want, "{r} (watermark {wm})");
        *seen.entry(want).or_insert(0) += 1;
    }
    seen
}

#[test]
fn windowed_views_are_exact_through_batch_speed_restarts_and_batch_runs() {
    let addr = format!("127.0.0.1:{}", util::free_port());
    let env = Env::new(
        "time-windows",
        &format!("{CONFIG}\n[serving]\nlisten = \"{addr}\"\n"),
    );
    // The historical files: events 0..400, and the seed's lines (no time: in no window).
    let mut history: Vec<String> = (0..400).map(|i| event(i).3).collect();
    history.push(r#"{"customer": "Ali", "amount": 120}"#.into());
    std::fs::write(env.path("transactions.json"), history.join("\n") + "\n").unwrap();
    let out = env.ok(&["batch"]);
    assert!(out.contains("hourly"), "{out}");
    env.create_topic(2);
    let run = env.spawn("run", &["run"]);
    wait_for_truth(&env, &addr, 400, "run");
    // Events 400..1400 from Kafka, their times all over the day (hours late for the
    // windows already seen).
    let send = |r: std::ops::Range<i64>| {
        let msgs: Vec<Vec<u8>> = r.map(|i| event(i).3.into_bytes()).collect();
        env.send_raw(&msgs);
    };
    send(400..900);
    wait_for_truth(&env, &addr, 900, "run");
    // The checkpoint keeps the watermark: a restart goes on from it, not from nothing.
    let watermark = |addr: &str| {
        get_json(addr, "/api/status")["speed"]["event_time"]["hourly"]["watermark"].clone()
    };
    util::eventually(
        30,
        || watermark(&addr).is_string(),
        || format!("a watermark in the status: {}", watermark(&addr)),
    );
    let before = watermark(&addr);
    std::thread::sleep(Duration::from_millis(500));
    kill9(run);
    let run = env.spawn("run2", &["run"]);
    // Once the restarted speed layer reports (no event has come since the kill).
    util::eventually(
        60,
        || {
            util::try_http(&addr, "GET", "/api/status", &[]).is_ok_and(|(c, body)| {
                c == 200
                    && serde_json::from_str::<serde_json::Value>(&body).unwrap()["speed"]
                        .is_object()
            })
        },
        || env.log("run2"),
    );
    assert_eq!(
        watermark(&addr),
        before,
        "the watermark after a kill -9; the checkpoint: {}",
        std::fs::read_to_string(env.path("output/_speed/checkpoint.json")).unwrap_or_default()
    );
    send(900..1400);
    wait_for_truth(&env, &addr, 1400, "run2");
    // A batch run takes the archived events into the batch views (once all are archived);
    // the answer stays, and the speed part is empty once the run takes the batch view up.
    env.wait_checkpointed(1000);
    let out = env.ok(&["batch"]);
    assert!(out.contains("hourly"), "{out}");
    wait_for_truth(&env, &addr, 1400, "run2");
    wait_for_batch(&addr);
    let body = get_json(&addr, "/api/views/hourly?limit=all");
    assert!(body["freshness"]["batch_run"].is_string(), "{body}");
    // The watermark: within the day (the event ten years ahead did not move it, and was
    // counted); an event from the day's first minute is late, counted, and in its window.
    // `emit=final`: a window's row when it closes, and again when a late event changes it.
    let finals = sse(&addr, "/api/views/hourly/stream?emit=final");
    std::thread::sleep(Duration::from_millis(300));
    send(1400..1401);
    let late_row = (rfc3339(DAY), event(1400).0);
    let late_total = hourly_truth(1401)[&late_row];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (event, data) = finals
            .recv_timeout(left)
            .expect("a `final` event for the late event's window within 30 s");
        assert_eq!(event, "final", "{data}");
        if data["late"] == true {
            let rows = data["rows"].as_array().unwrap();
            let r = rows
                .iter()
                .find(|r| r["start"] == late_row.0.as_str() && r["customer"] == late_row.1.as_str())
                .unwrap_or_else(|| panic!("the late window in {data}"));
            assert_eq!(r["total"], late_total, "{r}");
            assert_eq!(r["_window"], "closed", "{r}");
            break;
        }
    }
    let (code, body) = util::http(&addr, "GET", "/api/views/hopping/stream?emit=final", &[]);
    assert!(
        code == 400 && body.contains("no watermark"),
        "{code} {body}"
    );
    wait_for_truth(&env, &addr, 1401, "run2");
    // Time-range reads: a key's windows in time order, within a range or all; all keys' in a
    // range; bad times named.
    let truth = hourly_truth(1401);
    let windows = |path: &str| -> Vec<(String, String, i64)> {
        get_json(&addr, path)["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(window_row)
            .collect()
    };
    let want = |c: Option<&str>, from: &str, to: &str| -> Vec<(String, String, i64)> {
        let mut rows: Vec<_> = truth
            .iter()
            .filter(|((s, k), _)| c.is_none_or(|c| c == k) && s.as_str() >= from && s.as_str() < to)
            .map(|((s, k), v)| (s.clone(), k.clone(), *v))
            .collect();
        rows.sort();
        rows
    };
    let c3 = windows("/api/views/hourly?key=c3&limit=all");
    assert_eq!(c3, want(Some("c3"), "", "~"), "c3's windows in time order");
    assert!(c3.len() > 10, "{c3:?}");
    let (from, to) = ("2026-12-01T10:00:00Z", "2026-12-01T14:00:00Z");
    assert_eq!(
        windows(&format!("/api/views/hourly?key=c3&from={from}&to={to}")),
        want(Some("c3"), from, to)
    );
    let mut all = windows(&format!("/api/views/hourly?from={from}&to={to}&limit=all"));
    // All keys: in time order (keys within a window in any order).
    assert!(all.windows(2).all(|w| w[0].0 <= w[1].0), "{all:?}");
    all.sort();
    assert_eq!(all, want(None, from, to));
    for (path, word) in [
        ("/api/views/hourly?from=yesterday", "from `yesterday`"),
        (
            "/api/views/hourly?to=2026-12-01T10:00:00",
            "to `2026-12-01T10:00:00`",
        ),
        (
            "/api/views/hopping?key=c3",
            "no group key besides its window",
        ),
    ] {
        let (code, body) = util::http(&addr, "GET", path, &[]);
        assert!(code == 400 && body.contains(word), "{path}: {code} {body}");
    }
    let status = get_json(&addr, "/api/status");
    let et = &status["speed"]["event_time"]["hourly"];
    let wm = et["watermark"].as_str().unwrap_or_default();
    assert!(wm.starts_with("2026-12-01T2"), "{et}");
    assert_eq!(et["ahead"], 1, "{et}");
    assert!(et["late"].as_u64().unwrap() >= 1, "{et}");
    assert!(
        status["speed"]["event_time"]["hopping"].is_null(),
        "no watermark declared"
    );
    let body = get_json(&addr, "/api/views/hourly?limit=1");
    assert_eq!(body["freshness"]["watermark"], wm, "{}", body["freshness"]);
    // Each row says how far it can be trusted: the late event's window is closed (the speed
    // layer has a part of it), the other windows the watermark has passed are exact (the batch
    // run holds them whole), the later ones open.
    let body = get_json(&addr, "/api/views/hourly?limit=all&explain=true");
    let wm_at = chrono::DateTime::parse_from_rfc3339(wm).unwrap();
    let (late_start, late_customer) = (rfc3339(DAY), event(1400).0);
    let seen = window_states(&body, wm);
    for r in body["rows"].as_array().unwrap() {
        if r["start"] == late_start.as_str() && r["customer"] == late_customer.as_str() {
            assert_eq!(r["_window"], "closed", "the late event's window: {r}");
        }
    }
    assert!(seen.len() == 3, "rows of every state: {seen:?}");
    assert!(
        get_json(&addr, "/api/views/hopping?limit=1")["rows"][0]["_window"].is_null(),
        "a view without a watermark has no window state"
    );
    // Retention: the windows that end before the watermark less 6 hours are gone from
    // `recent`; the others are exact.
    let horizon = (wm_at - chrono::Duration::hours(6)).to_utc();
    let kept: BTreeMap<(String, String), i64> = hourly_truth(1401)
        .into_iter()
        .filter(|((start, _), _)| {
            let end =
                chrono::DateTime::parse_from_rfc3339(start).unwrap() + chrono::Duration::hours(1);
            end >= horizon
        })
        .collect();
    assert!(
        kept.len() < hourly_truth(1401).len() / 2,
        "retention cuts: {}",
        kept.len()
    );
    assert_eq!(
        served_windows(&addr, "recent"),
        kept,
        "retention at {horizon}"
    );
    // The Kafka record's own columns, archived with each event: the same after the batch run
    // took the events in (NULL for the file's events, which are in no arrival window).
    let body = get_json(&addr, "/api/views/per_partition?limit=all");
    let offsets = &body["freshness"]["speed_offsets"];
    let mut kafka_events = 0;
    for r in body["rows"].as_array().unwrap() {
        match r["p"].as_i64() {
            None => assert_eq!(r["n"], 401, "the file's events: {r}"),
            Some(p) => {
                let end = offsets[p.to_string()].as_i64().unwrap();
                assert_eq!(
                    (r["n"].as_i64(), r["last"].as_i64()),
                    (Some(end), Some(end - 1)),
                    "{r}"
                );
                kafka_events += end;
            }
        }
    }
    assert_eq!(kafka_events, 1001, "{body}");
    let arrivals: i64 = get_json(&addr, "/api/views/by_arrival?limit=all")["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["n"].as_i64().unwrap())
        .sum();
    assert_eq!(
        arrivals, 1001,
        "every Kafka event in a window of its record's timestamp"
    );
    let metrics = util::http(&addr, "GET", "/metrics", &[]).1;
    assert!(
        metrics.contains("lambdaflow_speed_watermark_seconds{view=\"hourly\"}")
            && metrics.contains("lambdaflow_speed_ahead_events_total{view=\"hourly\"} 1"),
        "{metrics}"
    );
    util::terminate(run);
}

/// `emit=final` as the watermark moves: a window's row comes once, when the watermark passes
/// its end, with its final total; a window still open does not come.
#[test]
fn emit_final_sends_a_window_when_the_watermark_closes_it() {
    let addr = format!("127.0.0.1:{}", util::free_port());
    let env = Env::new(
        "time-final",
        &format!("{CONFIG}\n[serving]\nlisten = \"{addr}\"\n"),
    );
    std::fs::write(env.path("transactions.json"), "").unwrap();
    env.create_topic(1);
    let run = env.spawn("run", &["run"]);
    get_json(&addr, "/health");
    let at = |h: i64, m: i64| DAY + h * HOUR + m * 60_000;
    let line = |c: &str, a: i64, ms: i64| {
        format!(r#"{{"customer": "{c}", "amount": {a}, "ts": {ms}}}"#).into_bytes()
    };
    env.send_raw(&[line("Ali", 1, at(10, 5))]);
    util::eventually(
        30,
        || get_json(&addr, "/api/views/hourly?limit=1")["freshness"]["watermark"].is_string(),
        || env.log("run"),
    );
    let finals = sse(&addr, "/api/views/hourly/stream?emit=final");
    std::thread::sleep(Duration::from_millis(300));
    // Two more events in [10:00, 11:00) while it is open; then one at 11:45 moves the
    // watermark (30 minutes behind) past 11:00.
    env.send_raw(&[line("Ali", 2, at(10, 20)), line("Sara", 4, at(10, 59))]);
    std::thread::sleep(Duration::from_millis(300));
    env.send_raw(&[line("Ali", 8, at(11, 45))]);
    let (event, data) = finals
        .recv_timeout(Duration::from_secs(30))
        .expect("a `final` event when the watermark passes 11:00");
    assert_eq!(
        (event.as_str(), &data["late"]),
        ("final", &serde_json::json!(false)),
        "{data}"
    );
    let mut rows: Vec<((String, String, i64), String)> = data["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (window_row(r), r["_window"].as_str().unwrap().to_string()))
        .collect();
    rows.sort();
    let ten = rfc3339(at(10, 0));
    assert_eq!(
        rows,
        [
            ((ten.clone(), "Ali".into(), 3), "closed".into()),
            ((ten, "Sara".into(), 4), "closed".into())
        ],
        "the [10:00, 11:00) window, whole, and not the open [11:00, 12:00): {data}"
    );
    util::terminate(run);
}

/// Speed layers in a consumer group, and a `serve` replica, on windowed views: each archive
/// commit records the partitions' latest event times in the master dataset, so the replica
/// serves the watermark, the window states and the retention cut; an instance killed with
/// `kill -9` is replaced by one that goes on from those times (events hours late after the
/// takeover stay behind the watermark); a batch run cuts retention at the same watermark.
#[test]
fn a_consumer_groups_watermark_is_in_the_table_for_replicas_and_the_next_owner() {
    let addr = format!("127.0.0.1:{}", util::free_port());
    let start = CONFIG.find("[schema]").unwrap();
    let end = CONFIG.find("[[views]]\nname = \"per_partition\"").unwrap();
    let env = Env::new(
        "time-group",
        &format!(
            "[speed]\nconsumer-group = true\nlinger = \"5ms\"\ncheckpoint-interval = \"200ms\"\n\n\
             [kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n\n\
             [serving]\nlisten = \"{addr}\"\n\n{}",
            &CONFIG[start..end]
        ),
    );
    env.create_topic(2);
    let serve = env.spawn("serve", &["serve"]);
    let a = env.spawn("a", &["speed", "--quiet"]);
    // Events 0..600 from all over the day, then 600..900 from its first hour (late, once the
    // watermark is near the day's end).
    let early = |i: i64| {
        let (c, a, _, _) = event(i);
        let ms = DAY + (i % 60) * 60_000;
        let line = format!(r#"{{"customer": "{c}", "amount": {a}, "ts": {ms}}}"#);
        (c, a, ms, line)
    };
    let one = |i: i64| if i < 600 { event(i) } else { early(i) };
    let all = |n: i64| (0..n).map(one);
    // Even events to partition 0, odd ones to 1: both partitions see the whole day, and the
    // watermark each one holds is known.
    let send = |r: std::ops::Range<i64>| {
        let msgs: Vec<(i32, Vec<u8>)> =
            r.map(|i| ((i % 2) as i32, one(i).3.into_bytes())).collect();
        env.send_to_partitions(&msgs);
    };
    let wait = |n: i64, who: &str| {
        let truth = hourly_of(all(n));
        util::eventually(
            90,
            || served_hourly(&addr) == truth,
            || {
                format!(
                    "the replica at the truth of {n} events\n{}\n{}",
                    env.log(who),
                    env.log("serve")
                )
            },
        );
    };
    let watermark = || {
        let f = &get_json(&addr, "/api/views/hourly?limit=1")["freshness"];
        f["watermark"].as_str().map(String::from)
    };
    let parse = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap();
    send(0..600);
    wait(600, "a");
    util::eventually(
        30,
        || watermark().is_some(),
        || "a watermark on the replica".into(),
    );
    // The view's watermark: the least of the partitions' latest event times, less 30 minutes.
    let latest = |p: i64| {
        (0..600)
            .filter(|i| i % 2 == p)
            .map(|i| one(i).2)
            .max()
            .unwrap()
    };
    let expected = chrono::DateTime::from_timestamp_millis(latest(0).min(latest(1)) - HOUR / 2)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    util::eventually(
        30,
        || watermark().as_deref() == Some(expected.as_str()),
        || format!("the replica's watermark at {expected}: {:?}", watermark()),
    );
    let before = watermark().unwrap();
    assert!(before.starts_with("2026-12-01T2"), "{before}");
    let seen = window_states(
        &get_json(&addr, "/api/views/hourly?limit=all&explain=true"),
        &before,
    );
    assert!(
        seen.contains_key("open") && seen.contains_key("closed"),
        "{seen:?}"
    );
    let status = get_json(&addr, "/api/status");
    assert!(
        status["event_time"]["hourly"]["watermark"].is_string(),
        "{status}"
    );
    let metrics = util::http(&addr, "GET", "/metrics", &[]).1;
    assert!(
        metrics.contains("lambdaflow_speed_watermark_seconds{view=\"hourly\"}"),
        "{metrics}"
    );
    let p = env.pipeline();
    let master = Layout::new(&p.config.output.dir, p.views.len())
        .master()
        .unwrap();
    let times = || {
        let t = delta::partition_txns(&master, &p.config.kafka.topic, &[0, 1], &["hourly".into()]);
        let t = t.unwrap();
        [0, 1].map(|p| t.get(&p).and_then(|t| t.event_times.get("hourly").copied()))
    };
    let recorded = times();
    assert!(recorded.iter().all(Option::is_some), "{recorded:?}");
    // The owner killed; the next one takes both partitions over from the table.
    kill9(a);
    let b = env.spawn("b", &["speed", "--quiet"]);
    send(600..900);
    wait(900, "b");
    let after = watermark().unwrap();
    assert!(parse(&after) >= parse(&before), "{after} < {before}");
    let now = times();
    for (r, n) in recorded.iter().zip(&now) {
        assert!(
            n >= r,
            "the next owner went on from the recorded times: {recorded:?} → {now:?}"
        );
    }
    // The first hour's windows have a late part: closed, the watermark well past them.
    let body = get_json(&addr, "/api/views/hourly?limit=all&explain=true");
    window_states(&body, &after);
    // A batch run: the windows it holds whole are exact; `recent` keeps the windows that end
    // within 6 hours of the watermark, on the replica and in the batch view alike.
    let out = env.ok(&["batch"]);
    assert!(out.contains("hourly"), "{out}");
    wait_for_batch(&addr);
    wait(900, "b");
    let wm = watermark().unwrap();
    let seen = window_states(
        &get_json(&addr, "/api/views/hourly?limit=all&explain=true"),
        &wm,
    );
    assert!(seen.contains_key("exact"), "{seen:?}");
    let horizon = (parse(&wm) - chrono::Duration::hours(6)).to_utc();
    let kept: BTreeMap<(String, String), i64> = hourly_of(all(900))
        .into_iter()
        .filter(|((start, _), _)| parse(start) + chrono::Duration::hours(1) >= horizon)
        .collect();
    assert!(kept.len() < hourly_of(all(900)).len() / 2, "{}", kept.len());
    assert_eq!(
        served_windows(&addr, "recent"),
        kept,
        "retention at {horizon}"
    );
    let batch_rows = std::fs::read_dir(env.path("output/recent/batch_view"))
        .unwrap()
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?;
            (name.starts_with("part-") && name.ends_with(".json"))
                .then(|| std::fs::read_to_string(&path).unwrap())
        })
        .collect::<String>();
    for line in batch_rows.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let start = parse(r["start"].as_str().unwrap());
        assert!(
            start + chrono::Duration::hours(1) >= horizon,
            "beyond retention in the batch view: {r}"
        );
    }
    util::terminate(b);
    util::terminate(serve);
}
