#!/usr/bin/env bash
# make bench: measures on the local services and prints a markdown table of medians of $RUNS runs
# (also written to bench/results/latest.md). Ratios are taken run by run, side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-3}"
ROWS="${BENCH_ROWS:-6362620}"
# The simulator's profile (realistic by default; `kaggle` reproduces the earlier tables).
PROFILE="${BENCH_PROFILE:-realistic}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fraudstream/target}"
cargo build -q --release -p producer -p scorer -p sink -p trainer --bins --examples
BIN="$CARGO_TARGET_DIR/release"
. deploy/local/env.sh
export KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT" SCHEMA_REGISTRY_URL="http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7"
export CLICKHOUSE_URL="http://127.0.0.1:$CLICKHOUSE_HTTP_PORT"
# The bench's models are archived in a database of its own, dropped at the end: a user's first
# `trainer bootstrap` afterwards is still v1, and `trainer list` does not show them.
export CLICKHOUSE_DATABASE="bench_models_$$"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/fraudstream-bench.XXXXXX")"
ID="$$-$(date +%s)"
cleanup() {
  rm -rf "$WORK"
  for db in $(seq -f "bench_sink_%g_$$" 1 "$RUNS") $(seq -f "bench_raw_%g_$$" 1 "$RUNS") "$CLICKHOUSE_DATABASE"; do
    curl -sf "$CLICKHOUSE_URL/" --data-binary "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
  done
  deploy/local/kafka-topics.sh --delete --topic "bench-.*" >/dev/null 2>&1 || true
}
trap cleanup EXIT

. scripts/bench-lib.sh
# The cluster (left running by `make test`) takes ~0.13 of a core even idle (measured freshly
# started): the single-broker rows are measured without it. bench-cluster.sh starts it again.
if deploy/local/cluster.sh status 2>/dev/null | grep -q running; then
  log "stopping the local cluster for the single-broker rows"
  deploy/local/cluster.sh down >/dev/null 2>&1
fi
# peak_rss CMD...: runs CMD, prints its output; its peak RSS (KiB) and user + system CPU seconds
# go to $WORK/rss.
peak_rss() { /usr/bin/time -f '%M %U %S' -o "$WORK/rss" "$@"; }
rss_mb() { echo $(( $(tail -1 "$WORK/rss" | cut -d' ' -f1) / 1024 )); }
# cpu_us N: the last run's user + system CPU per record, in µs, over N records.
cpu_us() { tail -1 "$WORK/rss" | awk -v n="$1" '{printf "%.2f", ($2 + $3) * 1e6 / n}'; }
# Analyst rule k of the bench's rule sets: typical conditions over fields, features and the score,
# selective as analysts write them (together they add well under 1% of alerts).
rule_expr() { # $1 = index
  case $(($1 % 5)) in
    0) echo "type == 'TRANSFER' && amount > $((5000000 + $1 * 100000)) && orig_steps_since_last == -1" ;;
    1) echo "type in ['CASH_OUT', 'TRANSFER'] && orig_emptied == 1 && amount > $((5000000 + 100000 * $1))" ;;
    2) echo "name_dest.startsWith('C9$(($1 % 10))') && score > 0.9" ;;
    3) echo "orig_tx_count_window > $(($1 % 4 + 8)) && orig_amount_sum_window > $((1000000 * $1))" ;;
    4) echo "amount_to_balance_org > $((50 + $1)) && oldbalance_org > 10000 && hour_of_day < 3 && type != 'PAYMENT'" ;;
  esac
}

echo "bench: $RUNS runs each, $ROWS simulated rows ($PROFILE profile), $(nproc) cores" >&2
sim=(); pub=()
for i in $(seq 1 "$RUNS"); do
  sim+=("$("$BIN/producer" simulate --rows "$ROWS" --seed "$i" --profile "$PROFILE" --out "$WORK/paysim.csv" | rate_of)")
  log "simulate run $i: ${sim[-1]} rows/s"
