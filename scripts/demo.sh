#!/usr/bin/env bash
# make demo: the pipeline on the local services (deploy/local), end to end, then a summary.
# Today: simulate PaySim data → split by time → train and publish a model → two scorers in one
# consumer group → publish the stream → a model published mid-stream is hot-swapped → summary.
# The sink (ClickHouse) and the trainer's retraining join this script as they land.
# --keep leaves the scorers running.
set -euo pipefail
cd "$(dirname "$0")/.."
KEEP=false; [ "${1:-}" = "--keep" ] && KEEP=true
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fraudstream/target}"
ROWS="${DEMO_ROWS:-2000000}"
DATA="${DEMO_DIR:-$HOME/.cache/fraudstream/demo}"
. deploy/local/env.sh
export KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
export SCHEMA_REGISTRY_URL="http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7"
RUN="demo-$(date +%s)"
export FRAUDSTREAM_TRANSACTIONS_TOPIC="$RUN-transactions" FRAUDSTREAM_LABELS_TOPIC="$RUN-labels"
export FRAUDSTREAM_PREDICTIONS_TOPIC="$RUN-predictions" FRAUDSTREAM_ALERTS_TOPIC="$RUN-fraud-alerts"
export FRAUDSTREAM_DLQ_TOPIC="$RUN-transactions-dlq" FRAUDSTREAM_MODELS_TOPIC="$RUN-models"
mkdir -p "$DATA"
pids=()
stop_scorers() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; }
$KEEP || trap stop_scorers EXIT

echo "== building (release)"
cargo build -q --release -p producer -p scorer -p trainer
BIN="$CARGO_TARGET_DIR/release"

echo "== 1. simulate $ROWS PaySim-like rows"
"$BIN/producer" simulate --rows "$ROWS" --seed 42 --out "$DATA/paysim.csv" --stats
echo
echo "== 2. split by time: 90% historical (training), 10% stream"
"$BIN/producer" split --input "$DATA/paysim.csv" --ratio 0.9 --out-dir "$DATA"
echo
echo "== 3. train the first model on the historical part and publish it"
"$BIN/trainer" bootstrap --csv "$DATA/historical.csv" --out "$DATA/model-v1.txt"
echo
echo "== 4. two scorers in one consumer group"
for i in 1 2; do
  "$BIN/scorer" --instance-id "$RUN-scorer-$i" --group "$RUN-scorer" --metrics-addr "127.0.0.1:$((9110 + i))" \
    >"$DATA/scorer-$i.log" 2>&1 &
  pids+=($!)
done
for i in 1 2; do
  for _ in $(seq 1 60); do curl -sf "127.0.0.1:$((9110 + i))/health" >/dev/null && break; sleep 0.5; done
done
echo "   ready: $(curl -s 127.0.0.1:9111/health)"
echo
echo "== 5. publish the stream part at 20k tx/s (labels 24 PaySim steps later); retrain mid-stream"
"$BIN/producer" publish --input "$DATA/stream.csv" --id-prefix "$RUN" --rate 20000 --label-delay 24steps &
pub=$!
sleep 3
"$BIN/trainer" bootstrap --csv "$DATA/historical.csv" --out "$DATA/model-v2.txt" --target-precision 0.95 | tail -1
wait "$pub"
sleep 3

metric() { curl -s "127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m {print $2}'; }
sum_metric() { echo $(( $(metric 9111 "$1" | cut -d. -f1) + $(metric 9112 "$1" | cut -d. -f1) )); }
echo
echo "== summary"
echo "  transactions scored:  $(sum_metric scorer_records_in_total)"
echo "  predictions:          $(sum_metric scorer_predictions_out_total)"
echo "  alerts:               $(sum_metric scorer_alerts_total)"
echo "  dead letters:         $(sum_metric scorer_dlq_total)"
echo "  model swaps:          $(sum_metric scorer_model_swaps_total) (champion now v$(metric 9111 'scorer_model_version{role="champion"}'))"
echo "  transactions committed / aborted: $(sum_metric scorer_transactions_committed_total) / $(sum_metric scorer_transactions_aborted_total)"
echo "  fraud in the stream part: $(awk -F, 'NR > 1 && $10 == 1' "$DATA/stream.csv" | wc -l)"
echo
echo "== look inside"
echo "  kcat -b $KAFKA_BROKERS -C -t $FRAUDSTREAM_ALERTS_TOPIC -c 3 -f 'key=%k partition=%p offset=%o %S bytes\\n'"
echo "  curl -s 127.0.0.1:9111/metrics | grep ^scorer_"
echo "  deploy/local/kafka-topics.sh --describe --topic $FRAUDSTREAM_MODELS_TOPIC"
$KEEP && echo "  (--keep: scorers still running, pids ${pids[*]})"
echo "demo: done (ClickHouse sink, precision/recall against labels and retraining from ClickHouse arrive with issues 5-7)"
