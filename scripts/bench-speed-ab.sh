#!/usr/bin/env bash
# A/B of the speed layer: two lambdaflow binaries (say, the release before a change and after)
# consume the same pre-loaded 2-partition topic, alternating, RUNS times each; each run is timed
# from process start until its checkpoint covers all N events (archive included), on a fresh
# output directory. Prints every run and the medians and their ratio.
#   scripts/bench-speed-ab.sh OLD_BINARY NEW_BINARY [EVENTS_FILE]
# EVENTS_FILE defaults to the 10M-event file scripts/bench-batch.sh generates; N (default 1M)
# lines of it are used. Starts Kafka if none answers.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ $# -ge 2 ] || { sed -n 2,7p "$0" >&2; exit 2; }
old=$(realpath "$1"); new=$(realpath "$2")
src=${3:-${BENCH_DIR:-$repo/.cache/bench}/events-10000000.json}
n=${EVENTS:-1000000}; runs=${RUNS:-3}
export KAFKA_PORT=${KAFKA_PORT:-9092}
[ -f "$src" ] || { echo "no events file $src (scripts/bench-batch.sh generates one)" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
bootstrap=127.0.0.1:$KAFKA_PORT
if ! "$new" --bootstrap-servers "$bootstrap" topic list >/dev/null 2>&1; then
  "$repo/scripts/kafka.sh" start >/dev/null
  trap '"$repo/scripts/kafka.sh" stop >/dev/null; rm -rf "$work"' EXIT
fi
topic=ab-$$-$(date +%s)
head -n "$n" "$src" > "$work/events.json"
lf=("$new" --bootstrap-servers "$bootstrap" --topic "$topic" --output-dir "$work/p")
"${lf[@]}" topic create --partitions 2 >/dev/null
"${lf[@]}" produce --file "$work/events.json" >/dev/null
covered() { python3 - "$1" "$n" <<'PY'
import json, sys
try:
    cp = json.load(open(sys.argv[1]))
except Exception:
    sys.exit(1)
sys.exit(0 if sum(cp["offsets"].values()) >= int(sys.argv[2]) else 1)
PY
}
declare -A times
for r in $(seq "$runs"); do
  for side in old new; do
    bin=$old; [ "$side" = new ] && bin=$new
    out=$work/$side-$r
    s=$(date +%s.%N)
    "$bin" --bootstrap-servers "$bootstrap" --topic "$topic" --output-dir "$out" speed --quiet \
      >/dev/null 2>"$out.log" & pid=$!
    until covered "$out/_speed/checkpoint.json"; do
      kill -0 "$pid" 2>/dev/null || { echo "$side exited early:" >&2; tail -5 "$out.log" >&2; exit 1; }
      sleep 0.05
    done
    e=$(date +%s.%N); kill -TERM "$pid"; wait "$pid" || true
    t=$(echo "$e - $s" | bc -l); times[$side]+="$t "
    printf '%s run %d: %.2f s, %d events/s\n' "$side" "$r" "$t" "$(echo "$n / $t" | bc)"
  done
done
python3 - "${times[old]}" "${times[new]}" "$n" <<'PY'
import statistics, sys
old, new = (statistics.median(map(float, a.split())) for a in sys.argv[1:3])
n = int(sys.argv[3])
print(f"median: old {old:.2f} s ({n/old:,.0f} events/s), new {new:.2f} s ({n/new:,.0f} events/s), new/old speed {old/new:.2f}x")
PY
