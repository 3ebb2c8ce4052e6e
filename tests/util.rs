//! Test harness: a temporary workspace with its own config, output directory and Kafka topic,
//! and the `lambdaflow` binary run against the real broker that `scripts/test.sh` starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lambdaflow::config::{Config, Pipeline};

/// The broker under test (`LAMBDAFLOW_TEST_BOOTSTRAP`, default 127.0.0.1:9092).
pub fn bootstrap() -> String {
    std::env::var("LAMBDAFLOW_TEST_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// The Spark Connect server under test (`LAMBDAFLOW_TEST_SPARK`, default
/// sc://127.0.0.1:15002; `scripts/test.sh` starts one with `scripts/spark.sh`).
pub fn spark_remote() -> String {
    std::env::var("LAMBDAFLOW_TEST_SPARK").unwrap_or_else(|_| "sc://127.0.0.1:15002".into())
}

/// One test's workspace.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub topic: String,
}

/// The seed's historical dataset.
pub const SEED_DATASET: &str = "{\"customer\": \"Ali\", \"amount\": 120}\n{\"customer\": \"Sara\", \"amount\": 90}\n{\"customer\": \"Ali\", \"amount\": 200}\n{\"customer\": \"Mounir\", \"amount\": 150}\n{\"customer\": \"Sara\", \"amount\": 50}\n";
/// The seed's three real-time messages.
pub const SEED_MESSAGES: &str = "{\"customer\":\"Ali\",\"amount\":80}\n{\"customer\":\"Mounir\",\"amount\":200}\n{\"customer\":\"Sara\",\"amount\":40}\n";

impl Env {
    /// A workspace with the seed dataset and `extra` appended to its config file.
    pub fn new(name: &str, extra: &str) -> Env {
        Env::on(&bootstrap(), name, extra)
    }

    /// [`Env::new`] on the brokers at `bootstrap`.
    pub fn on(bootstrap: &str, name: &str, extra: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let topic = format!("t-{name}-{}-{nanos}", std::process::id());
        std::fs::write(dir.path().join("transactions.json"), SEED_DATASET).unwrap();
        std::fs::write(dir.path().join("orders.jsonl"), SEED_MESSAGES).unwrap();
        let cfg = format!(
            "[kafka]\nbootstrap-servers = \"{}\"\ntopic = \"{topic}\"\ngroup-id = \"g-{topic}\"\n\n[batch]\ndataset = [\"{}\"]\n\n[output]\ndir = \"{}\"\n\n{extra}\n",
            bootstrap,
            dir.path().join("transactions.json").display(),
            dir.path().join("output").display(),
        );
        std::fs::write(dir.path().join("lambdaflow.toml"), cfg).unwrap();
        Env { dir, topic }
    }

    /// Sets the batch layer's engine to Spark (the server under test) in the config file.
    pub fn with_spark(self) -> Env {
        let path = self.path("lambdaflow.toml");
        let cfg = std::fs::read_to_string(&path).unwrap().replacen(
            "[batch]\n",
            &format!(
                "[batch]\nengine = \"spark\"\nspark-remote = \"{}\"\n",
                spark_remote()
            ),
            1,
        );
        std::fs::write(path, cfg).unwrap();
        self
    }

    /// Moves `output.dir` onto the test S3 server's bucket (`scripts/s3.sh`, which
    /// `scripts/test.sh` starts): a prefix of its own.
    pub fn on_bucket(self) -> Env {
        let bucket = std::env::var("S3_BUCKET").expect(
            "no S3 server: run the tests with scripts/test.sh (it starts one with scripts/s3.sh)",
        );
        let path = self.path("lambdaflow.toml");
        let output = format!("dir = \"{}\"\n", self.path("output").display());
        let cfg = std::fs::read_to_string(&path).unwrap().replacen(
            &output,
            &format!("dir = \"s3://{bucket}/tests/{}\"\n", self.topic),
            1,
        );
        std::fs::write(path, cfg).unwrap();
        self
    }

    /// Whether `output.dir` is on the test bucket ([`Env::on_bucket`]).
    pub fn on_a_bucket(&self) -> bool {
        std::fs::read_to_string(self.path("lambdaflow.toml"))
            .unwrap()
            .contains("dir = \"s3://")
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// The binary with this workspace's config.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lambdaflow"));
        c.arg("--config")
            .arg(self.path("lambdaflow.toml"))
            .args(args);
        c.current_dir(self.dir.path()).env("LAMBDAFLOW_LOG", "warn");
        c
    }

    /// Runs a command to completion, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        assert!(
            out.status.success(),
            "lambdaflow {args:?} failed: {}\n{}",
            stderr(&out),
            stdout(&out)
        );
        stdout(&out)
    }

    /// Runs a command expected to fail; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        assert!(
            !out.status.success(),
            "lambdaflow {args:?} should fail: {}",
            stdout(&out)
        );
        stderr(&out)
    }

    pub fn create_topic(&self, partitions: u32) {
        self.ok(&["topic", "create", "--partitions", &partitions.to_string()]);
    }

    /// Starts the speed layer in the background.
    pub fn spawn_speed(&self) -> Spawned {
        Spawned(Some(
            self.cmd(&["speed", "--quiet"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        ))
    }

    /// Starts `lambdaflow ARGS` in the background, its stderr (the log) going to `name.log`.
    pub fn spawn(&self, name: &str, args: &[&str]) -> Spawned {
        self.spawn_with(name, args, &[])
    }

    /// [`Env::spawn`] with the environment variables `vars` set.
    pub fn spawn_with(&self, name: &str, args: &[&str], vars: &[(&str, &str)]) -> Spawned {
        let log = std::fs::File::create(self.path(&format!("{name}.log"))).unwrap();
        let mut cmd = self.cmd(args);
        cmd.envs(vars.iter().copied());
        // On a bucket, each process is a machine of its own: its own working and temporary
        // directory, and no path in common with the others but the config it is given.
        if self.on_a_bucket() {
            let home = self.path(&format!("{name}.home"));
            std::fs::create_dir_all(&home).unwrap();
            cmd.current_dir(&home).env("TMPDIR", &home);
        }
        Spawned(Some(
            cmd.env("LAMBDAFLOW_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        ))
    }

    /// What a process started by [`Env::spawn`] has logged so far.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{name}.log"))).unwrap_or_default()
    }

    pub fn pipeline(&self) -> Pipeline {
        let cfg = Config::load(Some(&self.path("lambdaflow.toml")), &vec![]).unwrap();
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(cfg.compile())
            .unwrap()
    }

    /// Total messages the speed layer's checkpoint covers (sum of next offsets).
    pub fn checkpointed(&self) -> i64 {
        let p = self.pipeline();
        match lambdaflow::storage::checkpoint::load(&p.layout(), &p.config.kafka.topic) {
            Ok(Some(c)) => c.offsets.values().sum(),
            _ => 0,
        }
    }

    /// Waits until the checkpoint covers `n` messages.
    pub fn wait_checkpointed(&self, n: i64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.checkpointed() < n {
            assert!(
                Instant::now() < deadline,
                "speed layer checkpointed {} of {n} messages",
                self.checkpointed()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The rows of a published Spark-style JSON view directory (`batch_view`,
    /// `streaming_view`, `serving_view.json`), keyed by `key`, wherever `output.dir` is.
    pub fn view(&self, rel: &str, key: &str, value: &str) -> BTreeMap<String, i64> {
        use lambdaflow::storage::{Output, part_name};
        let p = self.pipeline();
        let Some(local) = p.layout().local_dir() else {
            let o = match rel {
                "batch_view" => Output::BatchView,
                "streaming_view" => Output::StreamingView,
                "serving_view.json" => Output::ServingView,
                other => panic!("{other}: not a view directory"),
            };
            let target = p.layout().output(o, &p.views[0].name).unwrap();
            let v = target.current().unwrap().expect("a published version");
            let (_, bytes) = v.read(&part_name(&v.id().unwrap())).unwrap();
            return rows(std::str::from_utf8(&bytes).unwrap(), key, value);
        };
        read_view(&local.join(rel), key, value)
    }

    /// `serve --once` writes `truth` as the serving view, and `verify` finds no difference.
    pub fn assert_served_and_verified(&self, truth: &BTreeMap<String, i64>) {
        self.ok(&["serve", "--once"]);
        assert_eq!(
            &self.view("serving_view.json", "customer", "total_amount"),
            truth
        );
        let out = self.ok(&["verify"]);
        assert!(out.contains(": 0 difference(s)"), "{out}");
    }

    /// Sends raw payloads to the topic.
    /// Sends each payload to the partition it names, in order per partition.
    pub fn send_to_partitions(&self, msgs: &[(i32, Vec<u8>)]) {
        let p = self.pipeline();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let prod = lambdaflow::kafka::producer(&p.config.kafka).unwrap();
            for (partition, payload) in msgs {
                let record = rdkafka::producer::FutureRecord::<(), [u8]>::to(&p.config.kafka.topic)
                    .partition(*partition)
                    .payload(payload);
                prod.send(record, Duration::from_secs(60)).await.unwrap();
            }
        });
    }

    pub fn send_raw(&self, payloads: &[Vec<u8>]) {
        let p = self.pipeline();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let prod = lambdaflow::kafka::producer(&p.config.kafka).unwrap();
            lambdaflow::kafka::send_all(&prod, &p.config.kafka, payloads)
                .await
                .unwrap();
        });
    }
}

/// Sends `events` (customer, amount) as seed-shaped JSON lines, all at once, and waits for each
/// one's delivery (acknowledged with its partition and offset, or failed).
pub async fn send_events(
    prod: &lambdaflow::kafka::Producer,
    topic: &str,
    events: &[(String, i64)],
) -> Vec<rdkafka::producer::future_producer::OwnedDeliveryResult> {
    let payloads: Vec<String> = events
        .iter()
        .map(|(c, a)| format!("{{\"customer\":\"{c}\",\"amount\":{a}}}"))
        .collect();
    let sends = payloads.iter().map(|pl| {
        prod.send(
            rdkafka::producer::FutureRecord::<(), str>::to(topic).payload(pl.as_str()),
            Duration::from_secs(60),
        )
    });
    futures::future::join_all(sends).await
}

pub fn read_view(dir: &Path, key: &str, value: &str) -> BTreeMap<String, i64> {
    assert!(
        dir.join("_SUCCESS").exists(),
        "{} has no _SUCCESS",
        dir.display()
    );
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if !name.starts_with("part-") {
            continue;
        }
        out.extend(rows(&std::fs::read_to_string(&p).unwrap(), key, value));
    }
    out
}

/// JSON lines as `key` → `value`.
fn rows(text: &str, key: &str, value: &str) -> BTreeMap<String, i64> {
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                v[key].as_str().unwrap().to_string(),
                v[value].as_i64().unwrap(),
            )
        })
        .collect()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `{"Ali": 400, ...}` from pairs.
