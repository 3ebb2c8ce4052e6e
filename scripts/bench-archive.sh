#!/usr/bin/env bash
# The batch layer over the archive: EVENTS (default 10,000,000) events of the seed's shape
# produced into a fresh 4-partition topic and archived by `lambdaflow speed` into the Delta
# table (output/master/), then, alternating for ROUNDS rounds (default 5):
#   lambdaflow batch   the view over the table alone (no JSON files), whole process;
#   DuckDB 2.0.1       the same GROUP BY over the same Parquet files (read_parquet), whole
#                      Python process, as an anchor for what reading those files costs.
# Medians of wall time, CPU time and peak memory (/usr/bin/time); the two results are checked
# equal key by key. Needs the data file scripts/bench-batch.sh generates, and .cache/venv with
# duckdb (bench-batch.sh installs it).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
n=${EVENTS:-10000000}
rounds=${ROUNDS:-5}
py=$repo/.cache/venv/bin/python
"$py" -c 'import duckdb' 2>/dev/null || { echo "run scripts/bench-batch.sh first (it installs duckdb into .cache/venv)" >&2; exit 1; }
source scripts/bench-env.sh
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
topic="archive-$$-$(date +%s)"
run() {
  printf '[kafka]\nbootstrap-servers = "127.0.0.1:%s"\ntopic = "%s"\ngroup-id = "g-%s"\n[batch]\ndataset = []\n[output]\ndir = "%s/out"\n' \
    "$KAFKA_PORT" "$topic" "$topic" "$work" > "$work/lambdaflow.toml"
  c=$work/lambdaflow.toml
  "$bin" --config "$c" topic create --partitions 4 >/dev/null
  head -n "$n" "$src" | "$bin" --config "$c" produce >/dev/null 2>&1
  LAMBDAFLOW_LOG=warn "$bin" --config "$c" speed --quiet > /dev/null 2> "$work/speed.log" & pid=$!
  until python3 -c "import json,sys; cp=json.load(open(sys.argv[1])); sys.exit(0 if sum(cp['offsets'].values()) >= int(sys.argv[2]) else 1)" \
      "$work/out/_speed/checkpoint.json" "$n" 2>/dev/null; do sleep 0.2; done
  kill -TERM "$pid"; wait "$pid" || true
  files=$(find "$work/out/master" -name '*.parquet' | wc -l)
  echo "archive: $n events in the Delta table, $files Parquet files ($(du -sm "$work/out/master" | cut -f1) MB)"
  duck="import duckdb; duckdb.sql(\"COPY (SELECT customer, SUM(amount) AS total_amount FROM read_parquet('$work/out/master/**/*.parquet') GROUP BY customer) TO '$work/duckdb.csv' (HEADER)\")"
  : > "$work/lf.times"; : > "$work/duck.times"
  for r in $(seq 1 "$rounds"); do
    /usr/bin/time -o "$work/t" -f "%e %U %S %M" "$bin" --config "$c" batch > /dev/null 2> "$work/batch.log" \
      || { cat "$work/batch.log" >&2; exit 1; }
    cat "$work/t" >> "$work/lf.times"
    /usr/bin/time -o "$work/t" -f "%e %U %S %M" "$py" -c "$duck"
    cat "$work/t" >> "$work/duck.times"
    echo "  round $r: lambdaflow batch $(cut -d' ' -f1 < "$work/lf.times" | tail -1) s, DuckDB $(cut -d' ' -f1 < "$work/duck.times" | tail -1) s"
  done
  "$py" - "$work" "$n" <<'PY'
import csv, glob, json, statistics, sys
work, n = sys.argv[1], int(sys.argv[2])
lf = {}
for f in glob.glob(f"{work}/out/batch_view/part-*.json"):
    for line in open(f):
        r = json.loads(line)
        lf[r["customer"]] = r["total_amount"]
duck = {r["customer"]: int(r["total_amount"]) for r in csv.DictReader(open(f"{work}/duckdb.csv"))}
if lf != duck or sum(lf.values()) == 0:
    sys.exit(f"bench-archive: the results differ ({len(lf)} keys against {len(duck)})")
def med(name):
    rows = [list(map(float, l.split())) for l in open(f"{work}/{name}.times") if l.strip()]
    return [statistics.median(col) for col in zip(*rows)]
print(f"{n:,} events in the archive, medians of {len(open(f'{work}/lf.times').readlines())} alternating rounds; results equal ({len(lf):,} keys)")
print("| system | wall s | CPU s | peak memory MB |")
print("|---|---|---|---|")
for name, label in (("lf", "`lambdaflow batch` (the table alone)"), ("duck", "DuckDB 2.0.1, `read_parquet` of the same files")):
    wall, user, sys_, rss = med(name)
    print(f"| {label} | {wall:.3f} | {user + sys_:.2f} | {rss / 1024:.0f} |")
PY
}
scripts/kafka.sh run bash -c "$(declare -f run); n=$n rounds=$rounds bin=$bin src=$src work=$work topic=$topic py=$py; run"
