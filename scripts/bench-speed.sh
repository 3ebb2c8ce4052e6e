#!/usr/bin/env bash
# Speed layer and the Lambda/Kappa trade-off, on N events (default 1M) of the seed's shape in a
# 2-partition topic:
#   A. throughput: produce all events, then time `lambdaflow speed` from start until its
#      checkpoint covers all of them (it also archives them as Parquet segments);
#   B. Lambda recompute: `lambdaflow batch` over the master dataset A left (the seed file plus
#      the N archived events), and Kappa: `lambdaflow replay` of the same N events from Kafka;
#   C. produce-to-visible latency: the speed layer runs while the events are produced; its
#      final log line gives p50/p99/max from each message's Kafka timestamp to the end of the
#      micro-batch that made it visible to serving;
#   D. the batch run over the archive's Delta table before and after `lambdaflow compact`.
# Needs the data file that scripts/bench-batch.sh generates. Starts Kafka if none answers.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
. scripts/bench-lib.sh
n=${EVENTS:-1000000}
export KAFKA_PORT=${KAFKA_PORT:-9092}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
src=${BENCH_DIR:-$repo/.cache/bench}/events-10000000.json
[ -f "$src" ] || { echo "run scripts/bench-batch.sh first (it generates $src)" >&2; exit 1; }
cargo build --release --quiet
bin=$CARGO_TARGET_DIR/release/lambdaflow

bench() {
  local work; work=$(mktemp -d)
  head -n "$n" "$src" > "$work/events.json"
  echo "events: $n, 2 partitions, Apache Kafka on 127.0.0.1:$KAFKA_PORT"

  # A. throughput on a backlog
  local lf=("$bin" --bootstrap-servers "127.0.0.1:$KAFKA_PORT" --topic "bench-a-$$-$(date +%s)" --output-dir "$work/a")
  "${lf[@]}" topic create --partitions 2 >/dev/null
  local p0 p1 s e pid
  p0=$(now); "${lf[@]}" produce --file "$work/events.json" >/dev/null; p1=$(now)
  s=$(now)
  LAMBDAFLOW_LOG=info "${lf[@]}" speed --quiet > /dev/null 2> "$work/a.log" & pid=$!
  until checkpointed "$work/a/_speed/checkpoint.json" "$n"; do sleep 0.05; done
  e=$(now)
  kill -TERM "$pid"; wait "$pid" || true
  # Steady state: the median arrival rate of the micro-batches after the first five (the
  # consumer's warm-up), from the progress lines.
  local steady
  steady=$(sed 's/\x1b\[[0-9;]*m//g' "$work/a.log" | grep -o 'input_rows_per_second=[0-9.]*' | cut -d= -f2 |
    python3 -c 'import sys, statistics; v=[float(x) for x in sys.stdin][5:]; print(round(statistics.median(v)) if v else "n/a")')
  echo "A. produce (lambdaflow produce, idempotent, acks=all): $(rate "$n" "$p0" "$p1") events/s"
  echo "A. speed layer, start to checkpoint of all events, archive included: $(rate "$n" "$s" "$e") events/s ($(secs "$s" "$e") s)"
  echo "A. speed layer, steady state (median micro-batch arrival rate after warm-up): $steady events/s"
  echo "   archive: $(find "$work/a/master" -name '*.parquet' | wc -l) segment(s), $(du -sh "$work/a/master" | cut -f1)"

  # B. Lambda recompute vs Kappa replay of the same events
  s=$(now); LAMBDAFLOW_LOG=warn "${lf[@]}" batch > "$work/batch.out"; e=$(now)
  echo "B. lambda: batch recompute over the master dataset (seed file + $n archived events): $(secs "$s" "$e") s"
  s=$(now); LAMBDAFLOW_LOG=warn "${lf[@]}" replay > "$work/replay.out"; e=$(now)
  echo "B. kappa: replay of the $n events from the topic: $(secs "$s" "$e") s"

  # C. produce-to-visible latency while producing
  lf=("$bin" --bootstrap-servers "127.0.0.1:$KAFKA_PORT" --topic "bench-c-$$-$(date +%s)" --output-dir "$work/c")
  "${lf[@]}" topic create --partitions 2 >/dev/null
  LAMBDAFLOW_LOG=info "${lf[@]}" speed --quiet > /dev/null 2> "$work/c.log" & pid=$!
  sleep 1
  p0=$(now); "${lf[@]}" produce --file "$work/events.json" >/dev/null; p1=$(now)
  until checkpointed "$work/c/_speed/checkpoint.json" "$n"; do sleep 0.05; done
  kill -TERM "$pid"; wait "$pid" || true
  echo "C. while producing at $(rate "$n" "$p0" "$p1") events/s: produce-to-visible latency (ms) $(sed 's/\x1b\[[0-9;]*m//g' "$work/c.log" | grep -o 'visible_latency_p50_ms=[^ ]* visible_latency_p99_ms=[^ ]* visible_latency_max_ms=[^ ]*' | tail -1)"

  # D. the archive's Delta table before and after `compact`: the speed layer checkpoints every
  #    20 ms while the events are produced (many small segments), then batch runs are timed
  #    (median of 3) before and after compact merges them.
  lf=("$bin" --bootstrap-servers "127.0.0.1:$KAFKA_PORT" --topic "bench-d-$$-$(date +%s)" --output-dir "$work/d")
  "${lf[@]}" topic create --partitions 2 >/dev/null
  LAMBDAFLOW_SPEED__CHECKPOINT_INTERVAL=20ms LAMBDAFLOW_LOG=warn "${lf[@]}" speed --quiet > /dev/null 2>&1 & pid=$!
  sleep 1
  "${lf[@]}" produce --file "$work/events.json" >/dev/null
  until checkpointed "$work/d/_speed/checkpoint.json" "$n"; do sleep 0.05; done
  kill -TERM "$pid"; wait "$pid" || true
  batch_median() {
    local t=() i
    for i in 1 2 3; do s=$(now); LAMBDAFLOW_LOG=warn "${lf[@]}" batch > /dev/null; e=$(now); t+=("$(secs "$s" "$e")"); done
    printf '%s\n' "${t[@]}" | sort -n | sed -n 2p
  }
  local before after files0 files1
  files0=$(find "$work/d/master" -name 'offsets=*.parquet' | wc -l)
  before=$(batch_median)
  s=$(now); "${lf[@]}" compact --retention 0s; e=$(now)
  files1=$(find "$work/d/master" -name 'offsets=*.parquet' | wc -l)
  after=$(batch_median)
  echo "D. compact: $(secs "$s" "$e") s; batch over the table (seed file + $n archived events), median of 3: $before s with $files0 segment file(s), $after s after compact with $files1"
  rm -rf "$work"
}
# Run the benchmark inside `kafka.sh run`, which starts (and then stops) a broker if none answers.
if [ "${1:-}" = --with-kafka ]; then bench; else exec scripts/kafka.sh run "$0" --with-kafka; fi
