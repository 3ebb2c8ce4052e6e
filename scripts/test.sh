#!/usr/bin/env bash
# Runs the whole test suite against a real Apache Kafka broker, a real Apache Spark and a real
# S3 server: installs what the machine lacks (scripts/setup.sh test) and the test tools
# (scripts/test-tools.sh), fetches Kafka's jars, pyspark and s3proxy once (into .cache/), starts
# a broker on 127.0.0.1:9092 (scripts/kafka.sh), a Spark Connect server on sc://127.0.0.1:15002
# (scripts/spark.sh, reading s3a:// from that s3proxy) and s3proxy on 127.0.0.1:9000
# (scripts/s3.sh, which passes the AWS_* variables on) unless something already answers there,
# runs `cargo test --all-targets`, and stops what it started — by PID, also when tests fail. Arguments go to `cargo test`
# (`scripts/test.sh lambda::` runs one module). KAFKA_PORT, SPARK_PORT and S3_PORT move them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export KAFKA_PORT=${KAFKA_PORT:-9092}
export LAMBDAFLOW_TEST_BOOTSTRAP=${LAMBDAFLOW_TEST_BOOTSTRAP:-127.0.0.1:$KAFKA_PORT}
export SPARK_PORT=${SPARK_PORT:-15002}
export LAMBDAFLOW_TEST_SPARK=${LAMBDAFLOW_TEST_SPARK:-sc://127.0.0.1:$SPARK_PORT}
# The demo's dependencies, and the lint's build of this crate (scripts/build-env.sh).
. scripts/build-env.sh
say() { echo "test: $*" >&2; }

scripts/setup.sh test
scripts/test-tools.sh
scripts/kafka.sh fetch
scripts/spark.sh install
scripts/spark.sh s3a-jars >/dev/null
scripts/s3.sh fetch
say "building the tests (the first build compiles every dependency once)"
start=$(date +%s)
cargo test --all-targets --no-run
say "built in $(($(date +%s) - start)) s; starting Apache Kafka, s3proxy and Spark Connect, then the tests"
# s3proxy first: Spark reads s3a:// from the endpoint it exports.
scripts/kafka.sh run scripts/s3.sh run scripts/spark.sh run cargo test --all-targets "$@"
