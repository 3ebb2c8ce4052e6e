#!/usr/bin/env bash
# The storage root on a local disk against the same on an S3 server (s3proxy on loopback,
# scripts/s3.sh), side by side in one run, alternating (ROUNDS rounds, default 2), on N events
# (EVENTS, default 1M) of the seed's shape in a 2-partition topic:
#   A. the speed layer on a backlog: from process start until its checkpoint covers all N
#      events (it archives them into the master dataset's Delta table on the way), and what one
#      checkpoint costs (its debug line: segments, dead letters, checkpoint, Delta commit);
#   B. `lambdaflow batch` over the N archived events (the table's latest version);
#   C. produce-to-visible latency while the N events are produced (the speed layer's own
#      p50/p99 from each message's Kafka timestamp to the micro-batch that made it visible).
#   D. a long Delta log: the speed layer commits once per micro-batch of 100 events
#      (checkpoint-interval 0s) until the table has LOG_COMMITS (500) versions: what a checkpoint
#      costs among the first 50 and the last 50 (a commit reads only the log entries since the
#      writer's last one), and a cold `serve --once` on the finished table (delta-rs writes a
#      Delta checkpoint every 100 commits: a load reads it and the entries after it). Once per
#      root, not in rounds.
#   E. `lambdaflow batch` on the bucket over the N events archived then merged by `compact`
#      (segments of up to 256 MiB, which a reader fetches by ranges): its time and peak RSS,
#      ROUNDS rounds; with BASE_BIN=<another build of lambdaflow>, that binary over the same
#      table too, alternating (to compare two builds).
#   SECTIONS="A B C D" (default) chooses; E runs when named.
# Where the checkpoint is on the bucket, the script reads it from s3proxy's filesystem backend
# (S3_DATA_DIR), not through S3: a peek for timing only. Release build; starts Kafka and s3proxy
# when nothing answers on their ports (KAFKA_PORT, S3_PORT).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
. scripts/bench-lib.sh
n=${EVENTS:-1000000}
rounds=${ROUNDS:-2}
sections=${SECTIONS:-"A B C D"}
log_commits=${LOG_COMMITS:-500}
export KAFKA_PORT=${KAFKA_PORT:-9092}
export S3_PORT=${S3_PORT:-9000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
# LF_BIN: a binary built elsewhere (another commit), instead of this tree's release build.
bin=${LF_BIN:-$CARGO_TARGET_DIR/release/lambdaflow}

# Median and p99 of the checkpoints' durations in a log.
checkpoint_ms() {
  sed 's/\x1b\[[0-9;]*m//g' "$1" | grep 'checkpoint written' | grep -o ' ms=[0-9.]*' | cut -d= -f2 |
    python3 -c 'import sys, statistics as s; v=sorted(float(x) for x in sys.stdin)
print(f"{len(v)} checkpoints, median {s.median(v):.1f} ms, p99 {v[min(len(v)-1, int(len(v)*0.99))]:.1f} ms" if v else "n/a")'
}

# root WORK NAME: the output root of one run (a local directory, or a prefix of the bucket) and
# where its checkpoint file is on the local disk.
root() {
  case "$1" in
    local) echo "$work/$2" "$work/$2/_speed/checkpoint.json" ;;
    s3) echo "s3://$S3_BUCKET/bench/$2" "$S3_DATA_DIR/$S3_BUCKET/bench/$2/_speed/checkpoint.json" ;;
  esac
}

one() { # ROOT-KIND ROUND
  local kind=$1 r=$2 out cp lf s e pid p0 p1
  read -r out cp < <(root "$kind" "a-$kind-$r")
  lf=("$bin" --bootstrap-servers "127.0.0.1:$KAFKA_PORT" --topic "bench-s3a-$kind-$r-$$" --output-dir "$out")
  "${lf[@]}" topic create --partitions 2 >/dev/null
  "${lf[@]}" produce --file "$work/events.json" >/dev/null
  s=$(now)
  LAMBDAFLOW_LOG=info,lambdaflow::speed::checkpointer=debug "${lf[@]}" speed --quiet > /dev/null 2> "$work/a-$kind-$r.log" & pid=$!
  until checkpointed "$cp" "$n"; do sleep 0.05; done
  e=$(now)
  kill -TERM "$pid"; wait "$pid" || true
  echo "A. [$kind, round $r] speed layer, start to checkpoint of all $n events: $(rate "$n" "$s" "$e") events/s ($(secs "$s" "$e") s); $(checkpoint_ms "$work/a-$kind-$r.log")"
  s=$(now); LAMBDAFLOW_LOG=warn "${lf[@]}" batch > /dev/null; e=$(now)
  echo "B. [$kind, round $r] batch over the $n archived events: $(secs "$s" "$e") s"

  read -r out cp < <(root "$kind" "c-$kind-$r")
  lf=("$bin" --bootstrap-servers "127.0.0.1:$KAFKA_PORT" --topic "bench-s3c-$kind-$r-$$" --output-dir "$out")
  "${lf[@]}" topic create --partitions 2 >/dev/null
  LAMBDAFLOW_LOG=info,lambdaflow::speed::checkpointer=debug "${lf[@]}" speed --quiet > /dev/null 2> "$work/c-$kind-$r.log" & pid=$!
  sleep 1
  p0=$(now); "${lf[@]}" produce --file "$work/events.json" >/dev/null; p1=$(now)
  until checkpointed "$cp" "$n"; do sleep 0.05; done
  kill -TERM "$pid"; wait "$pid" || true
  echo "C. [$kind, round $r] while producing at $(rate "$n" "$p0" "$p1") events/s: produce-to-visible (ms) $(sed 's/\x1b\[[0-9;]*m//g' "$work/c-$kind-$r.log" | grep -o 'visible_latency_p50_ms=[^ ]* visible_latency_p99_ms=[^ ]*' | tail -1); $(checkpoint_ms "$work/c-$kind-$r.log")"
}

