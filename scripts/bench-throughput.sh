#!/usr/bin/env bash
# Speed-layer throughput from a pre-loaded topic, lambdaflow against the workshop's Spark
# Structured Streaming job: EVENTS (default 1,000,000) events of the seed's shape produced into
# a fresh 4-partition topic, then, alternating for ROUNDS rounds (default 3):
#   lambdaflow speed      from process start until its checkpoint covers every event (each
#                         event also archived into the Delta table);
#   Spark, default trigger  scripts/spark_speed_layer.py from the earliest offset (`local[2]`,
#                         4 shuffle partitions), until its complete view covers every event;
#                         timed from spark-submit's start and from the query's start (the JVM
#                         and the session's start-up excluded).
# Medians; events/s = EVENTS / time. Needs the data file scripts/bench-batch.sh generates.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
n=${EVENTS:-1000000}
rounds=${ROUNDS:-3}
source scripts/bench-env.sh
spark_home=$(scripts/spark.sh home)
jars=$(scripts/spark.sh kafka-jars)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
topic="throughput-$$-$(date +%s)"
cfg() { # DIR: a config on the pre-loaded topic with its own output and group
  mkdir -p "$1"
  printf '[kafka]\nbootstrap-servers = "127.0.0.1:%s"\ntopic = "%s"\ngroup-id = "g-%s"\n[batch]\ndataset = []\n[output]\ndir = "%s/out"\n' \
    "$KAFKA_PORT" "$topic" "$(basename "$1")" "$1" > "$1/lambdaflow.toml"
  echo "$1/lambdaflow.toml"
}
now() { date +%s.%N; }
covered() { # CHECKPOINT N
  python3 -c "import json,sys; cp=json.load(open(sys.argv[1])); sys.exit(0 if sum(cp['offsets'].values()) >= int(sys.argv[2]) else 1)" "$1" "$2" 2>/dev/null
}
run() {
  c=$(cfg "$work/load")
  "$bin" --config "$c" topic create --partitions 4 >/dev/null
  head -n "$n" "$src" | "$bin" --config "$c" produce >/dev/null 2>&1
  echo "throughput: $n events in a 4-partition topic"
  : > "$work/lf.times"; : > "$work/spark.times"; : > "$work/spark-query.times"
  for r in $(seq 1 "$rounds"); do
    d="$work/lf-$r"; c=$(cfg "$d")
    s=$(now)
    LAMBDAFLOW_LOG=warn "$bin" --config "$c" speed --quiet > /dev/null 2> "$d/log" & pid=$!
    until covered "$d/out/_speed/checkpoint.json" "$n"; do sleep 0.02; done
    e=$(now); kill -TERM "$pid"; wait "$pid" || true
    echo "$e - $s" | bc -l >> "$work/lf.times"
    echo "  round $r: lambdaflow speed $(tail -1 "$work/lf.times") s"
    d="$work/spark-$r"; mkdir -p "$d"
    s=$(now)
    SPARK_LOCAL_IP=127.0.0.1 PYSPARK_PYTHON="$repo/.cache/venv/bin/python" "$spark_home/bin/spark-submit" \
      --master 'local[2]' --conf spark.ui.enabled=false --jars "$jars" \
      --conf spark.sql.shuffle.partitions=4 \
      scripts/spark_speed_layer.py "127.0.0.1:$KAFKA_PORT" "$topic" 0 default "$n" > "$d/out" 2> "$d/log"
    started=$(awk '/^STARTED/ {print $2}' "$d/out"); done_at=$(awk '/^DONE/ {print $2}' "$d/out")
    [ -n "$done_at" ] || { echo "the Spark job did not finish; its log:" >&2; tail -20 "$d/log" >&2; exit 1; }
    echo "$done_at - $s" | bc -l >> "$work/spark.times"
    echo "$done_at - $started" | bc -l >> "$work/spark-query.times"
    echo "  round $r: Spark Structured Streaming $(tail -1 "$work/spark.times") s ($(tail -1 "$work/spark-query.times") s from the query's start)"
  done
  python3 - "$n" "$work" <<'PY'
import statistics, sys
n, work = int(sys.argv[1]), sys.argv[2]
med = lambda f: statistics.median(float(x) for x in open(f"{work}/{f}.times") if x.strip())
lf, sp, sq = med("lf"), med("spark"), med("spark-query")
print(f"lambdaflow speed (process start to all checkpointed and archived): median {lf:.2f} s = {n / lf:,.0f} events/s")
print(f"Spark Structured Streaming, default trigger (spark-submit start to all in the view): median {sp:.2f} s = {n / sp:,.0f} events/s; from the query's start {sq:.2f} s = {n / sq:,.0f} events/s")
print(f"lambdaflow is {sp / lf:.1f}x faster from process start, {sq / lf:.1f}x from Spark's query start")
PY
}
scripts/kafka.sh run bash -c "$(declare -f cfg now covered run); n=$n rounds=$rounds bin=$bin src=$src work=$work topic=$topic spark_home=$spark_home jars=$jars repo=$repo; run"
