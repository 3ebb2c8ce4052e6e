#!/usr/bin/env bash
# A PostgreSQL server on loopback, the anchor of the SQL benchmarks (scripts/bench-sql.sh):
# Debian's PostgreSQL 15 (`postgresql-15`, installed by `scripts/setup.sh bench`) in a data
# directory of its own, run as the `postgres` system user (PostgreSQL refuses root), stopped by
# its PID.
#
#   scripts/pg.sh start      initdb if needed, start, wait until it answers
#   scripts/pg.sh stop       stop the server this script started, and nothing else
#   scripts/pg.sh run CMD…   start, run CMD with PGHOST/PGPORT/PGUSER set, stop (also when CMD
#                            fails); CMD's status
#
# Environment: PG_PORT (default 5432); LAMBDAFLOW_CACHE (default <repo>/.cache): the data
# directory is $LAMBDAFLOW_CACHE/pg/run-$PG_PORT, removed on stop.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
port=${PG_PORT:-5432}
cache=${LAMBDAFLOW_CACHE:-$repo/.cache}
run=$cache/pg/run-$port
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)

log() { echo "pg.sh: $*" >&2; }
[ -n "$bin" ] || { log "PostgreSQL's server is missing: scripts/setup.sh bench installs postgresql-15"; exit 1; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
server_pid() { [ -f "$run/data/postmaster.pid" ] && head -1 "$run/data/postmaster.pid"; }

start() {
  mkdir -p "$run"
  [ "$(id -u)" = 0 ] && chown postgres "$run"
  if [ ! -f "$run/data/PG_VERSION" ]; then
    as_pg "$bin/initdb" -D "$run/data" -U postgres -A trust --no-sync > "$run/initdb.log" 2>&1 ||
      { cat "$run/initdb.log" >&2; exit 1; }
  fi
  as_pg "$bin/pg_ctl" -D "$run/data" -l "$run/server.log" -w -t 60 \
    -o "-p $port -k $run -h 127.0.0.1 -c fsync=off -c shared_buffers=1GB -c max_connections=100" start > /dev/null
  log "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') ready on 127.0.0.1:$port (pid $(server_pid), data $run/data)"
}

stop() {
  local pid; pid=$(server_pid || true)
  [ -n "$pid" ] || { log "no server of this script on port $port"; return 0; }
  as_pg "$bin/pg_ctl" -D "$run/data" -m fast -w stop > /dev/null
  rm -rf "$run"
  log "stopped PostgreSQL (pid $pid)"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  run)
    shift
    start
    trap stop EXIT
    PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres "$@"
    ;;
  *) echo "usage: scripts/pg.sh start|stop|run CMD…" >&2; exit 2 ;;
esac
