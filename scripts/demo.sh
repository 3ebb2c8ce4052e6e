#!/usr/bin/env bash
# The seed workshop end to end: builds lambdaflow, starts a local Apache Kafka broker if none
# answers on 127.0.0.1:${KAFKA_PORT:-9092}, runs `lambdaflow demo`, and stops what it started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export KAFKA_PORT=${KAFKA_PORT:-9092}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lambdaflow-target}
# The tables on stdout tell the story; only warnings on stderr (LAMBDAFLOW_LOG=info for more).
export LAMBDAFLOW_LOG=${LAMBDAFLOW_LOG:-warn}
cargo build --release --quiet
scripts/kafka.sh run "$CARGO_TARGET_DIR/release/lambdaflow" --bootstrap-servers "127.0.0.1:$KAFKA_PORT" demo "$@"
