#!/usr/bin/env bash
# Windowed views (docs/time.md), each figure beside its anchor measured in the same run:
#   A. speed layer events/s: EVENTS (1M) events of 10,000 customers over a day of event time
#      (a few seconds out of order) in a 2-partition topic; alternating for ROUNDS rounds (3):
#      lambdaflow speed on the plain view (SUM per customer), on the windowed view (1-minute
#      tumbling windows × customer, 1-minute watermark), each from process start to the
#      checkpoint that covers every event (archive included), and Spark Structured Streaming
#      (scripts/spark_speed_layer.py: withWatermark + window() on the same topic, `local[2]`,
#      4 shuffle partitions, update mode) from spark-submit's start and from the query's start
#      (lambdaflow's query start: its `consuming` line, once the pipeline is up);
#      `SPARK=0` leaves Spark out (a quick look at lambdaflow alone);
#   B. produce-to-visible latency of `lambdaflow run` (scripts/latency.py, RATE 10,000 events/s
#      stamped with the present, for SECONDS_PER_RUN 30 s), plain view and 1-minute windowed
#      view alternating;
#   C. the watermark passing a window's end to its `emit=final` event (scripts/emit_final.py,
#      50 windows, a 1-partition topic);
#   D. serving: 41,667 customers × 24 hourly windows = 1M (key, window) rows from `lambdaflow
#      batch`, then `lambdaflow serve` under wrk (-t2 -c32, DURATION 10s, alternating twice):
#      a random key's day by time range (?key=&from=&to=, 24 rows) against a random key of a
#      plain view of the same 1M rows (?key=, 1 row);
#   E. memory: `lambdaflow run` fed a week of events (100 customers, two events each per
#      minute) at E_RATE (50,000) events/s, 1-minute windows with a 1-day retention: its RSS
#      and the served view's rows once it has taken each day of event time.
# Prints figures only (tests assert no speed). Starts Kafka if none answers.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
n=${EVENTS:-1000000}
rounds=${ROUNDS:-3}
secs=${SECONDS_PER_RUN:-30}
rate=${RATE:-10000}
duration=${DURATION:-10s}
sections=${SECTIONS:-"A B C D E"}
export KAFKA_PORT=${KAFKA_PORT:-9092}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
dir=${BENCH_DIR:-$repo/.cache/bench}
mkdir -p "$dir"
scripts/setup.sh bench
if [ -n "${LAMBDAFLOW_BIN:-}" ]; then
  bin=$LAMBDAFLOW_BIN
else
  cargo build --release --quiet
  bin=$CARGO_TARGET_DIR/release/lambdaflow
fi

gen() { # KIND FILE: the events of a section, once
  [ -f "$2" ] && return
  python3 - "$1" "$2" "$n" <<'PY'
import random, sys, time
kind, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
rnd = random.Random(7)
day0 = 1793491200  # 2026-11-01T00:00:00Z: in the past, so no event is `ahead`
iso = lambda s: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + ".%03dZ" % (s * 1000 % 1000)
with open(path, "w") as f:
    out = []
    if kind == "day":  # n events of 10,000 customers over a day, up to 5 s out of order
        for i in range(n):
            t = day0 + i * 86400 / n + rnd.uniform(-5, 0)
            out.append('{"customer": "c%05d", "amount": %d, "ts": "%s"}\n' % (rnd.randrange(10000), rnd.randrange(1, 1000), iso(t)))
    elif kind == "hours":  # 41,667 customers × 24 hours, one event each: 1M (key, window) rows
        for h in range(24):
            for k in range(41667):
                out.append('{"customer": "k%05d", "id": "k%05d-%02d", "amount": %d, "ts": "%s"}\n' % (k, k, h, rnd.randrange(1, 1000), iso(day0 + h * 3600 + 1800)))
    elif kind == "week":  # 100 customers, two events each per minute, for 7 days
        for m in range(7 * 1440):
            for k in range(100):
                for j in (10, 40):
                    out.append('{"customer": "c%03d", "amount": 1, "ts": "%s"}\n' % (k, iso(day0 + m * 60 + j)))
    f.write("".join(out))
PY
}

