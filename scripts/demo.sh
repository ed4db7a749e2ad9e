#!/usr/bin/env bash
# make demo: the whole pipeline on the local services (deploy/local), then a summary.
#   simulate PaySim data (a card-testing fraud pattern starts midway through the stream) → split by
#   time → bootstrap a model → 2 scorers + the sink + trainer watch → publish the stream with late
#   labels → the trainer retrains from ClickHouse and the scorers hot-swap → every transaction
#   checked in ClickHouse → summary, with how the loop caught up with the new pattern.
# It stops what it started; --keep leaves the services of the pipeline running.
set -euo pipefail
cd "$(dirname "$0")/.."
KEEP=false; [ "${1:-}" = "--keep" ] && KEEP=true
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fraudstream/target}"
ROWS="${DEMO_ROWS:-2000000}"
# 2500 tx/s: an 80 s stream, in which the loop has ~40 s after the new pattern starts to gather
# the 100 frauds a retrain needs to be judged (at 5000 the stream often ended first).
RATE="${DEMO_RATE:-2500}"
# The new fraud pattern: bursts of tiny TRANSFERs testing a taken-over account, from this step
# (the stream part of the default data runs from step 383 to 744, half of its rows before 400).
DRIFT_STEP="${DEMO_DRIFT_STEP:-400}"
PATTERN="type = 'TRANSFER' AND amount <= 20 AND step >= $DRIFT_STEP"
DATA="${DEMO_DIR:-$HOME/.cache/fraudstream/demo}"
. deploy/local/env.sh
export KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
export SCHEMA_REGISTRY_URL="http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7"
export CLICKHOUSE_URL="http://127.0.0.1:$CLICKHOUSE_HTTP_PORT" CLICKHOUSE_DATABASE="demo"
RUN="demo-$(date +%s)"
export FRAUDSTREAM_TRANSACTIONS_TOPIC="$RUN-transactions" FRAUDSTREAM_LABELS_TOPIC="$RUN-labels"
export FRAUDSTREAM_PREDICTIONS_TOPIC="$RUN-predictions" FRAUDSTREAM_ALERTS_TOPIC="$RUN-fraud-alerts"
export FRAUDSTREAM_DLQ_TOPIC="$RUN-transactions-dlq" FRAUDSTREAM_SINK_DLQ_TOPIC="$RUN-predictions-dlq"
export FRAUDSTREAM_MODELS_TOPIC="$RUN-models" FRAUDSTREAM_RULES_TOPIC="$RUN-rules" RUST_LOG="${RUST_LOG:-warn}"
REVIEW_ADDR="127.0.0.1:${DEMO_REVIEW_PORT:-8088}"
mkdir -p "$DATA"
pids=()
stop_all() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
$KEEP || trap stop_all EXIT
sql() { curl -sf "$CLICKHOUSE_URL/?database=$CLICKHOUSE_DATABASE" --data-binary "$1"; }
metric() { curl -s "127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m {print $2}'; }
sum_metric() { local s=0 v; for port in 9111 9112; do v=$(metric "$port" "$1"); s=$((s + ${v%.*})); done; echo "$s"; }
started=$(date +%s)

# The drift story: recall on the new pattern (fraudulent TRANSFERs of at most 20.00 from
# $DRIFT_STEP on) live, by the version that scored it, against the frozen first model on the same
# transactions; when the loop caught up; what the gate decided; how challengers did in shadow.
drift_summary() {
  local probes="SELECT transaction_id, step FROM labelled_transactions WHERE is_fraud = 1 AND $PATTERN"
  echo "  new pattern (card testing from step $DRIFT_STEP: $PATTERN), live, by the version that scored it:"
  sql "SELECT concat('v', toString(model_version)) AS version, count() AS frauds, sum(is_alert) AS caught,
    round(sum(is_alert) / count(), 3) AS recall, min(step) AS first_step, toString(min(event_time)) AS first_scored
    FROM (SELECT transaction_id, model_version, is_alert, event_time FROM predictions FINAL)
    ANY INNER JOIN ($probes) AS p USING transaction_id
    GROUP BY model_version ORDER BY model_version FORMAT PrettyCompactNoEscapes" | sed 's/^/    /'
  local live frozen
  live=$(sql "SELECT concat(toString(sum(is_alert)), ' of ', toString(count())) FROM predictions FINAL ANY INNER JOIN ($probes) AS p USING transaction_id")
  frozen=$("$BIN/trainer" evaluate 1 --focus "is_fraud = 1 AND $PATTERN" | grep '^focus' | grep -Eo 'caught [0-9.]+ of [0-9.]+ \(recall [0-9.]+\)')
  echo "  the loop caught $live; the frozen first model (v1) on the same transactions: $frozen"
  # Recovered: the first version that scored at least 5 of the pattern's frauds and caught half.
  local rec
  rec=$(sql "SELECT model_version, min(event_time) - (SELECT min(event_time) FROM transactions FINAL WHERE transaction_id IN (SELECT transaction_id FROM ($probes))),
      min(step) - $DRIFT_STEP
    FROM (SELECT transaction_id, model_version, is_alert, event_time FROM predictions FINAL)
    ANY INNER JOIN ($probes) AS p USING transaction_id
    GROUP BY model_version HAVING count() >= 5 AND sum(is_alert) >= count() / 2 ORDER BY min(event_time) LIMIT 1 FORMAT TSV")
  if [ -n "$rec" ]; then
    read -r rv rsecs rsteps <<<"$rec"
    echo "  recovered: v$rv, the first version to catch half of the pattern, took over ${rsecs} s (wall) and ${rsteps} simulated"
    echo "    hours after the pattern began (the replay is paced by rows, --rate: quiet hours pass quickly)"
    local after
    after=$("$BIN/trainer" evaluate 1 --focus "is_fraud = 1 AND $PATTERN AND transaction_id IN (SELECT transaction_id FROM predictions WHERE model_version = $rv)" |
      grep '^focus' | grep -Eo 'caught [0-9.]+ of [0-9.]+ \(recall [0-9.]+\)')
    echo "    on the pattern's frauds that v$rv scored live, the frozen v1 would have $after"
  else
    echo "  not recovered: no version caught half of the pattern's frauds (DEMO_RATE lower gives the loop more time)"
  fi
  echo "  gate decisions (trainer.log):"
  grep '^gate' "$DATA/trainer.log" | sed 's/^/    /' || echo "    (none)"
  echo "  challengers in shadow (labelled frauds they scored; alert = at or above the champion's threshold):"
  sql "SELECT concat('v', toString(challenger_version)) AS challenger, count() AS shadow_scored,
    sum(is_fraud) AS frauds, sum(is_fraud * is_alert) AS champion_caught,
    sum(is_fraud * (challenger_score >= threshold)) AS challenger_caught,
    sum((1 - is_fraud) * (challenger_score >= threshold)) AS challenger_false_alerts
    FROM predictions_labelled WHERE isNotNull(challenger_version) AND has_label = 1
    GROUP BY challenger_version ORDER BY challenger_version FORMAT PrettyCompactNoEscapes" | sed 's/^/    /'
}

echo "== building (release)"
cargo build -q --release -p producer -p scorer -p sink -p trainer -p review
BIN="$CARGO_TARGET_DIR/release"

echo "== 1. simulate $ROWS PaySim-like rows (card testing from step $DRIFT_STEP), split by time: 90% historical (training), 10% stream"
"$BIN/producer" simulate --rows "$ROWS" --seed 42 --drift "card-testing@$DRIFT_STEP" --out "$DATA/paysim.csv" | tail -1
"$BIN/producer" split --input "$DATA/paysim.csv" --ratio 0.9 --out-dir "$DATA" | tail -1
STREAM_ROWS=$(($(wc -l <"$DATA/stream.csv") - 1))

echo "== 2. ClickHouse database '$CLICKHOUSE_DATABASE' (fresh), first model from the historical part"
curl -sf "$CLICKHOUSE_URL/" --data-binary "DROP DATABASE IF EXISTS $CLICKHOUSE_DATABASE" >/dev/null
# The earlier demos' topics go with their database: left on the broker, every run would add ~50
# partitions, and a broker restart takes back each partition's leadership one by one.
deploy/local/kafka-topics.sh --delete --if-exists --topic 'demo-[0-9]+-.*' >/dev/null 2>&1 || echo "  (could not delete earlier demo topics; carrying on)"
"$BIN/trainer" bootstrap --csv "$DATA/historical.csv" --out "$DATA/model-v1.txt" --report "$DATA/reports/v1" --max-rounds 100 | grep -E 'trained|gate|report'

echo "== 3. an analyst rule, two scorers (one consumer group), the sink, the trainer watching ClickHouse, the review page"
# Tagged (recorded, no alert): large transfers out of an account not seen in the last 24 h.
"$BIN/trainer" rules add big-transfer-new-account --owner demo --action tag \
  --expr "type == 'TRANSFER' && amount > 1000000 && orig_steps_since_last == -1" | sed 's/^/   /'
# The review page, with one analyst whose password is made for this run.
DEMO_PASSWORD="$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
echo "demo:$(printf '%s\n' "$DEMO_PASSWORD" | "$BIN/review" hash-password)" >"$DATA/review-users"
"$BIN/review" serve --users "$DATA/review-users" --listen "$REVIEW_ADDR" --metrics-addr 127.0.0.1:9114 >"$DATA/review.log" 2>&1 &
pids+=($!)
for i in 1 2; do
  "$BIN/scorer" --instance-id "$RUN-scorer-$i" --group "$RUN-scorer" --metrics-addr "127.0.0.1:911$i" >"$DATA/scorer-$i.log" 2>&1 &
  pids+=($!)
done
"$BIN/sink" --group "$RUN-sink" --metrics-addr 127.0.0.1:9113 --batch-ms 500 >"$DATA/sink.log" 2>&1 &
pids+=($!)
# Retrain once 30k new labelled rows are in ClickHouse (this file is re-read every cycle: edit it
# while the demo runs to change the thresholds).
echo '{"min_rows": 30000, "limit": 1000000, "poll_seconds": 1}' >"$DATA/trainer-watch.json"
rm -f "$DATA/trainer-state.json"
# OpenMP threads that wait passively: LightGBM's spinning ones fought the scorers for the two
# cores, and a retrain on 30k rows took 10-15 s instead of 2-4 (libgomp reads this at load, so it
# is set here, not in the trainer).
# Labels come 1-5 s after their transaction (frauds anywhere in that window, the rest at its end):
# the trainer leaves out the last 5 s, whose labels may still be on the way.
OMP_WAIT_POLICY=passive "$BIN/trainer" watch --config "$DATA/trainer-watch.json" --state "$DATA/trainer-state.json" \
  --report "$DATA/reports/latest" --max-rounds 100 --tolerance 0.005 --label-maturity 5s >"$DATA/trainer.log" 2>&1 &
trainer_pid=$!
pids+=($trainer_pid)
for port in 9111 9112 9113 9114; do
  for _ in $(seq 1 120); do curl -sf "127.0.0.1:$port/health" >/dev/null && break; sleep 0.5; done
done
echo "   scorer: $(curl -s 127.0.0.1:9111/health)   sink: $(curl -s 127.0.0.1:9113/health)"

echo "== 4. publish the stream part ($STREAM_ROWS transactions) at $RATE tx/s; frauds reported 1-5 s later, the rest confirmed at 5 s"
"$BIN/producer" publish --input "$DATA/stream.csv" --id-prefix "$RUN" --rate "$RATE" --label-delay 1..5s | tail -2

echo "== 5. waiting until ClickHouse holds every transaction, prediction and label"
for _ in $(seq 1 240); do
  counts=$(sql "SELECT (SELECT count() FROM transactions FINAL), (SELECT count() FROM predictions FINAL), (SELECT count() FROM labels FINAL) FORMAT TSV" || echo "0	0	0")
  read -r tx pred lab <<<"$counts"
  [ "$tx" -ge "$STREAM_ROWS" ] && [ "$pred" -ge "$STREAM_ROWS" ] && [ "$lab" -ge "$STREAM_ROWS" ] && break
  sleep 0.5
done
echo "   transactions $tx, predictions $pred, labels $lab (of $STREAM_ROWS)"
# The trainer stops first, so the summary's model list is final.
$KEEP || { kill -TERM "$trainer_pid" 2>/dev/null; wait "$trainer_pid" 2>/dev/null || true; }

echo
echo "== summary ($(($(date +%s) - started)) s)"
sql "SELECT
  count() AS predictions, uniqExact(transaction_id) AS distinct_ids, sum(is_alert) AS alerts,
  sum(is_alert * is_fraud) AS true_alerts, sum(is_alert * (1 - is_fraud)) AS false_alerts,
  sum((1 - is_alert) * is_fraud) AS missed_fraud,
  round(sum(is_alert * is_fraud) / greatest(sum(is_alert), 1), 4) AS precision,
  round(sum(is_alert * is_fraud) / greatest(sum(is_fraud), 1), 4) AS recall
FROM predictions_labelled FORMAT Vertical" | sed 's/^/  /'
echo "  predictions by model version:"
sql "SELECT concat('v', toString(model_version)) AS version, count() AS predictions, sum(is_alert) AS alerts,
  countIf(isNotNull(challenger_score)) AS shadow_scored FROM predictions FINAL GROUP BY version ORDER BY version FORMAT PrettyCompactNoEscapes" | sed 's/^/    /'
echo "  event → prediction latency (scored_at - event_time), p50 / p99: $(sql "SELECT arrayStringConcat(arrayMap(x -> concat(toString(round(x)), ' ms'), quantiles(0.5, 0.99)(latency_ms)), ' / ') FROM predictions FINAL")"
echo "  scorers: $(sum_metric scorer_records_in_total) transactions scored, $(sum_metric scorer_model_swaps_total) model swaps, $(sum_metric scorer_transactions_committed_total) Kafka transactions committed / $(sum_metric scorer_transactions_aborted_total) aborted, $(sum_metric scorer_dlq_total) dead letters"
echo "  sink: $(metric 9113 sink_batches_total) batches, $(metric 9113 sink_insert_retries_total) insert retries, $(metric 9113 sink_dlq_total) dead letters"
echo "  trainer: $(grep -c '^trained' "$DATA/trainer.log" || true) retraining(s) from ClickHouse, $(grep -c '^training skipped' "$DATA/trainer.log" || true) skipped; state $(tr -d ' \n' <"$DATA/trainer-state.json" 2>/dev/null || echo none)"
echo "  model versions (trainer list):"
"$BIN/trainer" list | sed 's/^/    /'
echo "  reports: $DATA/reports/v1.html, $DATA/reports/latest.html"
echo "  rules: $(sql "SELECT count() FROM rule_hits") predictions matched big-transfer-new-account (tag), $(sql "SELECT sum(is_fraud) FROM rule_hits") of them fraud"
echo "  review page: http://$REVIEW_ADDR (user demo, password $DEMO_PASSWORD): $(sql "SELECT count() FROM predictions FINAL WHERE is_alert = 1") alerts to review; up while the demo runs (DEMO_ARGS=--keep keeps it)"
drift_summary

echo
echo "== look inside"
echo "  kcat -b $KAFKA_BROKERS -C -t $FRAUDSTREAM_ALERTS_TOPIC -c 3 -e -f 'key=%k partition=%p offset=%o %S bytes\\n'"
echo "  curl -s '$CLICKHOUSE_URL/?database=demo' --data-binary 'SELECT transaction_id, score, reason_features FROM predictions FINAL WHERE is_alert LIMIT 5'"
echo "  curl -s 127.0.0.1:9111/metrics | grep ^scorer_      (while running: make demo DEMO_ARGS=--keep)"
echo "  $BIN/trainer list    $BIN/trainer show 1    (with CLICKHOUSE_DATABASE=demo FRAUDSTREAM_MODELS_TOPIC=$FRAUDSTREAM_MODELS_TOPIC)"
$KEEP && echo "  (--keep: scorers, sink, trainer and review page still running: kill ${pids[*]})"
if [ "$pred" -lt "$STREAM_ROWS" ] || [ "$tx" -lt "$STREAM_ROWS" ] || [ "$lab" -lt "$STREAM_ROWS" ]; then
  echo "demo: FAILED — not everything landed in ClickHouse (logs in $DATA)"; exit 1
fi
echo "demo: done"
