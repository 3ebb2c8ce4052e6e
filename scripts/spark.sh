#!/usr/bin/env bash
# A local Apache Spark Connect server on loopback, for the batch layer's Spark engine in the
# demo, the tests, the benchmarks and CI. Spark comes from the PyPI `pyspark` wheel (it ships
# Spark's jars, the Spark Connect server among them), installed into a git-ignored venv; Java 17
# runs it. Nothing else: no Spark distribution download, no cluster.
#
#   scripts/spark.sh start        install pyspark if needed, start the server, wait until it answers
#   scripts/spark.sh stop         stop the server this script started (by its PID), and nothing else
#   scripts/spark.sh status       say whether it runs, and where
#   scripts/spark.sh run CMD…     start unless something answers, run CMD, stop what it started
#                                 (also when CMD fails); exits with CMD's status
#   scripts/spark.sh install      only install pyspark into the venv
#   scripts/spark.sh home         print SPARK_HOME (the pyspark package directory)
#   scripts/spark.sh kafka-jars   fetch Spark's Kafka connector (spark-sql-kafka-0-10 and what it
#                                 needs beyond Spark's own jars) from Maven Central with mvn,
#                                 once, into <cache>/spark/jars; print them for --jars
#   scripts/spark.sh s3a-jars     the same for Hadoop's S3A file system (hadoop-aws, AWS SDK)
#
# The server is `local[*]` Spark (driver and executors in one JVM) listening for Spark Connect
# clients on sc://127.0.0.1:SPARK_PORT; its web UI is off, and a shuffle has two partitions per
# core rather than Spark's 200 (sized for a cluster: 200 tasks of a few ms each on one machine).
#
# Environment:
#   SPARK_PORT            Spark Connect port on 127.0.0.1 (default 15002, Spark's own default)
#   SPARK_DRIVER_MEMORY   the JVM's heap (default 2g)
#   SPARK_SHUFFLE_PARTITIONS  spark.sql.shuffle.partitions (default: 2 per core)
#   SPARK_S3A             1: the server reads s3a:// (hadoop-aws and the AWS SDK bundle, fetched
#                         once from Maven Central); default 1 when AWS_ENDPOINT_URL is set, and
#                         then s3a:// goes to that endpoint (scripts/s3.sh run spark.sh … does it)
#   LAMBDAFLOW_CACHE      where the venv and the run dirs live (default: <repo>/.cache, git-ignored)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
port=${SPARK_PORT:-15002}
cache=${LAMBDAFLOW_CACHE:-$repo/.cache}
venv=$cache/venv
pyspark_version=4.0.0
run=$cache/spark/run-$port
pidfile=$run/server.pid

log() { echo "spark.sh: $*" >&2; }

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

