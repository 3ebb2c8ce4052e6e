#!/usr/bin/env bash
# Runs the whole test suite against a real Apache Kafka broker and a real Apache Spark: starts
# a broker on 127.0.0.1:9092 (scripts/kafka.sh) and a Spark Connect server on
# sc://127.0.0.1:15002 (scripts/spark.sh) unless something already answers there, runs
# `cargo test`, and stops what it started — by PID, also when tests fail. Extra arguments go to
# `cargo test`. The browser and API-fuzzer tools are installed first (scripts/test-tools.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export KAFKA_PORT=${KAFKA_PORT:-9092}
export LAMBDAFLOW_TEST_BOOTSTRAP=${LAMBDAFLOW_TEST_BOOTSTRAP:-127.0.0.1:$KAFKA_PORT}
export SPARK_PORT=${SPARK_PORT:-15002}
export LAMBDAFLOW_TEST_SPARK=${LAMBDAFLOW_TEST_SPARK:-sc://127.0.0.1:$SPARK_PORT}
# Build outside the clone so that warm runs (and CI) reuse compiled dependencies.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lambdaflow-target}
scripts/test-tools.sh
scripts/kafka.sh run scripts/spark.sh run cargo test --all-targets "$@"
