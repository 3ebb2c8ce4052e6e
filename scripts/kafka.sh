#!/usr/bin/env bash
# A single-node Apache Kafka 4.x broker (KRaft mode) on loopback, for the demo, the tests and CI.
#
#   scripts/kafka.sh start    fetch the broker jars if needed, format a log dir, start, wait until ready
#   scripts/kafka.sh stop     stop the broker this script started (by its PID), and nothing else
#   scripts/kafka.sh status   say whether it runs, and where
#   scripts/kafka.sh run CMD… start a broker unless one answers, run CMD, stop the broker it
#                             started (also when CMD fails); exits with CMD's status
#
# Environment:
#   KAFKA_PORT            client listener port on 127.0.0.1 (default 9092); controller uses KAFKA_PORT+1
#   KAFKA_DATA_DIR        log dir to use; kept across stop/start (default: a fresh temporary dir,
#                         removed on stop)
#   LAMBDAFLOW_CACHE      where the fetched jars are cached (default: <repo>/.cache, git-ignored)
#   KAFKA_HEAP            JVM heap (default 512m)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
port=${KAFKA_PORT:-9092}
cport=$((port + 1))
cache=${LAMBDAFLOW_CACHE:-$repo/.cache}
libs=$cache/kafka/libs
run=$cache/kafka/run-$port
pidfile=$run/broker.pid
kafka_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$repo/scripts/kafka/pom.xml")

log() { echo "kafka.sh: $*" >&2; }

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

our_pid() {
  [ -f "$pidfile" ] || return 1
  local pid; pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

fetch() {
  if [ -f "$libs/.complete-$kafka_version" ]; then return 0; fi
  command -v mvn >/dev/null || { log "Maven (mvn) is needed to fetch the Kafka jars: apt-get install maven"; exit 1; }
  log "fetching Apache Kafka $kafka_version jars from Maven Central into $libs"
  rm -rf "$libs"; mkdir -p "$libs"
  mvn -q -B -f "$repo/scripts/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$libs" >&2
  touch "$libs/.complete-$kafka_version"
}

java_cmd=(java -Xms128m -Xmx"${KAFKA_HEAP:-512m}" -XX:+UseG1GC -Djava.awt.headless=true
  -Dlog4j2.configurationFile="$repo/scripts/kafka/log4j2.yaml" -Dkafka.logs.file="$run/server.log"
  -cp "$libs/*")

start() {
  if pid=$(our_pid); then
    log "already running (pid $pid)"; echo "127.0.0.1:$port"; return 0
  fi
  if answers; then
    log "something already answers on 127.0.0.1:$port; not starting another broker"
    echo "127.0.0.1:$port"; return 0
  fi
  command -v java >/dev/null || { log "Java 17+ is needed: apt-get install openjdk-17-jre-headless"; exit 1; }
  fetch
  mkdir -p "$run"
  local data=${KAFKA_DATA_DIR:-}
  if [ -z "$data" ]; then data=$(mktemp -d "${TMPDIR:-/tmp}/lambdaflow-kafka-XXXXXX"); echo "$data" > "$run/tmpdir"; else rm -f "$run/tmpdir"; fi
  mkdir -p "$data"
  cat > "$run/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
  if [ ! -f "$data/meta.properties" ]; then
    local cluster_id; cluster_id=$("${java_cmd[@]}" kafka.tools.StorageTool random-uuid)
    "${java_cmd[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$run/server.properties" >/dev/null
  fi
  : > "$run/server.log"
  nohup "${java_cmd[@]}" kafka.Kafka "$run/server.properties" > "$run/stdout.log" 2>&1 &
  echo $! > "$pidfile"
  local pid; pid=$(cat "$pidfile")
  for _ in $(seq 1 120); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "broker exited during start-up; last lines of $run/server.log:"; tail -20 "$run/server.log" "$run/stdout.log" >&2
      rm -f "$pidfile"; exit 1
    fi
    if answers && grep -q "Kafka Server started" "$run/server.log" 2>/dev/null; then
      log "Apache Kafka $kafka_version started (pid $pid, log dir $data, log $run/server.log)"
      echo "127.0.0.1:$port"; return 0
    fi
    sleep 0.5
  done
  log "broker did not become ready within 60 s; see $run/server.log"; exit 1
}

stop() {
  local pid
  if ! pid=$(our_pid); then log "no broker started by this script on port $port"; rm -f "$pidfile"; return 0; fi
  kill "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then log "broker $pid did not stop in 30 s; killing it"; kill -9 "$pid" || true; fi
  rm -f "$pidfile"
  if [ -f "$run/tmpdir" ]; then rm -rf "$(cat "$run/tmpdir")"; rm -f "$run/tmpdir"; fi
  log "stopped broker (pid $pid)"
}

status() {
  if pid=$(our_pid); then echo "running: pid $pid on 127.0.0.1:$port"; return 0; fi
  if answers; then echo "something else answers on 127.0.0.1:$port"; return 0; fi
  echo "not running on 127.0.0.1:$port"; return 3
}

run_with() {
  local started=0 rc=0
  if ! answers; then start >/dev/null; started=1; fi
  "$@" || rc=$?
  if [ "$started" = 1 ]; then stop || true; fi
  return "$rc"
}

case "${1:-}" in
  run) shift; run_with "$@" ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  fetch) fetch ;;
  *) echo "usage: $0 start|stop|status|fetch" >&2; exit 2 ;;
esac
