#!/usr/bin/env bash
# SQL over the PostgreSQL protocol, against PostgreSQL itself and DuckDB on the same rows:
#   - a view of KEYS keys (default 1,000,000) published by `lambdaflow batch`, served by
#     `lambdaflow serve --pg-listen`; the same rows in PostgreSQL 15 (Debian's, scripts/pg.sh,
#     a table with a primary key) and in DuckDB (PyPI, in-process);
#   - point lookups by key: pgbench with a custom script (a random key per transaction,
#     8 clients on 2 threads) against lambdaflow and PostgreSQL, in each of MODES (default
#     `prepared simple`: prepared statements, as JDBC and psycopg send them, then simple
#     queries with the key in their text, as psql, Grafana and client-side binding do),
#     alternating, ROUNDS rounds of DURATION seconds: transactions/s, p50 and p99 from
#     pgbench's per-transaction log, and the server's CPU time per transaction (user and
#     system, from /proc: serve's own; PostgreSQL's backends', which its postmaster reaps),
#     pgbench's own CPU time per transaction (the client's share of the cores, which the
#     server's answers drive), and the machine's system calls and context switches per
#     transaction (perf, installed by setup.sh bench);
#   - two analytical queries (the top 10 by total, a filtered aggregate), each run 5 times on
#     each system: the median time (psql's \timing for the servers, DuckDB's own clock).
# Prints figures only; everything on the same 2 cores.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
. scripts/bench-lib.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
keys=${KEYS:-1000000}
duration=${DURATION:-10}
rounds=${ROUNDS:-2}
export PG_PORT=${PG_PORT:-5498}
lf_pg=${LF_PG_PORT:-5497}
lf_http=${LF_HTTP_PORT:-8497}
dir=${BENCH_DIR:-$repo/.cache/bench/sql}
mkdir -p "$dir"
scripts/setup.sh bench
# LF_BIN: a binary built elsewhere (another commit, to compare), instead of this tree's.
if [ -n "${LF_BIN:-}" ]; then
  bin=$LF_BIN
else
  cargo build --release --quiet --bin lambdaflow
  bin=$CARGO_TARGET_DIR/release/lambdaflow
fi
py=$repo/.cache/venv/bin/python
"$py" -c 'import duckdb' 2>/dev/null || scripts/test-tools.sh

echo "bench-sql: lambdaflow batch over $keys events" >&2
sql_lookup_view "$bin" "$dir" "$keys" "$lf_http" "$lf_pg"
# The view's rows as CSV, for PostgreSQL and DuckDB.
python3 - "$dir/output/batch_view" "$dir/rows.csv" <<'PY'
import glob, json, os, sys
src, out = sys.argv[1], sys.argv[2]
with open(out, "w") as f:
    for p in sorted(glob.glob(os.path.join(os.path.realpath(src), "part-*.json"))):
        for line in open(p):
            r = json.loads(line)
            f.write("%s,%d\n" % (r["customer"], r["total_amount"]))
PY
"$bin" -c "$dir/lambdaflow.toml" serve > "$dir/serve.log" 2>&1 &
serve=$!
trap 'kill $serve 2>/dev/null || true; scripts/pg.sh stop' EXIT
scripts/pg.sh start
psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres postgres <<EOF
DROP TABLE IF EXISTS customer_totals;
CREATE TABLE customer_totals (customer text PRIMARY KEY, total_amount bigint);
\copy customer_totals FROM '$dir/rows.csv' WITH (FORMAT csv)
ANALYZE customer_totals;
EOF
postmaster=$(head -1 "${LAMBDAFLOW_CACHE:-$repo/.cache}/pg/run-$PG_PORT/data/postmaster.pid")
for _ in $(seq 1 600); do (exec 3<>"/dev/tcp/127.0.0.1/$lf_pg") 2>/dev/null && break; sleep 0.2; done
curl -sf "http://127.0.0.1:$lf_http/health" > /dev/null

