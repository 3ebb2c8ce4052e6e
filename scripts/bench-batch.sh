#!/usr/bin/env bash
# The batch layer side by side, in one run, on the same file: `lambdaflow batch` against DuckDB,
# DataFusion-python and the workshop's own PySpark batch job (its code, with an explicit schema,
# `local[2]`, spark-submit: JVM start-up included, as the workshop runs it) — and with SPARK=1
# (the default) lambdaflow's Spark engine (`--engine spark`) on a local Spark Connect server.
#
# For each size in SIZES (events of the seed's shape, 10,000 customers; default "1000000
# 10000000"), RUNS rounds (default 3); each round runs every system once, in turn (A B C D, A B
# C D, …: the machine's noise falls on all of them). Printed: the median wall time, CPU time
# (user + system) and peak memory (max RSS) of each whole process, under /usr/bin/time, and
# how many times faster lambdaflow is. Every system's result is checked equal to lambdaflow's,
# key by key, before any figure is printed. The Spark engine and the workshop's job exactly as
# written (schema inference) run SPARK_RUNS rounds (default 1: minutes at 10M events on 2 cores); the Spark server's start-up is timed once,
# apart, and its memory is not the client's (its JVM's peak is printed at the end).
#
# LAMBDAFLOW_BIN=path measures that binary instead of building the release one.
# The anchors are installed into .cache/venv (pip): duckdb 2.0.1, datafusion 55.0.0, and
# pyspark 4.0.0 through scripts/spark.sh.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
sizes=${SIZES:-${EVENTS:-1000000 10000000}}
runs=${RUNS:-3}
spark_runs=${SPARK_RUNS:-1}
dir=${BENCH_DIR:-$repo/.cache/bench}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
mkdir -p "$dir"
py=$repo/.cache/venv/bin/python

scripts/spark.sh install >/dev/null
if ! "$py" -c 'import duckdb, datafusion; assert duckdb.__version__ == "2.0.1" and datafusion.__version__ == "55.0.0"' 2>/dev/null; then
  echo "bench-batch: pip install duckdb 2.0.1 and datafusion 55.0.0 into .cache/venv" >&2
  "$py" -m pip install -q --disable-pip-version-check "duckdb==2.0.1" "datafusion==55.0.0" >&2
fi
if [ -n "${LAMBDAFLOW_BIN:-}" ]; then
  bin=$LAMBDAFLOW_BIN # a given binary, not rebuilt
else
  cargo build --release --quiet
  bin=$CARGO_TARGET_DIR/release/lambdaflow
fi
home=$(scripts/spark.sh home)

generate() { # N FILE: N seed-shaped events, 10,000 customers, seeded
  python3 - "$1" "$2" <<'PY'
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
}

cat > "$dir/pyspark_batch_job.py" <<'PY'
# The workshop's batch layer (the seed's batch job), with an explicit schema unless argv[3] is
# "infer" (the workshop's own code: spark.read.json infers the schema, reading the file twice).
import sys
from pyspark.sql import SparkSession
from pyspark.sql.types import LongType, StringType, StructField, StructType
spark = SparkSession.builder.appName("BatchLayer").getOrCreate()
schema = StructType([StructField("customer", StringType()), StructField("amount", LongType())])
reader = spark.read if sys.argv[3:] == ["infer"] else spark.read.schema(schema)
df = reader.json(sys.argv[1])
batch_view = df.groupBy("customer").sum("amount").withColumnRenamed("sum(amount)", "total_amount")
batch_view.write.mode("overwrite").json(sys.argv[2])
spark.stop()
PY

# One command per system: NAME|COMMAND (the command writes its result under $out/NAME).
systems() { # DATA OUT WITH_SPARK_ENGINE
  local data=$1 out=$2
  echo "lambdaflow batch|$bin batch --dataset $data --output-dir $out/lambdaflow"
  echo "DuckDB 2.0.1|$py -c \"import duckdb; duckdb.sql(\\\"COPY (SELECT customer, SUM(amount) AS total_amount FROM read_json('$data', format='newline_delimited', columns={'customer':'VARCHAR','amount':'BIGINT'}) GROUP BY customer) TO '$out/duckdb.csv' (HEADER)\\\")\""
  echo "DataFusion-python 55.0.0|$py -c \"import datafusion as d, pyarrow as pa; c=d.SessionContext(); c.register_json('events', '$data', schema=pa.schema([('customer', pa.string()), ('amount', pa.int64())]), file_extension='.json'); c.sql('SELECT customer, SUM(amount) AS total_amount FROM events GROUP BY customer').write_csv('$out/datafusion', with_header=True)\""
  echo "the workshop's PySpark job|env SPARK_LOCAL_IP=127.0.0.1 PYSPARK_PYTHON=$py $home/bin/spark-submit --master local[2] --conf spark.ui.enabled=false $dir/pyspark_batch_job.py $data $out/pyspark"
  if [ "$3" = 1 ]; then
    echo "the workshop's PySpark job, schema inferred|env SPARK_LOCAL_IP=127.0.0.1 PYSPARK_PYTHON=$py $home/bin/spark-submit --master local[2] --conf spark.ui.enabled=false $dir/pyspark_batch_job.py $data $out/pyspark-infer infer"
    echo "lambdaflow batch --engine spark|$bin batch --engine spark --spark-remote sc://127.0.0.1:$SPARK_PORT --dataset $data --output-dir $out/spark"
  fi
}