done
"$BIN/producer" split -i "$WORK/paysim.csv" --out-dir "$WORK" >/dev/null
STREAM_ROWS=$(($(wc -l <"$WORK/stream.csv") - 1))
for i in $(seq 1 "$RUNS"); do
  pub+=("$("$BIN/producer" publish -i "$WORK/stream.csv" --transactions-topic "bench-tx-$i-$ID" \
    --labels-topic "bench-labels-$i-$ID" --label-delay 0 2>/dev/null | rate_of)")
  log "publish run $i (transactions + labels): ${pub[-1]} tx/s"
done

# Trainer: bootstrap on the historical 90% (one run: it is the slow one).
MODELS="bench-models-$ID"
train_out=$("$BIN/trainer" bootstrap --csv "$WORK/historical.csv" --out "$WORK/model.txt" --models-topic "$MODELS" \
  --report "$WORK/model" 2>/dev/null)
read_s=$(echo "$train_out" | grep -Eo 'in [0-9.]+s' | head -1 | grep -Eo '[0-9.]+')
train_s=$(echo "$train_out" | grep -Eo 'trained in [0-9.]+s' | grep -Eo '[0-9.]+')
pr_auc=$(echo "$train_out" | grep -Eo 'PR-AUC [0-9.]+' | head -1 | grep -Eo '[0-9.]+')
baseline_auc=$(echo "$train_out" | grep '^baseline' | grep -Eo 'PR-AUC [0-9.]+' | grep -Eo '[0-9.]+')
HIST_ROWS=$(($(wc -l <"$WORK/historical.csv") - 1))
TREES=$(grep -c '^Tree=' "$WORK/model.txt")
log "trainer: read ${read_s}s, trained ${train_s}s, holdout PR-AUC $pr_auc, $TREES trees"
# A compact model on the same data, to show what the model's size costs the scorer.
SMALL_ROUNDS=25
SMALL_MODELS="bench-models-small-$ID"
small_out=$("$BIN/trainer" bootstrap --csv "$WORK/historical.csv" --out "$WORK/model-small.txt" \
  --models-topic "$SMALL_MODELS" --max-rounds "$SMALL_ROUNDS" --report "$WORK/small" 2>/dev/null)
small_auc=$(echo "$small_out" | grep -Eo 'PR-AUC [0-9.]+' | head -1 | grep -Eo '[0-9.]+')
log "compact model: $SMALL_ROUNDS rounds, holdout PR-AUC $small_auc"

# What the scorer's scoring stage costs per record, stage by stage, without Kafka.
# 50 analyst rules (those of the scorer rows below) evaluated on every record, apart from the total.
for k in $(seq 1 50); do
  printf '%s\t%s\n' "$([ $((k % 3)) -eq 0 ] && echo tag || echo alert)" "$(rule_expr "$k")"
done >"$WORK/rules.tsv"
stages=$(RULES_FILE="$WORK/rules.tsv" "$BIN/examples/stages" "$WORK/stream.csv" "$WORK/model.txt" 2>/dev/null)
log "scoring stages (CPU per record):"$'\n'"$stages"
stage_us() { echo "$stages" | awk -v s="$1" '$1 == s":" {print $2}'; }

# Scorer vs raw passthrough, side by side on the same pre-filled topic.
scorer_run() { # $1 = run tag, rest = extra flags; the models topic is $MT (default: the bench model)
  local g="bench-$1-$ID"; shift
  peak_rss "$BIN/scorer" --instance-id "$g" --group "$g" --transactions-topic "bench-tx-1-$ID" \
    --predictions-topic "$g-out" --alerts-topic "$g-alerts" --dlq-topic "$g-dlq" --models-topic "${MT:-$MODELS}" \
    --rules-topic "${RT:-bench-rules0-$ID}" --metrics-addr 127.0.0.1:0 --stop-after "$STREAM_ROWS" --commit-interval-ms 100 "$@" 2>/dev/null | rate_of
}
sc=(); pt=(); ratio=(); rss=(); sk=(); sk_rss=(); raw=(); sk_ratio=(); small=(); small_ratio=(); lg=(); lg_ratio=()
cpu=(); pt_cpu=(); pt_rss=(); big=(); big_rss=()
# The scorer/passthrough ratio moves most from run to run on a shared machine: $PAIRS pairs, each
# side by side, with nothing else (such as ClickHouse merging the sink's inserts) in between.
PAIRS="${PAIRS:-5}"
# Analyst rules: 10 and 50 enabled (rule_expr above), published with `trainer rules add`.
rules10=(); rules50=(); rules10_ratio=(); rules50_ratio=()
for n in 10 50; do
  for k in $(seq 1 "$n"); do
    "$BIN/trainer" rules --rules-topic "bench-rules$n-$ID" add "r$k" --expr "$(rule_expr "$k")" \
      --action "$([ $((k % 3)) -eq 0 ] && echo tag || echo alert)" >/dev/null
  done
