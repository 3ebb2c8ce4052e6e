//! The speed layer as a Kafka consumer group, against the real broker: instances killed with
//! `kill -9`, restarted, stopped for good, joining late, and a zombie (SIGSTOP past its session
//! timeout); `serve` replicas answer from the master dataset meanwhile. Every event must end in
//! the Delta table exactly once, and the served view at the truth.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lambdaflow::storage::segments;

use crate::util::{self, Env, Spawned, get_json, kill9, rows_of};

const VIEW: &str = "/api/views/customer_totals?limit=all";

/// Sessions expire after 6 s (the broker's minimum) so partitions of a killed instance move
/// within seconds.
fn group_env(name: &str) -> Env {
    Env::new(
        name,
        "[speed]\nconsumer-group = true\nlinger = \"5ms\"\ncheckpoint-interval = \"200ms\"\n\n\
         [kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n",
    )
}

/// What was sent (before the send: an upper bound for any answer) and acknowledged.
#[derive(Default)]
struct Sent {
    /// Sum of the amounts handed to the producer so far.
    total: i64,
    /// Per customer, what the brokers acknowledged, seed dataset included.
    truth: BTreeMap<String, i64>,
    acked: usize,
    failed: usize,
}

/// Sends `n` events in rounds of 500, then returns.
fn produce(env: &Env, n: usize, pace: Duration, sent: &Mutex<Sent>, stop: &AtomicBool) {
    let p = env.pipeline();
    let topic = p.config.kafka.topic.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let prod = lambdaflow::kafka::producer(&p.config.kafka).unwrap();
        let mut i = 0usize;
        while i < n && !stop.load(Ordering::Relaxed) {
            let events: Vec<(String, i64)> = (i..(i + 500).min(n))
                .map(|i| (format!("c{}", i % 997), (i % 13) as i64 + 1))
                .collect();
            i += events.len();
            sent.lock().unwrap().total += events.iter().map(|e| e.1).sum::<i64>();
            let results = util::send_events(&prod, &topic, &events).await;
            {
                let mut s = sent.lock().unwrap();
                for ((c, a), r) in events.into_iter().zip(results) {
                    match r {
                        Ok(_) => {
                            *s.truth.entry(c).or_default() += a;
                            s.acked += 1;
                        }
                        Err(_) => s.failed += 1,
                    }
                }
            }
            tokio::time::sleep(pace).await;
        }
    });
}

fn seed_truth() -> Sent {
    Sent {
        total: 320 + 140 + 150,
        truth: util::map(&[("Ali", 320), ("Sara", 140), ("Mounir", 150)]),
        ..Sent::default()
    }
}

/// Every offset of every partition in the table exactly once: per partition, the committed
/// segments are contiguous from offset 0 to the end of the partition, and each holds one event
/// per offset of its range (every event sent is good).
fn assert_exactly_once(env: &Env, ends: &BTreeMap<i32, i64>) {
    let p = env.pipeline();
    let layout = p.layout();
    let segs = segments::committed(&layout).unwrap().segments;
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for s in &segs {
        let at = next.entry(s.partition).or_insert(0);
        assert_eq!(
            s.from, *at,
            "partition {}: a segment starts at {} where the table is at {} (a gap or an overlap)",
            s.partition, s.from, at
        );
        let rows: usize = segments::read(s, &p.schema)
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows as i64, s.to - s.from, "{}: rows", s.shown().display());
        *at = s.to;
    }
    assert_eq!(&next, ends, "the table ends where the partitions end");
}

/// The partitions' ends, from `lambdaflow topic describe`.
fn partition_ends(env: &Env) -> BTreeMap<i32, i64> {
    let p = env.pipeline();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(lambdaflow::kafka::watermarks(&p.config.kafka))
        .unwrap()
        .into_iter()
        .filter(|&(_, _, hi)| hi > 0)
        .map(|(part, _, hi)| (part, hi))
        .collect()
}

fn total(rows: &BTreeMap<String, i64>) -> i64 {
    rows.values().sum()
}

