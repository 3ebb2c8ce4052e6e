#!/usr/bin/env python3
"""The speed layer as a consumer group, measured from outside (stdlib only).

throughput: a 6-partition topic pre-loaded with --events events; for k = 1, 2, 3 instances of
  `lambdaflow speed --consumer-group` started at once on a fresh output directory and group, the
  time from their start until the master dataset's Delta log says every partition is archived
  to its end (the `txn` versions, read from `_delta_log/*.json` every 50 ms), and the steady
  rate between 25% and 90% archived (after the group's joins and first rebalances).
  Alternating rounds (1 2 3, 1 2 3, ...), medians.
move: 2 instances and a `serve` replica on a fresh 6-partition topic, events produced at a
  steady --rate; one instance is stopped (kill -9, or SIGTERM) and the time is taken until the
  replica's answer (freshness.speed_offsets) has moved past the stopped instance's partitions'
  offsets at the stop — the partitions moved, their events were archived by the other instance
  and served. With the session timeout given (kill -9 waits for it).
"""
import argparse
import glob
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


def config(work, topic, bootstrap, session_ms, listen="127.0.0.1:0", group=None):
    path = os.path.join(work, "lambdaflow.toml")
    group = group or f"g-{topic}"
    with open(path, "w") as f:
        f.write(f"""[kafka]
bootstrap-servers = "{bootstrap}"
topic = "{topic}"
group-id = "{group}"
[kafka.properties]
"session.timeout.ms" = "{session_ms}"
"heartbeat.interval.ms" = "{min(3000, session_ms // 3)}"
[batch]
dataset = []
[output]
dir = "{work}/output"
[speed]
consumer-group = true
[serving]
listen = "{listen}"
""")
    return path


