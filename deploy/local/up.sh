#!/usr/bin/env bash
# Starts Kafka (KRaft, single node), Apicurio Registry and ClickHouse on 127.0.0.1, unless they
# already run. Installs them first if needed. PID files and logs live in $FS_RUN.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/env.sh"
"$here/install.sh"
mkdir -p "$FS_RUN"

start_kafka() {
  if pid_alive kafka; then return; fi
  port_open "$KAFKA_PORT" && die "port $KAFKA_PORT is taken by another process; set FS_KAFKA_PORT"
  local dir="$FS_RUN/kafka" cfg="$FS_RUN/kafka/server.properties"
  mkdir -p "$dir"
  cat >"$cfg" <<CFG
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=6
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=6
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.cleaner.backoff.ms=1000
CFG
  cat >"$dir/log4j2.yaml" <<'CFG'
Configuration:
  Appenders:
    Console: { name: STDOUT, PatternLayout: { pattern: "[%d] %p %m (%c)%n" } }
  Loggers:
    Root: { level: INFO, AppenderRef: [ { ref: STDOUT } ] }
    Logger:
      - { name: kafka, level: WARN }
      - { name: org.apache.kafka, level: WARN }
      - { name: kafka.server.KafkaRaftServer, level: INFO }
CFG
  local cp="$KAFKA_HOME/libs/*"
  if [ ! -f "$dir/data/meta.properties" ]; then
    java -Dlog4j2.configurationFile="$dir/log4j2.yaml" -cp "$cp" kafka.tools.StorageTool format \
      -t "$(java -cp "$cp" kafka.tools.StorageTool random-uuid)" -c "$cfg" >"$FS_RUN/kafka-format.log" 2>&1 \
      || { cat "$FS_RUN/kafka-format.log" >&2; die "formatting the Kafka log dir failed"; }
  fi
  log "starting Kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT"
  nohup java -Xms512m -Xmx1g -XX:+UseG1GC -Dlog4j2.configurationFile="$dir/log4j2.yaml" \
    -cp "$cp" kafka.Kafka "$cfg" >"$FS_RUN/kafka.log" 2>&1 </dev/null &
  echo $! >"$FS_RUN/kafka.pid"
}

start_registry() {
  if pid_alive registry; then return; fi
  port_open "$REGISTRY_PORT" && die "port $REGISTRY_PORT is taken by another process; set FS_REGISTRY_PORT"
  log "starting Apicurio Registry $APICURIO_VERSION on 127.0.0.1:$REGISTRY_PORT"
  # In-memory storage (H2): the registry forgets schemas on restart, and clients re-register.
  QUARKUS_HTTP_PORT="$REGISTRY_PORT" QUARKUS_HTTP_HOST=127.0.0.1 \
    nohup java -Xmx512m -jar "$APICURIO_HOME"/apicurio-registry-app-*-runner.jar \
    >"$FS_RUN/registry.log" 2>&1 </dev/null &
  echo $! >"$FS_RUN/registry.pid"
}

start_clickhouse() {
  if pid_alive clickhouse; then return; fi
  port_open "$CLICKHOUSE_HTTP_PORT" && die "port $CLICKHOUSE_HTTP_PORT is taken by another process; set FS_CLICKHOUSE_HTTP_PORT"
  local dir="$FS_RUN/clickhouse"
  "$here/clickhouse-config.sh" "$dir" "$CLICKHOUSE_HTTP_PORT" "$CLICKHOUSE_TCP_PORT"
  log "starting ClickHouse on 127.0.0.1:$CLICKHOUSE_HTTP_PORT (http)"
  nohup clickhouse-server --config-file="$dir/config.xml" >"$FS_RUN/clickhouse.log" 2>&1 </dev/null &
  echo $! >"$FS_RUN/clickhouse.pid"
}

kafka_ready() { port_open "$KAFKA_PORT" && grep -q "Kafka Server started" "$FS_RUN/kafka.log"; }
registry_ready() { curl -sf "http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7/subjects" >/dev/null; }
clickhouse_ready() { [ "$(curl -sf "http://127.0.0.1:$CLICKHOUSE_HTTP_PORT/?query=SELECT%201" 2>/dev/null)" = 1 ]; }

start_kafka
start_registry
start_clickhouse
wait_for clickhouse 30 clickhouse_ready
wait_for kafka 90 kafka_ready
wait_for registry 90 registry_ready
log "up: KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT SCHEMA_REGISTRY_URL=http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7 CLICKHOUSE_URL=http://127.0.0.1:$CLICKHOUSE_HTTP_PORT"
