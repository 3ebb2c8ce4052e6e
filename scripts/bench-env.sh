# Sourced by the benchmark scripts that read the generated events and run lambdaflow against a
# broker: the broker's port, the build directory, the data file scripts/bench-batch.sh
# generates ($src), and the binary to measure ($bin: LAMBDAFLOW_BIN, else the release build).
# Expects $repo (the checkout) and the caller's `set -euo pipefail`.
export KAFKA_PORT=${KAFKA_PORT:-9092}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
src=${BENCH_DIR:-$repo/.cache/bench}/events-10000000.json
[ -f "$src" ] || { echo "run scripts/bench-batch.sh first (it generates $src)" >&2; exit 1; }
if [ -n "${LAMBDAFLOW_BIN:-}" ]; then
  bin=$LAMBDAFLOW_BIN
else
  cargo build --release --quiet
  bin=$CARGO_TARGET_DIR/release/lambdaflow
fi
