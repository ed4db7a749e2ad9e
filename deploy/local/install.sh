#!/usr/bin/env bash
# Installs the local services idempotently: Kafka and Apicurio Registry from Maven Central
# (cached under $FS_CACHE), ClickHouse from Debian. Safe to run again: it only does what is missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/env.sh"
mkdir -p "$FS_CACHE"

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  [ -n "${FS_APT_UPDATED:-}" ] || { apt-get update -qq; FS_APT_UPDATED=1; }
  apt-get install -y -qq "$@" >/dev/null
}

# Java 17+ runs Kafka and the registry; Maven fetches their jars from Maven Central.
command -v java >/dev/null || { log "installing a Java runtime"; apt_install openjdk-17-jre-headless; }
command -v mvn >/dev/null || { log "installing maven"; apt_install maven; }
command -v curl >/dev/null || apt_install curl
# The registry's TLS + basic-auth proxy and the local CA.
command -v nginx >/dev/null || { log "installing nginx (the registry's TLS proxy)"; apt_install nginx-light; }
command -v openssl >/dev/null || apt_install openssl

if [ ! -f "$KAFKA_HOME/.complete" ]; then
  log "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central"
  rm -rf "$KAFKA_HOME" && mkdir -p "$KAFKA_HOME"
  mvn -q -B -f "$here/kafka-pom.xml" -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$KAFKA_HOME/libs"
  touch "$KAFKA_HOME/.complete"
fi

if [ ! -f "$APICURIO_HOME/.complete" ]; then
  log "fetching Apicurio Registry $APICURIO_VERSION from Maven Central"
  rm -rf "$APICURIO_HOME" && mkdir -p "$APICURIO_HOME"
  mvn -q -B dependency:copy -Dartifact="io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all" \
    -DoutputDirectory="$APICURIO_HOME"
  tar -xzf "$APICURIO_HOME"/apicurio-registry-app-*-all.tar.gz -C "$APICURIO_HOME"
  rm -f "$APICURIO_HOME"/apicurio-registry-app-*-all.tar.gz
  touch "$APICURIO_HOME/.complete"
fi

if ! command -v clickhouse-server >/dev/null; then
  log "installing clickhouse-server from Debian"
  apt_install clickhouse-server clickhouse-client
fi
