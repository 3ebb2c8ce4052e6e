//! The outputs instances on several machines share — the master dataset's Delta table and the
//! consumer group's dead letters — on a real S3 server (s3proxy, started by `scripts/s3.sh`,
//! whose `AWS_*` variables `scripts/test.sh` passes on): the Delta log's rules hold there as on
//! a local disk, and writers that race are decided by the server's create-only put.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray, new_null_array};
use datafusion::arrow::record_batch::RecordBatch;
use lambdaflow::config::{S3Config, default_fields};
use lambdaflow::event::EventSchema;
use lambdaflow::storage::delta::{self, AsOf, Fence, Range};
use lambdaflow::storage::{Layout, Manifest, Store, batch_view, dead_letter_ranges, segments};

/// A fresh prefix of the test bucket (`S3_BUCKET`, on the server of `AWS_ENDPOINT_URL`).
fn bucket(test: &str) -> Store {
    let (Ok(bucket), Ok(_)) = (
        std::env::var("S3_BUCKET"),
        std::env::var("AWS_ENDPOINT_URL"),
    ) else {
        panic!(
            "no S3 server: run the tests with scripts/test.sh (it starts one with scripts/s3.sh)"
        );
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let url = format!("s3://{bucket}/tests/{test}-{}-{nanos}", std::process::id());
    Store::open(&url, &S3Config::default()).unwrap()
}

/// A layout on the bucket.
fn layout(test: &str) -> (Layout, EventSchema) {
    let layout = Layout::on(bucket(test), 1);
    (layout, EventSchema::new(default_fields()).unwrap())
}

/// `n` events of the default schema, the Kafka record's columns null.
fn events(schema: &EventSchema, n: i64) -> RecordBatch {
    let arrow = schema.arrow_schema();
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            (0..n).map(|i| format!("c{}", i % 3)),
        )),
        Arc::new(Int64Array::from_iter_values(0..n)),
    ];
    for f in &arrow.fields()[2..] {
        cols.push(new_null_array(f.data_type(), n as usize));
    }
    RecordBatch::try_new(arrow, cols).unwrap()
}

fn ranges(snap: &delta::Snapshot) -> Vec<(i32, i64, i64)> {
    snap.segments
        .iter()
        .map(|s| (s.partition, s.from, s.to))
        .collect()
}

fn owned(seg: &segments::Segment, epoch: i64) -> Range {
    Range {
        fence: Fence::Owner(epoch),
        ..Range::from(seg)
    }
}

#[test]
fn a_store_on_s3_creates_a_key_once_whoever_races_for_it() {
    let store = bucket("put-new");
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let s = store.clone();
            std::thread::spawn(move || s.put_new("_delta_log/x.json", vec![b'0' + i]).unwrap())
        })
        .collect();
    let won: Vec<u8> = racers
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| r.join().unwrap().then_some(b'0' + i as u8))
        .collect();
    assert_eq!(won.len(), 1, "exactly one create-only put wins: {won:?}");
    assert_eq!(&store.get("_delta_log/x.json").unwrap()[..], &won[..]);
    let listed: Vec<String> = store.list("").unwrap().into_iter().map(|e| e.key).collect();
    assert_eq!(listed, ["_delta_log/x.json"]);
    store.remove_all().unwrap();
    assert!(store.list("").unwrap().is_empty());
}