fn speed(env: &Env, name: &str) -> Spawned {
    env.spawn(name, &["speed", "--quiet"])
}

/// Stops an instance with SIGTERM; it must exit 0 (its log says why not).
fn stop_instance(env: &Env, name: &str, child: Spawned) {
    let pid = child.pid().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = child.wait();
    let log = env.log(name);
    let tail: Vec<&str> = log.lines().filter(|l| !l.contains("micro-batch")).collect();
    assert!(
        status.success(),
        "{name} exited with {status}:\n{}",
        tail.join("\n")
    );
}

/// 3 speed instances on a 6-partition topic while 300,000 events flow: one killed with
/// `kill -9` and restarted, a batch run, a `compact`, another killed, a fourth joining late (a
/// `lambdaflow run`, which then serves too), one stopped for good; 2 `serve` replicas sampled
/// throughout never answer more than was sent, and end at the truth with the `run`; the table holds every event exactly once; `verify` agrees.
#[test]
fn a_consumer_group_of_speed_layers_survives_kills_restarts_and_late_joiners() {
    let env = group_env("group");
    env.create_topic(6);
    // Two `serve` replicas, and the address of the late joiner, a `lambdaflow run`.
    let replicas: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", util::free_port()))
        .collect();
    let serves: Vec<Spawned> = replicas[..2]
        .iter()
        .enumerate()
        .map(|(i, a)| env.spawn(&format!("serve{i}"), &["serve", "--listen", a]))
        .collect();
    let mut a = speed(&env, "a");
    let b = speed(&env, "b");
    let c = speed(&env, "c");
    let sent = Mutex::new(seed_truth());
    let stop = AtomicBool::new(false);
    let over = AtomicBool::new(false);
    let exceeded = Mutex::new(Vec::<String>::new());
    let samples = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let producer = scope.spawn(|| {
            produce(&env, 300_000, Duration::from_millis(50), &sent, &stop);
            over.store(true, Ordering::Relaxed);
        });
        // Samples of both replicas: never more than what was handed to the producer.
        let sampler = scope.spawn(|| {
            while !over.load(Ordering::Relaxed) {
                for addr in &replicas {
                    let bound = sent.lock().unwrap().total;
                    if let Ok((200, body)) = util::try_http(addr, "GET", VIEW, &[]) {
                        let rows = rows_of(
                            &serde_json::from_str(&body).unwrap(),
                            "customer",
                            "total_amount",
                        );
                        samples.fetch_add(1, Ordering::Relaxed);
                        if total(&rows) > bound {
                            exceeded
                                .lock()
                                .unwrap()
                                .push(format!("{addr}: {} > {bound}", total(&rows)));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let acked = || sent.lock().unwrap().acked;
        let wait_acked = |n: usize| {
            util::eventually(
                300,
                || acked() >= n,
                || format!("{} events acknowledged", acked()),
            )
        };
        wait_acked(40_000);
        kill9(a);
        std::thread::sleep(Duration::from_secs(3));
        a = speed(&env, "a2");
        wait_acked(90_000);
        env.ok(&["batch"]);
        env.ok(&["compact"]);
        wait_acked(140_000);
        kill9(b);
        let d = env.spawn("d", &["run", "--listen", &replicas[2]]);
        wait_acked(200_000);
        stop_instance(&env, "c", c);
        producer.join().unwrap();
        sampler.join().unwrap();
        let s = sent.lock().unwrap();
        assert_eq!(s.failed, 0, "sends failed: the truth is ambiguous");
        let truth = s.truth.clone();
        drop(s);
        let ends = partition_ends(&env);
        assert_eq!(ends.values().sum::<i64>(), 300_000);
        for addr in &replicas {
            let served = std::cell::RefCell::new(BTreeMap::new());
            util::eventually(
                240,
                || {
                    if let Ok((200, body)) = util::try_http(addr, "GET", VIEW, &[]) {
                        *served.borrow_mut() = rows_of(
                            &serde_json::from_str(&body).unwrap(),
                            "customer",
                            "total_amount",
                        );
                    }
                    *served.borrow() == truth
                },
                || {
                    format!(
                        "{addr} at the truth: served {} of {}\n{}\n{}",
                        total(&served.borrow()),
                        total(&truth),
                        env.log("a2"),
                        env.log("d")
                    )
                },
            );
            let body = get_json(addr, VIEW);
            let fresh = &body["freshness"];
            for (part, end) in &ends {
                assert_eq!(fresh["speed_offsets"][part.to_string()], *end, "{fresh}");
            }
        }
        // The replicas show the group: the two instances left own every partition, and the
        // master dataset reaches each partition's end.
        let status = std::cell::RefCell::new(serde_json::Value::Null);
        util::eventually(
            60,
            || {
                *status.borrow_mut() = get_json(&replicas[0], "/api/status");
                let g = &status.borrow()["consumer_group"];
                let owners: std::collections::BTreeSet<&str> = ends
                    .keys()
                    .filter_map(|p| g["partitions"][p.to_string()]["owner"].as_str())
                    .collect();
                g["members"].as_array().is_some_and(|m| m.len() == 2)
                    && owners.len() == 2
                    && ends
                        .iter()
                        .all(|(p, e)| g["partitions"][p.to_string()]["archived"] == *e)
                    && ends
                        .keys()
                        .all(|p| !g["partitions"][p.to_string()]["owner"].is_null())
            },
            || {
                format!(
                    "the group in /api/status: {}",
                    status.borrow()["consumer_group"]
                )
            },
        );
        // `run` in the group serves every partition from the files and shows its own member
        // once it holds partitions (a rebalance may still be moving some to it: CI saw it
        // with none, every partition owned a moment before).
        util::eventually(
            30,
            || {
                get_json(&replicas[2], "/api/status")["speed"]["owned_partitions"]
                    .as_array()
                    .is_some_and(|o| !o.is_empty())
            },
            || {
                format!(
                    "run's own member in /api/status: {}",
                    get_json(&replicas[2], "/api/status")
                )
            },
        );
        assert_eq!(
            get_json(&replicas[2], "/health")["kafka_up"],
            true,
            "run's member reaches the brokers"
        );
        stop_instance(&env, "a2", a);
        stop_instance(&env, "d", d);
        assert_exactly_once(&env, &ends);
    });
    assert!(
        exceeded.lock().unwrap().is_empty(),
        "answers above what was sent: {:?}",
        exceeded.lock().unwrap()
    );
    assert!(
        samples.into_inner() > 20,
        "the replicas were sampled while events flowed"
    );
    drop(serves);
    let verified = env.ok(&["verify"]);
    assert!(verified.contains(": 0 difference(s)"), "{verified}");
}

/// A zombie: an instance suspended (SIGSTOP) past its session timeout loses its partitions,
/// which the other claims and advances; resumed (SIGCONT), nothing it writes counts.
#[test]
fn a_suspended_instance_that_comes_back_cannot_write_what_counts() {
    zombie_cannot_write_what_counts(false);
}

/// The zombie test, with `output.dir` on the test bucket when `on_bucket`.
pub(crate) fn zombie_cannot_write_what_counts(on_bucket: bool) {
    let mut env = group_env("zombie");
    if on_bucket {
        env = env.on_bucket();
    }
    env.create_topic(4);
    let z = speed(&env, "zombie");
    let o = speed(&env, "other");
    let sent = Mutex::new(seed_truth());
    let stop = AtomicBool::new(false);
    // Claims of at least one partition, in an instance's log.
    let claims = |name: &str| {
        env.log(name)
            .lines()
            .filter(|l| l.contains("assigned and claimed") && !l.contains("partitions=[]"))
            .count()
    };
    std::thread::scope(|scope| {
        let producer =
            scope.spawn(|| produce(&env, 100_000, Duration::from_millis(100), &sent, &stop));
        util::eventually(
            60,
            || claims("zombie") >= 1 && claims("other") >= 1,
            || {
                format!(
                    "both own partitions\n{}\n{}",
                    env.log("zombie"),
                    env.log("other")
                )
            },
        );
        util::eventually(
            120,
            || sent.lock().unwrap().acked >= 10_000,
            || "acks".into(),
        );
        let before = claims("other");
        let pid = z.pid().to_string();
        let signal = |s: &str| {
            let ok = std::process::Command::new("kill")
                .args([s, &pid])
                .status()
                .unwrap();
            assert!(ok.success());
        };
        signal("-STOP");
        // Past the session timeout, the other instance claims the zombie's partitions.
        util::eventually(60, || claims("other") > before, || env.log("other"));
        let acked = sent.lock().unwrap().acked;
        util::eventually(
            60,
            || sent.lock().unwrap().acked >= acked + 5_000,
            || "acks".into(),
        );
        signal("-CONT");
        producer.join().unwrap();
    });
    let truth = sent.lock().unwrap().truth.clone();
    let ends = partition_ends(&env);
    // The zombie's next commits are refused (fenced), then it rejoins the group.
    util::eventually(
        60,
        || {
            env.log("zombie")
                .contains("another instance owns this partition now")
                || env.log("zombie").contains("lost=true")
        },
        || env.log("zombie"),
    );
    let layout = env.pipeline().layout();
    util::eventually(
        120,
        || {
            segments::archived_until(&segments::committed(&layout).unwrap().segments, &env.topic)
                == ends
        },
        || {
            format!(
                "the table at the partitions' ends {ends:?}\nother:\n{}\nzombie:\n{}",
                env.log("other"),
                env.log("zombie")
            )
        },
    );
    stop_instance(&env, "zombie", z);
    stop_instance(&env, "other", o);
    assert_exactly_once(&env, &ends);
    env.ok(&["batch"]);
    env.ok(&["serve", "--once"]);
    eprintln!(
        "{}",
        env.log("zombie")
            .lines()
            .filter(|l| !l.contains("micro-batch"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        env.view("serving_view.json", "customer", "total_amount"),
        truth
    );
    let verified = env.ok(&["verify"]);
    assert!(verified.contains(": 0 difference(s)"), "{verified}");
    if on_bucket {
        assert!(!env.path("output").exists(), "the bucket is all they share");
    }
}

/// A partition whose last messages are all malformed: the group's owner archives their dead
/// letters as a range with no segment, and a `serve` replica's speed offsets still reach the
/// partition's end (it counts every consumed offset, not the last good one).
#[test]
fn dead_letters_at_a_partitions_end_count_as_progress() {
    let env = group_env("dead-end");
    env.create_topic(1);
    let addr = format!("127.0.0.1:{}", util::free_port());
    let serve = env.spawn("serve", &["serve", "--listen", &addr]);
    let speed = speed(&env, "speed");
    let good: Vec<Vec<u8>> = (0..15)
        .map(|i| format!(r#"{{"customer": "c{i}", "amount": 1}}"#).into_bytes())
        .collect();
    env.send_raw(&good);
    let bad: Vec<Vec<u8>> = (0..5)
        .map(|i| format!("not json {i}").into_bytes())
        .collect();
    env.send_raw(&bad);
    let fresh = std::cell::RefCell::new(serde_json::Value::Null);
    util::eventually(
        60,
        || {
            if let Ok((200, body)) = util::try_http(&addr, "GET", VIEW, &[]) {
                *fresh.borrow_mut() =
                    serde_json::from_str::<serde_json::Value>(&body).unwrap()["freshness"].clone();
            }
            fresh.borrow()["speed_offsets"]["0"] == 20
        },
        || {
            format!(
                "the replica's speed offsets reach 20: {}\n{}",
                fresh.borrow(),
                env.log("speed")
            )
        },
    );
    let served = get_json(&addr, VIEW);
    let rows = rows_of(&served, "customer", "total_amount");
    let streamed = rows.iter().filter(|(k, _)| k.starts_with('c')).count();
    assert_eq!(streamed, 15, "{served}");
    stop_instance(&env, "speed", speed);
    drop(serve);
}
