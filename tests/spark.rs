//! The batch layer on a real Apache Spark (the Spark Connect server `scripts/test.sh` starts
//! with `scripts/spark.sh`): the same views, dead letters and Lambda loop as the embedded
//! engine, and a clear error when Spark is unreachable.

use std::time::{Duration, Instant};

use lambdaflow::config::{BatchEngine, Config};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::util::{self, Env, map, terminate};

const SCHEMA: &str = r#"
[schema]
table = "orders"
fields = [
  { name = "customer", type = "string" },
  { name = "amount", type = "double" },
  { name = "qty", type = "integer", nullable = true },
  { name = "vip", type = "boolean", nullable = true },
  { name = "ts", type = "timestamp", unit = "ms", nullable = true },
]

[[views]]
name = "per_customer"
sql = "SELECT customer, SUM(amount) AS total, COUNT(*) AS n, AVG(amount) AS mean, MIN(amount) AS lo, MAX(amount) AS hi FROM orders GROUP BY customer"

[[views]]
name = "vip_upper"
sql = "SELECT upper(customer) AS c, SUM(qty) AS q, COUNT(qty) AS nq, MIN(customer) AS first, MAX(qty) AS top FROM orders WHERE amount >= 10 AND vip GROUP BY upper(customer)"

[[views]]
name = "by_vip"
sql = "SELECT vip, COUNT(*) AS n, SUM(amount * 2) AS s, AVG(qty) AS mq FROM orders WHERE qty IS NOT NULL AND qty % 3 <> 1 OR customer IN ('c1', 'é2') GROUP BY vip"

[[views]]
name = "top"
sql = "SELECT customer, SUM(amount) AS t FROM orders WHERE customer LIKE 'c%' GROUP BY customer HAVING t > 500 ORDER BY t DESC LIMIT 5"

[[views]]
name = "hourly"
sql = "SELECT window.start, window.end, customer, SUM(amount) AS total, COUNT(*) AS n FROM orders GROUP BY window(ts, '1 hour'), customer ORDER BY start, customer"

[[views]]
name = "hopping"
sql = "SELECT window, COUNT(*) AS n, MAX(amount) AS hi, MIN(ts) AS first FROM orders GROUP BY window(ts, '2 hours', '30 minutes', '10 minutes') ORDER BY window.start"

[[views]]
name = "daily"
sql = "SELECT date_trunc('day', ts) AS day, SUM(qty) AS q, COUNT(ts) AS timed FROM orders GROUP BY date_trunc('day', ts)"

[[views]]
name = "kafka"
sql = "SELECT _kafka_partition AS p, COUNT(*) AS n, MAX(_kafka_offset) AS last, COUNT(_kafka_timestamp) AS stamped, MIN(_kafka_key) AS key FROM orders GROUP BY _kafka_partition"

[[views]]
name = "overall"
sql = "SELECT COUNT(*) AS n, SUM(qty) AS q, MIN(customer) AS first, MAX(amount) AS hi FROM orders"
"#;