#[test]
fn the_master_dataset_on_s3_archives_recovers_fences_and_travels_in_time() {
    let (layout, schema) = layout("master");
    let a =
        segments::write_pending(&layout, "t", (0, None), 0, 10, &[events(&schema, 10)]).unwrap();
    segments::commit(&layout, &schema, vec![Range::from(&a)], 1).unwrap();
    segments::write_pending(&layout, "t", (0, None), 10, 25, &[events(&schema, 15)]).unwrap();
    segments::write_pending(&layout, "t", (0, None), 25, 30, &[events(&schema, 5)]).unwrap();
    segments::write_pending(&layout, "t", (1, None), 0, 4, &[events(&schema, 4)]).unwrap();
    // A restart whose checkpoint covers partition 0 up to 25 and nothing of partition 1.
    segments::recover(&layout, &schema, "t", &BTreeMap::from([(0, 25)])).unwrap();
    let snap = segments::committed(&layout).unwrap();
    assert_eq!(ranges(&snap), [(0, 0, 10), (0, 10, 25)]);
    assert_eq!(snap.version, Some(2), "created, then one commit per step");
    assert_eq!(
        segments::on_disk(&layout).unwrap().len(),
        2,
        "the uncovered segments are deleted from the bucket"
    );
    assert!(
        snap.segments[1]
            .shown()
            .to_string_lossy()
            .starts_with("s3://")
    );
    let rows: usize = segments::read(&snap.segments[1], &schema)
        .unwrap()
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 15);
    // The version before is still readable (time travel on the bucket).
    let before = delta::snapshot(&layout.master().unwrap(), AsOf::Version(1)).unwrap();
    assert_eq!(ranges(&before), [(0, 0, 10)]);

    // Two consumer-group instances: the second claim fences the first owner.
    let mut first = segments::writer(&layout, &schema).unwrap();
    let views = vec!["hourly".to_string()];
    assert_eq!(
        first.claim("t", vec![0], views.clone()).unwrap()[&0].epoch,
        1
    );
    let b =
        segments::write_pending(&layout, "t", (0, None), 25, 30, &[events(&schema, 5)]).unwrap();
    let timed = Range {
        event_times: [("hourly".to_string(), 7_000_000)].into(),
        ..owned(&b, 1)
    };
    let done = segments::commit_with(&mut first, vec![timed], 2).unwrap();
    assert!(done.version.is_some() && done.fenced.is_empty(), "{done:?}");
    let second = segments::writer(&layout, &schema)
        .unwrap()
        .claim("t", vec![0], views)
        .unwrap()[&0]
        .clone();
    assert_eq!((second.epoch, second.archived), (2, Some(30)));
    assert_eq!(second.event_times["hourly"], 7_000_000);
    let c = segments::write_pending(&layout, "t", (0, Some(1)), 30, 40, &[events(&schema, 10)])
        .unwrap();
    let dead = dead_letter_ranges::write(
        &layout,
        "t",
        (0, Some(1)),
        (30, 40),
        &[serde_json::json!({"topic": "t", "partition": 0, "offset": 33})],
    )
    .unwrap();
    let version = segments::committed(&layout).unwrap().version;
    let done = segments::commit_with(&mut first, vec![owned(&c, 1)], 3).unwrap();
    assert_eq!((done.version, done.fenced), (None, vec![(0, 2)]));
    assert_eq!(segments::committed(&layout).unwrap().version, version);
    assert!(
        !segments::on_disk(&layout)
            .unwrap()
            .iter()
            .any(|s| s.from == 30),
        "the fenced segment is deleted"
    );
    // The new owner removes what the old one left uncommitted from the archive's end on.
    assert_eq!(dead_letter_ranges::partitions(&layout, "t").unwrap(), [0]);
    dead_letter_ranges::remove_uncommitted(&layout, "t", 0, 30, second.epoch).unwrap();
    let left = layout.dead_letter_ranges().unwrap().list("").unwrap();
    assert!(left.iter().all(|e| e.key != dead), "{left:?}");
}

