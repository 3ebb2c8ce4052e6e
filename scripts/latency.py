#!/usr/bin/env python3
"""Produce-to-visible latency of a running `lambdaflow run`, measured from outside.

Feeds `lambdaflow produce` (stdin, which sends each line as it is read) a steady stream of
events at --rate events/s, plus a probe event (customer `__probe`, amount 1) every
--probe-every seconds; polls GET /api/views/<view>?key=__probe every --poll seconds. A probe's
latency is from the moment its line was written to the producer to the first poll whose
total includes it: what a client of the API sees. Prints one line of figures (ms).
With --event-time, every event carries `"ts"`, the moment it is written (RFC 3339), and the
probe's total is summed over its rows: a windowed view answers one row per window.
Only the standard library: runs with any python3.
"""
import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
import urllib.request


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--produce", required=True, help="the produce command, as one shell string")
    ap.add_argument("--url", required=True, help="http://host:port of the API")
    ap.add_argument("--view", default="customer_totals")
    ap.add_argument("--value", default="total_amount")
    ap.add_argument("--rate", type=int, default=10000)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--probe-every", type=float, default=0.2)
    ap.add_argument("--poll", type=float, default=0.005)
    ap.add_argument("--keys", type=int, default=10000)
    ap.add_argument("--event-time", action="store_true", help='give each event a "ts" of now')
    a = ap.parse_args()

    url = f"{a.url}/api/views/{a.view}?key=__probe"
    def total():
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                rows = json.load(r).get("rows", [])
            return sum(int(r[a.value]) for r in rows)
        except Exception:
            return None

    base = total() or 0
    sent = []          # send time of probe k (k = 1, 2, ...)
    lat = []
    done = threading.Event()

    def poll():
        seen = 0
        while not done.is_set() or seen < len(sent):
            t = total()
            now = time.monotonic()
            if t is not None:
                t -= base
                while seen < min(t, len(sent)):
                    lat.append((now - sent[seen]) * 1000)
                    seen += 1
            if done.is_set() and time.monotonic() - stop_at > 30:
                break
            time.sleep(a.poll)

    proc = subprocess.Popen(a.produce, shell=True, stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL)
    stop_at = float("inf")
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    tick = 0.01
    per_tick = max(1, int(a.rate * tick))
    start = time.monotonic()
    next_probe = start + a.probe_every
    i = 0
    while time.monotonic() - start < a.seconds:
        t0 = time.monotonic()
        now = time.time()
        ts = (',"ts":"' + time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
              + f'.{int(now * 1000) % 1000:03d}Z"') if a.event_time else ""
        lines = [f'{{"customer":"c{(i + j) % a.keys}","amount":1{ts}}}\n' for j in range(per_tick)]
        i += per_tick
        proc.stdin.write("".join(lines).encode())
        if t0 >= next_probe:
            proc.stdin.write(f'{{"customer":"__probe","amount":1{ts}}}\n'.encode())
            proc.stdin.flush()
            sent.append(time.monotonic())
            next_probe += a.probe_every
        else:
            proc.stdin.flush()
        time.sleep(max(0, tick - (time.monotonic() - t0)))
    stop_at = time.monotonic()
    proc.stdin.close()
    done.set()
    poller.join(60)
    proc.wait()
    if len(lat) < len(sent):
        print(f"only {len(lat)} of {len(sent)} probes were seen", file=sys.stderr)
        sys.exit(1)
    q = statistics.quantiles(lat, n=100, method="inclusive")
    print(f"probes={len(lat)} p50_ms={statistics.median(lat):.1f} p99_ms={q[98]:.1f} "
          f"max_ms={max(lat):.1f} events={i} rate={i / a.seconds:.0f}")


if __name__ == "__main__":
    main()