/// A random event line, or (one time in `bad_every`) a line lambdaflow rejects or skips.
fn line(rng: &mut StdRng, bad_every: u32) -> String {
    let names = ["c0", "c1", "é2", "Ça", "c4", "c5 x", "c\"6", "c7"];
    let customer = names[rng.random_range(0..names.len())];
    let amount = match rng.random_range(0..4) {
        0 => format!("{}", rng.random_range(0..400)),
        _ => format!("{:.2}", rng.random_range(0.0..400.0)),
    };
    let qty = match rng.random_range(0..5) {
        0 => String::new(),
        1 => ", \"qty\": null".into(),
        _ => format!(", \"qty\": {}", rng.random_range(-5..50)),
    };
    let vip = match rng.random_range(0..3) {
        0 => String::new(),
        1 => ", \"vip\": true".into(),
        _ => ", \"vip\": false".into(),
    };
    // Around 2026-12-01T00:00Z, over three days: RFC 3339 in UTC or with an offset, epoch
    // milliseconds, null or missing.
    let ms = 1_796_083_200_000i64 + rng.random_range(0..3 * 86_400_000i64);
    let at = chrono::DateTime::from_timestamp_millis(ms).unwrap();
    let ts = match rng.random_range(0..6) {
        0 => String::new(),
        1 => ", \"ts\": null".into(),
        2 => format!(", \"ts\": {ms}"),
        3 => format!(", \"ts\": \"{}\"", at.format("%Y-%m-%dT%H:%M:%S%.3fZ")),
        4 => format!(
            ", \"ts\": \"{}\"",
            at.with_timezone(&chrono::FixedOffset::west_opt(5 * 3600).unwrap())
                .format("%Y-%m-%d %H:%M:%S%:z")
        ),
        _ => format!(", \"ts\": \"{}\"", at.format("%Y-%m-%dT%H:%M:%S%.6f+00:00")),
    };
    let c = serde_json::to_string(customer).unwrap();
    if rng.random_range(0..bad_every) == 0 {
        let bad = [
            "not json at all".to_string(),
            format!("{{\"customer\": {c}, \"amount\": \"12\"}}"),
            format!("{{\"customer\": {c}}}"),
            r#"{"customer": null, "amount": 3}"#.to_string(),
            r#"{"customer": 5, "amount": 3}"#.to_string(),
            format!("{{\"customer\": {c}, \"amount\": 1e400}}"),
            format!("{{\"customer\": {c}, \"amount\": 1, \"qty\": 1.5}}"),
            format!("{{\"customer\": {c}, \"amount\": 1, \"qty\": 99999999999999999999}}"),
            format!("{{\"customer\": {c}, \"amount\": 1, \"vip\": \"yes\"}}"),
            "[1, 2]".to_string(),
            format!("{{\"customer\": {c}, \"amount\": 2"),
            format!("{{\"customer\": {c}, \"amount\": 1, \"ts\": \"2026-12-01T10:00:00\"}}"),
            format!("{{\"customer\": {c}, \"amount\": 1, \"ts\": \"2026-02-30T10:00:00Z\"}}"),
            format!(
                "{{\"customer\": {c}, \"amount\": 1, \"ts\": \"2026-12-01T10:00:00.1234567Z\"}}"
            ),
            format!("{{\"customer\": {c}, \"amount\": 1, \"ts\": 1.5}}"),
            format!("{{\"customer\": {c}, \"amount\": 1, \"ts\": \"tomorrow\"}}"),
            // Not bad: skipped, or read as lambdaflow reads them.
            String::new(),
            "   ".to_string(),
            format!("{{\"customer\": {c}, \"amount\": 7, \"customer\": \"c0\"}}\r"),
            format!("  {{\"extra\": {{\"a\": [1]}}, \"customer\": {c}, \"amount\": 0.1}}  "),
        ];
        return bad[rng.random_range(0..bad.len())].clone();
    }
    format!("{{\"customer\": {c}, \"amount\": {amount}{qty}{vip}{ts}}}")
}

/// Runs a batch with `engine` (library API) and returns, per view, its rows in order; the
/// manifest's counts; and the dead-letter file.
fn batch_with(env: &Env, engine: BatchEngine) -> (Vec<Vec<String>>, serde_json::Value, String) {
    let mut cfg = Config::load(Some(&env.path("lambdaflow.toml")), &vec![]).unwrap();
    cfg.batch.engine = engine;
    cfg.batch.spark_remote = util::spark_remote();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let p = rt.block_on(cfg.compile()).unwrap();
    let run = rt.block_on(lambdaflow::batch::run(&p, false)).unwrap();
    let views = run
        .views
        .iter()
        .map(|(_, _, rows)| crate::fuzz::cells(rows))
        .collect();
    let mut m = serde_json::to_value(&run.manifest).unwrap();
    assert_eq!(m["engine"], format!("{engine:?}").to_lowercase());
    for k in ["run_id", "started_at", "duration_ms", "engine"] {
        m.as_object_mut().unwrap().remove(k);
    }
    let dead = std::fs::read_to_string(env.path("output/batch_view/_dead_letter.jsonl"))
        .unwrap_or_default();
    (views, m, dead)
}

