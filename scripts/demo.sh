#!/usr/bin/env bash
# The seed workshop end to end: builds lambdaflow, starts a local Apache Kafka broker if none
# answers on 127.0.0.1:${KAFKA_PORT:-9092}, runs `lambdaflow demo`, and stops what it started.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export KAFKA_PORT=${KAFKA_PORT:-9092}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lambdaflow-target}
cargo build --release --quiet
started=0
if ! scripts/kafka.sh status >/dev/null 2>&1; then
  scripts/kafka.sh start >/dev/null
  started=1
fi
stop() { if [ "$started" = 1 ]; then scripts/kafka.sh stop || true; fi; }
trap stop EXIT
"$CARGO_TARGET_DIR/release/lambdaflow" --bootstrap-servers "127.0.0.1:$KAFKA_PORT" demo "$@"