done
for i in $(seq 1 "$PAIRS"); do
  sc+=("$(scorer_run "score$i")"); rss+=("$(rss_mb)"); cpu+=("$(cpu_us "$STREAM_ROWS")")
  pt+=("$(scorer_run "pass$i" --passthrough)"); pt_rss+=("$(rss_mb)"); pt_cpu+=("$(cpu_us "$STREAM_ROWS")")
  # librdkafka's queues as large as before --memory-budget-mib existed (64 MiB each way).
  big+=("$(scorer_run "big$i" --memory-budget-mib 256)"); big_rss+=("$(rss_mb)")
  ratio+=("$(awk -v a="${sc[-1]}" -v b="${pt[-1]}" 'BEGIN {printf "%.2f", a / b}')")
  small+=("$(MT="$SMALL_MODELS" scorer_run "small$i")")
  small_ratio+=("$(awk -v a="${small[-1]}" -v b="${pt[-1]}" 'BEGIN {printf "%.2f", a / b}')")
  # The same model scored by LightGBM's own predict and SHAP instead of the native evaluation.
  lg+=("$(scorer_run "lgbm$i" --lightgbm-predict)")
  lg_ratio+=("$(awk -v a="${lg[-1]}" -v b="${pt[-1]}" 'BEGIN {printf "%.2f", a / b}')")
  rules10+=("$(RT="bench-rules10-$ID" scorer_run "rules10-$i")")
  rules50+=("$(RT="bench-rules50-$ID" scorer_run "rules50-$i")")
  rules10_ratio+=("$(awk -v a="${rules10[-1]}" -v b="${sc[-1]}" 'BEGIN {printf "%.2f", a / b}')")
  rules50_ratio+=("$(awk -v a="${rules50[-1]}" -v b="${sc[-1]}" 'BEGIN {printf "%.2f", a / b}')")
  log "scorer with 10 / 50 rules: ${rules10[-1]} / ${rules50[-1]} tx/s (${rules10_ratio[-1]} / ${rules50_ratio[-1]} of no rules)"
  log "scorer run $i: ${sc[-1]} tx/s, passthrough ${pt[-1]} tx/s, ratio ${ratio[-1]}, scorer peak RSS ${rss[-1]} MiB (budget 256: ${big_rss[-1]} MiB, ${big[-1]} tx/s); compact model ${small[-1]} tx/s, ratio ${small_ratio[-1]}; LightGBM's predict ${lg[-1]} tx/s"
done

# Cold start: a scorer joining a group whose partitions hold 1M records each rebuilds the account
# state of each (--state-lookback records back) before scoring. Measured from the process start
# to its exit after committing its first batch (--stop-after 1): an upper bound of start → first
# committed prediction.
COLD="bench-cold-$ID"
deploy/local/kafka-topics.sh --create --topic "$COLD-tx" --partitions 6 >/dev/null 2>&1 || true
"$BIN/producer" publish -i "$WORK/stream.csv" --transactions-topic "$COLD-tx" --labels-topic "$COLD-labels" \
  --label-delay 0 --loop --limit 6000000 >/dev/null 2>&1
