#!/usr/bin/env bash
# Speed-layer throughput: produce N events (default 1M) of the seed's shape to a fresh topic,
# then time `lambdaflow speed` from start until its checkpoint covers all of them.
# Needs the data file that scripts/bench-batch.sh generates. Starts Kafka if none answers.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
n=${EVENTS:-1000000}
export KAFKA_PORT=${KAFKA_PORT:-9092}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lambdaflow-target}
src=${BENCH_DIR:-$repo/.cache/bench}/events-10000000.json
[ -f "$src" ] || { echo "run scripts/bench-batch.sh first (it generates $src)" >&2; exit 1; }
cargo build --release --quiet
bin=$CARGO_TARGET_DIR/release/lambdaflow

bench() {
  local work topic
  work=$(mktemp -d); topic="bench-speed-$$-$(date +%s)"
  local lf=("$bin" --bootstrap-servers "127.0.0.1:$KAFKA_PORT" --topic "$topic" --output-dir "$work/out")
  head -n "$n" "$src" > "$work/events.json"
  "${lf[@]}" topic create --partitions 2 >/dev/null
  local p0 p1; p0=$(date +%s.%N)
  "${lf[@]}" produce --file "$work/events.json" >/dev/null
  p1=$(date +%s.%N)
  local s e
  s=$(date +%s.%N)
  LAMBDAFLOW_LOG=warn "${lf[@]}" speed --quiet > /dev/null &
  local pid=$!
  until python3 - "$work/out/_speed/checkpoint.json" "$n" <<'PY'
import json, sys
try:
    cp = json.load(open(sys.argv[1]))
except Exception:
    sys.exit(1)
sys.exit(0 if sum(cp["offsets"].values()) >= int(sys.argv[2]) else 1)
PY
  do sleep 0.05; done
  e=$(date +%s.%N)
  kill -TERM "$pid"; wait "$pid" || true
  echo "events: $n, 2 partitions"
  echo "produce (lambdaflow produce, idempotent, acks=all): $(echo "scale=0; $n / ($p1 - $p0)" | bc -l) events/s"
  echo "speed layer, start to checkpoint of all events (includes start-up): $(echo "scale=0; $n / ($e - $s)" | bc -l) events/s ($(echo "scale=2; $e - $s" | bc -l) s)"
  rm -rf "$work"
}
# Run the benchmark inside `kafka.sh run`, which starts (and then stops) a broker if none answers.
if [ "${1:-}" = --with-kafka ]; then bench; else exec scripts/kafka.sh run "$0" --with-kafka; fi
