#!/usr/bin/env bash
# Serving at scale: views of 10,000 and 1,000,000 keys. For each size:
#   - `lambdaflow batch` over the generated events: wall time and peak memory;
#   - `lambdaflow serve` over that batch view: RSS, then wrk (-t2 -c32, on the same 2 cores)
#     on single-key lookups of random keys, a 100-row page in the view's order, and a 100-row
#     page by `order_by=total_amount:desc`: requests/s, p50, p99;
#   - `lambdaflow speed` on a backlog of as many events as keys, every key distinct: events/s
#     from start to the checkpoint that covers them, and peak RSS;
#   - `lambdaflow run` (batch + speed + serving) with that backlog consumed: RSS; then 1,000
#     SSE subscribers of the view's stream and one produced message: the time until every
#     subscriber has the change.
# Prints figures only (tests assert no speed). Starts Kafka if none answers.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export KAFKA_PORT=${KAFKA_PORT:-9092}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
sizes=${KEYS:-"10000 1000000"}
duration=${DURATION:-10s}
subscribers=${SUBSCRIBERS:-1000}
dir=${BENCH_DIR:-$repo/.cache/bench}
mkdir -p "$dir"
scripts/setup.sh bench
cargo build --release --quiet
bin=$CARGO_TARGET_DIR/release/lambdaflow

gen() { # KEYS EVENTS FILE [distinct]: EVENTS events over KEYS keys k0000000…
  [ -f "$3" ] && return
  python3 - "$1" "$2" "$3" "${4:-}" <<'PY'
import random, sys
keys, n, path, distinct = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] == "distinct"
rnd = random.Random(7)
with open(path, "w") as f:
    chunk = []
    for i in range(n):
        k = i % keys if distinct else (i if i < keys else rnd.randrange(keys))
        chunk.append('{"customer": "k%07d", "amount": %d}\n' % (k, rnd.randrange(1, 1000)))
        if len(chunk) == 100000:
            f.write("".join(chunk)); chunk = []
    f.write("".join(chunk))
PY
}

rss_mb() { echo $(( $(ps -o rss= -p "$1") / 1024 )); }
wait_http() { for _ in $(seq 1 600); do curl -sf "http://$1/health" >/dev/null && return 0; sleep 0.2; done; echo "no answer on $1" >&2; return 1; }

wrk_run() { # LABEL URL [LUA]
  local out
  if [ -n "${3:-}" ]; then out=$(wrk -t2 -c32 -d"$duration" --latency -s "$3" "$2"); else out=$(wrk -t2 -c32 -d"$duration" --latency "$2"); fi
  printf '  %-44s %10s req/s   p50 %8s   p99 %8s\n' "$1" \
    "$(echo "$out" | awk '/Requests\/sec/ {print int($2)}')" \
    "$(echo "$out" | awk '$1=="50%" {print $2}')" "$(echo "$out" | awk '$1=="99%" {print $2}')"
}

peak() { # peak RSS (MB) of a command, from /usr/bin/time
  /usr/bin/time -f '%M' -o "$work/peak" "$@" >/dev/null 2>>"$work/log"; echo $(( $(cat "$work/peak") / 1024 ))
}

