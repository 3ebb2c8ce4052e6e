#!/usr/bin/env bash
# The code's habits, as CI checks them, warnings denied: formatting, the layer boundaries
# (scripts/check-layers.sh), clippy on every target (while the tests build: see
# scripts/build-env.sh) and the API docs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export LAMBDAFLOW_DENY_WARNINGS=1
. scripts/build-env.sh
step() { echo "lint: $*" >&2; }
scripts/setup.sh demo
step "cargo fmt --check"
cargo fmt --check
step "scripts/check-layers.sh"
scripts/check-layers.sh
step "clippy on every target, warnings denied (builds the tests)"
start=$(date +%s)
cargo test --all-targets --no-run
step "built and linted in $(($(date +%s) - start)) s; cargo doc, warnings denied"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
step "all clean"
