#!/usr/bin/env bash
# Produce-to-visible latency, lambdaflow against the workshop's Spark Structured Streaming job,
# measured the same way from outside (scripts/latency.py): a steady RATE events/s (default
# 10,000) into `lambdaflow produce` (stdin) on a fresh 2-partition topic, with a probe event
# every 200 ms; the probe's total is polled over HTTP every 5 ms; a probe's latency runs from
# the write of its line to the producer to the first poll that sees it. SECONDS_PER_RUN (40)
# per run; the systems alternate (A B C, A B C, …) for ROUNDS rounds (3); medians are printed.
#
#   lambdaflow run                  its HTTP API (`?key=__probe`), read-uncommitted (default)
#   Spark, default trigger          scripts/spark_speed_layer.py: the workshop's job, its probe
#   Spark, 100 ms trigger           total answered by an HTTP server in the driver
#
# Spark: pyspark 4.0.0 from scripts/spark.sh's venv, `local[2]`, 4 shuffle partitions (Spark's
# default of 200 stateful tasks per micro-batch takes seconds per batch on 2 cores), spark-sql-kafka-0-10_2.13 4.0.0
# and the jars it needs beyond Spark's own, fetched from Maven Central by `scripts/spark.sh
# kafka-jars`. Starts Kafka if none answers (scripts/kafka.sh run).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export ROUNDS=${ROUNDS:-3} SECS=${SECONDS_PER_RUN:-40} RATE=${RATE:-10000}
export KAFKA_PORT=${KAFKA_PORT:-9092}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
if [ -n "${LAMBDAFLOW_BIN:-}" ]; then
  bin=$LAMBDAFLOW_BIN
else
  cargo build --release --quiet
  bin=$CARGO_TARGET_DIR/release/lambdaflow
fi
export bin repo
SPARK_HOME_DIR=$(scripts/spark.sh home)
SPARK_KAFKA_JARS=$(scripts/spark.sh kafka-jars)
export SPARK_HOME_DIR SPARK_KAFKA_JARS

one() { # SYSTEM WORKDIR: one run, prints latency.py's line
  local system=$1 work=$2 port pid
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p "$work"
  printf '{"customer": "Ali", "amount": 120}\n' > "$work/history.json"
  local topic="latency-$$-$(date +%s%N)"
  cat > "$work/lambdaflow.toml" <<TOML
[kafka]
bootstrap-servers = "127.0.0.1:$KAFKA_PORT"
topic = "$topic"
[batch]
dataset = ["$work/history.json"]
[output]
dir = "$work/out"
[serving]
listen = "127.0.0.1:$port"
TOML
  local lf=("$bin" --config "$work/lambdaflow.toml")
  "${lf[@]}" topic create --partitions 2 >/dev/null
  case $system in
    lambdaflow)
      LAMBDAFLOW_LOG=warn "${lf[@]}" run > /dev/null 2> "$work/run.log" & pid=$! ;;
    spark-*)
      SPARK_LOCAL_IP=127.0.0.1 PYSPARK_PYTHON="$repo/.cache/venv/bin/python" "$SPARK_HOME_DIR/bin/spark-submit" \
        --master 'local[2]' --conf spark.ui.enabled=false --jars "$SPARK_KAFKA_JARS" \
        --conf spark.sql.shuffle.partitions=4 \
        scripts/spark_speed_layer.py "127.0.0.1:$KAFKA_PORT" "$topic" "$port" "${system#spark-}" \
        > "$work/run.log" 2>&1 & pid=$! ;;
  esac
  # Ready: the API answers after a first micro-batch (Spark compiles its query on the first
  # one), so a warm-up event is sent every 2 s until then.
  local ready=0
  for i in $(seq 1 1200); do
    if curl -sf "http://127.0.0.1:$port/health" >/dev/null; then ready=1; break; fi
    if [ $((i % 20)) = 0 ]; then
      echo '{"customer": "__warmup", "amount": 1}' | "${lf[@]}" produce >/dev/null 2>&1
    fi
    sleep 0.1
  done
  if [ "$ready" = 0 ]; then
    echo "$system did not become ready within 120 s; its log:" >&2
    tail -30 "$work/run.log" >&2
    kill -TERM "$pid" 2>/dev/null || true
    return 1
  fi
  local rc=0
  python3 scripts/latency.py --produce "$(printf '%q ' "${lf[@]}") produce" \
    --url "http://127.0.0.1:$port" --seconds "$SECS" --rate "$RATE" || rc=$?
  kill -TERM "$pid"; wait "$pid" || true
  [ "$rc" = 0 ] || { tail -30 "$work/run.log" >&2; return 1; }
}

bench() {
  local work; work=$(mktemp -d)
  local systems=(lambdaflow spark-default spark-100ms)
  # A fresh broker creates its 50-partition offsets topic on the first consumer-group commit,
  # which stalls whatever runs first: a short lambdaflow run, discarded, takes that.
  SECS=5 one lambdaflow "$work/warm-up" >/dev/null
  for r in $(seq 1 "$ROUNDS"); do
    for s in "${systems[@]}"; do
      local line; line=$(one "$s" "$work/$r-$s") || { echo "round $r $s: failed" >&2; exit 1; }
      echo "round $r $s: $line"
      echo "$s $line" >> "$work/lines"
    done
  done
  python3 - "$work/lines" <<'PY'
import re, statistics, sys
by = {}
for line in open(sys.argv[1]):
    system, rest = line.split(" ", 1)
    f = dict(re.findall(r"(\w+)=([0-9.]+)", rest))
    by.setdefault(system, []).append((float(f["p50_ms"]), float(f["p99_ms"]), float(f["rate"])))
med = {s: [statistics.median(v[i] for v in runs) for i in range(3)] for s, runs in by.items()}
lf50, lf99, _ = med["lambdaflow"]
print("| system | p50 ms | p99 ms | events/s sent | lambdaflow is … lower (p50, p99) |")
print("|---|---|---|---|---|")
names = {"lambdaflow": "lambdaflow run", "spark-default": "Spark Structured Streaming, default trigger",
         "spark-100ms": "Spark Structured Streaming, 100 ms trigger"}
for s, (p50, p99, rate) in med.items():
    ratio = "—" if s == "lambdaflow" else f"{p50 / lf50:.1f}x, {p99 / lf99:.1f}x"
    print(f"| {names[s]} | {p50:.0f} | {p99:.0f} | {rate:,.0f} | {ratio} |")
PY
  rm -rf "$work"
}
export -f one bench
scripts/kafka.sh run bash -c bench
