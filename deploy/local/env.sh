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
KAFKA_HOME="$FS_CACHE/kafka-$KAFKA_VERSION"
APICURIO_HOME="$FS_CACHE/apicurio-$APICURIO_VERSION"

log() { printf '[local] %s\n' "$*" >&2; }
die() { printf '[local] error: %s\n' "$*" >&2; exit 1; }

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pid_alive NAME: true when the PID file of NAME names a live process.
pid_alive() {
  local f="$FS_RUN/$1.pid"
  [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null
}

# wait_for NAME SECONDS CMD...: poll CMD until it succeeds; on timeout show the service's log.
wait_for() {
  local name=$1 secs=$2; shift 2
  local i
  for ((i = 0; i < secs * 4; i++)); do
    if "$@"; then return 0; fi
    pid_alive "$name" || { tail -n 40 "$FS_RUN/$name.log" >&2; die "$name exited during start-up (log: $FS_RUN/$name.log)"; }
    sleep 0.25
  done
  tail -n 40 "$FS_RUN/$name.log" >&2
  die "$name did not answer within ${secs}s (log: $FS_RUN/$name.log)"
}