#[test]
fn writers_racing_on_s3_each_commit_once_in_their_own_version() {
    let (layout, schema) = layout("race");
    let master = layout.master().unwrap();
    // Four instances start together on an empty prefix: one creates the table, all get it.
    let opened: Vec<_> = (0..4)
        .map(|_| {
            let (m, s) = (master.clone(), schema.arrow_schema());
            std::thread::spawn(move || {
                delta::block(async move { Ok(delta::open(m, s).await?.version()) })
            })
        })
        .collect();
    for o in opened {
        assert_eq!(o.join().unwrap().unwrap(), Some(0), "each gets version 0");
    }
    // Four writers commit a partition each at the same moment, and claim partition 9 too:
    // every commit lands in a version of its own, every claim gets an epoch of its own.
    let writers: Vec<_> = (0..4)
        .map(|p| {
            let (l, s) = (layout.clone(), EventSchema::new(default_fields()).unwrap());
            std::thread::spawn(move || {
                let seg =
                    segments::write_pending(&l, "t", (p, None), 0, 10, &[events(&s, 10)]).unwrap();
                let mut w = segments::writer(&l, &s).unwrap();
                segments::commit_with(&mut w, vec![Range::from(&seg)], 1).unwrap();
                w.claim("t", vec![9], Vec::new()).unwrap()[&9].epoch
            })
        })
        .collect();
    let mut epochs: Vec<i64> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    epochs.sort_unstable();
    assert_eq!(epochs, [1, 2, 3, 4]);
    let snap = segments::committed(&layout).unwrap();
    assert_eq!(
        ranges(&snap),
        [(0, 0, 10), (1, 0, 10), (2, 0, 10), (3, 0, 10)]
    );
    assert_eq!(
        snap.version,
        Some(8),
        "one version per commit and per claim"
    );
    let txns = delta::partition_txns(&master, "t", &[0, 9], &[]).unwrap();
    assert_eq!(txns[&0].archived, Some(10));
    assert_eq!(txns[&9].owner_epoch, Some(4));
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_views_on_s3_become_current_at_once_and_the_later_of_two_racing_runs_wins() {
    let p = lambdaflow::config::Config::load(None, &vec![])
        .unwrap()
        .compile()
        .await
        .unwrap();
    let (layout, _) = layout("batch-view");
    let def = Arc::clone(&p.views[0]);
    let manifest = |run: &str| -> Manifest {
        serde_json::from_value(serde_json::json!({
            "run_id": run, "view": def.name, "sql": def.sql, "files": [], "rows": 0,
            "bad": 0, "started_at": "2026-12-03T00:00:00Z", "duration_ms": 0,
        }))
        .unwrap()
    };
    let publish = |run: &str, n: i64| {
        let mut state = def.new_state();
        state.update(&def, &events(&p.schema, n)).unwrap();
        let rows = def.finalize(&state).unwrap();
        batch_view::publish(&layout, &def, run, 2, &rows, &state, &manifest(run), b"").unwrap()
    };
    assert_eq!(batch_view::published_run(&layout, &def).unwrap(), None);
    assert!(publish("20261203T000001.000Z-1-000001", 3));
    let b = batch_view::load_published(&layout, &def).unwrap().unwrap();
    assert_eq!(b.manifest.run_id, "20261203T000001.000Z-1-000001");
    // Two runs publish at the same moment: whatever the timing, the later run is current.
    let (early, late) = (
        "20261203T000002.000Z-2-000002",
        "20261203T000003.000Z-3-000003",
    );
    std::thread::scope(|s| {
        let a = s.spawn(|| publish(early, 4));
        let b = s.spawn(|| publish(late, 5));
        assert!(b.join().unwrap(), "the later run is never refused");
        a.join().unwrap();
    });
    assert_eq!(
        batch_view::published_run(&layout, &def).unwrap().as_deref(),
        Some(late)
    );
    // A run that died before its pointer leaves files and nothing visible.
    let store = layout.store().unwrap();
    let versions = ".batch_view.d";
    store
        .put(
            &format!("{versions}/20261203T000009.000Z-9-000009/_manifest.json"),
            b"{".to_vec(),
        )
        .unwrap();
    let b = batch_view::load_published(&layout, &def).unwrap().unwrap();
    assert_eq!(b.manifest.run_id, late);
    // Later runs prune: two pointers and the versions they name are kept (and the dead
    // run's files, which sort after them and might still be being written).
    for i in 4..7 {
        assert!(publish(&format!("20261203T00000{i}.000Z-{i}-00000{i}"), i));
    }
    let keys: Vec<String> = store
        .list(versions)
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    let pointers = keys.iter().filter(|k| k.contains("/_published/")).count();
    assert_eq!(pointers, 2, "{keys:?}");
    for i in 1..5 {
        let gone = format!("Z-{i}-00000{i}/");
        assert!(!keys.iter().any(|k| k.contains(&gone)), "{gone}: {keys:?}");
    }
    assert!(keys.iter().any(|k| k.contains("Z-9-000009/")), "{keys:?}");
}

/// The seed scenario with `output.dir = "s3://…"`: nothing of it on the local disk.
#[test]
fn the_seed_scenario_runs_end_to_end_on_a_bucket() {
    let env = crate::util::Env::new("seed-s3", "").on_bucket();
    crate::assert_seed_views(crate::seed_flow(&env));
    // The next batch run reads the three archived events from the bucket's Delta table.
    let out = env.ok(&["batch"]);
    assert!(out.contains("|Ali     |400         |"), "{out}");
    assert!(
        out.contains("1 segment(s) (master table version 1, offsets {0: 3})"),
        "{out}"
    );
    assert!(!env.path("output").exists(), "nothing written locally");
}

/// With no `AWS_*` variable but the bucket's name, the settings come from the AWS shared files'
/// profile (`AWS_PROFILE`, in a HOME of the test's own): `batch` publishes on the bucket with
/// its keys, region and endpoint; the same profile with a wrong secret is refused by the S3
/// server, which shows the profile's keys are the ones that sign.
#[test]
fn the_aws_shared_files_profile_gives_the_keys_and_the_endpoint() {
    let env = crate::util::Env::new("s3-profile", "").on_bucket();
    let var = |k: &str| std::env::var(k).unwrap();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join(".aws")).unwrap();
    let write = |secret: &str| {
        std::fs::write(
            home.path().join(".aws/credentials"),
            format!(
                "[lab]\naws_access_key_id = {}\naws_secret_access_key = {secret}\n",
                var("AWS_ACCESS_KEY_ID")
            ),
        )
        .unwrap();
        std::fs::write(
            home.path().join(".aws/config"),
            format!(
                "[profile lab]\nregion = {}\nendpoint_url = {}\ns3 =\n  addressing_style = path\n",
                var("AWS_REGION"),
                var("AWS_ENDPOINT_URL")
            ),
        )
        .unwrap();
    };
    let batch = || {
        let mut c = env.cmd(&["batch"]);
        for k in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT",
        ] {
            c.env_remove(k);
        }
        c.env("HOME", home.path())
            .env("AWS_PROFILE", "lab")
            .env("LAMBDAFLOW_OUTPUT__STORAGE_WAIT", "1s")
            .output()
            .unwrap()
    };
    write(&var("AWS_SECRET_ACCESS_KEY"));
    let out = batch();
    let text = crate::util::stdout(&out);
    assert!(
        out.status.success(),
        "{}\n{text}",
        crate::util::stderr(&out)
    );
    assert!(text.contains("|Ali     |320         |"), "{text}");
    assert!(!env.path("output").exists(), "nothing written locally");

    write("not-the-secret");
    let out = batch();
    let err = crate::util::stderr(&out);
    assert!(!out.status.success(), "a wrong secret is refused\n{err}");
    assert!(
        !err.contains("not-the-secret"),
        "the secret is not printed: {err}"
    );
}