bench() {
  for keys in $sizes; do
    work=$(mktemp -d)
    local events=$(( keys * 3 > 1000000 ? keys * 3 : 1000000 ))
    local data=$dir/serving-$keys-$events.json
    gen "$keys" "$events" "$data"
    echo "== $keys keys ($events events) =="
    local out=$work/out port lf
    port=$((18000 + RANDOM % 1000))
    printf '[batch]\ndataset = ["%s"]\ninterval = "0s"\n' "$data" > "$work/lambdaflow.toml"
    lf=("$bin" --config "$work/lambdaflow.toml" --bootstrap-servers "127.0.0.1:$KAFKA_PORT" --topic "bench-serving-$keys-$$" --output-dir "$out")
    local s e
    s=$(date +%s.%N)
    local pk; pk=$(LAMBDAFLOW_LOG=warn peak "${lf[@]}" batch)
    e=$(date +%s.%N)
    echo "  batch: $(echo "$e - $s" | bc -l | cut -c1-5) s, peak $pk MB"

    LAMBDAFLOW_LOG=warn "${lf[@]}" serve --listen "127.0.0.1:$port" >/dev/null 2>>"$work/log" &
    local serve=$!
    wait_http "127.0.0.1:$port"
    echo "  serve RSS: $(rss_mb $serve) MB"
    cat > "$work/key.lua" <<LUA
math.randomseed(42)
request = function()
  return wrk.format("GET", string.format("/api/views/customer_totals?key=k%07d", math.random(0, $keys - 1)))
end
LUA
    wrk_run "anchor: GET /health (the HTTP floor)" "http://127.0.0.1:$port/health"
    wrk_run "serve: GET ?key=<random key>" "http://127.0.0.1:$port" "$work/key.lua"
    wrk_run "serve: GET ?limit=100 (view order)" "http://127.0.0.1:$port/api/views/customer_totals?limit=100"
    curl -sf "http://127.0.0.1:$port/api/views/customer_totals?order_by=total_amount:desc&limit=1" >/dev/null # builds the order once
    wrk_run "serve: GET ?order_by=total_amount:desc&limit=100" "http://127.0.0.1:$port/api/views/customer_totals?order_by=total_amount:desc&limit=100"
    echo "  serve RSS after the load: $(rss_mb $serve) MB"
    kill -TERM $serve; wait $serve || true

    # The speed layer on a backlog of 1M events cycling over `keys` keys (at 1M keys: every
    # event a new key), so both sizes compare on the same number of events.
    local fresh=$dir/cycle-$keys-1000000.json
    gen "$keys" 1000000 "$fresh" distinct
    "${lf[@]}" topic create --partitions 2 >/dev/null
    "${lf[@]}" produce --file "$fresh" >/dev/null
    rm -rf "$out/batch_view" "$out/.batch_view.d"
    s=$(date +%s.%N)
    LAMBDAFLOW_LOG=warn /usr/bin/time -f '%M' -o "$work/speed.peak" "${lf[@]}" speed --quiet >/dev/null 2>>"$work/log" &
    local speed=$!
    until python3 -c "import json,sys; sys.exit(0 if sum(json.load(open('$out/_speed/checkpoint.json'))['offsets'].values()) >= 1000000 else 1)" 2>/dev/null; do sleep 0.05; done
    e=$(date +%s.%N)
    pkill -TERM -P $speed; wait $speed || true
    echo "  speed: 1000000 events over $keys keys in $(echo "$e - $s" | bc -l | cut -c1-5) s = $(echo "1000000 / ($e - $s)" | bc) events/s (start-up and archive included), peak $(( $(cat "$work/speed.peak") / 1024 )) MB"

    # run: the batch view, the speed state over the same backlog, serving; then SSE fan-out.
    LAMBDAFLOW_LOG=warn "${lf[@]}" run --listen "127.0.0.1:$port" >/dev/null 2>>"$work/log" &
    local run=$!
    wait_http "127.0.0.1:$port"
    echo "  run RSS ($keys keys, its start-up batch run over the file and the archive): $(rss_mb $run) MB"
    wrk_run "run: GET ?key=<random key>" "http://127.0.0.1:$port" "$work/key.lua"
    python3 - "127.0.0.1:$port" "$subscribers" "${lf[*]}" <<'PY'
import asyncio, subprocess, sys, time
addr, n, lf = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
host, port = addr.split(":")
async def subscriber(ready, got):
    r, w = await asyncio.open_connection(host, int(port))
    w.write(f"GET /api/views/customer_totals/stream HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n".encode())
    await w.drain()
    snapshot = False
    while True:
        line = await r.readline()
        if not line: return
        if line.startswith(b"event: view") and not snapshot:
            snapshot = True; ready()
        elif line.startswith(b"event: changes"):
            got(time.monotonic()); w.close(); return
async def main():
    pending = n; every = asyncio.Event(); done = []
    def ready():
        nonlocal pending
        pending -= 1
        if pending == 0: every.set()
    tasks = [asyncio.create_task(subscriber(ready, done.append)) for _ in range(n)]
    await asyncio.wait_for(every.wait(), 120)
    t0 = time.monotonic()
    subprocess.run(lf + ["produce"], input=b'{"customer":"k0000001","amount":1}\n', check=True, capture_output=True)
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    print(f"  SSE: {len(done)} subscribers got the change {1000*(max(done)-t0):.0f} ms after it was produced "
          f"(first {1000*(min(done)-t0):.0f} ms; includes the producer's start-up)")
asyncio.run(main())
PY
    kill -TERM $run; wait $run || true
    rm -rf "$work"
  done
}
if [ "${1:-}" = --with-kafka ]; then bench; else exec scripts/kafka.sh run "$0" --with-kafka; fi
