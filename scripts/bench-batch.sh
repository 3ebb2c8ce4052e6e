#!/usr/bin/env bash
# Batch-layer benchmark: N events of the seed's shape (default 10M, ~420 MB of JSON lines),
# `lambdaflow batch` against DuckDB and DataFusion-python measured in the same run on the same
# file. Prints seconds (best of RUNS) and ratios. Anchors are skipped when their Python package
# is missing (pip install duckdb datafusion).
#
# SPARK=1 (default) also measures, on the same file: `lambdaflow batch --engine spark` on a
# local Spark Connect server (scripts/spark.sh: its start-up is timed once, apart), the same on
# the seed's 5-line dataset (what Spark Connect's round trips cost with nothing to read), and
# the seed's own PySpark batch job (spark-submit, JVM start-up included, as the workshop runs it).
# These take minutes at 10M events on 2 cores: best of SPARK_RUNS (default 1).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
n=${EVENTS:-10000000}
runs=${RUNS:-3}
dir=${BENCH_DIR:-$repo/.cache/bench}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lambdaflow-target}
mkdir -p "$dir"
data=$dir/events-$n.json
if [ ! -f "$data" ]; then
  echo "generating $n events into $data" >&2
  python3 - "$n" "$data" <<'PY'
import random, sys
n, path = int(sys.argv[1]), sys.argv[2]
rnd = random.Random(42)
names = ["Ali", "Sara", "Mounir", "Hajar", "Youssef", "Imane", "Omar", "Salma"]
customers = [f"{rnd.choice(names)}-{i:04d}" for i in range(10000)]
with open(path, "w") as f:
    chunk = []
    for i in range(n):
        chunk.append('{"customer": "%s", "amount": %d}\n' % (customers[rnd.randrange(10000)], rnd.randrange(1, 1000)))
        if len(chunk) == 100000:
            f.write("".join(chunk)); chunk = []
    f.write("".join(chunk))
PY
fi
cargo build --release --quiet
bin=$CARGO_TARGET_DIR/release/lambdaflow
size=$(du -m "$data" | cut -f1)

best() { # best wall time of $runs runs of "$@", in seconds
  local b=""
  for _ in $(seq 1 "$runs"); do
    local s e t
    s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N)
    t=$(echo "$e - $s" | bc -l)
    if [ -z "$b" ] || [ "$(echo "$t < $b" | bc -l)" = 1 ]; then b=$t; fi
  done
  printf '%.3f' "$b"
}

echo "events: $n ($size MB of JSON lines), best of $runs runs, $(nproc) cores"
lf=$(best "$bin" batch --dataset "$data" --output-dir "$dir/out")
echo "lambdaflow batch:   ${lf} s"
if python3 -c "import duckdb" 2>/dev/null; then
  duck=$(best python3 -c "import duckdb,sys; duckdb.sql(\"SELECT customer, SUM(amount) AS total_amount FROM read_json('$data', format='newline_delimited', columns={'customer':'VARCHAR','amount':'BIGINT'}) GROUP BY customer\").fetchall()")
  echo "DuckDB:             ${duck} s   (lambdaflow is $(echo "scale=2; $duck / $lf" | bc -l)x DuckDB's speed)"
fi
if python3 -c "import datafusion" 2>/dev/null; then
  dfp=$(best python3 -c "import datafusion as d, pyarrow as pa; c=d.SessionContext(); c.register_json('events', '$data', schema=pa.schema([('customer', pa.string()), ('amount', pa.int64())]), file_extension='.json'); c.sql('SELECT customer, SUM(amount) AS total_amount FROM events GROUP BY customer').collect()")
  echo "DataFusion-python:  ${dfp} s   (lambdaflow is $(echo "scale=2; $dfp / $lf" | bc -l)x DataFusion-python's speed)"
fi
if [ "${SPARK:-1}" = 1 ]; then
  export SPARK_PORT=${SPARK_PORT:-15002}
  remote=sc://127.0.0.1:$SPARK_PORT
  started_spark=0
  if ! scripts/spark.sh status >/dev/null 2>&1; then
    s=$(date +%s.%N); scripts/spark.sh start >/dev/null; e=$(date +%s.%N)
    started_spark=1
    printf 'Spark Connect server start-up (scripts/spark.sh start): %.1f s\n' "$(echo "$e - $s" | bc -l)"
  fi
  trap '[ "$started_spark" = 1 ] && scripts/spark.sh stop >/dev/null 2>&1' EXIT
  runs=${SPARK_RUNS:-1}
  sp=$(best "$bin" batch --engine spark --spark-remote "$remote" --dataset "$data" --output-dir "$dir/out-spark")
  echo "lambdaflow batch --engine spark:  ${sp} s   (the embedded engine is $(echo "scale=2; $sp / $lf" | bc -l)x faster)"
  rt=$(best "$bin" batch --engine spark --spark-remote "$remote" --dataset datasets/transactions.json --output-dir "$dir/out-spark-seed")
  echo "  the same on the seed's 5 lines:  ${rt} s   (connect, 6 statements and the state query over Spark Connect)"
  job=$dir/seed_batch_job.py
  cat > "$job" <<'PY'
import sys
from pyspark.sql import SparkSession
spark = SparkSession.builder.appName("BatchLayer").getOrCreate()
df = spark.read.json(sys.argv[1])
batch_view = df.groupBy("customer").sum("amount").withColumnRenamed("sum(amount)", "total_amount")
batch_view.write.mode("overwrite").json(sys.argv[2])
spark.stop()
PY
  home=$(scripts/spark.sh home)
  seed=$(best env SPARK_LOCAL_IP=127.0.0.1 PYSPARK_PYTHON="$repo/.cache/venv/bin/python" "$home/bin/spark-submit" --master 'local[*]' --conf spark.ui.enabled=false "$job" "$data" "$dir/out-pyspark")
  echo "the seed's PySpark batch job:      ${seed} s   (lambdaflow is $(echo "scale=2; $seed / $lf" | bc -l)x faster; spark-submit, JVM start included)"
fi
