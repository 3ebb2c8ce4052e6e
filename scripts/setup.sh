#!/usr/bin/env bash
# Installs what a fresh machine lacks to build and run lambdaflow, and says what it does.
#
#   scripts/setup.sh demo   what `scripts/demo.sh` needs: a Rust toolchain (checked, not
#                           installed), a C compiler, perl and make (librdkafka is built from
#                           source), protoc (the Spark Connect client's protocol types are
#                           generated at build time), Java 17 and Maven (the Kafka broker)
#   scripts/setup.sh test   the same, plus what `scripts/test.sh` drives: Python 3 with venv (Spark
#                           Connect from the pyspark wheel, schemathesis, duckdb), Node.js with npm
#                           (playwright-core), Debian's Chromium (the browser test) and psql
#                           (the PostgreSQL-protocol tests)
#   scripts/setup.sh bench  the same as test, plus wrk (the HTTP load of the benchmark scripts),
#                           PostgreSQL with pgbench (the SQL benchmark's anchor) and valgrind
#
# Debian packages come from apt-get (as root, or through sudo); nothing else is downloaded here.
# On a machine without apt-get it names what is missing and exits 1. Quiet when nothing is
# missing, so the demo and the tests print only their own story.
set -euo pipefail

what=${1:-demo}
case "$what" in demo|test|bench) ;; *) echo "usage: scripts/setup.sh demo|test|bench" >&2; exit 2 ;; esac

log() { echo "setup: $*" >&2; }

if ! command -v cargo >/dev/null; then
  log "cargo is missing: install Rust (https://rustup.rs), then run this again"
  exit 1
fi

need=() why=()
want() { # PACKAGE WHY: the Debian package to install, and what it is for
  need+=("$1")
  why+=("$1 ($2)")
}
command -v cc >/dev/null || want build-essential "a C compiler for librdkafka and zstd"
command -v make >/dev/null || want make "librdkafka's build"
command -v perl >/dev/null || want perl "librdkafka's configure"
command -v protoc >/dev/null || want protobuf-compiler "protoc, for the Spark Connect protocol types"
command -v java >/dev/null || want openjdk-17-jre-headless "Java, to run Apache Kafka"
command -v mvn >/dev/null || want maven "Maven, to fetch the Kafka jars from Maven Central"
command -v curl >/dev/null || want curl "the scripts' readiness checks"
if [ "$what" != demo ]; then
  python3 -c 'import venv, ensurepip' 2>/dev/null || want python3-venv "venvs for pyspark, schemathesis, duckdb"
  command -v npm >/dev/null || want npm "playwright-core for the browser test"
  [ -x "${CHROMIUM:-/usr/bin/chromium}" ] || want chromium "the browser test's headless Chromium"
  command -v psql >/dev/null || want postgresql-client "psql, the SQL tests' PostgreSQL client"
fi
if [ "$what" = bench ]; then
  command -v wrk >/dev/null || want wrk "the HTTP load of the serving benchmarks"
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || want postgresql "PostgreSQL and pgbench, the anchor of the SQL benchmark"
  command -v valgrind >/dev/null || want valgrind "callgrind, the instruction counts of bench-sql-cpu.sh"
  command -v perf >/dev/null || want linux-perf "perf, the system calls and context switches of bench-sql.sh"
fi

[ ${#need[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
  log "missing: ${why[*]}"
  log "install them with your package manager, then run this again"
  exit 1
fi
sudo_cmd=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { log "missing: ${why[*]}; run as root or install sudo"; exit 1; }
  sudo_cmd=(sudo)
fi
for w in "${why[@]}"; do log "installing $w"; done
start=$(date +%s)
# apt's own output only when it fails (it chatters on stderr even when all goes well).
apt_log=$(mktemp)
trap 'rm -f "$apt_log"' EXIT
if ! { "${sudo_cmd[@]}" apt-get update -qq &&
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${need[@]}"; } > "$apt_log" 2>&1; then
  cat "$apt_log" >&2
  log "apt-get could not install ${need[*]} (its output above)"
  exit 1
fi
log "installed ${need[*]} in $(($(date +%s) - start)) s"
