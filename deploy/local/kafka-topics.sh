#!/usr/bin/env bash
# Kafka's own topic tool against the local broker, e.g.:
#   deploy/local/kafka-topics.sh --list
#   deploy/local/kafka-topics.sh --describe --topic models
#   deploy/local/kafka-topics.sh --delete --topic 'bench-.*'
# FS_KAFKA_BOOTSTRAP=127.0.0.1:19092 runs it against the cluster (cluster.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/env.sh"
[ -f "$KAFKA_HOME/.complete" ] || die "Kafka is not installed yet: run deploy/local/up.sh"
exec java -Dlog4j2.configurationFile="$FS_RUN/kafka/log4j2.yaml" -cp "$KAFKA_HOME/libs/*" \
  org.apache.kafka.tools.TopicCommand --bootstrap-server "${FS_KAFKA_BOOTSTRAP:-127.0.0.1:$KAFKA_PORT}" "$@"
