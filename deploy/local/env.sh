# Shared settings for the native local services (sourced by install.sh, up.sh, down.sh).
# Every value can be overridden from the environment, so two checkouts can run side by side.
FS_CACHE="${FRAUDSTREAM_CACHE:-$HOME/.cache/fraudstream}"
FS_RUN="${FRAUDSTREAM_RUN:-$FS_CACHE/run}"          # data dirs, logs, PID files
KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
APICURIO_VERSION="${APICURIO_VERSION:-3.0.9}"
KAFKA_PORT="${FS_KAFKA_PORT:-29092}"
KAFKA_CONTROLLER_PORT="${FS_KAFKA_CONTROLLER_PORT:-29093}"
REGISTRY_PORT="${FS_REGISTRY_PORT:-28081}"
CLICKHOUSE_HTTP_PORT="${FS_CLICKHOUSE_HTTP_PORT:-28123}"
CLICKHOUSE_TCP_PORT="${FS_CLICKHOUSE_TCP_PORT:-29000}"
# The secure listeners next to the plain ones, as real deployments have them: Kafka SASL_SSL
# (PLAIN, SCRAM-SHA-256/512), ClickHouse https with a password, the registry behind TLS + basic
# auth. One user and password for all three; the CA and certificates are made by tls.sh.
KAFKA_SASL_PORT="${FS_KAFKA_SASL_PORT:-29094}"
CLICKHOUSE_HTTPS_PORT="${FS_CLICKHOUSE_HTTPS_PORT:-28443}"
REGISTRY_TLS_PORT="${FS_REGISTRY_TLS_PORT:-28082}"
SECURE_USER="${FS_SECURE_USER:-fs_secure}"
SECURE_PASSWORD="${FS_SECURE_PASSWORD:-fsLocalSecret7f3a}"
FS_TLS="$FS_RUN/tls"
# The multi-node services (cluster.sh, `make cluster`), next to the single-node ones: three
# Kafka nodes, ZooKeeper and two ClickHouse replicas. Node i listens on the base port + i - 1.
# All below 32768: Linux gives clients ports from 32768 up (ip_local_port_range), and a client
# that held a node's port made the node fail to start (kafka-1 on 39192, in a fault run).
CLUSTER_KAFKA_PORT="${FS_CLUSTER_KAFKA_PORT:-19092}"            # 19092, 19093, 19094
CLUSTER_KAFKA_CONTROLLER_PORT="${FS_CLUSTER_KAFKA_CONTROLLER_PORT:-19192}"
CLUSTER_ZOOKEEPER_PORT="${FS_CLUSTER_ZOOKEEPER_PORT:-19181}"
CLUSTER_CLICKHOUSE_HTTP_PORT="${FS_CLUSTER_CLICKHOUSE_HTTP_PORT:-18123}"  # 18123, 18124
CLUSTER_CLICKHOUSE_TCP_PORT="${FS_CLUSTER_CLICKHOUSE_TCP_PORT:-19000}"
CLUSTER_CLICKHOUSE_INTERSERVER_PORT="${FS_CLUSTER_CLICKHOUSE_INTERSERVER_PORT:-19009}"
CLUSTER_NAME="${FS_CLUSTER_NAME:-fraudstream}"
CLUSTER_KAFKA_NODES=3 CLUSTER_CLICKHOUSE_REPLICAS=2
ZOOKEEPER_VERSION="${ZOOKEEPER_VERSION:-3.9.5}"
ZOOKEEPER_HOME="$FS_CACHE/zookeeper-$ZOOKEEPER_VERSION"
KAFKA_HOME="$FS_CACHE/kafka-$KAFKA_VERSION"
APICURIO_HOME="$FS_CACHE/apicurio-$APICURIO_VERSION"

log() { printf '[local] %s\n' "$*" >&2; }
die() { printf '[local] error: %s\n' "$*" >&2; exit 1; }

# Every readiness probe is bounded: a server that accepts a connection and then never answers (a
# JVM still starting) must cost one probe, not the whole run. A CI run once hung 90 minutes on a
# probe that read from a ZooKeeper that had accepted but not answered.
PROBE_SECS=3

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() { timeout "$PROBE_SECS" bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null; }

# pid_alive NAME: true when the PID file of NAME names a live process.
pid_alive() {
  local f="$FS_RUN/$1.pid"
  [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null
}

# wait_for NAME SECONDS CMD...: poll CMD until it succeeds; on timeout show the service's log.
# SECONDS is wall time, so slow probes cannot stretch the wait.
wait_for() {
  local name=$1 secs=$2; shift 2
  local end=$((SECONDS + secs))
  while ((SECONDS < end)); do
    if "$@"; then return 0; fi
    pid_alive "$name" || { tail -n 40 "$FS_RUN/$name.log" >&2; die "$name exited during start-up (log: $FS_RUN/$name.log)"; }
    sleep 0.25
  done
  tail -n 40 "$FS_RUN/$name.log" >&2
  die "$name did not answer within ${secs}s (log: $FS_RUN/$name.log)"
}

# stop_by_pid_file NAME...: stops the processes in $FS_RUN/NAME.pid (SIGTERM to all at once, then
# SIGKILL to any still there after 30 s) and removes the PID files. Never by name: another
# checkout's services are left alone. Kafka nodes of one cluster stop together: one by one, the
# last could not shut down cleanly without its controller quorum.
stop_by_pid_file() {
  local name pid pids=() i
  for name in "$@"; do
    [ -f "$FS_RUN/$name.pid" ] || continue
    pid=$(cat "$FS_RUN/$name.pid")
    if kill -0 "$pid" 2>/dev/null; then log "stopping $name (pid $pid)"; kill "$pid"; pids+=("$name:$pid"); fi
  done
  for i in $(seq 1 120); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "${pid#*:}" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.25
  done
  for pid in "${pids[@]}"; do
    kill -0 "${pid#*:}" 2>/dev/null && { log "${pid%%:*} did not stop in 30s, killing"; kill -9 "${pid#*:}"; }
  done
  for name in "$@"; do rm -f "$FS_RUN/$name.pid"; done
}

# use_services single|cluster: exports what every fraudstream binary and the scripts' tools read
# to reach the single-node services or the cluster (which shares the single node's registry).
use_services() {
  export SCHEMA_REGISTRY_URL="http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7"
  if [ "$1" = cluster ]; then
    local i brokers=""
    for i in $(seq 1 "$CLUSTER_KAFKA_NODES"); do brokers+="${brokers:+,}127.0.0.1:$((CLUSTER_KAFKA_PORT + i - 1))"; done
    export KAFKA_BROKERS=$brokers CLICKHOUSE_URL="http://127.0.0.1:$CLUSTER_CLICKHOUSE_HTTP_PORT"
    export CLICKHOUSE_CLUSTER=$CLUSTER_NAME
  else
    export KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT" CLICKHOUSE_URL="http://127.0.0.1:$CLICKHOUSE_HTTP_PORT"
    unset CLICKHOUSE_CLUSTER
  fi
  export FS_KAFKA_BOOTSTRAP=$KAFKA_BROKERS  # kafka-topics.sh
}
