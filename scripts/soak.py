#!/usr/bin/env python3
"""The soak behind scripts/soak.sh: a random stream (1% malformed) produced by an independent
Kafka client (confluent-kafka, acks=all, idempotent) into a 3-broker cluster while
`lambdaflow run` consumes it with serving.isolation = "read-committed"; every so often the
speed layer or a broker is killed with SIGKILL and started again. The served view is sampled
all along (no key's total may ever go back). At the end: events produced, consumed,
dead-lettered, served, and the differences, which must all be zero (exit 1 otherwise).
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from confluent_kafka import Producer


def log(msg):
    print(f"soak {time.strftime('%H:%M:%S')}: {msg}", flush=True)


class Run:
    """`lambdaflow run`, started and killed."""

    def __init__(self, cmd, logfile):
        self.cmd, self.logfile, self.proc, self.starts = cmd, logfile, None, 0

    def start(self):
        self.starts += 1
        out = open(self.logfile, "a")
        self.proc = subprocess.Popen(self.cmd + ["run"], stdout=subprocess.DEVNULL, stderr=out,
                                     env={**os.environ, "LAMBDAFLOW_LOG": "warn"})

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(120)


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.load(r)
    except Exception:
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--kafka-sh", required=True)
    ap.add_argument("--dead-letters", required=True)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    lf = [a.bin, "--config", a.config]
    subprocess.run(lf + ["topic", "create", "--partitions", "4"], check=True)
    run = Run(lf, os.path.join(os.path.dirname(a.config), "run.log"))
    run.start()

    truth, acked = {"Ali": 320, "Sara": 140, "Mounir": 150}, {"good": 0, "bad": 0, "failed": 0}
    lock, stop = threading.Lock(), threading.Event()

    def produce():
        p = Producer({"bootstrap.servers": a.bootstrap, "acks": "all",
                      "enable.idempotence": True, "message.timeout.ms": 120000,
                      "linger.ms": 5})
        i = 0
        while not stop.is_set():
            t0 = time.monotonic()
            for _ in range(a.rate // 100):
                i += 1
                if rnd.random() < 0.01:
                    payload, good = rnd.choice([b"not json", b'{"customer":"x","amount":"abc"}',
                                                b'{"customer":"x"}', b"\xff\xfe"]), None
                else:
                    c, amount = f"c{rnd.randrange(5000)}", rnd.randrange(1, 100)
                    payload, good = json.dumps({"customer": c, "amount": amount}).encode(), (c, amount)

                def done(err, _msg, good=good):
                    with lock:
                        if err is not None:
                            acked["failed"] += 1
                        elif good is None:
                            acked["bad"] += 1
                        else:
                            acked["good"] += 1
                            truth[good[0]] = truth.get(good[0], 0) + good[1]

                while True:
                    try:
                        p.produce(a.topic, payload, on_delivery=done)
                        break
                    except BufferError:
                        p.poll(0.05)
            p.poll(0)
            time.sleep(max(0, 0.01 - (time.monotonic() - t0)))
        p.flush(180)

    seen, went_back, samples = {}, [], [0]

    def sample():
        body = get(f"{a.url}/api/views/customer_totals?limit=all")
        if not body:
            return None
        rows = {r["customer"]: r["total_amount"] for r in body["rows"]}
        for k, v in rows.items():
            if v < seen.get(k, 0):
                went_back.append((k, seen[k], v))
            seen[k] = max(v, seen.get(k, 0))
        samples[0] += 1
        return rows

    producer = threading.Thread(target=produce)
    producer.start()
    end = time.monotonic() + a.minutes * 60
    kills = {"run": 0, "broker": 0}
    next_chaos = time.monotonic() + rnd.uniform(15, 40)
    while time.monotonic() < end:
        sample()
        if time.monotonic() >= next_chaos:
            if rnd.random() < 0.5:
                log("kill -9 lambdaflow run")
                run.kill9()
                time.sleep(rnd.uniform(0.5, 3))
                run.start()
                kills["run"] += 1
            else:
                node = rnd.randrange(1, 4)
                log(f"kill -9 broker node {node}")
                subprocess.run([a.kafka_sh, "kill-node", str(node)], check=True)
                time.sleep(rnd.uniform(3, 15))
                subprocess.run([a.kafka_sh, "start-node", str(node)], check=True)
                kills["broker"] += 1
            next_chaos = time.monotonic() + rnd.uniform(15, 40)
        time.sleep(0.2)
    log("stopping the producer")
    stop.set()
    producer.join()
    deadline, rows = time.monotonic() + 300, None
    while time.monotonic() < deadline:
        rows = sample()
        if rows == truth:
            break
        time.sleep(0.5)
    status = get(f"{a.url}/api/status") or {}
    sp = status.get("speed") or {}
    code = run.stop()
    with open(a.dead_letters, "rb") as f:
        dead_file = sum(1 for _ in f)
    produced = acked["good"] + acked["bad"]
    served_diff = sum(1 for k in set(truth) | set(rows or {}) if (rows or {}).get(k) != truth.get(k))
    figures = [
        ("produced (acknowledged)", produced),
        ("  of them malformed", acked["bad"]),
        ("sends that failed", acked["failed"]),
        ("consumed by the speed layer", sp.get("consumed")),
        ("dead letters (status)", sp.get("dead_letters")),
        ("dead letters (file)", dead_file),
        ("keys served / expected", f"{len(rows or {})} / {len(truth)}"),
    ]
    for name, v in figures:
        print(f"  {name:32} {v}")
    diffs = {
        "consumed - produced": (sp.get("consumed") or 0) - produced,
        "dead letters - malformed": (sp.get("dead_letters") or 0) - acked["bad"],
        "dead-letter file - malformed": dead_file - acked["bad"],
        "keys served differently": served_diff,
        "reads that went back": len(went_back),
        "failed sends": acked["failed"],
        "exit code of the last run": code,
    }
    print(f"  kills: {kills['run']} of lambdaflow run, {kills['broker']} of a broker; {samples[0]} samples")
    for name, v in diffs.items():
        print(f"  {name:32} {v}")
    if went_back:
        print(f"  first reads that went back: {went_back[:5]}")
    sys.exit(0 if all(v == 0 for v in diffs.values()) else 1)


if __name__ == "__main__":
    main()
