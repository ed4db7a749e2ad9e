#!/usr/bin/env bash
# Stops exactly what up.sh started, by PID file (never by name). --purge also deletes their data.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/env.sh"
for name in registry-proxy registry kafka clickhouse; do
  f="$FS_RUN/$name.pid"
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $name (pid $pid)"
    kill "$pid"
    for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && { log "$name did not stop in 30s, killing"; kill -9 "$pid"; }
  fi
  rm -f "$f"
done
if [ "${1:-}" = "--purge" ]; then rm -rf "$FS_RUN"; log "deleted $FS_RUN"; fi
