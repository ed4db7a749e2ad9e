#!/usr/bin/env bash
# cluster.sh up|down|status: the multi-node services on 127.0.0.1, next to the single-node ones
# of up.sh (which it starts too: the schema registry is shared).
#   - Kafka: three KRaft nodes (each broker + controller), RF=3 and min.insync.replicas=2 for
#     every topic, the consumer offsets and the transaction state log included;
#   - ClickHouse: two replicas of one shard (cluster "$CLUSTER_NAME"), coordinated by ZooKeeper.
# PID files and logs in $FS_RUN (kafka-N, zookeeper, clickhouse-N); down stops exactly those.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/env.sh"
. "$here/kafka-node.sh"

kafka_port() { echo $((CLUSTER_KAFKA_PORT + $1 - 1)); }
clickhouse_http_port() { echo $((CLUSTER_CLICKHOUSE_HTTP_PORT + $1 - 1)); }
clickhouse_tcp_port() { echo $((CLUSTER_CLICKHOUSE_TCP_PORT + $1 - 1)); }
NODES=$(seq 1 "$CLUSTER_KAFKA_NODES")
REPLICAS=$(seq 1 "$CLUSTER_CLICKHOUSE_REPLICAS")

install_zookeeper() {
  [ -f "$ZOOKEEPER_HOME/.complete" ] && return
  log "fetching Apache ZooKeeper $ZOOKEEPER_VERSION jars from Maven Central"
  rm -rf "$ZOOKEEPER_HOME" && mkdir -p "$ZOOKEEPER_HOME"
  mvn -q -B -Dstyle.color=never -f "$here/zookeeper-pom.xml" -Dzookeeper.version="$ZOOKEEPER_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$ZOOKEEPER_HOME/libs"
  touch "$ZOOKEEPER_HOME/.complete"
}

start_kafka_nodes() {
  local i voters="" id_file="$FS_RUN/cluster-id"
  for i in $NODES; do voters+="${voters:+,}$i@127.0.0.1:$((CLUSTER_KAFKA_CONTROLLER_PORT + i - 1))"; done
  [ -f "$id_file" ] || java -cp "$KAFKA_HOME/libs/*" kafka.tools.StorageTool random-uuid >"$id_file"
  for i in $NODES; do
    pid_alive "kafka-$i" && continue
    port_open "$(kafka_port "$i")" && die "port $(kafka_port "$i") is taken by another process; set FS_CLUSTER_KAFKA_PORT"
    kafka_node_config "$FS_RUN/kafka-$i" "$i" "$(kafka_port "$i")" $((CLUSTER_KAFKA_CONTROLLER_PORT + i - 1)) \
      "$voters" "$CLUSTER_KAFKA_NODES" 2
    log "starting Kafka node $i on 127.0.0.1:$(kafka_port "$i")"
    kafka_node_start "kafka-$i" "$FS_RUN/kafka-$i" 768m "$(cat "$id_file")"
  done
}

start_zookeeper() {
  pid_alive zookeeper && return
  port_open "$CLUSTER_ZOOKEEPER_PORT" && die "port $CLUSTER_ZOOKEEPER_PORT is taken by another process; set FS_CLUSTER_ZOOKEEPER_PORT"
  local dir="$FS_RUN/zookeeper"
  mkdir -p "$dir/data"
  cat >"$dir/zoo.cfg" <<CFG
tickTime=2000
dataDir=$dir/data
clientPort=$CLUSTER_ZOOKEEPER_PORT
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=ruok,mntr,srvr
CFG
  cat >"$dir/logback.xml" <<'CFG'
<configuration>
  <appender name="OUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>[%d] %level %msg - %logger%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="OUT"/></root>
</configuration>
CFG
  log "starting ZooKeeper $ZOOKEEPER_VERSION on 127.0.0.1:$CLUSTER_ZOOKEEPER_PORT"
  nohup java -Xmx256m -Dlogback.configurationFile="$dir/logback.xml" -cp "$ZOOKEEPER_HOME/libs/*" \
    org.apache.zookeeper.server.ZooKeeperServerMain "$dir/zoo.cfg" >"$FS_RUN/zookeeper.log" 2>&1 </dev/null &
  echo $! >"$FS_RUN/zookeeper.pid"
}

