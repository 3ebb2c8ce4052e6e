#!/usr/bin/env bash
# A soak longer than CI's tests (default 10 minutes): a 3-broker cluster of its own
# (KAFKA_NODES=3 on SOAK_KAFKA_PORT, default 29092), `lambdaflow run` with read-committed
# serving, a random stream (1% malformed) from an independent client (confluent-kafka, in the
# git-ignored .cache/venv), the speed layer and brokers killed with SIGKILL at random and
# restarted. Prints events produced, consumed, dead-lettered, served and the differences; exits
# 1 unless every difference is zero. MINUTES, RATE (events/s) and SEED are settable.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
export KAFKA_NODES=3 KAFKA_PORT=${SOAK_KAFKA_PORT:-29092}
cargo build --release --quiet
bin=$CARGO_TARGET_DIR/release/lambdaflow
[ -x .cache/venv/bin/python ] || python3 -m venv .cache/venv
.cache/venv/bin/python -c 'import confluent_kafka' 2>/dev/null || .cache/venv/bin/pip install -q confluent-kafka
work=$(mktemp -d)
export KAFKA_DATA_DIR=$work/kafka
trap 'scripts/kafka.sh stop || true; rm -rf "$work"' EXIT
bootstrap=$(scripts/kafka.sh start)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cp datasets/transactions.json "$work/history.json"
cat > "$work/lambdaflow.toml" <<TOML
[kafka]
bootstrap-servers = "$bootstrap"
topic = "soak-$(date +%s)"
[batch]
dataset = ["$work/history.json"]
interval = "1m"
[output]
dir = "$work/out"
[serving]
listen = "127.0.0.1:$port"
isolation = "read-committed"
TOML
.cache/venv/bin/python scripts/soak.py --bin "$bin" --config "$work/lambdaflow.toml" \
  --url "http://127.0.0.1:$port" --bootstrap "$bootstrap" \
  --topic "$(sed -n 's/^topic = "\(.*\)"/\1/p' "$work/lambdaflow.toml")" \
  --kafka-sh "$repo/scripts/kafka.sh" --dead-letters "$work/out/dead_letter.jsonl" \
  --minutes "${MINUTES:-10}" --rate "${RATE:-2000}" --seed "${SEED:-1}"