def archived(work, topic):
    """Per partition, the highest archived offset in the Delta log."""
    out = {}
    prefix = f"lambdaflow/{topic}/"
    for f in glob.glob(os.path.join(work, "output/master/_delta_log/*.json")):
        try:
            lines = open(f).read().splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                txn = json.loads(line).get("txn")
            except ValueError:
                continue
            if txn and txn["appId"].startswith(prefix) and not txn["appId"].endswith("/owner"):
                p = int(txn["appId"][len(prefix):])
                out[p] = max(out.get(p, 0), txn["version"])
    return out


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def throughput(a):
    topic = f"bench-group-{os.getpid()}-{int(time.time())}"
    with tempfile.TemporaryDirectory() as work:
        cfg = config(work, topic, a.bootstrap, 45000)
        lf = [a.bin, "--config", cfg]
        run(lf + ["topic", "create", "--partitions", "6"])
        t = time.time()
        run(lf + ["produce", "--file", a.data], stdin=subprocess.DEVNULL)
        print(f"throughput: {a.events:,} events produced to 6 partitions in {time.time() - t:.1f} s", flush=True)
        results = {k: [] for k in (1, 2, 3)}
        for r in range(a.rounds):
            for k in (1, 2, 3):
                # A fresh output and group per run: each starts from the earliest offsets.
                sub = tempfile.mkdtemp(dir=work)
                scfg = config(sub, topic, a.bootstrap, 45000, group=f"g-{topic}-{r}-{k}")
                t0 = time.time()
                procs = [subprocess.Popen([a.bin, "--config", scfg, "speed", "--quiet"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                         for _ in range(k)]
                marks = {}  # when a quarter, then nine tenths, of the events were archived
                while True:
                    done = sum(archived(sub, topic).values())
                    for f in (0.25, 0.9):
                        if done >= f * a.events:
                            marks.setdefault(f, time.time())
                    if done >= a.events:
                        break
                    if time.time() - t0 > 600:
                        sys.exit("throughput: not archived within 600 s")
                    time.sleep(0.05)
                secs = time.time() - t0
                steady = 0.65 * a.events / max(marks[0.9] - marks[0.25], 1e-3)
                for p in procs:
                    p.send_signal(signal.SIGTERM)
                for p in procs:
                    p.wait()
                results[k].append((secs, steady))
                print(f"  round {r + 1}, {k} instance(s): all archived {secs:.2f} s after start "
                      f"({a.events / secs:,.0f} events/s); steady {steady:,.0f} events/s", flush=True)
        base = statistics.median(s for _, s in results[1])
        for k in (1, 2, 3):
            m = statistics.median(t for t, _ in results[k])
            st = statistics.median(s for _, s in results[k])
            print(f"throughput, {k} instance(s): median {m:.2f} s from start to all archived "
                  f"({a.events / m:,.0f} events/s); steady (25% to 90% archived) {st:,.0f} events/s "
                  f"= {st / base:.2f}x one instance")


def served_offsets(url):
    try:
        with urllib.request.urlopen(url + "/api/views/customer_totals?limit=1", timeout=2) as r:
            return {int(p): o for p, o in json.load(r)["freshness"]["speed_offsets"].items()}
    except Exception:
        return None


def group_owners(url):
    with urllib.request.urlopen(url + "/api/status", timeout=5) as r:
        g = json.load(r)["consumer_group"] or {}
    return {int(p): v["owner"] for p, v in g.get("partitions", {}).items()}, g.get("members", [])


def move(a, how):
    topic = f"bench-move-{os.getpid()}-{int(time.time())}"
    port = a.port
    with tempfile.TemporaryDirectory() as work:
        cfg = config(work, topic, a.bootstrap, a.session_ms, f"127.0.0.1:{port}")
        lf = [a.bin, "--config", cfg]
        run(lf + ["topic", "create", "--partitions", "6"])
        stop = threading.Event()

        def produce():
            p = subprocess.Popen(lf + ["produce"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, text=True)
            i, t = 0, time.time()
            while not stop.is_set():
                batch = a.rate // 20
                p.stdin.write("".join(f'{{"customer":"c{(i + j) % 1000}","amount":1}}\n' for j in range(batch)))
                p.stdin.flush()
                i += batch
                t += 0.05
                time.sleep(max(0, t - time.time()))
            p.stdin.close()
            p.wait()

        threading.Thread(target=produce, daemon=True).start()
        names = ["one", "two"]
        procs = {n: subprocess.Popen(lf + ["speed", "--quiet"], stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(work, n + ".log"), "w")) for n in names}
        serve = subprocess.Popen(lf + ["serve"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            # Both instances own partitions, and the replica serves all six.
            deadline = time.time() + 120
            while True:
                try:
                    owners, members = group_owners(url)
                except Exception:
                    owners, members = {}, []
                served = served_offsets(url) or {}
                if len(members) == 2 and len(set(owners.values()) - {None}) == 2 and len(served) == 6:
                    break
                if time.time() > deadline:
                    sys.exit(f"move: the group did not settle: {owners} {members}")
                time.sleep(0.2)
            time.sleep(3)
            victim = procs["one"]
            cid = f"-{victim.pid}"
            owners, _ = group_owners(url)
            moved = [p for p, o in owners.items() if o and o.endswith(cid)]
            at = served_offsets(url)
            t0 = time.time()
            if how == "kill -9":
                victim.kill()
            else:
                victim.send_signal(signal.SIGTERM)
            victim.wait()
            while True:
                now = served_offsets(url)
                if now and all(now.get(p, 0) > at.get(p, 0) for p in moved):
                    break
                if time.time() - t0 > 300:
                    sys.exit("move: the partitions were not served again within 300 s")
                time.sleep(0.02)
            secs = time.time() - t0
            print(f"move after {how} (session.timeout.ms={a.session_ms}): partitions {moved} served again "
                  f"{secs:.2f} s later", flush=True)
            return secs
        finally:
            stop.set()
            for p in list(procs.values()) + [serve]:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                    p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--data", required=True, help="JSON lines to pre-load")
    ap.add_argument("--events", type=int, required=True, help="lines in --data")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--port", type=int, default=18089)
    ap.add_argument("--session-ms", type=int, default=6000)
    ap.add_argument("--only", default="throughput move")
    a = ap.parse_args()
    if "throughput" in a.only:
        throughput(a)
    if "move" in a.only:
        for how in ("kill -9", "SIGTERM"):
            times = [move(a, how) for _ in range(a.rounds)]
            print(f"move after {how}: median {statistics.median(times):.2f} s over {len(times)} runs")


if __name__ == "__main__":
    main()