measure() { # NAME COMMAND OUT: appends "wall cpu rss_kb" to $OUT/NAME.times
  local name=$1 cmd=$2 out=$3 t
  t=$(mktemp)
  if ! /usr/bin/time -f '%e %U %S %M' -o "$t" bash -c "$cmd" >"$out/last.log" 2>&1; then
    echo "bench-batch: $name failed:" >&2
    tail -20 "$out/last.log" >&2
    exit 1
  fi
  awk '{ printf "%s %.2f %d\n", $1, $2 + $3, $4 }' "$t" >>"$out/$(echo "$name" | tr -c 'A-Za-z0-9\n' _).times"
  rm -f "$t"
}

spark_engine=0
if [ "${SPARK:-1}" = 1 ]; then
  spark_engine=1
  export SPARK_PORT=${SPARK_PORT:-15002}
  started_spark=0
  if ! scripts/spark.sh status >/dev/null 2>&1; then
    s=$(date +%s.%N); scripts/spark.sh start >/dev/null; e=$(date +%s.%N)
    started_spark=1
    printf 'Spark Connect server start-up (scripts/spark.sh start, once): %.1f s\n' "$(echo "$e - $s" | bc -l)"
  fi
  trap '[ "$started_spark" = 1 ] && scripts/spark.sh stop >/dev/null 2>&1' EXIT
fi

for n in $sizes; do
  data=$dir/events-$n.json
  [ -f "$data" ] || { echo "generating $n events into $data" >&2; generate "$n" "$data"; }
  out=$dir/run-$n
  rm -rf "$out"; mkdir -p "$out"
  for round in $(seq 1 "$runs"); do
    with_spark=$([ "$spark_engine" = 1 ] && [ "$round" -le "$spark_runs" ] && echo 1 || echo 0)
    while IFS='|' read -r name cmd; do
      echo "  $n events, round $round/$runs: $name" >&2
      measure "$name" "$cmd" "$out"
    done < <(systems "$data" "$out" "$with_spark")
  done
  "$py" - "$out" "$n" "$(du -m "$data" | cut -f1)" "$runs" <<'PY'
import csv, glob, json, os, statistics, sys
out, n, mb, runs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def json_dir(d):
    r = {}
    for f in glob.glob(os.path.join(d, "part-*.json")):
        for line in open(f):
            o = json.loads(line); r[o["customer"]] = int(o["total_amount"])
    return r
def csv_file(p):
    r = {}
    for f in ([p] if os.path.isfile(p) else glob.glob(os.path.join(p, "*"))):
        for row in csv.DictReader(open(f)):
            r[row["customer"]] = int(row["total_amount"])
    return r
results = {
    "lambdaflow batch": json_dir(os.path.join(out, "lambdaflow", "batch_view")),
    "DuckDB 2.0.1": csv_file(os.path.join(out, "duckdb.csv")),
    "DataFusion-python 55.0.0": csv_file(os.path.join(out, "datafusion")),
    "the workshop's PySpark job": json_dir(os.path.join(out, "pyspark")),
}
if os.path.isdir(os.path.join(out, "pyspark-infer")):
    results["the workshop's PySpark job, schema inferred"] = json_dir(os.path.join(out, "pyspark-infer"))
if os.path.isdir(os.path.join(out, "spark")):
    results["lambdaflow batch --engine spark"] = json_dir(os.path.join(out, "spark", "batch_view"))
truth = results["lambdaflow batch"]
assert truth, "lambdaflow's view is empty"
for name, r in results.items():
    if r != truth:
        diff = sorted(k for k in set(r) | set(truth) if r.get(k) != truth.get(k))
        sys.exit(f"bench-batch: {name}'s result differs from lambdaflow's on {len(diff)} keys, e.g. {diff[:3]}")
print(f"\n{n:,} events ({mb} MB of JSON lines), medians of {runs} alternating rounds "
      f"(the Spark engine: of its rounds); the {len(results)} results are equal, key by key "
      f"({len(truth):,} keys)")
print(f"| system | wall s | CPU s | peak memory MB | lambdaflow is … faster |")
print("|---|---|---|---|---|")
times = {}
for name in results:
    rows = [l.split() for l in open(os.path.join(out, "".join(c if c.isalnum() else "_" for c in name) + ".times"))]
    times[name] = [statistics.median(float(r[i]) for r in rows) for i in range(3)]
lf = times["lambdaflow batch"][0]
for name, (wall, cpu, rss) in times.items():
    ratio = "—" if name == "lambdaflow batch" else f"{wall / lf:.2f}x"
    print(f"| {name} | {wall:.3f} | {cpu:.2f} | {rss / 1024:.0f} | {ratio} |")
PY
done
if [ "$spark_engine" = 1 ]; then
  pid=$(cat "$repo/.cache/spark/run-$SPARK_PORT/server.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && [ -r "/proc/$pid/status" ]; then
    echo "the Spark Connect server's JVM: peak memory $(awk '/VmHWM/ { printf "%d MB", $2 / 1024 }' "/proc/$pid/status") over its life"
  fi
  s=$(date +%s.%N)
  "$bin" batch --engine spark --spark-remote "sc://127.0.0.1:$SPARK_PORT" --dataset datasets/transactions.json --output-dir "$dir/out-spark-seed" >/dev/null 2>&1
  e=$(date +%s.%N)
  printf 'lambdaflow batch --engine spark on the seed'"'"'s 5 lines (connect, statements, state query: the Connect round trips): %.2f s\n' "$(echo "$e - $s" | bc -l)"
fi
