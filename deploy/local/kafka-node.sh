# Functions that run one Kafka KRaft node (broker + controller in one process), sourced by up.sh
# (the single node) and cluster.sh (three nodes). Needs env.sh sourced first.

# kafka_node_config DIR NODE_ID PORT CONTROLLER_PORT VOTERS REPLICAS MIN_ISR [LISTENER]: writes
# DIR/server.properties and DIR/log4j2.yaml. A plain listener on PORT, plus LISTENER (e.g.
# SASL_SSL://127.0.0.1:29094) whose settings the caller appends. REPLICAS and MIN_ISR apply to new
# topics and to Kafka's own (consumer offsets, transaction state), so that on a cluster
# exactly-once survives a lost node.
kafka_node_config() {
  local dir=$1 id=$2 port=$3 cport=$4 voters=$5 rf=$6 isr=$7 extra=${8:-}
  local protocol=${extra%%://*}
  mkdir -p "$dir"
  cat >"$dir/server.properties" <<CFG
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport${extra:+,$extra}
advertised.listeners=PLAINTEXT://127.0.0.1:$port${extra:+,$extra}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT${extra:+,$protocol:$protocol}
log.dirs=$dir/data
num.partitions=6
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
transaction.state.log.num.partitions=6
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
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
}

# kafka_node_start NAME DIR MAX_HEAP [CLUSTER_ID]: formats DIR/data once (every node of a cluster with
# the same CLUSTER_ID), then starts the node in the background; PID in $FS_RUN/NAME.pid, log in
# $FS_RUN/NAME.log.
kafka_node_start() {
  local name=$1 dir=$2 heap=$3 cluster_id=${4:-}
  local cp="$KAFKA_HOME/libs/*" java_log=(-Dlog4j2.configurationFile="$dir/log4j2.yaml")
  if [ ! -f "$dir/data/meta.properties" ]; then
    [ -n "$cluster_id" ] || cluster_id=$(java -cp "$cp" kafka.tools.StorageTool random-uuid)
    timeout 120 java "${java_log[@]}" -cp "$cp" kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" \
      >"$FS_RUN/$name-format.log" 2>&1 \
      || { cat "$FS_RUN/$name-format.log" >&2; die "formatting $name's log dir failed or took over 120 s (log: $FS_RUN/$name-format.log)"; }
  fi
  # Every collection is logged, with its pause, to $FS_RUN/NAME-gc.log. FS_KAFKA_JVM_OPTS replaces
  # the collector's options to try another: Kafka's own start scripts' (G1 aiming at 20 ms pauses,
  # a fixed heap) and ZGC were tried side by side and did not move the pipeline's p99 (README,
  # "Latency").
  local jvm_opts=(-Xms256m -XX:+UseG1GC)
  [ -z "${FS_KAFKA_JVM_OPTS:-}" ] || read -r -a jvm_opts <<<"$FS_KAFKA_JVM_OPTS"
  nohup java -Xmx"$heap" "${jvm_opts[@]}" \
    -Xlog:gc:file="$FS_RUN/$name-gc.log":time,uptime:filecount=2,filesize=10m \
    "${java_log[@]}" -cp "$cp" kafka.Kafka "$dir/server.properties" \
    >"$FS_RUN/$name.log" 2>&1 </dev/null &
  echo $! >"$FS_RUN/$name.pid"
}

# kafka_node_ready NAME PORT: the node accepts connections and logged that it started.
kafka_node_ready() { port_open "$2" && grep -q "Kafka Server started" "$FS_RUN/$1.log"; }