pub fn map(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// A background `lambdaflow`; killed when dropped, so a failing test leaves no process behind.
pub struct Spawned(Option<Child>);

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Spawned {
    /// The process id (for signals).
    pub fn pid(&self) -> u32 {
        self.0.as_ref().expect("running").id()
    }

    fn take(mut self) -> Child {
        self.0.take().expect("a spawned process is taken once")
    }

    /// Waits for the process to exit by itself.
    pub fn wait(self) -> std::process::ExitStatus {
        self.take().wait().unwrap()
    }
}

/// Stops a child with SIGTERM and asserts it exits 0.
pub fn terminate(child: Spawned) {
    let mut child = child.take();
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.success(), "speed layer exited with {status}: {err}");
}

/// Kills a child with SIGKILL.
pub fn kill9(child: Spawned) {
    let mut child = child.take();
    child.kill().unwrap();
    let _ = child.wait();
}

/// Polls `ok` every 20 ms until it holds and returns how long that took; fails after `secs`
/// with `why()` (say what was awaited, and the log that explains it).
pub fn eventually(secs: u64, mut ok: impl FnMut() -> bool, why: impl Fn() -> String) -> Duration {
    let t0 = Instant::now();
    while !ok() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "not within {secs} s: {}",
            why()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    t0.elapsed()
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A minimal HTTP/1.1 client: `(status, body)` of one request.
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    try_http(addr, method, path, headers).unwrap()
}