schema='[schema]
fields = [
  { name = "customer", type = "string" },
  { name = "id", type = "string", nullable = true },
  { name = "amount", type = "integer" },
  { name = "ts", type = "timestamp" },
]'
plain='[[views]]
name = "totals"
sql = "SELECT customer, SUM(amount) AS total_amount FROM events GROUP BY customer"'
minute='[[views]]
name = "per_minute"
sql = "SELECT window.start, customer, SUM(amount) AS total_amount FROM events GROUP BY window(ts, '"'1 minute'"'), customer"
watermark = "1 minute"'

cfg() { # DIR TOPIC VIEWS [MORE]: a config with its own output, group and port
  mkdir -p "$1"
  local port; port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  : > "$1/history.json"
  cat > "$1/lambdaflow.toml" <<TOML
[kafka]
bootstrap-servers = "127.0.0.1:$KAFKA_PORT"
topic = "$2"
group-id = "g-$(basename "$1")"
[batch]
dataset = ["$1/history.json"]
[output]
dir = "$1/out"
[serving]
listen = "127.0.0.1:$port"
$schema
$3
${4:-}
TOML
  echo "$1/lambdaflow.toml"
}
listen() { sed -n 's/^listen = "\(.*\)"/\1/p' "$1"; }
now() { date +%s.%N; }
covered() { # CHECKPOINT N
  python3 -c "import json,sys; cp=json.load(open(sys.argv[1])); sys.exit(0 if sum(cp['offsets'].values()) >= int(sys.argv[2]) else 1)" "$1" "$2" 2>/dev/null
}
wait_http() { for _ in $(seq 1 600); do curl -sf "http://$1/health" >/dev/null && return 0; sleep 0.2; done; echo "no answer on $1" >&2; return 1; }
# A process's CPU time so far (user + system), in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_mb() { echo $(( $(ps -o rss= -p "$1") / 1024 )); }
median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }

