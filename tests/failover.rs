//! Failover on a 3-broker Kafka cluster (`scripts/kafka.sh` with `KAFKA_NODES=3`: a controller
//! quorum of 3, replication factor 3, `min.insync.replicas=2`), started by the test itself.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::util::{self, Cluster, Env, get_json, rows_of, terminate};

const VIEW: &str = "/api/views/customer_totals?limit=all";

/// What the producer had acknowledged (`acks=all`): the truth the view must end at.
#[derive(Default)]
struct Acked {
    truth: BTreeMap<String, i64>,
    failed: u64,
    /// Set by the test when it kills the leader.
    killed_at: Option<Instant>,
    /// The first event on the watched partition acknowledged after the kill: its offset, and
    /// when it was acknowledged.
    first_after_kill: Option<(i64, Instant)>,
}

/// Sends events in rounds of 100 until `stop`, recording each acknowledged one.
fn produce(env: &Env, watched: i32, stop: &AtomicBool, acked: &Mutex<Acked>) {
    let p = env.pipeline();
    let topic = p.config.kafka.topic.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let prod = lambdaflow::kafka::producer(&p.config.kafka).unwrap();
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let events: Vec<(String, i64)> = (i..i + 100)
                .map(|i| (format!("c{}", i % 50), (i % 13) as i64 + 1))
                .collect();
            i += 100;
            let sent = Instant::now();
            let results = util::send_events(&prod, &topic, &events).await;
            {
                let mut a = acked.lock().unwrap();
                for ((c, amount), r) in events.into_iter().zip(results) {
                    match r {
                        Ok(d) => {
                            *a.truth.entry(c).or_default() += amount;
                            let after_kill = a.killed_at.is_some_and(|k| sent > k);
                            if after_kill && d.partition == watched && a.first_after_kill.is_none()
                            {
                                a.first_after_kill = Some((d.offset, Instant::now()));
                            }
                        }
                        Err(_) => a.failed += 1,
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}

/// The broker leading `partition`, from `lambdaflow topic describe`.
fn leader_of(env: &Env, partition: i32) -> usize {
    let d = env.ok(&["topic", "describe"]);
    d.lines()
        .find(|l| l.contains(&format!("Partition: {partition}\t")))
        .and_then(|l| l.split("Leader: ").nth(1))
        .and_then(|s| s.split('\t').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no leader for partition {partition} in:\n{d}"))
}

/// The next offset the speed layer consumes on `partition`, from `/api/status`.
fn consumed_to(addr: &str, partition: i32) -> i64 {
    let st = get_json(addr, "/api/status");
    st["speed"]["offsets"][partition.to_string()]
        .as_i64()
        .unwrap_or(0)
}

/// Waits up to `secs` for `ok`, failing with `what` and the run's log.
fn wait(env: &Env, secs: u64, what: &str, ok: impl FnMut() -> bool) -> Duration {
    util::eventually(secs, ok, || format!("{what}\n{}", env.log("run")))
}

/// The leader of a partition is killed with `kill -9` while events flow and `lambdaflow run`
/// consumes: the speed layer follows the new leader, every acknowledged event is served once,
/// none twice; the broker comes back and the cluster goes on. Prints the time to resume.
#[test]
fn the_speed_layer_follows_the_new_leader_when_a_broker_is_killed() {
    let cluster = Cluster::start();
    let addr = format!("127.0.0.1:{}", util::free_port());
    let env = Env::on(
        &cluster.bootstrap(),
        "failover",
        &format!(
            "[speed]\nlinger = \"2ms\"\ncheckpoint-interval = \"100ms\"\n\n[serving]\nlisten = \"{addr}\"\n"
        ),
    );
    let created = env.ok(&["topic", "create", "--partitions", "2"]);
    assert!(created.contains("Created topic"), "{created}");
    let described = env.ok(&["topic", "describe"]);
    assert!(described.contains("ReplicationFactor: 3"), "{described}");
    let run = env.spawn("run", &["run"]);
    wait(&env, 60, "run ready", || {
        matches!(util::try_http(&addr, "GET", "/health", &[]), Ok((200, _)))
    });
    let acked = Mutex::new(Acked {
        truth: util::map(&[("Ali", 320), ("Sara", 140), ("Mounir", 150)]),
        ..Acked::default()
    });
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let producer = scope.spawn(|| produce(&env, 0, &stop, &acked));
        wait(&env, 60, "events consumed before the kill", || {
            consumed_to(&addr, 0) > 2000
        });
        let leader = leader_of(&env, 0);
        acked.lock().unwrap().killed_at = Some(Instant::now());
        let killed = Instant::now();
        cluster.kill_node(leader);
        wait(&env, 120, "an event produced after the kill served", || {
            let first = acked.lock().unwrap().first_after_kill;
            first.is_some_and(|(off, _)| consumed_to(&addr, 0) > off)
        });
        let served = killed.elapsed();
        let (_, acked_at) = acked.lock().unwrap().first_after_kill.unwrap();
        eprintln!(
            "failover: node {leader} (leader of partition 0) killed with SIGKILL; the first event \
             sent after the kill was acknowledged {} ms later (acks=all) and served {} ms later",
            (acked_at - killed).as_millis(),
            served.as_millis()
        );
        cluster.start_node(leader);
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        producer.join().unwrap();
    });
    let acked = acked.into_inner().unwrap();
    assert_eq!(acked.failed, 0, "sends failed: the truth is ambiguous");
    let mut served = BTreeMap::new();
    wait(
        &env,
        120,
        "the served view equal to what was acknowledged",
        || {
            if let Ok((200, body)) = util::try_http(&addr, "GET", VIEW, &[]) {
                served = rows_of(
                    &serde_json::from_str(&body).unwrap(),
                    "customer",
                    "total_amount",
                );
            }
            served == acked.truth
        },
    );
    let status = get_json(&addr, "/api/status");
    assert_eq!(status["speed"]["dead_letters"], 0, "{status}");
    terminate(run);
    let verified = env.ok(&["verify"]);
    assert!(verified.contains(": 0 difference(s)"), "{verified}");
}
