#!/usr/bin/env bash
# Stops exactly what up.sh and cluster.sh started, by PID file (never by name). --purge also
# deletes their data.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/env.sh"
"$here/cluster.sh" down
for name in registry-proxy registry kafka clickhouse; do stop_by_pid_file "$name"; done
if [ "${1:-}" = "--purge" ]; then rm -rf "$FS_RUN"; log "deleted $FS_RUN"; fi
