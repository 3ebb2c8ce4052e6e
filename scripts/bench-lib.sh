# Sourced by the benchmark scripts: for those that time a speed layer, clock arithmetic and
# whether its checkpoint file covers a number of messages; for the SQL ones, the view they
# look keys up in.
now() { date +%s.%N; }
rate() { echo "scale=0; $1 / ($3 - $2)" | bc -l; }
secs() { echo "scale=2; $2 - $1" | bc -l; }
checkpointed() { # FILE N: the checkpoint covers N messages
  python3 - "$1" "$2" <<'PY'
import json, sys
try:
    cp = json.load(open(sys.argv[1]))
except Exception:
    sys.exit(1)
sys.exit(0 if sum(cp["offsets"].values()) >= int(sys.argv[2]) else 1)
PY
}

# sql_lookup_view BIN DIR KEYS HTTP_PORT PG_PORT: `customer_totals` over KEYS customers
# (k0000000, k0000001, …; their events made once in DIR), published by `BIN batch` from
# DIR/lambdaflow.toml, which serves it on the two ports; and DIR/lookup.sql, pgbench's
# script of the SQL benchmarks: a random key's lookup, its key computed from the parameter.
sql_lookup_view() {
  local bin=$1 dir=$2 keys=$3 events=$2/events-$3.json
  if [ ! -f "$events" ]; then
    python3 - "$keys" "$events" <<'PY'
import random, sys
keys, path = int(sys.argv[1]), sys.argv[2]
rnd = random.Random(26)
with open(path, "w") as f:
    f.write("".join('{"customer": "k%07d", "amount": %d}\n' % (k, rnd.randrange(1, 1000)) for k in range(keys)))
PY
  fi
  cat > "$dir/lambdaflow.toml" <<EOF
[batch]
dataset = ["$events"]
[output]
dir = "$dir/output"
[serving]
listen = "127.0.0.1:$4"
pg-listen = "127.0.0.1:$5"
EOF
  cat > "$dir/lookup.sql" <<EOF
\set k random(0, $((keys - 1)))
SELECT total_amount FROM customer_totals WHERE customer = 'k' || lpad(:k::text, 7, '0');
EOF
  rm -rf "$dir/output"
  "$bin" -c "$dir/lambdaflow.toml" batch > /dev/null
}
