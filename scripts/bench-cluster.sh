#!/usr/bin/env bash
# What a replicated cluster costs (part of `make bench`; runs alone too): the scorer, the raw
# passthrough and the sink on the same data, side by side in each run, once on the single-node
# services (one broker, RF=1; one ClickHouse) and once on the cluster of deploy/local/cluster.sh
# (three brokers, RF=3, min.insync.replicas=2; two ClickHouse replicas behind a Distributed
# table), plus the end-to-end latency at 20k tx/s on each. Medians of $RUNS runs;
# bench/results/cluster.md. All of it shares this machine's 2 cores: a real cluster has a machine
# per node, so the cluster column is a floor.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-3}"
ROWS="${BENCH_CLUSTER_ROWS:-5000000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fraudstream/target}"
cargo build -q --release -p producer -p scorer -p sink -p trainer --bins --examples
BIN="$CARGO_TARGET_DIR/release"
. deploy/local/env.sh
. scripts/bench-lib.sh
deploy/local/cluster.sh up >/dev/null 2>&1 || { echo "bench-cluster: the cluster did not start (run deploy/local/cluster.sh up)" >&2; exit 1; }
WORK="$(mktemp -d "${TMPDIR:-/tmp}/fraudstream-bench-cluster.XXXXXX")"
ID="$$-$(date +%s)"
cleanup() {
  rm -rf "$WORK"
  for where in single cluster; do
    use_services "$where"
    deploy/local/kafka-topics.sh --delete --topic "benchcl-.*|bench-lat-.*-$ID-.*" >/dev/null 2>&1 || true
    for i in $(seq 1 "$RUNS"); do
      curl -sf "$CLICKHOUSE_URL/" --data-binary \
        "DROP DATABASE IF EXISTS bench_cluster_${where}_${i}_$$${CLICKHOUSE_CLUSTER:+ ON CLUSTER $CLICKHOUSE_CLUSTER}" >/dev/null 2>&1 || true
    done
  done
}
trap cleanup EXIT

echo "bench-cluster: $RUNS runs, $ROWS simulated rows" >&2
"$BIN/producer" simulate --rows "$ROWS" --seed 5 --out "$WORK/paysim.csv" >/dev/null
"$BIN/producer" split -i "$WORK/paysim.csv" --out-dir "$WORK" >/dev/null
STREAM_ROWS=$(($(wc -l <"$WORK/stream.csv") - 1))
"$BIN/trainer" bootstrap --csv "$WORK/historical.csv" --out "$WORK/model.txt" --no-publish --max-rounds 100 \
  --report "$WORK/model" >/dev/null 2>&1
MODEL_FLAGS=(--model "$WORK/model.txt")
TX="benchcl-tx-$ID"
for where in single cluster; do
  use_services "$where"
  deploy/local/kafka-topics.sh --create --topic "$TX" --partitions 6 >/dev/null 2>&1 || true
  "$BIN/producer" publish -i "$WORK/stream.csv" --transactions-topic "$TX" --labels-topic "benchcl-labels-$ID" \
    --label-delay 0 >/dev/null 2>&1
done

scorer_run() { # $1 = tag, rest = extra flags
  local g="benchcl-$1-$ID"; shift
  "$BIN/scorer" --instance-id "$g" --group "$g" --transactions-topic "$TX" --predictions-topic "$g-out" \
    --alerts-topic "$g-alerts" --dlq-topic "$g-dlq" --models-topic "$g-models" --rules-topic "$g-rules" \
    "${MODEL_FLAGS[@]}" --metrics-addr 127.0.0.1:0 --stop-after "$STREAM_ROWS" --commit-interval-ms 100 "$@" \
    2>/dev/null | rate_of
}
sink_run() { # $1 = the scorer run whose predictions it lands, $2 = database
  local g="benchcl-sink-$1-$ID"
  "$BIN/sink" --group "$g" --predictions-topic "benchcl-$1-$ID-out" --transactions-topic "$g-tx" \
    --labels-topic "$g-labels" --dlq-topic "$g-dlq" --clickhouse-database "$2" --metrics-addr 127.0.0.1:0 \
    --stop-after "$STREAM_ROWS" 2>/dev/null | rate_of
}
declare -A sc pt sk p99
for i in $(seq 1 "$RUNS"); do
  for where in single cluster; do
    use_services "$where"
    sc[$where]+=" $(scorer_run "$where-score$i")"
    pt[$where]+=" $(scorer_run "$where-pass$i" --passthrough)"
    sk[$where]+=" $(sink_run "$where-score$i" "bench_cluster_${where}_${i}_$$")"
    p99[$where]+=" $(latency_run 20000 "$where-$i" | pct p99)"
  done
  log "run $i: scorer${sc[single]##* } / ${sc[cluster]##* } tx/s, passthrough ${pt[single]##* } / ${pt[cluster]##* } tx/s, sink ${sk[single]##* } / ${sk[cluster]##* } rows/s, p99 at 20k ${p99[single]##* } / ${p99[cluster]##* } ms (single / cluster)"
done

# row LABEL UNIT ARRAY: medians of both columns and the cluster ÷ single ratio of each run.
row() {
  local single=(${2}) cluster=(${3}) ratios=() k
  for k in "${!single[@]}"; do ratios+=("$(ratio "${cluster[$k]}" "${single[$k]}")"); done
  echo "| $1 | $(printf '%s\n' "${single[@]}" | median) $4 | $(printf '%s\n' "${cluster[@]}" | median) $4 | ${ratios[*]} (median $(printf '%s\n' "${ratios[@]}" | median)) |"
}
mkdir -p bench/results
{
  echo "## Single node vs cluster — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores for every node, medians of $RUNS runs side by side ($STREAM_ROWS transactions)"
  echo
  echo "Single: one Kafka broker (RF=1), one ClickHouse. Cluster: three KRaft brokers (RF=3,"
  echo "min.insync.replicas=2, acks=all), two ClickHouse replicas (ReplicatedReplacingMergeTree behind a"
  echo "Distributed table, ZooKeeper). Every process shares the same $(nproc) cores."
  echo
  echo "| what | single node | cluster | cluster ÷ single, per run |"
  echo "|---|---:|---:|---|"
  row "scorer, exactly-once (1 instance, 6 partitions)" "${sc[single]}" "${sc[cluster]}" "tx/s"
  row "raw passthrough (same EOS loop)" "${pt[single]}" "${pt[cluster]}" "tx/s"
  row "sink into ClickHouse (the scorer run's predictions)" "${sk[single]}" "${sk[cluster]}" "rows/s"
  row "end-to-end p99 at 20000 tx/s (event → committed prediction)" "${p99[single]}" "${p99[cluster]}" "ms"
} | tee bench/results/cluster.md