pub fn try_http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    request(addr, method, path, headers, "")
}

/// POSTs `body` (JSON) to `path`: `(status, body)`.
pub fn post_json(addr: &str, path: &str, body: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut h = vec![("Content-Type", "application/json")];
    h.extend_from_slice(headers);
    request(addr, "POST", path, &h, body).unwrap()
}

/// One HTTP/1.1 request with `body`, read to the end: `(status, body)`.
fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// GETs `path` as JSON, waiting up to 60 s for the server to answer 200.
pub fn get_json(addr: &str, path: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, body)) = try_http(addr, "GET", path, &[]) {
            return serde_json::from_str(&body).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "GET {path} on {addr}: no 200 within 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `{key: value}` of a view body's rows.
pub fn rows_of(body: &serde_json::Value, key: &str, value: &str) -> BTreeMap<String, i64> {
    body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[key].as_str().unwrap().to_string(),
                r[value].as_i64().unwrap(),
            )
        })
        .collect()
}

/// A second broker, for tests that stop and start one: its own port and log dir (kept across
/// stop/start), stopped when dropped so that a failing test leaves no broker behind.
pub struct Broker {
    pub port: u16,
    data: tempfile::TempDir,
    running: bool,
}

impl Broker {
    pub fn start() -> Broker {
        let mut b = Broker::stopped();
        b.up();
        b
    }

