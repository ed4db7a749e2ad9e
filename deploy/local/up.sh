#!/usr/bin/env bash
# Starts Kafka (KRaft, single node), Apicurio Registry and ClickHouse on 127.0.0.1, unless they
# already run. Installs them first if needed. PID files and logs live in $FS_RUN.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/env.sh"
. "$here/kafka-node.sh"
"$here/install.sh"
mkdir -p "$FS_RUN"

start_kafka() {
  if pid_alive kafka; then return; fi
  port_open "$KAFKA_PORT" && die "port $KAFKA_PORT is taken by another process; set FS_KAFKA_PORT"
  local dir="$FS_RUN/kafka"
  # The secure listener next to the plain one: SASL_SSL with PLAIN and SCRAM.
  kafka_node_config "$dir" 1 "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "1@127.0.0.1:$KAFKA_CONTROLLER_PORT" 1 1 \
    "SASL_SSL://127.0.0.1:$KAFKA_SASL_PORT"
  cat >>"$dir/server.properties" <<CFG
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$SECURE_USER="$SECURE_PASSWORD";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location=$FS_TLS/server.p12
ssl.keystore.password=${FS_TLS_STORE_PASSWORD:-fraudstream-local}
ssl.key.password=${FS_TLS_STORE_PASSWORD:-fraudstream-local}
CFG
  log "starting Kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT"
  kafka_node_start kafka "$dir" 1g
}

start_registry() {
  if pid_alive registry; then return; fi
  port_open "$REGISTRY_PORT" && die "port $REGISTRY_PORT is taken by another process; set FS_REGISTRY_PORT"
  log "starting Apicurio Registry $APICURIO_VERSION on 127.0.0.1:$REGISTRY_PORT"
  nohup "$here/registry.sh" "$REGISTRY_PORT" "$FS_RUN/registry" >"$FS_RUN/registry.log" 2>&1 </dev/null &
  echo $! >"$FS_RUN/registry.pid"
}

start_clickhouse() {
  if pid_alive clickhouse; then return; fi
  port_open "$CLICKHOUSE_HTTP_PORT" && die "port $CLICKHOUSE_HTTP_PORT is taken by another process; set FS_CLICKHOUSE_HTTP_PORT"
  local dir="$FS_RUN/clickhouse"
  "$here/clickhouse-config.sh" "$dir" "$CLICKHOUSE_HTTP_PORT" "$CLICKHOUSE_TCP_PORT" "$CLICKHOUSE_HTTPS_PORT" "$FS_TLS"
  log "starting ClickHouse on 127.0.0.1:$CLICKHOUSE_HTTP_PORT (http) and :$CLICKHOUSE_HTTPS_PORT (https)"
  nohup clickhouse-server --config-file="$dir/config.xml" >"$FS_RUN/clickhouse.log" 2>&1 </dev/null &
  echo $! >"$FS_RUN/clickhouse.pid"
}

# The registry behind TLS and basic auth (nginx), as Confluent Cloud and Redpanda Cloud serve it.
# Its workers run as us (`user`): the config, password file and key live under our cache.
start_registry_proxy() {
  if pid_alive registry-proxy; then return; fi
  port_open "$REGISTRY_TLS_PORT" && die "port $REGISTRY_TLS_PORT is taken by another process; set FS_REGISTRY_TLS_PORT"
  local dir="$FS_RUN/registry-proxy"
  mkdir -p "$dir"
  printf '%s:%s\n' "$SECURE_USER" "$(openssl passwd -apr1 "$SECURE_PASSWORD")" >"$dir/htpasswd"
  cat >"$dir/nginx.conf" <<CFG
daemon off;
user $(id -un);
pid $dir/nginx.pid;
error_log $FS_RUN/registry-proxy.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $dir/tmp; proxy_temp_path $dir/tmp; fastcgi_temp_path $dir/tmp;
  uwsgi_temp_path $dir/tmp; scgi_temp_path $dir/tmp;
  server {
    listen 127.0.0.1:$REGISTRY_TLS_PORT ssl;
    ssl_certificate $FS_TLS/server.pem;
    ssl_certificate_key $FS_TLS/server.key;
    auth_basic "schema registry";
    auth_basic_user_file $dir/htpasswd;
    location / { proxy_pass http://127.0.0.1:$REGISTRY_PORT; proxy_set_header Authorization ""; }
  }
}
CFG
  mkdir -p "$dir/tmp"
  log "starting the registry's TLS + basic-auth proxy on 127.0.0.1:$REGISTRY_TLS_PORT"
  nohup nginx -c "$dir/nginx.conf" -p "$dir" >>"$FS_RUN/registry-proxy.log" 2>&1 </dev/null &
  echo $! >"$FS_RUN/registry-proxy.pid"
}

# SCRAM credentials live in the cluster metadata: added once Kafka is up (idempotent).
add_scram_user() {
  local mechanism
  for mechanism in SCRAM-SHA-256 SCRAM-SHA-512; do  # one per request: Kafka refuses two at once
    java -Dlog4j2.configurationFile="$FS_RUN/kafka/log4j2.yaml" -cp "$KAFKA_HOME/libs/*" kafka.admin.ConfigCommand \
      --bootstrap-server "127.0.0.1:$KAFKA_PORT" --alter --entity-type users --entity-name "$SECURE_USER" \
      --add-config "$mechanism=[password=$SECURE_PASSWORD]" >"$FS_RUN/kafka-scram.log" 2>&1 \
      || { cat "$FS_RUN/kafka-scram.log" >&2; die "adding the $mechanism user failed"; }
  done
}

kafka_ready() { kafka_node_ready kafka "$KAFKA_PORT"; }
registry_ready() { curl -sf --max-time "$PROBE_SECS" "http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7/subjects" >/dev/null; }
clickhouse_ready() { [ "$(curl -sf --max-time "$PROBE_SECS" "http://127.0.0.1:$CLICKHOUSE_HTTP_PORT/?query=SELECT%201" 2>/dev/null)" = 1 ]; }

registry_proxy_ready() { port_open "$REGISTRY_TLS_PORT"; }

"$here/tls.sh" "$FS_TLS"
start_kafka
start_registry
start_clickhouse
start_registry_proxy
wait_for clickhouse 30 clickhouse_ready
wait_for kafka 90 kafka_ready
wait_for registry 90 registry_ready
wait_for registry-proxy 10 registry_proxy_ready
[ -f "$FS_RUN/kafka/scram-$SECURE_USER" ] || { add_scram_user && touch "$FS_RUN/kafka/scram-$SECURE_USER"; }
log "up: KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT SCHEMA_REGISTRY_URL=http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7 CLICKHOUSE_URL=http://127.0.0.1:$CLICKHOUSE_HTTP_PORT"
log "secure: SASL_SSL 127.0.0.1:$KAFKA_SASL_PORT, https://127.0.0.1:$REGISTRY_TLS_PORT/apis/ccompat/v7, https://127.0.0.1:$CLICKHOUSE_HTTPS_PORT (user $SECURE_USER, CA $FS_TLS/ca.pem)"
