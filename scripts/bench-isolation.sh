#!/usr/bin/env bash
# What `serving.isolation = "read-committed"` costs in produce-to-visible latency, against the
# default read-uncommitted, measured from outside as a client sees it (scripts/latency.py): a
# steady 10,000 events/s into `lambdaflow produce` (stdin) with a probe event every 200 ms,
# its total polled over HTTP every 5 ms while `lambdaflow run` serves. The two modes alternate
# (A B A B …, ROUNDS rounds of SECONDS_PER_RUN seconds each); medians and the ratio are printed.
# CHECKPOINT_INTERVAL sets speed.checkpoint-interval (read-committed waits for checkpoints).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
rounds=${ROUNDS:-3}
interval=${CHECKPOINT_INTERVAL:-1s}  # speed.checkpoint-interval (the default is 1s)
secs=${SECONDS_PER_RUN:-20}
export KAFKA_PORT=${KAFKA_PORT:-9092}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
cargo build --release --quiet
bin=$CARGO_TARGET_DIR/release/lambdaflow

one() { # MODE WORKDIR: one run, prints latency.py's line
  local mode=$1 work=$2 port pid
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p "$work"
  printf '{"customer": "Ali", "amount": 120}\n' > "$work/history.json"
  cat > "$work/lambdaflow.toml" <<TOML
[kafka]
bootstrap-servers = "127.0.0.1:$KAFKA_PORT"
topic = "iso-$mode-$$-$(date +%s%N)"
[batch]
dataset = ["$work/history.json"]
[speed]
checkpoint-interval = "$interval"
[output]
dir = "$work/out"
[serving]
listen = "127.0.0.1:$port"
isolation = "$mode"
TOML
  local lf=("$bin" --config "$work/lambdaflow.toml")
  "${lf[@]}" topic create --partitions 2 >/dev/null
  LAMBDAFLOW_LOG=warn "${lf[@]}" run > /dev/null 2> "$work/run.log" & pid=$!
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
  python3 scripts/latency.py --produce "$(printf '%q ' "${lf[@]}") produce" \
    --url "http://127.0.0.1:$port" --seconds "$secs"
  kill -TERM "$pid"; wait "$pid" || true
}

bench() {
  local work; work=$(mktemp -d)
  declare -A p50 p99
  for r in $(seq 1 "$rounds"); do
    for mode in read-uncommitted read-committed; do
      local line; line=$(one "$mode" "$work/$r-$mode")
      echo "round $r $mode: $line"
      p50[$mode]+="$(sed 's/.*p50_ms=\([0-9.]*\).*/\1/' <<<"$line") "
      p99[$mode]+="$(sed 's/.*p99_ms=\([0-9.]*\).*/\1/' <<<"$line") "
    done
  done
  python3 - "${p50[read-uncommitted]}" "${p99[read-uncommitted]}" "${p50[read-committed]}" "${p99[read-committed]}" <<'PY'
import statistics, sys
u50, u99, c50, c99 = (statistics.median(map(float, a.split())) for a in sys.argv[1:])
print(f"median of rounds: read-uncommitted p50 {u50:.0f} ms, p99 {u99:.0f} ms; "
      f"read-committed p50 {c50:.0f} ms, p99 {c99:.0f} ms ({c50 / u50:.1f}x, {c99 / u99:.1f}x)")
PY
  rm -rf "$work"
}
export -f one bench
export bin rounds secs interval
# Inside `kafka.sh run`, which starts (and then stops) a broker if none answers.
scripts/kafka.sh run bash -c bench