#[test]
fn spark_computes_what_the_embedded_engine_computes_on_random_datasets() {
    for seed in [7u64, 2026] {
        let mut rng = StdRng::seed_from_u64(seed);
        let env = Env::new(&format!("spark-eq-{seed}"), SCHEMA);
        // Three dataset files in a directory, with bad, blank and CRLF lines.
        std::fs::create_dir(env.path("data")).unwrap();
        for f in 0..3 {
            let n = rng.random_range(1..4000);
            let text: Vec<String> = (0..n).map(|_| line(&mut rng, 12)).collect();
            let end = if f == 1 { "" } else { "\n" };
            std::fs::write(
                env.path(&format!("data/part-{f}.json")),
                text.join("\n") + end,
            )
            .unwrap();
        }
        let cfg = std::fs::read_to_string(env.path("lambdaflow.toml"))
            .unwrap()
            .replace(
                &format!(
                    "dataset = [\"{}\"]",
                    env.path("transactions.json").display()
                ),
                &format!("dataset = [\"{}\"]", env.path("data").display()),
            );
        std::fs::write(env.path("lambdaflow.toml"), cfg).unwrap();
        // The archive: the speed layer's segments of random events, over two partitions.
        env.create_topic(2);
        let msgs: Vec<Vec<u8>> = (0..1500)
            .map(|_| line(&mut rng, 1_000_000).into_bytes())
            .collect();
        let speed = env.spawn_speed();
        env.send_raw(&msgs[..700]);
        env.wait_checkpointed(700);
        env.send_raw(&msgs[700..]);
        env.wait_checkpointed(1500);
        terminate(speed);

        let (embedded, m1, dead1) = batch_with(&env, BatchEngine::Datafusion);
        let (spark, m2, dead2) = batch_with(&env, BatchEngine::Spark);
        assert!(
            m1["bad"].as_u64().unwrap() > 0 && m1["segments"].as_u64().unwrap() >= 2,
            "{m1}"
        );
        assert_eq!(m1, m2, "seed {seed}: the manifests differ");
        assert_eq!(dead1, dead2, "seed {seed}: the dead letters differ");
        for (i, (a, b)) in embedded.iter().zip(&spark).enumerate() {
            assert!(!a.is_empty(), "seed {seed}: view {i} is empty");
            assert_eq!(a, b, "seed {seed}: view {i} differs (rows in order)");
        }
    }
}

#[test]
fn the_seed_and_the_workshop_queries_give_the_workshop_numbers_on_spark() {
    for (name, extra, batch, serving) in [
        (
            "spark-seed",
            "",
            map(&[("Ali", 320), ("Sara", 140), ("Mounir", 150)]),
            map(&[("Ali", 400), ("Sara", 180), ("Mounir", 350)]),
        ),
        (
            "spark-q2",
            crate::Q2,
            map(&[("Ali", 320)]),
            map(&[("Ali", 400), ("Mounir", 350)]),
        ),
        (
            "spark-q3",
            crate::Q3,
            map(&[("Ali", 320), ("Mounir", 150)]),
            map(&[("Ali", 320), ("Mounir", 350)]),
        ),
    ] {
        let env = Env::new(name, extra).with_spark();
        let [b, _, s] = crate::seed_flow(&env);
        assert_eq!(b, batch, "{name}: batch view");
        assert_eq!(s, serving, "{name}: serving view");
        // The next batch run on Spark reads the archived events: serving stays exact.
        let out = env.ok(&["batch"]);
        assert!(
            out.contains("1 segment(s) (master table version 1"),
            "{out}"
        );
        assert!(out.trim_end().ends_with("ms on spark"), "{out}");
        env.ok(&["serve", "--once"]);
        assert_eq!(
            env.view("serving_view.json", "customer", "total_amount"),
            serving
        );
        let verified = env.ok(&["verify"]);
        assert!(verified.contains(": 0 difference(s)"), "{verified}");
    }
}

