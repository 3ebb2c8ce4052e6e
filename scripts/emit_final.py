#!/usr/bin/env python3
"""Time from the watermark passing a window's end to its `emit=final` event, from outside.

Subscribes to GET /api/views/<view>/stream?emit=final of a running `lambdaflow run` whose view
groups by `window(ts, '<--window> seconds')` with `watermark = "<--delay> seconds"` on a
1-partition topic. Then, for each of --windows windows W (a day in the past, so no event is
`ahead`): writes one event of customer `__probe` inside W to `lambdaflow produce` (stdin),
waits --gap seconds, and writes the event that moves the watermark to W's end (event time
W.end + delay). The figure is from the write of that event's line to the arrival of the
`final` event that carries W. Prints one line of figures (ms). Only the standard library.
"""
import argparse
import http.client
import json
import queue
import statistics
import subprocess
import sys
import threading
import time
from urllib.parse import urlparse


def rfc3339(secs):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(secs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--produce", required=True, help="the produce command, as one shell string")
    ap.add_argument("--url", required=True, help="http://host:port of the API")
    ap.add_argument("--view", required=True)
    ap.add_argument("--window", type=int, default=60, help="the window's size, seconds")
    ap.add_argument("--delay", type=int, default=1, help="the view's watermark delay, seconds")
    ap.add_argument("--windows", type=int, default=50)
    ap.add_argument("--gap", type=float, default=0.2)
    a = ap.parse_args()

    finals = queue.Queue()

    def listen():
        u = urlparse(a.url)
        conn = http.client.HTTPConnection(u.hostname, u.port)
        conn.request("GET", f"/api/views/{a.view}/stream?emit=final",
                     headers={"Accept": "text/event-stream"})
        resp = conn.getresponse()
        event = ""
        for raw in resp:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "final":
                at = time.monotonic()
                for row in json.loads(line[6:]).get("rows", []):
                    if row.get("customer") == "__probe":
                        finals.put((row["start"], at))

    threading.Thread(target=listen, daemon=True).start()
    time.sleep(1)  # the subscription is in place
    proc = subprocess.Popen(a.produce, shell=True, stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL)

    def send(customer, secs):
        proc.stdin.write(f'{{"customer":"{customer}","amount":1,"ts":"{rfc3339(secs)}"}}\n'.encode())
        proc.stdin.flush()
        return time.monotonic()

    base = (int(time.time()) - 86400) // a.window * a.window
    lat = []
    for k in range(a.windows):
        start = base + k * a.window
        send("__probe", start + a.window // 2)
        time.sleep(a.gap)
        sent = send("__clock", start + a.window + a.delay)
        deadline = sent + 10
        while True:
            try:
                got, at = finals.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                print(f"no `final` event for the window at {rfc3339(start)} within 10 s",
                      file=sys.stderr)
                sys.exit(1)
            if got == rfc3339(start):
                lat.append((at - sent) * 1000)
                break
    proc.stdin.close()
    proc.wait()
    q = statistics.quantiles(lat, n=100, method="inclusive")
    print(f"windows={len(lat)} p50_ms={statistics.median(lat):.1f} p99_ms={q[98]:.1f} "
          f"max_ms={max(lat):.1f}")


if __name__ == "__main__":
    main()