#[test]
fn kill_9_and_restart_on_a_bucket_lose_nothing_and_count_nothing_twice() {
    crate::restart_keeps_every_event_once(crate::util::kill9, true);
}

/// Two instances of a consumer group on a bucket, one suspended past its session timeout and
/// resumed: its late commits are refused by the table on S3, every event is in it once.
#[test]
fn a_consumer_group_on_a_bucket_fences_its_zombie() {
    crate::group::zombie_cannot_write_what_counts(true);
}

/// `compact` and time travel on a bucket: merged while the speed layer appends, vacuumed, and
/// the view of an earlier table version read back, by `batch --as-of` and by `?as_of=`.
#[test]
fn compact_and_time_travel_work_on_a_bucket() {
    use crate::master::{FAST, seed_truth, send};
    let env = crate::util::Env::new("delta-s3", FAST).on_bucket();
    env.create_topic(2);
    let mut truth = seed_truth();
    let speed = env.spawn("speed", &["speed", "--quiet"]);
    send(&env, 0..3_000, 300, &mut truth);
    env.wait_checkpointed(3_000);
    let out = env.ok(&["batch"]);
    let version: u64 = out
        .split("master table version ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a table version: {out}"));
    let then = truth.clone();
    send(&env, 3_000..4_000, 250, &mut truth);
    env.wait_checkpointed(4_000);
    let out = env.ok(&["compact", "--retention", "1h"]);
    assert!(
        out.contains("compact:") && !out.contains("compact: 0 segment"),
        "{out}"
    );
    crate::util::terminate(speed);
    env.assert_served_and_verified(&truth);
    let out = env.ok(&["batch", "--as-of", &version.to_string()]);
    assert!(out.contains("printed, not published"), "{out}");
    for (k, v) in &then {
        assert!(
            out.contains(&format!("|{k:<8}|{v:<12}|")),
            "{k} {v} missing:\n{out}"
        );
    }
    let addr = format!("127.0.0.1:{}", crate::util::free_port());
    let serve = env.spawn("serve", &["serve", &format!("--listen={addr}")]);
    let past = crate::util::get_json(
        &addr,
        &format!("/api/views/customer_totals?as_of={version}"),
    );
    assert_eq!(
        crate::util::rows_of(&past, "customer", "total_amount"),
        then,
        "{past}"
    );
    crate::util::terminate(serve);
    // VACUUM with no retention deletes the replaced files from the bucket.
    let out = env.ok(&["compact", "--retention", "0s"]);
    assert!(!out.contains(" 0 file(s) deleted"), "{out}");
    env.ok(&["serve", "--once"]);
    assert_eq!(
        env.view("serving_view.json", "customer", "total_amount"),
        truth
    );
}

/// An environment whose `output.dir` is on the bucket of the S3 server on loopback `port` (a
/// server of the test's own, or a proxy in front of one), with the Delta tests' quick
/// checkpoints.
fn env_on_endpoint(name: &str, port: u16) -> crate::util::Env {
    let extra = format!(
        "{}\n[output.s3]\nendpoint = \"http://127.0.0.1:{port}\"\n",
        crate::master::FAST
    );
    crate::util::Env::new(name, &extra).on_bucket()
}

/// An S3 server of one test's own (`scripts/s3.sh` on a port and data directory of its own),
/// which the test may stop and start again; stopped when dropped.
struct OwnServer {
    port: u16,
    data: tempfile::TempDir,
}