    /// A broker with a port and a log dir, not started yet.
    pub fn stopped() -> Broker {
        Broker {
            // Its client port and its controller's (one above).
            port: free_ports(2),
            data: tempfile::tempdir().unwrap(),
            running: false,
        }
    }

    pub fn up(&mut self) {
        kafka_script("start", self.port, self.data.path());
        self.running = true;
    }

    pub fn down(&mut self) {
        kafka_script("stop", self.port, self.data.path());
        self.running = false;
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.running {
            self.down();
        }
    }
}

/// `scripts/kafka.sh ACTION` for a second broker on `port` with its own log dir.
fn kafka_script(action: &str, port: u16, data: &Path) {
    kafka_sh(&[action], 1, port, data);
}

/// `scripts/kafka.sh ARGS` for `nodes` nodes from `port` on, with their log dirs under `data`.
fn kafka_sh(args: &[&str], nodes: usize, port: u16, data: &Path) {
    assert!(
        kafka_sh_ok(args, nodes, port, data),
        "scripts/kafka.sh {args:?} failed"
    );
}

fn kafka_sh_ok(args: &[&str], nodes: usize, port: u16, data: &Path) -> bool {
    Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh"))
        .args(args)
        .env("KAFKA_PORT", port.to_string())
        .env("KAFKA_NODES", nodes.to_string())
        .env("KAFKA_DATA_DIR", data)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|st| st.success())
}

/// A 3-broker KRaft cluster of its own (`KAFKA_NODES=3`: replication factor 3,
/// `min.insync.replicas=2`), stopped when dropped.
pub struct Cluster {
    port: u16,
    data: tempfile::TempDir,
}

impl Cluster {
    const NODES: usize = 3;

    pub fn start() -> Cluster {
        let c = Cluster {
            port: free_ports(2 * Self::NODES as u16),
            data: tempfile::tempdir().unwrap(),
        };
        c.script(&["start"]);
        c
    }

    /// The bootstrap servers: every node.
    pub fn bootstrap(&self) -> String {
        (0..Self::NODES as u16)
            .map(|i| format!("127.0.0.1:{}", self.port + 2 * i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `kill -9` of node `n` (its broker id).
    pub fn kill_node(&self, n: usize) {
        self.script(&["kill-node", &n.to_string()]);
    }

    /// Node `n` started again on its log dir.
    pub fn start_node(&self, n: usize) {
        self.script(&["start-node", &n.to_string()]);
    }

    fn script(&self, args: &[&str]) {
        kafka_sh(args, Self::NODES, self.port, self.data.path());
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // No assertion here: this may run while a failed test unwinds.
        kafka_sh_ok(&["stop"], Self::NODES, self.port, self.data.path());
    }
}

/// The first of `n` consecutive free TCP ports on loopback, below Linux's ephemeral range
/// (32768–60999): a port there could be taken by any client connection between this check and
/// the broker's bind (seen: a broker's controller port, one above its client port).
pub fn free_ports(n: u16) -> u16 {
    use rand::Rng;
    loop {
        let first: u16 = rand::rng().random_range(20_000..32_000);
        let all_free =
            (first..first + n).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return first;
        }
    }
}
