#!/usr/bin/env bash
# The user-space instructions `lambdaflow serve` spends on one prepared point lookup over the
# PostgreSQL protocol, counted by valgrind's callgrind: the same count for the same binary and
# inputs whatever else the machine does, where bench-sql.sh's rates share 2 noisy cores with
# pgbench. Usage: scripts/bench-sql-cpu.sh [BIN ...] (default: this tree's release build);
# several binaries (builds of two commits) are measured one after the other.
#   - a view of KEYS keys (default 1,000) published by `lambdaflow batch`, as bench-sql.sh's;
#   - `serve` under callgrind, then pgbench's lookup script of bench-sql.sh (a random key
#     per transaction, `-M prepared -c 8 -j 2`), FEW then MANY transactions (default 4,000
#     and 24,000): (instructions after MANY - after FEW) / (MANY - FEW) is a lookup's cost,
#     without the start-up's.
# Prints figures only. The kernel's share (the loopback send and receive, the context
# switches) is not counted: bench-sql.sh's CPU per lookup has it.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
. scripts/bench-lib.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
keys=${KEYS:-1000}
few=${FEW:-4000}
many=${MANY:-24000}
port=${LF_PG_PORT:-5495}
dir=${BENCH_DIR:-$repo/.cache/bench/sql-cpu}
mkdir -p "$dir"
scripts/setup.sh bench
bins=("$@")
if [ ${#bins[@]} -eq 0 ]; then
  cargo build --release --quiet --bin lambdaflow
  bins=("$CARGO_TARGET_DIR/release/lambdaflow")
fi

sql_lookup_view "${bins[0]}" "$dir" "$keys" 0 "$port"

serve=""
trap '[ -n "$serve" ] && kill "$serve" 2>/dev/null || true' EXIT
instructions() { # BIN TRANSACTIONS: callgrind's total for start-up and the lookups
  local out; out=$(mktemp "$dir/callgrind.XXXX")
  valgrind --tool=callgrind --callgrind-out-file="$out" "$1" -c "$dir/lambdaflow.toml" serve \
    > "$dir/serve.log" 2>&1 &
  serve=$!
  for _ in $(seq 1 1200); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.25; done
  pgbench -n -M prepared -c 8 -j 2 -t $(($2 / 8)) -f "$dir/lookup.sql" \
    -h 127.0.0.1 -p "$port" -U postgres lambdaflow > "$dir/pgbench.log" 2>&1 ||
    { cat "$dir/pgbench.log" >&2; return 1; }
  kill -TERM "$serve"; wait "$serve" 2>/dev/null || true; serve=""
  awk '/^(summary|totals):/ {print $2; exit}' "$out"
  rm -f "$out"
}
echo "instructions per prepared lookup (user space, callgrind), $keys keys, $few and $many lookups"
for bin in "${bins[@]}"; do
  a=$(instructions "$bin" "$few")
  b=$(instructions "$bin" "$many")
  printf '  %-50s %8d instructions/lookup\n' "$bin" $(((b - a) / (many - few)))
done