#[test]
fn the_lambda_loop_stays_exact_with_spark_as_the_batch_engine() {
    crate::lambda::recompute_while_events_flow(true);
}

#[test]
fn spark_unreachable_fails_within_seconds_naming_the_remote_and_keeps_the_view() {
    let env = Env::new("spark-down", "");
    env.ok(&["batch"]);
    let before = std::fs::read_to_string(env.path("output/batch_view/_manifest.json")).unwrap();
    let remote = format!("sc://127.0.0.1:{}", util::free_port());
    let t = Instant::now();
    let err = env.fails(&["batch", "--engine", "spark", "--spark-remote", &remote]);
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "took {:?}",
        t.elapsed()
    );
    assert!(err.contains(&format!("Spark Connect at {remote}")), "{err}");
    let after = std::fs::read_to_string(env.path("output/batch_view/_manifest.json")).unwrap();
    assert_eq!(
        before, after,
        "the previous batch view must stay in service"
    );
    // A construct Spark computes differently is refused at start-up, by name.
    let env = Env::new(
        "spark-refuse",
        "[[views]]\nname = \"ratio\"\nsql = \"SELECT customer, SUM(amount / 3) AS t FROM events GROUP BY customer\"\n",
    )
    .with_spark();
    let err = env.fails(&["batch"]);
    assert!(
        err.contains("view `ratio`") && err.contains("divides integers"),
        "{err}"
    );
}