section_a() {
  local data=$dir/time-day-$n.json topic=time-a-$$-$(date +%s) c
  gen day "$data"
  c=$(cfg "$work/a-load" "$topic" "$plain")
  "$bin" --config "$c" topic create --partitions 2 >/dev/null
  "$bin" --config "$c" produce --file "$data" >/dev/null
  echo "A. speed layer: $n events, 10,000 customers, a day of event time, 2 partitions"
  local -a t_plain=() t_win=() t_winq=() t_spark=() t_query=()
  local spark_home jars; spark_home=$(scripts/spark.sh home); jars=$(scripts/spark.sh kafka-jars)
  for r in $(seq 1 "$rounds"); do
    for side in plain windowed; do
      local d=$work/a-$side-$r views=$plain s e pid
      [ "$side" = windowed ] && views=$minute
      c=$(cfg "$d" "$topic" "$views")
      s=$(now)
      LAMBDAFLOW_LOG=warn,lambdaflow::speed=info "$bin" --config "$c" speed --quiet >/dev/null 2>"$d/log" & pid=$!
      until covered "$d/out/_speed/checkpoint.json" "$n"; do
        kill -0 "$pid" 2>/dev/null || { echo "speed exited:" >&2; tail -5 "$d/log" >&2; exit 1; }
        sleep 0.02
      done
      e=$(now); kill -TERM "$pid"; wait "$pid" || true
      local t q; t=$(echo "$e - $s" | bc -l)
      q=$(echo "$e - $(date -d "$(sed -n 's/^\([^ ]*\) .*speed layer: consuming.*/\1/p' "$d/log" | head -1)" +%s.%N)" | bc -l)
      if [ "$side" = plain ]; then t_plain+=("$t"); else t_win+=("$t"); t_winq+=("$q"); fi
      printf '   round %d: lambdaflow, %-8s view %6.2f s = %8d events/s (%.2f s from the query start)\n' \
        "$r" "$side" "$t" "$(echo "$n / $t" | bc)" "$q"
    done
    [ "${SPARK:-1}" = 0 ] && continue
    local d=$work/a-spark-$r s; mkdir -p "$d"
    s=$(now)
    SPARK_LOCAL_IP=127.0.0.1 PYSPARK_PYTHON="$repo/.cache/venv/bin/python" "$spark_home/bin/spark-submit" \
      --master 'local[2]' --conf spark.ui.enabled=false --jars "$jars" \
      --conf spark.sql.shuffle.partitions=4 \
      scripts/spark_speed_layer.py "127.0.0.1:$KAFKA_PORT" "$topic" 0 default "$n" "1 minute" > "$d/out" 2> "$d/log"
    local started done_at
    started=$(awk '/^STARTED/ {print $2}' "$d/out"); done_at=$(awk '/^DONE/ {print $2}' "$d/out")
    [ -n "$done_at" ] || { echo "the Spark job did not finish; its log:" >&2; tail -20 "$d/log" >&2; exit 1; }
    t_spark+=("$(echo "$done_at - $s" | bc -l)"); t_query+=("$(echo "$done_at - $started" | bc -l)")
    printf '   round %d: Spark Structured Streaming, windowed %6.2f s = %8d events/s (%.2f s from the query start)\n' \
      "$r" "${t_spark[-1]}" "$(echo "$n / ${t_spark[-1]}" | bc)" "${t_query[-1]}"
  done
  local mp mw ms mq
  mp=$(median "${t_plain[@]}"); mw=$(median "${t_win[@]}")
  if [ "${SPARK:-1}" = 0 ]; then
    echo "A. medians: windowed/plain rate $(echo "$mp / $mw" | bc -l | cut -c1-4) (no Spark anchor: SPARK=0)"
    return
  fi
  ms=$(median "${t_spark[@]}"); mq=$(median "${t_query[@]}"); local mwq; mwq=$(median "${t_winq[@]}")
  python3 - "$n" "$mp" "$mw" "$ms" "$mq" "$mwq" <<'PY'
import sys
n, p, w, s, q, wq = int(sys.argv[1]), *map(float, sys.argv[2:])
print(f"A. medians: plain {n/p:,.0f} events/s, windowed {n/w:,.0f} events/s "
      f"(windowed/plain rate {p/w:.2f}); Spark windowed {n/s:,.0f} events/s from spark-submit, "
      f"{n/q:,.0f} from the query start: lambdaflow windowed is {s/w:.1f}x from process start "
      f"against spark-submit, {q/wq:.1f}x from each one's query start ({n/wq:,.0f} events/s), "
      f"{q/w:.1f}x from its process start against Spark's query start")
PY
}

section_b() {
  echo "B. produce-to-visible latency, lambdaflow run, $rate events/s with a probe every 200 ms, ${secs} s per run"
  local -A lines=()
  # A fresh broker creates its 50-partition offsets topic on the first consumer-group commit,
  # which stalls whatever runs first: round 0, discarded, takes that.
  for r in $(seq 0 "$rounds"); do
    for side in plain windowed; do
      [ "$r" = 0 ] && [ "$side" = windowed ] && continue
      local d=$work/b-$side-$r views=$plain view=totals c pid addr line
      [ "$side" = windowed ] && { views=$minute; view=per_minute; }
      c=$(cfg "$d" "time-b-$$-$side-$r" "$views")
      "$bin" --config "$c" topic create --partitions 2 >/dev/null
      LAMBDAFLOW_LOG=warn "$bin" --config "$c" run >/dev/null 2>"$d/log" & pid=$!
      addr=$(listen "$c"); wait_http "$addr"
      line=$(python3 scripts/latency.py --produce "$(printf '%q ' "$bin" --config "$c") produce" \
        --url "http://$addr" --view "$view" --seconds "$secs" --rate "$rate" --event-time)
      kill -TERM "$pid"; wait "$pid" || true
      [ "$r" = 0 ] && continue
      echo "   round $r: $side view: $line"
      lines[$side]+="$line;"
    done
  done
  python3 - "${lines[plain]}" "${lines[windowed]}" <<'PY'
import re, statistics, sys
for name, runs in zip(("plain", "windowed"), sys.argv[1:]):
    f = [dict(re.findall(r"(\w+)=([0-9.]+)", r)) for r in runs.split(";") if r]
    m = lambda k: statistics.median(float(x[k]) for x in f)
    print(f"B. {name} view: median p50 {m('p50_ms'):.1f} ms, p99 {m('p99_ms'):.1f} ms, max {m('max_ms'):.1f} ms")
PY
}