# The cluster's layout, the same on every replica: who the replicas are, where ZooKeeper is, and
# this replica's name (the {shard} and {replica} macros of the replicated tables' paths).
clickhouse_cluster_config() { # $1 = replica number, $2 = config dir
  local i replicas=""
  for i in $REPLICAS; do
    replicas+="<replica><host>127.0.0.1</host><port>$(clickhouse_tcp_port "$i")</port></replica>"
  done
  mkdir -p "$2/config.d"
  cat >"$2/config.d/cluster.xml" <<CFG
<?xml version="1.0"?>
<yandex>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <interserver_http_port>$((CLUSTER_CLICKHOUSE_INTERSERVER_PORT + $1 - 1))</interserver_http_port>
  <macros><shard>01</shard><replica>r$1</replica></macros>
  <remote_servers><$CLUSTER_NAME>
    <shard><internal_replication>true</internal_replication>$replicas</shard>
  </$CLUSTER_NAME></remote_servers>
  <zookeeper><node><host>127.0.0.1</host><port>$CLUSTER_ZOOKEEPER_PORT</port></node></zookeeper>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
</yandex>
CFG
}

start_clickhouse_replica() { # $1 = replica number
  local name="clickhouse-$1" dir="$FS_RUN/clickhouse-$1" http; http=$(clickhouse_http_port "$1")
  pid_alive "$name" && return
  port_open "$http" && die "port $http is taken by another process; set FS_CLUSTER_CLICKHOUSE_HTTP_PORT"
  "$here/clickhouse-config.sh" "$dir" "$http" "$(clickhouse_tcp_port "$1")"
  clickhouse_cluster_config "$1" "$dir"
  log "starting ClickHouse replica $1 on 127.0.0.1:$http"
  nohup clickhouse-server --config-file="$dir/config.xml" >"$FS_RUN/$name.log" 2>&1 </dev/null &
  echo $! >"$FS_RUN/$name.pid"
}

clickhouse_ready() { [ "$(curl -sf --max-time "$PROBE_SECS" "http://127.0.0.1:$(clickhouse_http_port "$1")/?query=SELECT%201" 2>/dev/null)" = 1 ]; }
# ZooKeeper accepts connections before it serves: a ClickHouse replica that connects then fails to
# load its replicated tables and exits. `srvr` names the mode only once it serves.
zookeeper_ready() {
  timeout "$PROBE_SECS" bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && echo srvr >&3 && grep -q "^Mode:" <&3' \
    _ "$CLUSTER_ZOOKEEPER_PORT" 2>/dev/null
}

up() {
  "$here/up.sh"
  install_zookeeper
  start_zookeeper
  start_kafka_nodes
  wait_for zookeeper 30 zookeeper_ready
  local i
  for i in $REPLICAS; do start_clickhouse_replica "$i"; done
  for i in $NODES; do wait_for "kafka-$i" 90 kafka_node_ready "kafka-$i" "$(kafka_port "$i")"; done
  for i in $REPLICAS; do wait_for "clickhouse-$i" 30 clickhouse_ready "$i"; done
  use_services cluster
  log "cluster up: KAFKA_BROKERS=$KAFKA_BROKERS CLICKHOUSE_URL=$CLICKHOUSE_URL CLICKHOUSE_CLUSTER=$CLICKHOUSE_CLUSTER"
  log "replica 2: http://127.0.0.1:$(clickhouse_http_port 2); ZooKeeper 127.0.0.1:$CLUSTER_ZOOKEEPER_PORT"
}

# Stops by PID file, dependants first: ClickHouse before its ZooKeeper; the Kafka nodes together.
down() {
  local i replicas=() nodes=()
  for i in $REPLICAS; do replicas+=("clickhouse-$i"); done
  for i in $NODES; do nodes+=("kafka-$i"); done
  stop_by_pid_file "${replicas[@]}"
  stop_by_pid_file "${nodes[@]}"
  stop_by_pid_file zookeeper
}

status() {
  local name
  for name in $(for i in $NODES; do echo "kafka-$i"; done) zookeeper $(for i in $REPLICAS; do echo "clickhouse-$i"; done); do
    if pid_alive "$name"; then echo "$name: running (pid $(cat "$FS_RUN/$name.pid"))"; else echo "$name: stopped"; fi
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
