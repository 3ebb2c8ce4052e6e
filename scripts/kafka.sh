#!/usr/bin/env bash
# Apache Kafka 4.x (KRaft mode) on loopback, for the demo, the tests and CI: one broker by
# default, or a 3-broker cluster (KAFKA_NODES=3) for the failover tests.
#
#   scripts/kafka.sh start          fetch the jars if needed, format the log dirs, start every node, wait until ready
#   scripts/kafka.sh stop           stop the nodes this script started (by their PIDs), and nothing else
#   scripts/kafka.sh status         say which nodes run, and where
#   scripts/kafka.sh run CMD…       start unless something answers, run CMD, stop what it started
#                                   (also when CMD fails); exits with CMD's status
#   scripts/kafka.sh kill-node N    kill -9 node N (1-based): a crash, for failover tests
#   scripts/kafka.sh start-node N   start node N again on its log dir and wait until it is ready
#
# A cluster (KAFKA_NODES=3): every node is a broker and a controller (a controller quorum of
# 3, which survives one node down); topics default to replication factor 3 and
# min.insync.replicas=2, so an `acks=all` write is on two brokers before it is acknowledged.
# Node N (1-based) listens for clients on KAFKA_PORT+2(N-1) and for controllers on the port after.
#
# Environment:
#   KAFKA_PORT            client port of node 1 on 127.0.0.1 (default 9092)
#   KAFKA_NODES           1 (default) or 3
#   KAFKA_DATA_DIR        log dirs go here (node-N/ when KAFKA_NODES > 1); kept across stop/start
#                         (default: a fresh temporary dir, removed on stop)
#   LAMBDAFLOW_CACHE      where the fetched jars are cached (default: <repo>/.cache, git-ignored)
#   KAFKA_HEAP            JVM heap per node (default 512m)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
port=${KAFKA_PORT:-9092}
nodes=${KAFKA_NODES:-1}
case "$nodes" in 1|3) ;; *) echo "kafka.sh: KAFKA_NODES must be 1 or 3 (got $nodes)" >&2; exit 2 ;; esac
cache=${LAMBDAFLOW_CACHE:-$repo/.cache}
libs=$cache/kafka/libs
run=$cache/kafka/run-$port
kafka_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$repo/scripts/kafka/pom.xml")

log() { echo "kafka.sh: $*" >&2; }

client_port() { echo $((port + 2 * ($1 - 1))); }
controller_port() { echo $((port + 2 * ($1 - 1) + 1)); }
node_dir() { if [ "$nodes" = 1 ]; then echo "$run"; else echo "$run/node-$1"; fi; }
pidfile() { echo "$(node_dir "$1")/broker.pid"; }
bootstrap() {
  local list="" n
  for n in $(seq 1 "$nodes"); do list="$list${list:+,}127.0.0.1:$(client_port "$n")"; done
  echo "$list"
}

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$(client_port "${1:-1}")") 2>/dev/null; }

