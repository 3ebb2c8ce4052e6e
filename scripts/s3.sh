#!/usr/bin/env bash
# An S3-compatible server on loopback for the tests, the benchmarks and CI: s3proxy (Apache-2.0,
# Java 17) on its filesystem backend, so objects survive a stop and a start as a bucket does.
# Its create-only put (`If-None-Match: *`) is atomic since 4.0: the conditional put Delta
# Lake's commit protocol relies on.
#
#   scripts/s3.sh start        fetch s3proxy if needed, start it, create the bucket, wait until
#                              it answers; prints the endpoint and the AWS_* variables a client
#                              needs, as `export` lines (`eval "$(scripts/s3.sh start)"`)
#   scripts/s3.sh stop         stop the server this script started (by its PID), and nothing else
#   scripts/s3.sh status       say whether it runs, and where
#   scripts/s3.sh env          print the export lines again
#   scripts/s3.sh fetch        fetch the jar into the cache, and nothing else
#   scripts/s3.sh run CMD…     start unless something answers, run CMD with the AWS_* variables
#                              set, stop what it started (also when CMD fails); CMD's status
#
# Environment:
#   S3_PORT          port on 127.0.0.1 (default 9000)
#   S3_BUCKET        the bucket created at start (default lambdaflow)
#   S3_DATA_DIR      where the objects live; kept across stop/start (default: a fresh temporary
#                    dir, removed on stop)
#   LAMBDAFLOW_CACHE where the jar is cached (default: <repo>/.cache, git-ignored)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
port=${S3_PORT:-9000}
bucket=${S3_BUCKET:-lambdaflow}
cache=${LAMBDAFLOW_CACHE:-$repo/.cache}
version=4.1.0
jar=$cache/s3proxy/s3proxy-$version-jar-with-dependencies.jar
url=https://repo1.maven.org/maven2/org/gaul/s3proxy/$version/s3proxy-$version-jar-with-dependencies.jar
run=$cache/s3proxy/run-$port
pidfile=$run/s3proxy.pid
# Credentials of this loopback server only: s3proxy checks AWS signatures (v2 and v4) against them.
key_id=lambdaflow-test
secret=lambdaflow-test-secret

log() { echo "s3.sh: $*" >&2; }
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }
server_pid() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && cat "$pidfile"; }

env_lines() {
  cat <<ENV
export AWS_ENDPOINT_URL=http://127.0.0.1:$port
export AWS_ACCESS_KEY_ID=$key_id
export AWS_SECRET_ACCESS_KEY=$secret
export AWS_REGION=us-east-1
export AWS_ALLOW_HTTP=true
export S3_BUCKET=$bucket
ENV
}

fetch() {
  [ -f "$jar" ] && return 0
  command -v curl >/dev/null || { log "curl is needed: apt-get install curl"; exit 1; }
  mkdir -p "$(dirname "$jar")"
  log "fetching s3proxy $version from Maven Central into $(dirname "$jar") (55 MB, once)"
  curl -fsSL --retry 3 -o "$jar.part" "$url"
  local want; want=$(curl -fsSL --retry 3 "$url.sha1" | cut -c1-40)
  [ "$(sha1sum "$jar.part" | cut -c1-40)" = "$want" ] || { rm -f "$jar.part"; log "checksum mismatch for $url"; exit 1; }
  mv "$jar.part" "$jar"
}

start() {
  if pid=$(server_pid); then log "already running (pid $pid)"; env_lines; return 0; fi
  if answers; then log "something already answers on 127.0.0.1:$port; not starting another server"; env_lines; return 0; fi
  command -v java >/dev/null || { log "Java 17+ is needed: apt-get install openjdk-17-jre-headless"; exit 1; }
  fetch
  mkdir -p "$run"
  local data=${S3_DATA_DIR:-}
  if [ -z "$data" ]; then
    if [ -f "$run/tmpdir" ]; then data=$(cat "$run/tmpdir"); else data=$(mktemp -d); echo "$data" > "$run/tmpdir"; fi
  fi
  mkdir -p "$data/$bucket"
  cat > "$run/s3proxy.conf" <<CONF
s3proxy.endpoint=http://127.0.0.1:$port
s3proxy.authorization=aws-v2-or-v4
s3proxy.identity=$key_id
s3proxy.credential=$secret
jclouds.provider=filesystem
jclouds.filesystem.basedir=$data
CONF
  nohup java -Xmx${S3_HEAP:-512m} -jar "$jar" --properties "$run/s3proxy.conf" > "$run/server.log" 2>&1 &
  echo $! > "$pidfile"
  for _ in $(seq 1 240); do
    if curl -s -o /dev/null "http://127.0.0.1:$port/"; then
      log "s3proxy $version (pid $(cat "$pidfile")) on http://127.0.0.1:$port, bucket $bucket, objects in $data"
      env_lines; return 0
    fi
    kill -0 "$(cat "$pidfile")" 2>/dev/null || { log "s3proxy exited; see $run/server.log"; tail -20 "$run/server.log" >&2; exit 1; }
    sleep 0.25
  done
  log "s3proxy did not answer within 60 s; see $run/server.log"; stop; exit 1
}

stop() {
  local pid
  if ! pid=$(server_pid); then log "no server started by this script on port $port"; rm -f "$pidfile"
  else
    kill "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then log "s3proxy ($pid) did not stop in 30 s; killing it"; kill -9 "$pid" || true; fi
    rm -f "$pidfile"; log "stopped s3proxy (pid $pid)"
  fi
  # A temporary data dir goes with the server unless S3_KEEP is set (a restart in a fault test).
  if [ -z "${S3_KEEP:-}" ] && [ -f "$run/tmpdir" ]; then rm -rf "$(cat "$run/tmpdir")"; rm -f "$run/tmpdir"; fi
}

status() {
  if pid=$(server_pid); then echo "s3proxy running: pid $pid on http://127.0.0.1:$port"
  elif answers; then echo "something else answers on 127.0.0.1:$port"
  else echo "s3proxy not running on 127.0.0.1:$port"; return 3; fi
}

run_with() {
  local started=0 rc=0
  if ! answers; then start >/dev/null; started=1; fi
  eval "$(env_lines)"
  "$@" || rc=$?
  if [ "$started" = 1 ]; then stop || true; fi
  return "$rc"
}

case "${1:-}" in
  run) shift; run_with "$@" ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) env_lines ;;
  fetch) fetch ;;
  *) echo "usage: $0 start|stop|status|env|fetch|run CMD…" >&2; exit 2 ;;
esac
