#!/usr/bin/env bash
# Every figure in BENCHMARKS.md, in one command: the benchmark scripts one after the other, on the
# release build, each with its anchors measured in the same run (see each script's header).
#
#   bench-batch.sh     lambdaflow batch vs DuckDB, DataFusion-python, the workshop's PySpark job
#                      and the Spark engine: 1M and 10M events, alternating rounds, medians
#   bench-archive.sh   lambdaflow batch over 10M events in the Delta table vs DuckDB on its files
#   bench-latency.sh   produce-to-visible latency vs the workshop's Spark Structured Streaming job
#   bench-throughput.sh speed-layer events/s from a pre-loaded topic vs the same Spark job
#   bench-speed.sh     speed-layer throughput, Lambda vs Kappa recompute, latency, compact
#   bench-group.sh     the speed layer as a consumer group: 1-3 instances, partition moves
#   bench-serving.sh   serving at 10,000 and 1,000,000 keys (requests/s, memory)
#   bench-isolation.sh what read-committed serving costs in latency
#   bench-time.sh      windowed views: throughput against the plain view and Spark's window(),
#                      latency, emit=final, time-range reads, memory under retention
#   bench-s3.sh        the output root on the local disk against the same on s3proxy
#   bench-sql.sh       SQL over the PostgreSQL protocol against PostgreSQL 15 and DuckDB
#   bench-sql-cpu.sh   the instructions serve spends per prepared lookup (callgrind)
#
# ONLY="batch latency" runs a subset. Output goes to the terminal and to .cache/bench/bench.log.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
mkdir -p .cache/bench
parts=${ONLY:-batch archive latency throughput speed group serving isolation time s3 sql sql-cpu}
{
  echo "# scripts/bench.sh, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, commit $(git rev-parse --short HEAD)"
  for part in $parts; do
    echo; echo "## scripts/bench-$part.sh"
    "scripts/bench-$part.sh"
  done
} 2>&1 | tee .cache/bench/bench.log
