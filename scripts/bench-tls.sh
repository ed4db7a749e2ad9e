#!/usr/bin/env bash
# What TLS and passwords cost (part of `make bench`; runs alone too): the scorer and the sink on
# the same data, side by side in each run, once over the plain listeners and once over the
# secure ones (Kafka SASL_SSL with SCRAM-SHA-512, the registry over https with basic auth,
# ClickHouse over https with a password). Medians of $RUNS runs; bench/results/tls.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-3}"
ROWS="${BENCH_TLS_ROWS:-3000000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fraudstream/target}"
cargo build -q --release -p producer -p scorer -p sink -p trainer --bins
BIN="$CARGO_TARGET_DIR/release"
. deploy/local/env.sh
export KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT" SCHEMA_REGISTRY_URL="http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7"
export CLICKHOUSE_URL="http://127.0.0.1:$CLICKHOUSE_HTTP_PORT"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/fraudstream-bench-tls.XXXXXX")"
ID="$$-$(date +%s)"
cleanup() {
  rm -rf "$WORK"
  for i in $(seq 1 "$RUNS"); do
    for kind in plain tls; do
      curl -sf "$CLICKHOUSE_URL/" --data-binary "DROP DATABASE IF EXISTS bench_tls_${kind}${i}_$$" >/dev/null 2>&1 || true
    done
  done
  deploy/local/kafka-topics.sh --delete --topic "benchtls-.*" >/dev/null 2>&1 || true
}
trap cleanup EXIT
. scripts/bench-lib.sh

# The same client over the secure listeners: flags only, as an operator's command line would.
SECURE_KAFKA=(--brokers "127.0.0.1:$KAFKA_SASL_PORT" -X security.protocol=SASL_SSL -X sasl.mechanism=SCRAM-SHA-512
  -X "sasl.username=$SECURE_USER" -X "sasl.password=$SECURE_PASSWORD" -X "ssl.ca.location=$FS_TLS/ca.pem"
  --schema-registry "https://127.0.0.1:$REGISTRY_TLS_PORT/apis/ccompat/v7" --schema-registry-user "$SECURE_USER"
  --schema-registry-password "$SECURE_PASSWORD" --schema-registry-ca-file "$FS_TLS/ca.pem")
SECURE_CLICKHOUSE=(--clickhouse-url "https://127.0.0.1:$CLICKHOUSE_HTTPS_PORT" --clickhouse-user "$SECURE_USER"
  --clickhouse-password "$SECURE_PASSWORD" --clickhouse-ca-file "$FS_TLS/ca.pem")

echo "bench-tls: $RUNS runs, $ROWS simulated rows" >&2
"$BIN/producer" simulate --rows "$ROWS" --seed 3 --out "$WORK/paysim.csv" >/dev/null
"$BIN/producer" split -i "$WORK/paysim.csv" --out-dir "$WORK" >/dev/null
STREAM_ROWS=$(($(wc -l <"$WORK/stream.csv") - 1))
TX="benchtls-tx-$ID" MODELS="benchtls-models-$ID"
"$BIN/producer" publish -i "$WORK/stream.csv" --transactions-topic "$TX" --labels-topic "benchtls-labels-$ID" \
  --label-delay 0 >/dev/null 2>&1
"$BIN/trainer" bootstrap --csv "$WORK/historical.csv" --out "$WORK/model.txt" --models-topic "$MODELS" \
  --max-rounds 100 --report "$WORK/model" >/dev/null 2>&1

scorer_run() { # $1 = tag, rest = extra flags
  local g="benchtls-$1-$ID"; shift
  "$BIN/scorer" --instance-id "$g" --group "$g" --transactions-topic "$TX" --predictions-topic "$g-out" \
    --alerts-topic "$g-alerts" --dlq-topic "$g-dlq" --models-topic "$MODELS" --metrics-addr 127.0.0.1:0 \
    --stop-after "$STREAM_ROWS" "$@" 2>/dev/null | rate_of
}
sink_run() { # $1 = tag, $2 = predictions topic, rest = extra flags
  local tag=$1 g="benchtls-sink-$1-$ID" topic=$2; shift 2
  "$BIN/sink" --group "$g" --predictions-topic "$topic" --transactions-topic "$g-tx" --labels-topic "$g-labels" \
    --dlq-topic "$g-dlq" --clickhouse-database "bench_tls_${tag}_$$" --metrics-addr 127.0.0.1:0 \
    --stop-after "$STREAM_ROWS" "$@" 2>/dev/null | rate_of
}
sp=(); st=(); sr=(); kp=(); kt=(); kr=()
for i in $(seq 1 "$RUNS"); do
  sp+=("$(scorer_run "plain$i")")
  st+=("$(scorer_run "tls$i" "${SECURE_KAFKA[@]}")")
  sr+=("$(ratio "${st[-1]}" "${sp[-1]}")")
  kp+=("$(sink_run "plain$i" "benchtls-plain$i-$ID-out")")
  kt+=("$(sink_run "tls$i" "benchtls-tls$i-$ID-out" "${SECURE_KAFKA[@]}" "${SECURE_CLICKHOUSE[@]}")")
  kr+=("$(ratio "${kt[-1]}" "${kp[-1]}")")
  log "run $i: scorer ${sp[-1]} plain / ${st[-1]} TLS tx/s (${sr[-1]}); sink ${kp[-1]} plain / ${kt[-1]} TLS rows/s (${kr[-1]})"
done
mkdir -p bench/results
{
  echo "## What TLS costs — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, medians of $RUNS runs side by side ($STREAM_ROWS transactions)"
  echo
  echo "| what | plaintext | SASL_SSL / https | TLS ÷ plain, per run |"
  echo "|---|---:|---:|---|"
  echo "| scorer, exactly-once (SCRAM-SHA-512, registry over https + basic auth) | $(printf '%s\n' "${sp[@]}" | median) tx/s | $(printf '%s\n' "${st[@]}" | median) tx/s | ${sr[*]} (median $(printf '%s\n' "${sr[@]}" | median)) |"
  echo "| sink into ClickHouse (Kafka SASL_SSL, ClickHouse https + password) | $(printf '%s\n' "${kp[@]}" | median) rows/s | $(printf '%s\n' "${kt[@]}" | median) rows/s | ${kr[*]} (median $(printf '%s\n' "${kr[@]}" | median)) |"
} | tee bench/results/tls.md