impl OwnServer {
    fn start() -> OwnServer {
        let s = OwnServer {
            port: crate::util::free_port(),
            data: tempfile::tempdir().unwrap(),
        };
        s.script("start");
        s
    }

    fn script(&self, what: &str) {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = std::process::Command::new(repo.join("scripts/s3.sh"))
            .arg(what)
            .env("S3_PORT", self.port.to_string())
            .env("S3_DATA_DIR", self.data.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "s3.sh {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.script("stop");
    }
}

/// The S3 server stopped for 30 s while events flow, then started again: the speed layer
/// retries its writes and carries on by itself; the served view ends equal to what was
/// produced, `verify` finds no difference, and the table holds every offset once.
#[test]
fn the_s3_server_down_for_30_s_while_events_flow_loses_nothing_and_doubles_nothing() {
    use crate::master::{seed_truth, send};
    let server = OwnServer::start();
    let env = env_on_endpoint("s3-outage", server.port);
    env.create_topic(2);
    let mut truth = seed_truth();
    let speed = env.spawn("speed", &["speed", "--quiet"]);
    let addr = format!("127.0.0.1:{}", crate::util::free_port());
    let replica = env.spawn("serve", &["serve", &format!("--listen={addr}")]);
    let storage_up = || crate::util::get_json(&addr, "/health")["storage_up"].as_bool();
    send(&env, 0..2_000, 250, &mut truth);
    env.wait_checkpointed(2_000);
    assert_eq!(storage_up(), Some(true));
    server.script("stop");
    let down = std::time::Instant::now();
    send(&env, 2_000..4_000, 250, &mut truth);
    // The replica keeps answering, and says the bucket is away.
    crate::util::eventually(
        25,
        || storage_up() == Some(false),
        || format!("the replica sees the outage\n{}", env.log("serve")),
    );
    std::thread::sleep(std::time::Duration::from_secs(30).saturating_sub(down.elapsed()));
    server.script("start");
    crate::util::eventually(
        30,
        || storage_up() == Some(true),
        || format!("the replica sees the bucket back\n{}", env.log("serve")),
    );
    crate::util::terminate(replica);
    crate::util::eventually(
        90,
        || env.checkpointed() >= 4_000,
        || format!("the checkpoint after the outage\n{}", env.log("speed")),
    );
    let log = env.log("speed");
    assert!(log.contains("storage answers again"), "{log}");
    crate::util::terminate(speed);
    env.ok(&["batch"]);
    env.assert_served_and_verified(&truth);
    assert_each_offset_once(&env, 4_000);
}

/// The table's segments cover each partition's offsets from 0 with no gap and no overlap,
/// `total` offsets in all.
fn assert_each_offset_once(env: &crate::util::Env, total: i64) {
    let p = env.pipeline();
    let layout = p.layout();
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for s in segments::committed(&layout).unwrap().segments {
        let at = next.entry(s.partition).or_insert(0);
        assert_eq!(
            s.from, *at,
            "partition {}: a gap or an overlap",
            s.partition
        );
        *at = s.to;
    }
    assert_eq!(next.values().sum::<i64>(), total, "{next:?}");
}

/// A TCP proxy in front of an S3 server that loses the answers to some requests: it passes
/// a request on whole, lets the server act on it, and when the server's answer starts it
/// closes the client's connection instead of passing the answer on — what a client sees when
/// the network or the server dies between the write and its answer. The server is the real
/// one; only answers are lost. `lose` decides from a request's first line (`PUT /b/k HTTP/1.1`).
struct LossyProxy {
    port: u16,
    lost: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl LossyProxy {
    fn start(upstream: u16, lose: impl Fn(&str) -> bool + Send + Sync + 'static) -> LossyProxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let lost: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let lose = Arc::new(lose);
        let (lost2, stop2) = (Arc::clone(&lost), Arc::clone(&stop));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let (Ok(client), Ok(server)) = (
                    client,
                    std::net::TcpStream::connect(("127.0.0.1", upstream)),
                ) else {
                    continue;
                };
                let (lose, lost) = (Arc::clone(&lose), Arc::clone(&lost2));
                let losing: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
                let (c, s, l) = (
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    Arc::clone(&losing),
                );
                std::thread::spawn(move || Self::requests(c, s, &*lose, &l));
                std::thread::spawn(move || Self::answers(server, client, &losing, &lost));
            }
        });
        LossyProxy { port, lost, stop }
    }

    /// A proxy in front of the test S3 server (`AWS_ENDPOINT_URL`) that loses nothing and
    /// records each request's first line (`GET /bucket/key HTTP/1.1`).
    fn recording() -> (LossyProxy, Arc<std::sync::Mutex<Vec<String>>>) {
        let upstream: u16 = std::env::var("AWS_ENDPOINT_URL")
            .expect("no S3 server: run the tests with scripts/test.sh")
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .expect("AWS_ENDPOINT_URL ends with a port");
        let requests: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let seen = Arc::clone(&requests);
        let proxy = LossyProxy::start(upstream, move |line| {
            seen.lock().unwrap().push(line.to_string());
            false
        });
        (proxy, requests)
    }

    /// Client to server: passes the bytes on, reading each request's head (and skipping its
    /// `Content-Length` body) to mark the connection's next answer lost when `lose` says so —
    /// before the request's last bytes reach the server, so before it can answer.
    fn requests(
        mut from: std::net::TcpStream,
        mut to: std::net::TcpStream,
        lose: &(dyn Fn(&str) -> bool + Send + Sync),
        losing: &std::sync::Mutex<Option<String>>,
    ) {
        use std::io::{Read, Write};
        let (mut head, mut body_left) = (Vec::new(), 0usize);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut at = 0;
            while at < n {
                if body_left > 0 {
                    let k = body_left.min(n - at);
                    body_left -= k;
                    at += k;
                    continue;
                }
                head.push(buf[at]);
                at += 1;
                if head.ends_with(b"\r\n\r\n") {
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let line = text.lines().next().unwrap_or_default().to_string();
                    body_left = text
                        .lines()
                        .filter_map(|l| l.split_once(':'))
                        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                        .and_then(|(_, v)| v.trim().parse().ok())
                        .unwrap_or(0);
                    if lose(&line) {
                        *losing.lock().unwrap() = Some(line);
                    }
                    head.clear();
                }
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    }

    /// Server to client: passes the answers on, except the one marked lost: then both
    /// connections close.
    fn answers(
        mut from: std::net::TcpStream,
        mut to: std::net::TcpStream,
        losing: &std::sync::Mutex<Option<String>>,
        lost: &std::sync::Mutex<Vec<String>>,
    ) {
        use std::io::{Read, Write};
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some(line) = losing.lock().unwrap().take() {
                lost.lock().unwrap().push(line);
                break;
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
        let _ = from.shutdown(std::net::Shutdown::Both);
    }

    /// The first lines of the requests whose answers were lost.
    fn lost(&self) -> Vec<String> {
        self.lost.lock().unwrap().clone()
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A `serve` replica follows the Delta log by reading what changed: while nothing is
/// committed it reads no commit of the log however long it follows, and after new commits it
/// reads those, not the log again (its requests seen by a proxy in front of the S3 server).
#[test]
fn a_replica_follows_the_log_by_reading_only_new_commits() {
    use crate::master::{FAST, seed_truth, send};
    let env = crate::util::Env::new("s3-follow", FAST).on_bucket();
    env.create_topic(1);
    let mut truth = seed_truth();
    let speed = env.spawn("speed", &["speed", "--quiet"]);
    send(&env, 0..1_000, 100, &mut truth);
    env.wait_checkpointed(1_000);
    // The seed's dataset is in the batch view.
    env.ok(&["batch"]);

    let (proxy, requests) = LossyProxy::recording();
    let endpoint = format!("http://127.0.0.1:{}", proxy.port);
    let addr = format!("127.0.0.1:{}", crate::util::free_port());
    let replica = env.spawn_with(
        "serve",
        &["serve", &format!("--listen={addr}")],
        &[("LAMBDAFLOW_OUTPUT__S3__ENDPOINT", &endpoint)],
    );
    let served = |truth: &BTreeMap<String, i64>| {
        crate::util::eventually(
            30,
            || {
                crate::util::try_http(&addr, "GET", "/api/views/customer_totals", &[]).is_ok_and(
                    |(_, body)| {
                        serde_json::from_str(&body).is_ok_and(|b| {
                            crate::util::rows_of(&b, "customer", "total_amount") == *truth
                        })
                    },
                )
            },
            || format!("the replica serves the truth\n{}", env.log("serve")),
        )
    };
    served(&truth);
    // The commit files of the log the replica reads (GET), by version.
    let commits_read = |from: usize| -> Vec<u64> {
        requests.lock().unwrap()[from..]
            .iter()
            .filter(|l| l.starts_with("GET "))
            .filter_map(|l| {
                let path = l.split(' ').nth(1)?.split('?').next()?;
                let (_, name) = path.split_once("/master/_delta_log/")?;
                name.strip_suffix(".json")?.parse().ok()
            })
            .collect()
    };
    let first = commits_read(0);
    let versions = first.iter().max().copied().unwrap_or(0);
    assert!(versions >= 2, "the replica read the log: {first:?}");

    let quiet_from = requests.lock().unwrap().len();
    std::thread::sleep(std::time::Duration::from_secs(5));
    let quiet = commits_read(quiet_from);
    assert!(
        quiet.is_empty(),
        "5 s with no commit, and the replica read {quiet:?}"
    );
    let quiet_requests = requests.lock().unwrap().len() - quiet_from;
    assert!(
        quiet_requests > 0,
        "the replica followed the bucket (no request in 5 s)"
    );

    let more_from = requests.lock().unwrap().len();
    send(&env, 1_000..1_500, 100, &mut truth);
    env.wait_checkpointed(1_500);
    served(&truth);
    let more = commits_read(more_from);
    assert!(!more.is_empty(), "the replica read the new commits");
    assert!(
        more.iter().all(|&v| v > versions),
        "after version {versions}, the replica read again {more:?}"
    );
    crate::util::terminate(replica);
    crate::util::terminate(speed);
}

/// A segment of more than `segments::RANGES_FROM` bytes on the bucket is read by ranges (its
/// footer, then its row group's column chunks: more than one GET, seen through a proxy), and
/// reads back every event as written, plain and with dictionary strings.
#[test]
fn a_large_segment_on_a_bucket_is_read_by_ranges() {
    use datafusion::arrow::array::Array;
    let (proxy, requests) = LossyProxy::recording();
    let s3 = S3Config {
        endpoint: Some(format!("http://127.0.0.1:{}", proxy.port)),
        ..S3Config::default()
    };
    let url = bucket("ranges").url().to_string();
    let layout = Layout::on(Store::open(&url, &s3).unwrap(), 1);
    let schema = EventSchema::new(default_fields()).unwrap();
    // Customers that do not compress: the segment is well past the size read by ranges.
    let n: i64 = 600_000;
    let name = |i: i64| {
        format!(
            "{:032x}",
            (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
        )
    };
    let arrow = schema.arrow_schema();
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values((0..n).map(name))),
        Arc::new(Int64Array::from_iter_values(0..n)),
    ];
    for f in &arrow.fields()[2..] {
        cols.push(new_null_array(f.data_type(), n as usize));
    }
    let events = RecordBatch::try_new(arrow, cols).unwrap();
    let seg = segments::write_pending(&layout, "t", (0, None), 0, n, &[events]).unwrap();
    assert!(seg.size >= segments::RANGES_FROM, "{} bytes", seg.size);

    for dictionaries in [false, true] {
        let from = requests.lock().unwrap().len();
        let read = if dictionaries {
            segments::read_dictionary_strings(&seg, &schema).unwrap()
        } else {
            segments::read(&seg, &schema).unwrap()
        };
        let gets = requests.lock().unwrap()[from..]
            .iter()
            .filter(|l| l.starts_with("GET ") && l.contains(".pending."))
            .count();
        assert!(
            gets >= 2,
            "{gets} GET(s) of the segment: read whole, not by ranges"
        );
        let (mut rows, mut sum) = (0i64, 0i64);
        let (mut first, mut last) = (None, None);
        for b in &read {
            let amounts = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            sum += amounts.iter().map(|a| a.unwrap()).sum::<i64>();
            rows += b.num_rows() as i64;
            let customers = datafusion::arrow::compute::cast(
                b.column(0),
                &datafusion::arrow::datatypes::DataType::Utf8,
            )
            .unwrap();
            let customers = customers.as_any().downcast_ref::<StringArray>().unwrap();
            first.get_or_insert_with(|| customers.value(0).to_string());
            last = Some(customers.value(customers.len() - 1).to_string());
        }
        assert_eq!(
            (rows, sum),
            (n, n * (n - 1) / 2),
            "dictionaries: {dictionaries}"
        );
        assert_eq!(first, Some(name(0)));
        assert_eq!(last, Some(name(n - 1)));
    }
}

/// Writes whose answers are lost after the server made them (a segment's put, a rename's
/// copy or delete, the checkpoint, the Delta log's create-only put of a commit): the speed
/// layer retries each, and the table ends with every offset once — a commit the server made
/// but whose answer was lost is recognised as this process's own (its `txn` versions), not
/// committed a second time.
#[test]
fn writes_whose_answers_are_lost_are_retried_without_a_second_copy() {
    use crate::master::{seed_truth, send};
    use std::sync::atomic::{AtomicBool, Ordering};
    let server = OwnServer::start();
    let counts = std::sync::Mutex::new(BTreeMap::<&str, usize>::new());
    let losing = Arc::new(AtomicBool::new(true));
    let on = Arc::clone(&losing);
    let proxy = LossyProxy::start(server.port, move |line| {
        let kind = if line.starts_with("DELETE ") || line.contains("?delete ") {
            // object_store deletes with `DELETE`, or several keys with `POST ?delete`.
            "delete"
        } else if !line.starts_with("PUT ") {
            return false;
        } else if line.contains("/_delta_log/") && line.contains(".json") {
            "commit"
        } else if line.contains(".parquet") {
            "segment"
        } else {
            "other"
        };
        if !on.load(Ordering::SeqCst) {
            return false;
        }
        let mut counts = counts.lock().unwrap();
        let n = counts.entry(kind).or_default();
        *n += 1;
        // Every other write of each kind (one in three of the rest), from the second on.
        n.is_multiple_of(if kind == "other" { 3 } else { 2 })
    });
    let env = env_on_endpoint("s3-lost-answers", proxy.port);
    env.create_topic(2);
    let mut truth = seed_truth();
    let speed = env.spawn("speed", &["speed", "--quiet"]);
    send(&env, 0..3_000, 250, &mut truth);
    crate::util::eventually(
        120,
        || env.checkpointed() >= 3_000,
        || format!("every event checkpointed\n{}", env.log("speed")),
    );
    crate::util::terminate(speed);
    let lost = proxy.lost();
    for kind in ["/_delta_log/", ".parquet", "?delete", "checkpoint.json"] {
        assert!(
            lost.iter().any(|l| l.contains(kind)),
            "an answer to a `{kind}` write was lost: {lost:#?}"
        );
    }
    // The test reads the table through the proxy too, its answers whole from here on.
    losing.store(false, Ordering::SeqCst);
    assert_each_offset_once(&env, 3_000);
    env.ok(&["batch"]);
    env.assert_served_and_verified(&truth);
}

/// `batch` and `compact` started while the S3 server is away: each waits, says so, and
/// finishes by itself once the server is back (within `output.storage-wait`).
#[test]
fn batch_and_compact_wait_for_the_s3_server_and_finish_once_it_is_back() {
    use crate::master::{seed_truth, send};
    let server = OwnServer::start();
    let env = env_on_endpoint("s3-batch-waits", server.port);
    env.create_topic(2);
    let mut truth = seed_truth();
    let speed = env.spawn("speed", &["speed", "--quiet"]);
    send(&env, 0..1_000, 250, &mut truth);
    env.wait_checkpointed(1_000);
    crate::util::terminate(speed);
    for cmd in ["batch", "compact"] {
        server.script("stop");
        let run = env.spawn(cmd, &[cmd]);
        crate::util::eventually(
            60,
            || {
                env.log(cmd)
                    .contains("storage unreachable or full; waiting")
            },
            || format!("`{cmd}` waits for the bucket\n{}", env.log(cmd)),
        );
        server.script("start");
        let status = run.wait();
        let log = env.log(cmd);
        assert!(
            status.success(),
            "`{cmd}` finishes once the bucket is back\n{log}"
        );
        assert!(log.contains("storage answers again"), "{log}");
    }
    env.assert_served_and_verified(&truth);
    assert_each_offset_once(&env, 1_000);
}

/// The Spark engine reads the master dataset's segments from the bucket itself (`s3a://`,
/// Hadoop's S3A in the Spark Connect server `scripts/spark.sh` starts) and computes what the
/// embedded engine computes from the same table version.
#[test]
fn spark_reads_the_master_dataset_from_the_bucket_through_s3a() {
    use crate::master::{FAST, seed_truth, send};
    let env = crate::util::Env::new("s3-spark", FAST)
        .on_bucket()
        .with_spark();
    env.create_topic(2);
    let mut truth = seed_truth();
    let speed = env.spawn("speed", &["speed", "--quiet"]);
    send(&env, 0..2_000, 250, &mut truth);
    env.wait_checkpointed(2_000);
    crate::util::terminate(speed);
    let spark = env.ok(&["batch"]);
    assert!(spark.trim_end().ends_with("ms on spark"), "{spark}");
    assert!(
        spark.contains("segment(s) (master table version"),
        "{spark}"
    );
    let embedded = env.ok(&["--engine", "datafusion", "batch"]);
    let rows = |out: &str| -> Vec<String> {
        out.lines()
            .filter(|l| l.starts_with('|'))
            .map(String::from)
            .collect()
    };
    assert!(rows(&spark).len() > 6, "{spark}");
    assert_eq!(rows(&spark), rows(&embedded), "{spark}\n{embedded}");
    env.assert_served_and_verified(&truth);
}
