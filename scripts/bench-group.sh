#!/usr/bin/env bash
# The speed layer as a consumer group (scripts/bench_group.py): events/s with 1, 2 and 3
# `lambdaflow speed --consumer-group` instances on a 6-partition topic pre-loaded with EVENTS
# (default 3,000,000) events, alternating rounds (ROUNDS, default 3), medians; then the time
# for a stopped instance's partitions to be served again by a `serve` replica, after kill -9
# and after SIGTERM, with a 6 s session timeout (SESSION_MS), while RATE (2,000) events/s flow.
# Needs the data file scripts/bench-batch.sh generates. Starts Kafka if none answers.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
n=${EVENTS:-3000000}
source scripts/bench-env.sh
data=$(mktemp); trap 'rm -f "$data"' EXIT
head -n "$n" "$src" > "$data"
scripts/kafka.sh run python3 scripts/bench_group.py --bin "$bin" --bootstrap "127.0.0.1:$KAFKA_PORT" \
  --data "$data" --events "$n" --rounds "${ROUNDS:-3}" --rate "${RATE:-2000}" \
  --session-ms "${SESSION_MS:-6000}" --only "${ONLY_PARTS:-throughput move}"