node_pid() {
  local f; f=$(pidfile "$1")
  [ -f "$f" ] || return 1
  local pid; pid=$(cat "$f")
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

fetch() {
  if [ -f "$libs/.complete-$kafka_version" ]; then return 0; fi
  command -v mvn >/dev/null || { log "Maven (mvn) is needed to fetch the Kafka jars: apt-get install maven"; exit 1; }
  log "fetching Apache Kafka $kafka_version jars from Maven Central into $libs"
  rm -rf "$libs"; mkdir -p "$libs"
  # Maven's output (even -q -B prints colour codes) is shown only when it fails.
  if ! mvn -q -B -f "$repo/scripts/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$libs" > "$cache/kafka/mvn.log" 2>&1; then
    cat "$cache/kafka/mvn.log" >&2; log "could not fetch the Kafka jars (Maven's output above)"; exit 1
  fi
  touch "$libs/.complete-$kafka_version"
}

java_cmd() { # node: sets `cmd` to java with Kafka's classpath, logging to the node's server.log
  cmd=(java -Xms128m -Xmx"${KAFKA_HEAP:-512m}" -XX:+UseG1GC -Djava.awt.headless=true
    -Dlog4j2.configurationFile="$repo/scripts/kafka/log4j2.yaml" -Dkafka.logs.file="$(node_dir "$1")/server.log"
    -cp "$libs/*")
}

# The log dir root: KAFKA_DATA_DIR, or a temporary dir remembered until stop.
data_root() {
  if [ -n "${KAFKA_DATA_DIR:-}" ]; then rm -f "$run/tmpdir"; echo "$KAFKA_DATA_DIR"; return; fi
  if [ -f "$run/tmpdir" ]; then cat "$run/tmpdir"; return; fi
  mktemp -d "${TMPDIR:-/tmp}/lambdaflow-kafka-XXXXXX" | tee "$run/tmpdir"
}

write_properties() { # node data_dir
  local n=$1 data=$2 voters="" i rf=1 isr=1
  for i in $(seq 1 "$nodes"); do voters="$voters${voters:+,}$i@127.0.0.1:$(controller_port "$i")"; done
  if [ "$nodes" -gt 1 ]; then rf=3; isr=2; fi
  cat > "$(node_dir "$n")/server.properties" <<PROPS
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$(client_port "$n"),CONTROLLER://127.0.0.1:$(controller_port "$n")
advertised.listeners=PLAINTEXT://127.0.0.1:$(client_port "$n")
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$data
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
group.initial.rebalance.delay.ms=0
PROPS
}

launch() { # node: start its JVM in the background (the log dir is formatted already)
  local n=$1 dir; dir=$(node_dir "$n")
  : > "$dir/server.log"
  java_cmd "$n"
  nohup "${cmd[@]}" kafka.Kafka "$dir/server.properties" > "$dir/stdout.log" 2>&1 &
  echo $! > "$(pidfile "$n")"
}

wait_ready() { # node
  local n=$1 dir pid; dir=$(node_dir "$n"); pid=$(cat "$(pidfile "$n")")
  for _ in $(seq 1 240); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "node $n exited during start-up; last lines of $dir/server.log:"; tail -n 20 "$dir/server.log" "$dir/stdout.log" >&2
      rm -f "$(pidfile "$n")"; return 1
    fi
    if answers "$n" && grep -q "Kafka Server started" "$dir/server.log" 2>/dev/null; then
      log "node $n of Apache Kafka $kafka_version ready on 127.0.0.1:$(client_port "$n") (pid $pid, log $dir/server.log)"
      return 0
    fi
    sleep 0.5
  done
  log "node $n did not become ready within 120 s; see $dir/server.log"; return 1
}

start() {
  if pid=$(node_pid 1); then
    log "already running (pid $pid)"; bootstrap; return 0
  fi
  if answers 1; then
    log "something already answers on 127.0.0.1:$port; not starting another broker"
    bootstrap; return 0
  fi
  command -v java >/dev/null || { log "Java 17+ is needed: apt-get install openjdk-17-jre-headless"; exit 1; }
  fetch
  mkdir -p "$run"
  local root n data cluster_id=""
  root=$(data_root)
  for n in $(seq 1 "$nodes"); do
    mkdir -p "$(node_dir "$n")"
    if [ "$nodes" = 1 ]; then data=$root; else data=$root/node-$n; fi
    mkdir -p "$data"
    write_properties "$n" "$data"
    if [ ! -f "$data/meta.properties" ]; then
      java_cmd "$n"
      [ -n "$cluster_id" ] || cluster_id=$("${cmd[@]}" kafka.tools.StorageTool random-uuid)
      "${cmd[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$(node_dir "$n")/server.properties" >/dev/null
    fi
  done
  for n in $(seq 1 "$nodes"); do launch "$n"; done
  for n in $(seq 1 "$nodes"); do wait_ready "$n" || { stop; exit 1; }; done
  bootstrap
}

start_node() { # node
  local n=$1
  if pid=$(node_pid "$n"); then log "node $n already runs (pid $pid)"; return 0; fi
  [ -f "$(node_dir "$n")/server.properties" ] || { log "node $n was never started (run start first)"; exit 1; }
  launch "$n"; wait_ready "$n"
}

kill_node() { # node
  local n=$1 pid
  if ! pid=$(node_pid "$n"); then log "node $n is not running"; exit 1; fi
  kill -9 "$pid"; rm -f "$(pidfile "$n")"
  log "killed node $n (pid $pid) with SIGKILL"
}

stop() {
  local n pid any=0
  for n in $(seq 1 "$nodes"); do
    if pid=$(node_pid "$n"); then kill "$pid"; any=1; fi
  done
  for n in $(seq 1 "$nodes"); do
    pid=$(cat "$(pidfile "$n")" 2>/dev/null) || continue
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then log "node $n ($pid) did not stop in 30 s; killing it"; kill -9 "$pid" || true; fi
    rm -f "$(pidfile "$n")"
    log "stopped node $n (pid $pid)"
  done
  if [ "$any" = 0 ]; then log "no broker started by this script on port $port"; fi
  if [ -f "$run/tmpdir" ]; then rm -rf "$(cat "$run/tmpdir")"; rm -f "$run/tmpdir"; fi
}

status() {
  local n pid up=0
  for n in $(seq 1 "$nodes"); do
    if pid=$(node_pid "$n"); then echo "node $n running: pid $pid on 127.0.0.1:$(client_port "$n")"; up=1
    elif answers "$n"; then echo "something else answers on 127.0.0.1:$(client_port "$n")"; up=1
    else echo "node $n not running on 127.0.0.1:$(client_port "$n")"; fi
  done
  [ "$up" = 1 ] || return 3
}

run_with() {
  local started=0 rc=0
  if ! answers 1; then start >/dev/null; started=1; fi
  "$@" || rc=$?
  if [ "$started" = 1 ]; then stop || true; fi
  return "$rc"
}

node_arg() {
  [[ "${1:-}" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le "$nodes" ] \
    || { log "give a node number from 1 to $nodes (KAFKA_NODES=$nodes)"; exit 2; }
  echo "$1"
}

case "${1:-}" in
  run) shift; run_with "$@" ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  fetch) fetch ;;
  kill-node) kill_node "$(node_arg "${2:-}")" ;;
  start-node) start_node "$(node_arg "${2:-}")" ;;
  *) echo "usage: $0 start|stop|status|fetch|run CMD…|kill-node N|start-node N" >&2; exit 2 ;;
esac
