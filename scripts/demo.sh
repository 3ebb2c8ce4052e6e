#!/usr/bin/env bash
# The seed workshop end to end: installs what the machine lacks (scripts/setup.sh), builds
# lambdaflow, starts a local Apache Kafka broker if none answers on 127.0.0.1:${KAFKA_PORT:-9092},
# runs `lambdaflow demo`, and stops what it started. Arguments go to `lambdaflow demo`.
#
# It builds the `dev` profile, the build `scripts/test.sh` and `cargo run` use too (unoptimised,
# see Cargo.toml), into $CARGO_TARGET_DIR (default: target/).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export KAFKA_PORT=${KAFKA_PORT:-9092}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
# The tables on stdout tell the story; only warnings on stderr (LAMBDAFLOW_LOG=info for more).
export LAMBDAFLOW_LOG=${LAMBDAFLOW_LOG:-warn}
say() { echo "demo: $*" >&2; }

scripts/setup.sh demo
if [ ! -x "$CARGO_TARGET_DIR/debug/lambdaflow" ]; then
  say "building lambdaflow (the first build compiles every dependency once; later ones take seconds)"
fi
start=$(date +%s)
cargo build --bin lambdaflow
say "built in $(($(date +%s) - start)) s; starting Apache Kafka and the demo"
scripts/kafka.sh run "$CARGO_TARGET_DIR/debug/lambdaflow" --bootstrap-servers "127.0.0.1:$KAFKA_PORT" demo "$@"