# The group's offsets at the end of those 6M (passthrough commits them like the scorer), then more.
"$BIN/scorer" --passthrough --instance-id "$COLD-p" --group "$COLD-g" --transactions-topic "$COLD-tx" \
  --predictions-topic "$COLD-pass" --alerts-topic "$COLD-alerts" --dlq-topic "$COLD-dlq" --models-topic "$MODELS" \
  --metrics-addr 127.0.0.1:0 --stop-after 6000000 >/dev/null 2>&1
"$BIN/producer" publish -i "$WORK/stream.csv" --transactions-topic "$COLD-tx" --labels-topic "$COLD-labels" \
  --label-delay 0 --limit 60000 --id-prefix cold >/dev/null 2>&1
cold=(); rebuild=()
for i in $(seq 1 "$RUNS"); do
  t0=$(date +%s%N)
  RUST_LOG=info,rdkafka=warn "$BIN/scorer" --instance-id "$COLD-$i" --group "$COLD-g" --transactions-topic "$COLD-tx" \
    --predictions-topic "$COLD-out" --alerts-topic "$COLD-alerts" --dlq-topic "$COLD-dlq" --models-topic "$MODELS" \
    --metrics-addr 127.0.0.1:0 --stop-after 1 --log-format json >"$WORK/cold.log" 2>&1
  cold+=("$(( ($(date +%s%N) - t0) / 1000000 ))")
  # Records per second of the state rebuild, over the partitions this run rebuilt.
  rebuild+=("$(grep '"account state rebuilt"' "$WORK/cold.log" | python3 -c '
import json, sys
rows = [json.loads(l)["fields"] for l in sys.stdin]
print(round(sum(r["records"] for r in rows) / max(sum(r["ms"] for r in rows), 1) * 1000) if rows else 0)')")
  log "cold start run $i: ${cold[-1]} ms to the first committed batch and exit; state rebuilt at ${rebuild[-1]} records/s"
done
# clickhouse_quiet: waits (up to 60 s) until ClickHouse merges nothing, so that the sink and the raw
# insert each start with the server to themselves: the parts one run leaves are merged in the
# background, and the run after it paid for them (the raw insert moved from 836k to 1.40M rows/s
# between runs of one bench).
# Each probe is bounded and the wait is wall time, as `wait_for`'s (deploy/local/env.sh).
clickhouse_quiet() {
  local end=$((SECONDS + 60))
  while ((SECONDS < end)); do
    [ "$(curl -sf --max-time "$PROBE_SECS" "$CLICKHOUSE_URL/" --data-binary 'SELECT count() FROM system.merges' 2>/dev/null)" = 0 ] && return
    sleep 0.5
  done
  log "ClickHouse still merging after 60 s; measuring anyway"
}
for i in $(seq 1 "$RUNS"); do
  clickhouse_quiet
  # The sink lands a scorer run's predictions (offsets committed after each insert, as in production).
  sk+=("$(peak_rss "$BIN/sink" --group "bench-sink-$i-$ID" --predictions-topic "bench-score$i-$ID-out" \
    --transactions-topic "bench-sink-tx-$i-$ID" --labels-topic "bench-sink-labels-$i-$ID" --dlq-topic "bench-sink-dlq-$i-$ID" \
    --clickhouse-database "bench_sink_${i}_$$" --metrics-addr 127.0.0.1:0 --stop-after "$STREAM_ROWS" 2>/dev/null | rate_of)")
  sk_rss+=("$(rss_mb)")
  clickhouse_quiet
  # The same rows from memory into the same ClickHouse by the same client (only the inserts timed).
  raw+=("$("$BIN/examples/raw_insert" --topic "bench-score$i-$ID-out" --clickhouse-database "bench_raw_${i}_$$" 2>/dev/null | rate_of)")
  sk_ratio+=("$(echo "${sk[-1]} ${raw[-1]}" | awk '{printf "%.2f", $1 / $2}')")
  log "sink run $i: ${sk[-1]} rows/s, peak RSS ${sk_rss[-1]} MiB; raw insert ${raw[-1]} rows/s (ratio ${sk_ratio[-1]})"
done

MODEL_FLAGS=(--models-topic "$MODELS")
# Each run measures the scorer, then the passthrough (the same exactly-once loop, no scoring) at
# the same rate: the passthrough's latency is the Kafka path's alone, the floor the scorer stands on.
# The first hop alone (publish → broker → reader, no scorer) splits the end-to-end figure into
# what the producer and broker take and what the exactly-once loop adds.
declare -A lat pass hop lat_extra held pheld
for rate in 5000 20000; do
  s50=(); s95=(); s99=(); q50=(); q95=(); q99=(); h50=(); h95=(); h99=(); extra=()
  dr=(); of=(); et=(); pdr=(); pof=(); pet=()
  for i in $(seq 1 "$RUNS"); do
    line=$(latency_run "$rate" "$i")
    pline=$(latency_run "$rate" "pass-$i" --passthrough)
    hline=$(producer_latency "$rate" "$i")
    log "latency at $rate tx/s run $i: scorer $line; passthrough $pline; first hop $hline"
    s50+=("$(echo "$line" | pct p50)"); s95+=("$(echo "$line" | pct p95)"); s99+=("$(echo "$line" | pct p99)")
    q50+=("$(echo "$pline" | pct p50)"); q95+=("$(echo "$pline" | pct p95)"); q99+=("$(echo "$pline" | pct p99)")
    h50+=("$(echo "$hline" | pct p50)"); h95+=("$(echo "$hline" | pct p95)"); h99+=("$(echo "$hline" | pct p99)")
    extra+=("$((s99[-1] - q99[-1]))")
    dr+=("$(echo "$line" | hold drain)"); of+=("$(echo "$line" | hold offsets)"); et+=("$(echo "$line" | hold endtxn)")
    pdr+=("$(echo "$pline" | hold drain)"); pof+=("$(echo "$pline" | hold offsets)"); pet+=("$(echo "$pline" | hold endtxn)")
  done
  lat[$rate]="$(printf '%s\n' "${s50[@]}" | median) / $(printf '%s\n' "${s95[@]}" | median) / $(printf '%s\n' "${s99[@]}" | median)"
  pass[$rate]="$(printf '%s\n' "${q50[@]}" | median) / $(printf '%s\n' "${q95[@]}" | median) / $(printf '%s\n' "${q99[@]}" | median)"
  held[$rate]="$(printf '%s\n' "${dr[@]}" | median) / $(printf '%s\n' "${of[@]}" | median) / $(printf '%s\n' "${et[@]}" | median)"
  pheld[$rate]="$(printf '%s\n' "${pdr[@]}" | median) / $(printf '%s\n' "${pof[@]}" | median) / $(printf '%s\n' "${pet[@]}" | median)"
  hop[$rate]="$(printf '%s\n' "${h50[@]}" | median) / $(printf '%s\n' "${h95[@]}" | median) / $(printf '%s\n' "${h99[@]}" | median)"
  lat_extra[$rate]="$(printf '%s\n' "${extra[@]}" | median) ms | ${extra[*]}"
done

# The prototype's design on the same machine: FastAPI, one HTTP request per transaction, the same
# LightGBM model, 2 uvicorn workers, driven by wrk with 32 connections.
bl=(); bl50=(); bl99=(); blratio=()
while read -r rps p50 p99; do bl+=("$rps"); bl50+=("$p50"); bl99+=("$p99"); done < <(bench/baseline/run.sh "$WORK/model.txt" "$RUNS")
for i in $(seq 0 $((RUNS - 1))); do
  blratio+=("$(awk -v a="${sc[$i]}" -v b="${bl[$i]}" 'BEGIN {printf "%.1f", a / b}')")
done
log "baseline: ${bl[*]} req/s; p50 ${bl50[*]} ms, p99 ${bl99[*]} ms"

mkdir -p bench/results
{
  echo "## fraudstream bench — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, medians of $RUNS runs ($PAIRS for the scorer rows), $PROFILE profile"
  echo
  echo "| what | median | runs | goal |"
  echo "|---|---:|---|---:|"
  echo "| producer simulate ($ROWS rows to CSV) | $(printf '%s\n' "${sim[@]}" | median) rows/s | ${sim[*]} | ≥ 1,000,000 |"
  echo "| producer publish ($STREAM_ROWS tx + as many labels; Avro, idempotent, lz4) | $(printf '%s\n' "${pub[@]}" | median) tx/s | ${pub[*]} | ≥ 200,000 |"
  echo "| scorer, exactly-once ($STREAM_ROWS tx, 1 instance, 6 partitions; the trainer's model: $TREES trees) | $(printf '%s\n' "${sc[@]}" | median) tx/s | ${sc[*]} | ≥ 100,000 |"
  echo "| raw passthrough (same EOS loop, bytes copied, no decode/score) | $(printf '%s\n' "${pt[@]}" | median) tx/s | ${pt[*]} | |"
  echo "| scorer / passthrough, per run | $(printf '%s\n' "${ratio[@]}" | median) | ${ratio[*]} | ≥ 0.85 (#19) |"
  echo "| scorer with LightGBM's own predict and SHAP (\`--lightgbm-predict\`; same model) | $(printf '%s\n' "${lg[@]}" | median) tx/s | ${lg[*]} | |"
  echo "| scorer (LightGBM's predict) / passthrough, per run | $(printf '%s\n' "${lg_ratio[@]}" | median) | ${lg_ratio[*]} | |"
  echo "| scorer with a compact model ($SMALL_ROUNDS trees, same data, holdout PR-AUC $small_auc) | $(printf '%s\n' "${small[@]}" | median) tx/s | ${small[*]} | |"
  echo "| scorer (compact model) / passthrough, per run | $(printf '%s\n' "${small_ratio[@]}" | median) | ${small_ratio[*]} | |"
  echo "| scorer with 10 analyst rules (CEL, compiled): tx/s, / no rules per run | $(printf '%s\n' "${rules10[@]}" | median) tx/s, $(printf '%s\n' "${rules10_ratio[@]}" | median) | ${rules10[*]}; ${rules10_ratio[*]} | |"
  echo "| scorer with 50 analyst rules: tx/s, / no rules per run | $(printf '%s\n' "${rules50[@]}" | median) tx/s, $(printf '%s\n' "${rules50_ratio[@]}" | median) | ${rules50[*]}; ${rules50_ratio[*]} | ≥ 0.85 |"
  echo "| scorer peak RSS (default --memory-budget-mib 16) | $(printf '%s\n' "${rss[@]}" | median) MiB | ${rss[*]} | ≤ 96 MiB |"
  echo "| scorer with --memory-budget-mib 256 (64 MiB prefetch and producer queues, as librdkafka's defaults give): tx/s, peak RSS | $(printf '%s\n' "${big[@]}" | median) tx/s, $(printf '%s\n' "${big_rss[@]}" | median) MiB | ${big[*]}; ${big_rss[*]} | |"
  echo "| passthrough peak RSS | $(printf '%s\n' "${pt_rss[@]}" | median) MiB | ${pt_rss[*]} | |"
  echo "| scorer process CPU per transaction (user + system / transactions), passthrough's | $(printf '%s\n' "${cpu[@]}" | median) µs, $(printf '%s\n' "${pt_cpu[@]}" | median) µs | ${cpu[*]}; ${pt_cpu[*]} | |"
  echo "| scorer cold start: process start → first committed batch and exit (6 partitions of 1M records, state rebuilt from 200k each) | $(printf '%s\n' "${cold[@]}" | median) ms | ${cold[*]} | ≤ 2000 ms |"
  echo "| account state rebuild (records re-read per second) | $(printf '%s\n' "${rebuild[@]}" | median) | ${rebuild[*]} | |"
  echo "| baseline: prototype design (FastAPI, 1 HTTP request per tx, same LightGBM model, 2 uvicorn workers, wrk 32 conns) | $(printf '%s\n' "${bl[@]}" | median) tx/s | ${bl[*]} | |"
  echo "| baseline latency under full load, p50 / p99 | $(printf '%s\n' "${bl50[@]}" | median) / $(printf '%s\n' "${bl99[@]}" | median) ms | | |"
  echo "| scorer (exactly-once, Kafka) / baseline throughput, per run | $(printf '%s\n' "${blratio[@]}" | median)x | ${blratio[*]} | |"
  echo "| sink into ClickHouse ($STREAM_ROWS predictions, batches of 200k, offsets after insert) | $(printf '%s\n' "${sk[@]}" | median) rows/s | ${sk[*]} | ≥ 600,000 |"
  echo "| raw insert: the same rows from memory, same client and batch size (\`sink/examples/raw_insert.rs\`) | $(printf '%s\n' "${raw[@]}" | median) rows/s | ${raw[*]} | |"
  echo "| sink / raw insert, per run | $(printf '%s\n' "${sk_ratio[@]}" | median) | ${sk_ratio[*]} | ≥ 0.6 |"
  echo "| sink peak RSS (rows streamed into open INSERTs) | $(printf '%s\n' "${sk_rss[@]}" | median) MiB | ${sk_rss[*]} | ≤ 96 MiB |"
  for rate in 5000 20000; do
    echo "| end-to-end latency at $rate tx/s, steady state (event → committed prediction readable; 10 s run, first 2 s excluded), p50 / p95 / p99 | ${lat[$rate]} ms | | p99 ≤ 40 ms |"
    echo "| the same through the passthrough (the Kafka path alone: same exactly-once loop, no scoring), p50 / p95 / p99 | ${pass[$rate]} ms | | |"
    echo "| the first hop alone (\`publish\` → broker → reader of the transactions topic; no scorer, no transaction), p50 / p95 / p99 | ${hop[$rate]} ms | | |"
    echo "| scorer p99 − passthrough p99 at $rate tx/s, per run | ${lat_extra[$rate]} | |"
    echo "| what each Kafka transaction held the loop at $rate tx/s (means): drain (outputs acknowledged) / send offsets / EndTxn, scorer; passthrough | ${held[$rate]} ms; ${pheld[$rate]} ms | | |"
  done
  echo "| trainer bootstrap ($HIST_ROWS rows): read + features / LightGBM train | ${read_s} s / ${train_s} s | 1 run | ≤ 120 s |"
  echo "| trainer holdout PR-AUC (time split, last 10% of historical; $PROFILE profile) | $pr_auc | 1 run | > the baseline below |"
  echo "| baseline: the best one-feature rule, same holdout | $baseline_auc | 1 run | |"
  echo
  echo "Scoring stage, CPU per record without Kafka ($STREAM_ROWS transactions in batches of 10k, the trainer's"
  echo "model, fastest of 5 passes; \`scorer/examples/stages.rs\`). Predict and SHAP are the native evaluation"
  echo "of the model's trees (served: $(echo "$stages" | awk '$1 == "native:" {print $2}')); LightGBM's own, on the same rows, for comparison; and the"
  echo "50 analyst rules of the row above evaluated on every record (not in the total):"
  echo
  echo "| decode | features + account state | predict | SHAP reasons (alerts only) | encode | total | LightGBM predict | LightGBM SHAP | 50 rules |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  echo "| $(stage_us decode) µs | $(stage_us features) µs | $(stage_us predict) µs | $(stage_us reasons) µs | $(stage_us encode) µs | $(stage_us total) µs | $(stage_us lightgbm-predict) µs | $(stage_us lightgbm-reasons) µs | $(stage_us rules-50) µs |"
} | tee bench/results/latest.md

# What TLS and passwords cost, side by side (bench/results/tls.md); BENCH_TLS=0 skips it.
if [ "${BENCH_TLS:-1}" != 0 ]; then
  RUNS="$RUNS" scripts/bench-tls.sh
fi

# What a replicated cluster costs, side by side (bench/results/cluster.md); BENCH_CLUSTER=0 skips it.
if [ "${BENCH_CLUSTER:-1}" != 0 ]; then
  RUNS="$RUNS" scripts/bench-cluster.sh
fi
