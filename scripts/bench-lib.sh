# Sourced by the benchmark scripts that time a speed layer: clock arithmetic, and whether its
# checkpoint file covers a number of messages.
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