server_pid() {
  [ -f "$pidfile" ] || return 1
  local pid; pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

install() {
  if "$venv/bin/python" -c "import pyspark, sys; sys.exit(pyspark.__version__ != '$pyspark_version')" 2>/dev/null; then
    return 0
  fi
  log "pip install pyspark==$pyspark_version into $venv (about 450 MB, once)"
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "pyspark==$pyspark_version" >&2
}

# Fetches Maven artifacts (group:name:version, without their dependencies) from Maven Central
# with mvn, once, into <cache>/spark/jars; prints their paths, comma-separated, for --jars.
fetch_jars() {
  local dir=$cache/spark/jars
  mkdir -p "$dir"
  local a jars=()
  for a in "$@"; do
    IFS=: read -r _ name version <<<"$a"
    local jar=$dir/$name-$version.jar
    if [ ! -f "$jar" ]; then
      command -v mvn >/dev/null || { log "Maven (mvn) is needed to fetch $a: apt-get install maven"; exit 1; }
      log "fetching $a from Maven Central"
      if ! mvn -q -B dependency:copy -Dartifact="$a" -DoutputDirectory="$dir" > "$dir/mvn.log" 2>&1; then
        cat "$dir/mvn.log" >&2; log "could not fetch $a (Maven's output above)"; exit 1
      fi
    fi
    jars+=("$jar")
  done
  (IFS=,; echo "${jars[*]}")
}

# Spark 4.0.0's Kafka source and its dependencies that pyspark does not ship.
kafka_jars() {
  fetch_jars org.apache.spark:spark-sql-kafka-0-10_2.13:$pyspark_version \
    org.apache.spark:spark-token-provider-kafka-0-10_2.13:$pyspark_version \
    org.apache.kafka:kafka-clients:3.9.0 org.apache.commons:commons-pool2:2.12.0
}

# Hadoop's S3A file system for pyspark's Hadoop 3.4.1: hadoop-aws of the same version and the
# AWS SDK v2 bundle it was built with (about 560 MB, once).
s3a_jars() {
  fetch_jars org.apache.hadoop:hadoop-aws:3.4.1 software.amazon.awssdk:bundle:2.24.6
}

# With AWS_ENDPOINT_URL set (an S3-compatible server, as scripts/s3.sh exports it), the options
# that make s3a:// reach it (one argument per line): path-style requests, its region, plain
# HTTP when the URL says so.
# Credentials come from the AWS environment (S3A's default provider chain reads it).
s3a_conf() {
  [ -n "${AWS_ENDPOINT_URL:-}" ] || return 0
  printf '%s\n' --conf "spark.hadoop.fs.s3a.endpoint=$AWS_ENDPOINT_URL" \
    --conf spark.hadoop.fs.s3a.path.style.access=true \
    --conf "spark.hadoop.fs.s3a.endpoint.region=${AWS_REGION:-us-east-1}"
  case "$AWS_ENDPOINT_URL" in
    http://*) printf '%s\n' --conf spark.hadoop.fs.s3a.connection.ssl.enabled=false ;;
  esac
}

spark_home() { "$venv/bin/python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))'; }

start() {
  if pid=$(server_pid); then log "already running (pid $pid)"; echo "sc://127.0.0.1:$port"; return 0; fi
  if answers; then
    log "something already answers on 127.0.0.1:$port; not starting another server"
    echo "sc://127.0.0.1:$port"; return 0
  fi
  command -v java >/dev/null || { log "Java 17+ is needed: apt-get install openjdk-17-jre-headless"; exit 1; }
  install
  local home; home=$(spark_home)
  mkdir -p "$run/local" "$run/warehouse"
  local s3a=()
  if [ "${SPARK_S3A:-${AWS_ENDPOINT_URL:+1}}" = 1 ]; then
    s3a=(--jars "$(s3a_jars)")
    mapfile -t -O 2 s3a < <(s3a_conf)
  fi
  : > "$run/server.log"
  # spark-submit knows the Connect server's class and needs no application jar for it.
  SPARK_HOME=$home SPARK_LOCAL_IP=127.0.0.1 SPARK_LOG_DIR=$run PYSPARK_PYTHON=$venv/bin/python \
    nohup "$home/bin/spark-submit" \
      --class org.apache.spark.sql.connect.service.SparkConnectServer \
      --name "lambdaflow Spark Connect" \
      --master 'local[*]' \
      --driver-memory "${SPARK_DRIVER_MEMORY:-2g}" \
      --conf spark.connect.grpc.binding.address=127.0.0.1 \
      --conf spark.connect.grpc.binding.port="$port" \
      --conf spark.ui.enabled=false \
      --conf spark.sql.shuffle.partitions="${SPARK_SHUFFLE_PARTITIONS:-$((2 * $(nproc)))}" \
      --conf spark.local.dir="$run/local" \
      --conf spark.sql.warehouse.dir="$run/warehouse" \
      --conf spark.driver.extraJavaOptions=-Dderby.system.home="$run/local" \
      "${s3a[@]}" \
      > "$run/server.log" 2>&1 &
  echo $! > "$pidfile"
  local pid; pid=$(cat "$pidfile")
  for _ in $(seq 1 240); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "the server exited during start-up; last lines of $run/server.log:"; tail -n 30 "$run/server.log" >&2
      rm -f "$pidfile"; exit 1
    fi
    if answers; then
      log "Spark $pyspark_version Connect server ready on sc://127.0.0.1:$port (pid $pid, log $run/server.log)"
      echo "sc://127.0.0.1:$port"; return 0
    fi
    sleep 0.5
  done
  log "the server did not answer within 120 s; see $run/server.log"; stop; exit 1
}

stop() {
  local pid
  if ! pid=$(server_pid); then log "no server started by this script on port $port"; rm -f "$pidfile"; return 0; fi
  # spark-submit execs the JVM, so the PID is the server's.
  kill "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then log "the server ($pid) did not stop in 30 s; killing it"; kill -9 "$pid" || true; fi
  rm -f "$pidfile"
  log "stopped the Spark Connect server (pid $pid)"
}

status() {
  local pid
  if pid=$(server_pid); then echo "running: pid $pid on sc://127.0.0.1:$port"
  elif answers; then echo "something else answers on 127.0.0.1:$port"
  else echo "not running on 127.0.0.1:$port"; return 3; fi
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
  install) install ;;
  home) install; spark_home ;;
  kafka-jars) kafka_jars ;;
  s3a-jars) s3a_jars ;;
  *) echo "usage: $0 start|stop|status|install|home|kafka-jars|s3a-jars|run CMD…" >&2; exit 2 ;;
esac