# CPU time of a process and of its reaped children, in clock ticks: user, then system.
cpu_ticks() { awk '{print $14 + $16, $15 + $17}' "/proc/$1/stat"; }
lookups() { # LABEL PORT DB SERVER_PID MODE
  local d; d=$(mktemp -d "$dir/pgbench.XXXX")
  local out before
  before=$(cpu_ticks "$4")
  # The whole machine's system calls and context switches (perf), and pgbench's own CPU
  # time (the shell's `times` of its children): the client's share of the 2 cores.
  out=$(cd "$d" && perf stat -a -x, -o "$d/perf" -e raw_syscalls:sys_enter,context-switches \
    pgbench -n -M "$5" -c 8 -j 2 -T "$duration" -l -f "$dir/lookup.sql" \
    -h 127.0.0.1 -p "$2" -U postgres "$3" 2>&1 && times) || { echo "$out" >&2; return 1; }
  sleep 0.5 # PostgreSQL's backends end, and are reaped
  local after; after=$(cpu_ticks "$4")
  local n; n=$(echo "$out" | awk '/^number of transactions actually processed/ {print $NF}')
  local per_tx="awk -v hz=$(getconf CLK_TCK) -v n=$n"
  local cpu; cpu=$($per_tx -v a="$before" -v b="$after" 'BEGIN {
    split(a, x, " "); split(b, y, " ")
    printf "%.1f", (y[1] + y[2] - x[1] - x[2]) / hz * 1e6 / n
    printf " (user %.1f, system %.1f)", (y[1] - x[1]) / hz * 1e6 / n, (y[2] - x[2]) / hz * 1e6 / n }')
  # `times`' last line: the children's user and system time, `0m1.230s 0m4.560s`.
  local client; client=$(echo "$out" | tail -1 | $per_tx '{
    for (i = 1; i <= 2; i++) { split($i, t, /[ms]/); s += t[1] * 60 + t[2] }
    printf "%.1f", s * 1e6 / n }')
  local kernel; kernel=$($per_tx -F, '$3 ~ /sys_enter/ {s = $1} $3 ~ /context-switches/ {c = $1}
    END {printf "%.2f system calls, %.2f context switches", s / n, c / n}' "$d/perf")
  local tps; tps=$(echo "$out" | awk '/^tps = / {print int($3)}')
  local failed; failed=$(echo "$out" | awk '/number of failed transactions/ {print $5}')
  # pgbench's log: client, transaction, latency (µs), …
  local q; q=$(cat "$d"/pgbench_log.* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {printf "%.2f %.2f", a[int(NR*0.5)]/1000, a[int(NR*0.99)]/1000}')
  printf '  %-34s %8s tx/s   p50 %6s ms   p99 %6s ms   failed %s\n' \
    "$1" "$tps" "${q% *}" "${q#* }" "${failed:-0}"
  printf '  %-34s server CPU %s µs/tx, pgbench CPU %s µs/tx; per tx, machine-wide: %s\n' \
    "" "$cpu" "$client" "$kernel"
  rm -rf "$d"
}

for mode in ${MODES:-prepared simple}; do
  echo "point lookups by key, $keys keys, pgbench -M $mode -c 8 -j 2, ${duration}s per run"
  for r in $(seq 1 "$rounds"); do
    lookups "lambdaflow (round $r)" "$lf_pg" lambdaflow "$serve" "$mode"
    lookups "PostgreSQL 15 (round $r)" "$PG_PORT" postgres "$postmaster" "$mode"
  done
done

q1="SELECT customer, total_amount FROM customer_totals ORDER BY total_amount DESC LIMIT 10"
q2="SELECT count(*), sum(total_amount) FROM customer_totals WHERE total_amount > 500"
server_ms() { # PORT DB SQL: the median of 5 runs and the first, from psql's \timing
  local s=""
  for _ in 1 2 3 4 5; do s+="$3;"$'\n'; done
  local t
  t=$(psql -X -q -h 127.0.0.1 -p "$1" -U postgres "$2" -c '\timing on' -f <(echo "\\timing on"; echo "$s") 2>&1 |
    awk '/^Time:/ {print $2}')
  printf '%s (first %s)' "$(echo "$t" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')" "$(echo "$t" | head -1)"
}
duck_ms() { # SQL
  "$py" - "$dir/rows.csv" "$1" <<'PY'
import statistics, sys, time
import duckdb
con = duckdb.connect()
con.execute("CREATE TABLE customer_totals AS SELECT * FROM read_csv(?, columns={'customer': 'VARCHAR', 'total_amount': 'BIGINT'}, header=false)", [sys.argv[1]])
times = []
for _ in range(5):
    t = time.perf_counter(); con.execute(sys.argv[2]).fetchall(); times.append((time.perf_counter() - t) * 1000)
print("%.3f" % statistics.median(times))
PY
}
# lambdaflow's first scan of a view decodes its rows into Arrow blocks; the next ones share
# the blocks no change touched (here, none: the view is a batch view, and nothing flows).
echo "analytical queries, $keys rows, median of 5 and the first run (ms)"
for q in "$q1" "$q2"; do
  printf '  %s\n    lambdaflow %s   PostgreSQL %s   DuckDB %s\n' "$q" \
    "$(server_ms "$lf_pg" lambdaflow "$q")" "$(server_ms "$PG_PORT" postgres "$q")" "$(duck_ms "$q")"
done
echo "lambdaflow serve RSS: $(( $(ps -o rss= -p "$serve") / 1024 )) MB"