# The median of the first and of the last 50 checkpoints' durations in a log.
first_last_ms() {
  sed 's/\x1b\[[0-9;]*m//g' "$1" | grep 'checkpoint written' | grep -o ' ms=[0-9.]*' | cut -d= -f2 |
    python3 -c 'import sys, statistics as s; v=[float(x) for x in sys.stdin]
print(f"{len(v)} checkpoints: the first 50, median {s.median(v[:50]):.1f} ms; the last 50, median {s.median(v[-50:]):.1f} ms" if len(v) >= 100 else "n/a")'
}

long_log() { # ROOT-KIND
  local kind=$1 out cp lf pid s e m=$((log_commits * 100))
  read -r out cp < <(root "$kind" "d-$kind-$$")
  lf=("$bin" --bootstrap-servers "127.0.0.1:$KAFKA_PORT" --topic "bench-s3d-$kind-$$" --output-dir "$out")
  "${lf[@]}" topic create --partitions 1 >/dev/null
  head -n "$m" "$work/events.json" > "$work/long.json"
  "${lf[@]}" produce --file "$work/long.json" >/dev/null
  LAMBDAFLOW_SPEED__CHECKPOINT_INTERVAL=0s LAMBDAFLOW_SPEED__MAX_BATCH_ROWS=100 \
    LAMBDAFLOW_LOG=info,lambdaflow::speed::checkpointer=debug "${lf[@]}" speed --quiet > /dev/null 2> "$work/d-$kind.log" & pid=$!
  until checkpointed "$cp" "$m"; do
    kill -0 "$pid" 2>/dev/null || { echo "D. [$kind] the speed layer exited:" >&2; tail -5 "$work/d-$kind.log" >&2; exit 1; }
    sleep 0.05
  done
  kill -TERM "$pid"; wait "$pid" || true
  echo "D. [$kind] a log of about $log_commits commits: $(first_last_ms "$work/d-$kind.log")"
  s=$(now); LAMBDAFLOW_LOG=warn "${lf[@]}" serve --once > /dev/null; e=$(now)
  echo "D. [$kind] serve --once on it (a cold load of the table, then the view): $(secs "$s" "$e") s"
}

# CMD…: its time and peak RSS, its output discarded.
peak() {
  python3 - "$@" <<'PY'
import resource, subprocess, sys, time
t = time.time()
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True)
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
print(f"{time.time() - t:.2f} s, peak RSS {rss} MB")
PY
}

compacted() {
  local out cp lf pid r b
  read -r out cp < <(root s3 "e-$$")
  lf=(--bootstrap-servers "127.0.0.1:$KAFKA_PORT" --topic "bench-s3e-$$" --output-dir "$out")
  "$bin" "${lf[@]}" topic create --partitions 2 >/dev/null
  "$bin" "${lf[@]}" produce --file "$work/events.json" >/dev/null
  "$bin" "${lf[@]}" speed --quiet > /dev/null 2> "$work/e.log" & pid=$!
  until checkpointed "$cp" "$n"; do sleep 0.05; done
  kill -TERM "$pid"; wait "$pid" || true
  LAMBDAFLOW_LOG=warn "$bin" "${lf[@]}" compact > /dev/null
  local bins=("$bin")
  [ -n "${BASE_BIN:-}" ] && bins+=("$BASE_BIN")
  for r in $(seq 1 "$rounds"); do
    [ $((r % 2)) -eq 0 ] && bins=("${bins[@]:1}" "${bins[0]}")
    for b in "${bins[@]}"; do
      echo "E. [round $r] $b batch over the $n compacted events on the bucket: $(LAMBDAFLOW_LOG=warn peak "$b" "${lf[@]}" batch)"
    done
  done
}

bench() {
  work=$(mktemp -d)
  python3 - "$n" > "$work/events.json" <<'PY'
import sys
for i in range(int(sys.argv[1])):
    print(f'{{"customer": "c{i % 10000}", "amount": {i % 500 + 1}}}')
PY
  echo "events: $n, 2 partitions, Kafka on 127.0.0.1:$KAFKA_PORT, s3proxy on $AWS_ENDPOINT_URL ($S3_DATA_DIR)"
  if [[ " $sections " =~ [\ ][ABC][\ ] ]]; then
    for r in $(seq 1 "$rounds"); do
      if [ $((r % 2)) -eq 1 ]; then one local "$r"; one s3 "$r"; else one s3 "$r"; one local "$r"; fi
    done
  fi
  if [[ " $sections " == *" D "* ]]; then long_log local; long_log s3; fi
  if [[ " $sections " == *" E "* ]]; then compacted; fi
  rm -rf "$work"
}

if [ "${1:-}" = --inside ]; then
  bench
else
  [ -n "${LF_BIN:-}" ] || cargo build --release --quiet --bin lambdaflow
  # s3proxy keeps its objects in S3_DATA_DIR: a fresh directory, removed afterwards.
  S3_DATA_DIR=$(mktemp -d); export S3_DATA_DIR
  rc=0
  scripts/kafka.sh run scripts/s3.sh run "$0" --inside || rc=$?
  rm -rf "$S3_DATA_DIR"
  exit "$rc"
fi
