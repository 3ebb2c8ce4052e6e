# Sourced by scripts/lint.sh and scripts/test.sh, so that the lints, the docs and the tests share
# one build of the dependencies.
#
# clippy lints lambdaflow's own crate while the tests build: clippy-driver is the compiler of the
# workspace's crates (RUSTC_WORKSPACE_WRAPPER), not `cargo clippy`, whose check-only build of
# every dependency the tests cannot reuse (BENCHMARKS.md, "Build and set-up"). (`cargo doc` still
# checks the dependencies on its own: rustdoc wants check-only artifacts, which a build does not
# make.) With LAMBDAFLOW_DENY_WARNINGS=1 (scripts/lint.sh, and CI) a warning
# is an error: clippy-driver records CLIPPY_ARGS, so switching rebuilds this crate alone.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
if clippy=$(command -v clippy-driver); then
  export RUSTC_WORKSPACE_WRAPPER=$clippy
else
  echo "build-env: clippy-driver not found (rustup component add clippy): building without lints" >&2
fi
if [ "${LAMBDAFLOW_DENY_WARNINGS:-}" = 1 ] || [ "${CI:-}" = true ]; then
  export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
fi
