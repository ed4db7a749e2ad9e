#!/usr/bin/env bash
# registry.sh PORT DATA_DIR: runs Apicurio Registry in the foreground on 127.0.0.1:PORT, its
# schemas in an H2 file under DATA_DIR. Used by up.sh for the local service and by tests that
# restart a registry of their own. The file keeps schemas and their ids across restarts: records
# in Kafka carry those ids (in memory, a restarted registry handed the same ids to other schemas).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/env.sh"
port=$1 data=$2
mkdir -p "$data"
export APICURIO_DATASOURCE_URL="jdbc:h2:file:$data/schemas"
export QUARKUS_HTTP_PORT="$port" QUARKUS_HTTP_HOST=127.0.0.1
exec java -Xmx512m -jar "$APICURIO_HOME"/apicurio-registry-app-*-runner.jar