section_c() {
  local d=$work/c c pid addr
  c=$(cfg "$d" "time-c-$$" '[[views]]
name = "per_minute"
sql = "SELECT window.start, customer, SUM(amount) AS total_amount FROM events GROUP BY window(ts, '"'1 minute'"'), customer"
watermark = "1 second"')
  "$bin" --config "$c" topic create --partitions 1 >/dev/null
  LAMBDAFLOW_LOG=warn "$bin" --config "$c" run >/dev/null 2>"$d/log" & pid=$!
  addr=$(listen "$c"); wait_http "$addr"
  echo "C. watermark past a window's end → its emit=final event, lambdaflow run: $(python3 scripts/emit_final.py \
    --produce "$(printf '%q ' "$bin" --config "$c") produce" --url "http://$addr" --view per_minute --delay 1)"
  kill -TERM "$pid"; wait "$pid" || true
}

section_d() {
  local data=$dir/time-hours.json d=$work/d c pid addr
  gen hours "$data"
  c=$(cfg "$d" "time-d-$$" '[[views]]
name = "per_id"
sql = "SELECT id, SUM(amount) AS total_amount FROM events GROUP BY id"
[[views]]
name = "hourly"
sql = "SELECT window.start, customer, SUM(amount) AS total_amount FROM events GROUP BY window(ts, '"'1 hour'"'), customer"
watermark = "1 hour"')
  sed -i "s|^dataset = .*|dataset = [\"$data\"]|" "$c"
  LAMBDAFLOW_LOG=warn "$bin" --config "$c" batch >/dev/null 2>"$d/batch.log"
  LAMBDAFLOW_LOG=warn "$bin" --config "$c" serve >/dev/null 2>"$d/log" & pid=$!
  addr=$(listen "$c"); wait_http "$addr"
  echo "D. serving 1M (key, window) rows (41,667 keys × 24 hours) and a 1M-key plain view; serve RSS $(rss_mb "$pid") MB"
  cat > "$d/range.lua" <<'LUA'
math.randomseed(42)
request = function()
  return wrk.format("GET", string.format("/api/views/hourly?key=k%05d&from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z", math.random(0, 41666)))
end
LUA
  cat > "$d/key.lua" <<'LUA'
math.randomseed(42)
request = function()
  return wrk.format("GET", string.format("/api/views/per_id?key=k%05d-%02d", math.random(0, 41666), math.random(0, 23)))
end
LUA
  local rows; rows=$(curl -sf "http://$addr/api/views/hourly?key=k00042&from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["rows"]))')
  [ "$rows" = 24 ] || { echo "a key's day answered $rows rows, not 24" >&2; exit 1; }
  local -a rk=() rr=()
  for r in 1 2; do
    for side in key range; do
      local out rps cpu0 cpu1 reqs
      cpu0=$(cpu_ticks "$pid")
      out=$(wrk -t2 -c32 -d"$duration" --latency -s "$d/$side.lua" "http://$addr")
      cpu1=$(cpu_ticks "$pid")
      rps=$(echo "$out" | awk '/Requests\/sec/ {print int($2)}')
      reqs=$(echo "$out" | awk '/requests in/ {print $1}')
      # The server's own CPU per request (user + system), apart from wrk's on the same cores.
      printf '   round %d: %-52s %7s req/s  p50 %8s  p99 %8s  serve CPU %s µs/request\n' "$r" \
        "$([ "$side" = key ] && echo "plain view, one key (1 row)" || echo "windowed view, a key's day by time range (24 rows)")" \
        "$rps" "$(echo "$out" | awk '$1=="50%" {print $2}')" "$(echo "$out" | awk '$1=="99%" {print $2}')" \
        "$(( (cpu1 - cpu0) * 1000000 / $(getconf CLK_TCK) / reqs ))"
      if [ "$side" = key ]; then rk+=("$rps"); else rr+=("$rps"); fi
    done
  done
  python3 -c 'import sys; k, r = (sum(map(float, a.split())) / 2 for a in sys.argv[1:]); print(f"D. range read / single-key lookup, mean req/s: {r/k:.2f}")' "${rk[*]}" "${rr[*]}"
  kill -TERM "$pid"; wait "$pid" || true
}

section_e() {
  local data=$dir/time-week.json d=$work/e c pid addr total
  gen week "$data"
  total=$(wc -l < "$data")
  c=$(cfg "$d" "time-e-$$" '[[views]]
name = "per_minute"
sql = "SELECT window.start, customer, SUM(amount) AS total_amount FROM events GROUP BY window(ts, '"'1 minute'"'), customer"
watermark = "1 minute"
retention = "1 day"')
  "$bin" --config "$c" topic create --partitions 1 >/dev/null
  echo "E. memory: lambdaflow run fed a week of event time ($total events, 100 customers, 1-minute windows, 1-day retention) at ${E_RATE:-50000} events/s"
  LAMBDAFLOW_LOG=warn "$bin" --config "$c" run >/dev/null 2>"$d/log" & pid=$!
  addr=$(listen "$c"); wait_http "$addr"
  # The feeder writes the week to `lambdaflow produce` at a steady rate and, at the end of each
  # day of event time, waits for the view to take it, then prints the RSS and the view's rows.
  python3 - "$data" "${E_RATE:-50000}" "$pid" "$addr" "$(printf '%q ' "$bin" --config "$c") produce" <<'PY'
import json, subprocess, sys, time, urllib.request
path, rate, pid, addr, produce = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
lines = open(path).readlines()
per_day = len(lines) // 7
rss = lambda: int(next(l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")).split()[1]) // 1024
def view():
    v = json.load(urllib.request.urlopen(f"http://{addr}/api/views"))[0]
    return v["rows"], sum(v["freshness"]["speed_offsets"].values())
proc = subprocess.Popen(produce, shell=True, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
chunk = max(1, rate // 100)
start = time.monotonic()
for day in range(7):
    for i in range(day * per_day, (day + 1) * per_day, chunk):
        proc.stdin.write("".join(lines[i:min(i + chunk, (day + 1) * per_day)]).encode())
        proc.stdin.flush()
        time.sleep(max(0, start + (i + chunk) / rate - time.monotonic()))
    while view()[1] < (day + 1) * per_day:
        time.sleep(0.1)
    rows, _ = view()
    print(f"   after day {day + 1} of event time: RSS {rss()} MB, the view {rows:,} rows")
proc.stdin.close(); proc.wait()
PY
  kill -TERM "$pid"; wait "$pid" || true
}

bench() {
  work=$(mktemp -d)
  for s in $sections; do "section_${s,,}"; done
  rm -rf "$work"
}
if [ "${1:-}" = --with-kafka ]; then bench; else exec scripts/kafka.sh run "$0" --with-kafka; fi
