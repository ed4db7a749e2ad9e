#!/usr/bin/env bash
# bench/baseline/run.sh MODEL RUNS: installs the baseline (PyPI: fastapi, uvicorn, lightgbm; Debian:
# wrk) into the cache if missing, serves MODEL with 2 uvicorn workers on 127.0.0.1 and drives it
# with wrk (32 connections, 10 s) RUNS times. Prints one line per run: "rps p50_ms p99_ms".
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
model=$1 runs=${2:-3}
CACHE="${FRAUDSTREAM_CACHE:-$HOME/.cache/fraudstream}/baseline"
if [ ! -f "$CACHE/.complete" ]; then
  echo "[baseline] installing fastapi, uvicorn, lightgbm into $CACHE" >&2
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --disable-pip-version-check --target "$CACHE" \
    fastapi "uvicorn[standard]" lightgbm numpy >&2
  touch "$CACHE/.complete"
fi
command -v wrk >/dev/null || { echo "[baseline] installing wrk from Debian" >&2; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
port=28900
cd "$here"
PYTHONPATH="$CACHE" FRAUDSTREAM_MODEL="$model" python3 -m uvicorn app:app --host 127.0.0.1 --port "$port" \
  --workers 2 --log-level warning &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' EXIT
for _ in $(seq 1 120); do curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' \
  --data "$(sed -n "s/^wrk.body = '\(.*\)'$/\1/p" post.lua)" "http://127.0.0.1:$port/predict" && break; sleep 0.5; done
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.2f", v}'; }
for _ in $(seq 1 "$runs"); do
  out=$(wrk -t2 -c32 -d10s --latency -s post.lua "http://127.0.0.1:$port/predict")
  rps=$(echo "$out" | awk '/Requests\/sec/ {printf "%d", $2}')
  p50=$(echo "$out" | awk '$1 == "50%" {print $2}' | to_ms)
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}' | to_ms)
  echo "$rps $p50 $p99"
done