#[test]
fn spark_dying_mid_run_fails_within_seconds_naming_the_remote_and_keeps_the_view() {
    // A Spark Connect server of this test's own, killed with SIGKILL while it computes.
    let repo = env!("CARGO_MANIFEST_DIR");
    let port = util::free_ports(1);
    let script = |arg: &str| {
        let out = std::process::Command::new(format!("{repo}/scripts/spark.sh"))
            .arg(arg)
            .env("SPARK_PORT", port.to_string())
            .env("SPARK_DRIVER_MEMORY", "1g")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "spark.sh {arg}: {}",
            util::stderr(&out)
        );
    };
    script("start");
    let env = Env::new("spark-dies", "");
    env.ok(&["batch"]);
    let before = std::fs::read_to_string(env.path("output/batch_view/_manifest.json")).unwrap();
    // Enough lines that the run takes seconds on Spark.
    let mut text = String::new();
    for i in 0..400_000 {
        text.push_str(&format!(
            "{{\"customer\": \"c{}\", \"amount\": {i}}}\n",
            i % 977
        ));
    }
    std::fs::write(env.path("transactions.json"), text).unwrap();
    let remote = format!("sc://127.0.0.1:{port}");
    let run = env.spawn(
        "batch",
        &["batch", "--engine", "spark", "--spark-remote", &remote],
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while !env.log("batch").contains("computing on Spark") {
        assert!(Instant::now() < deadline, "{}", env.log("batch"));
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let pid =
        std::fs::read_to_string(format!("{repo}/.cache/spark/run-{port}/server.pid")).unwrap();
    std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
    let killed = Instant::now();
    let status = run.wait();
    let waited = killed.elapsed();
    script("stop");
    let log = env.log("batch");
    assert!(!status.success(), "{log}");
    assert!(
        waited < Duration::from_secs(60),
        "took {waited:?} after the kill: {log}"
    );
    assert!(log.contains(&format!("Spark Connect at {remote}")), "{log}");
    let after = std::fs::read_to_string(env.path("output/batch_view/_manifest.json")).unwrap();
    assert_eq!(
        before, after,
        "the previous batch view must stay in service"
    );
}

const WINDOWS: &str = r#"
[schema]
table = "orders"
fields = [
  { name = "customer", type = "string" },
  { name = "amount", type = "integer" },
  { name = "ts", type = "timestamp", nullable = true },
]

[[views]]
name = "hourly"
sql = "SELECT window.start, window.end, customer, SUM(amount) AS total, COUNT(*) AS n FROM orders GROUP BY window(ts, '1 hour'), customer"

[[views]]
name = "hopping"
sql = "SELECT window.start, window.end, COUNT(*) AS n, MAX(amount) AS hi FROM orders GROUP BY window(ts, '1 hour', '15 minutes')"

[[views]]
name = "offset"
sql = "SELECT window.start, window.end, customer, SUM(amount) AS total FROM orders GROUP BY window(ts, '2 hours', '30 minutes', '10 minutes'), customer"
"#;

/// The same file through PySpark's DataFrame `window()` (tests/spark_window.py, `spark-submit`
/// in local mode), lambdaflow's embedded engine and its Spark engine: the same rows, tumbling
/// and hopping, with a start offset, events out of order and some without a time.
#[test]
fn windows_are_what_pysparks_own_window_computes() {
    let env = Env::new("spark-window", WINDOWS);
    let mut rng = StdRng::seed_from_u64(24);
    let names = ["c0", "c1", "é2", "c3"];
    let lines: Vec<String> = (0..3000)
        .map(|_| {
            let c = names[rng.random_range(0..names.len())];
            let amount = rng.random_range(1..400);
            // Over two days from 2026-12-01T00:00Z, in no order; one in ten without a time.
            let ms = 1_796_083_200_000i64 + rng.random_range(0..2 * 86_400_000i64);
            let at = chrono::DateTime::from_timestamp_millis(ms).unwrap();
            let ts = match rng.random_range(0..10) {
                0 => String::new(),
                _ => format!(", \"ts\": \"{}\"", at.format("%Y-%m-%dT%H:%M:%S%.3fZ")),
            };
            format!("{{\"customer\": \"{c}\", \"amount\": {amount}{ts}}}")
        })
        .collect();
    std::fs::write(env.path("transactions.json"), lines.join("\n") + "\n").unwrap();

    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let home = std::process::Command::new(repo.join("scripts/spark.sh"))
        .arg("home")
        .output()
        .unwrap();
    assert!(home.status.success(), "scripts/spark.sh home: {home:?}");
    let home = String::from_utf8(home.stdout).unwrap();
    let out =
        std::process::Command::new(std::path::Path::new(home.trim()).join("bin/spark-submit"))
            .args(["--master", "local[1]"])
            .arg(repo.join("tests/spark_window.py"))
            .arg(env.path("transactions.json"))
            .env("TZ", "UTC")
            .env("SPARK_LOCAL_IP", "127.0.0.1")
            .env("PYSPARK_PYTHON", repo.join(".cache/venv/bin/python"))
            .current_dir(env.path(""))
            .output()
            .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| {
            panic!(
                "spark_window.py printed no result: {}\n{stdout}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let pyspark: serde_json::Value = serde_json::from_str(result).unwrap();

    let (embedded, _, _) = batch_with(&env, BatchEngine::Datafusion);
    let (spark, _, _) = batch_with(&env, BatchEngine::Spark);
    for (i, name) in ["hourly", "hopping", "offset"].iter().enumerate() {
        let sorted = |rows: &[String]| {
            let mut rows: Vec<Vec<String>> = rows
                .iter()
                .map(|r| r.split('|').map(String::from).collect())
                .collect();
            rows.sort();
            rows
        };
        let reference: Vec<Vec<String>> = serde_json::from_value(pyspark[name].clone()).unwrap();
        assert!(reference.len() > 48, "{name}: {} windows", reference.len());
        assert_eq!(
            sorted(&embedded[i]),
            reference,
            "{name}: embedded vs PySpark"
        );
        assert_eq!(
            sorted(&spark[i]),
            reference,
            "{name}: Spark engine vs PySpark"
        );
    }
}
