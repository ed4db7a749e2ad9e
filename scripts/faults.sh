#!/usr/bin/env bash
# make faults: each scenario streams transactions through producer → 2 scorers → sink → ClickHouse,
# injects one fault mid-stream, and checks that ClickHouse ends with exactly one prediction per
# produced transaction, and that the committed predictions topic holds no duplicate. The
# `cluster-*` scenarios run on the multi-node services (deploy/local/cluster.sh, started here):
# three Kafka nodes with RF=3 and min.insync.replicas=2, two ClickHouse replicas.
#   FAULTS_N       transactions per scenario (default 200000; `make test` runs 30000)
#   FAULTS_RATE    publish rate, tx/s (default 20000)
#   FAULTS_ONLY    run only these scenarios (space separated names; a name twice runs it twice)
#   FAULTS_OUT     where the table is written too (default bench/results/faults.md)
#   FAULTS_LOG     the services' RUST_LOG (default error; e.g. info,librdkafka=warn to see why)
#   FAULTS_SCORER_ARGS  extra scorer flags, e.g. "-X transaction.timeout.ms=10000"
#   FAULTS_KEEP_LOGS    set to keep the services' logs of a passing run too
# Prints a markdown table and exits non-zero on any loss, duplicate or unexpected DLQ count.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${FAULTS_N:-200000}"
RATE="${FAULTS_RATE:-20000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fraudstream/target}"
cargo build -q --release -p producer -p scorer -p sink -p trainer --bins --examples
BIN="$CARGO_TARGET_DIR/release"
TOOLS="$BIN/examples/fault_tools"
. deploy/local/env.sh
# Where a scenario runs: the single-node services, or the cluster (its Kafka and ClickHouse; the
# schema registry is shared). Every tool here and every service reads the variables use_services sets.
on_single() { use_services single; CH=$CLICKHOUSE_URL; }
on_cluster() {
  [ -n "${CLUSTER_UP:-}" ] || { deploy/local/cluster.sh up >"$WORK/cluster-up.log" 2>&1 || { cat "$WORK/cluster-up.log" >&2; exit 1; }; CLUSTER_UP=1; }
  use_services cluster; CH=$CLICKHOUSE_URL
}
on_single
export RUST_LOG="${FAULTS_LOG:-error}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/fraudstream-faults.XXXXXX")"
ID="$(date +%s)"
pids=()
cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  on_single; drop_scenarios_data
  if [ -n "${CLUSTER_UP:-}" ]; then on_cluster; drop_scenarios_data " ON CLUSTER $CLUSTER_NAME"; fi
  # A failed run (or one stopped by an error) keeps its services' logs for a look.
  if [ "${failed:-0}" -gt 0 ] || [ "$rc" -ne 0 ] || [ -n "${FAULTS_KEEP_LOGS:-}" ]; then echo "faults: logs kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
drop_scenarios_data() { # $1 = " ON CLUSTER name" on the cluster
  deploy/local/kafka-topics.sh --delete --topic "faults-.*-$ID-.*" >/dev/null 2>&1 || true
  for db in $(curl -sf "$CH/" --data-binary "SELECT name FROM system.databases WHERE name LIKE 'faults_%_${ID}_%'" 2>/dev/null); do
    curl -sf "$CH/" --data-binary "DROP DATABASE $db${1:-}" >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT
log() { echo "  $*" >&2; }
sql() { curl -sf "$CH/?database=$DB" --data-binary "$1"; }

# Data and one model for every scenario (served with --model, so no scenario depends on another).
"$BIN/producer" simulate --rows 1500000 --seed 7 --out "$WORK/paysim.csv" >/dev/null
"$BIN/producer" split --input "$WORK/paysim.csv" --ratio 0.8 --out-dir "$WORK" >/dev/null
"$BIN/trainer" bootstrap --csv "$WORK/historical.csv" --out "$WORK/model.txt" --no-publish --max-rounds 30 \
  --report "$WORK/report" >/dev/null
log "data and model ready ($N transactions per scenario at $RATE tx/s)"

start_scorer() { # $1 = instance number
  "$BIN/scorer" --instance-id "$P-scorer-$1" --group "$P-scorer" --transactions-topic "$P-tx" \
    --predictions-topic "$P-pred" --alerts-topic "$P-alerts" --dlq-topic "$P-dlq" --models-topic "$P-models" \
    --rules-topic "$P-rules" --model "$WORK/model.txt" --threshold 0.5 --metrics-addr 127.0.0.1:0 --commit-interval-ms 100 \
    ${FAULTS_SCORER_ARGS:-} >>"$WORK/$NAME-scorer-$1.log" 2>&1 &
  pids+=($!); eval "SCORER_$1=$!"
}
start_sink() {
  "$BIN/sink" --group "$P-sink" --transactions-topic "$P-tx" --predictions-topic "$P-pred" --labels-topic "$P-labels" \
    --dlq-topic "$P-sink-dlq" --clickhouse-database "$DB" --metrics-addr 127.0.0.1:0 --batch-ms 300 \
    --max-backoff-ms 1000 >>"$WORK/$NAME-sink.log" 2>&1 &
  pids+=($!); SINK=$!
}
landed() { sql "SELECT uniqExact(transaction_id) FROM ${1:-predictions} FINAL" 2>/dev/null || echo 0; }
# Both tables: the sink lands the transactions apart from the predictions, and may finish them a
# little later (seen once with the registry slowed, 24 of 200k counted 2 s after the predictions).
wait_landed() { # $1 = expected, $2 = timeout s
  local end=$(($(date +%s) + $2))
  while [ "$(date +%s)" -lt "$end" ]; do
    [ "$(landed)" -ge "$1" ] && [ "$(landed transactions)" -ge "$1" ] && return 0
    sleep 1
  done
  return 1
}
# A service slow to come back is the scenario's to judge (it waits for the data to land), not a
# reason to stop the suite.
restart_services() {
  deploy/local/up.sh >/dev/null 2>&1 || log "$NAME: services not back within up.sh's wait (see $FS_RUN/*.log); waiting on"
}
restart_kafka() { # $1 = seconds down (default 5)
  kill -KILL "$(cat "$FS_RUN/kafka.pid")"; sleep "${1:-5}"
  restart_services
}
kill_registry() {
  local pid; pid=$(cat "$FS_RUN/registry.pid")
  kill -KILL "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
}
# A deploy or a crash: a graceful stop (SIGTERM) or a SIGKILL, then the same instance again.
restart_scorer() { # $1 = instance number, $2 = signal
  local pid; pid=$(eval echo "\$SCORER_$1")
  kill -"$2" "$pid"; wait "$pid" 2>/dev/null || true
  start_scorer "$1"
}
restart_sink() { # $1 = signal
  kill -"$1" "$SINK"; wait "$SINK" 2>/dev/null || true
  start_sink
}
restart_clickhouse_after() { # $1 = seconds down
  kill -KILL "$(cat "$FS_RUN/clickhouse.pid")"; sleep "$1"
  restart_services
}

# A fault that takes a while (a rolling restart) must fall inside the stream, however short the
# suite: STREAM_SECONDS=S before `scenario` spreads the N transactions over S seconds at least.
stream_rate() {
  local rate=$RATE
  [ -z "${STREAM_SECONDS:-}" ] || [ $((N / STREAM_SECONDS)) -ge "$RATE" ] || rate=$((N / STREAM_SECONDS))
  echo "$rate"
}

results=()
REGISTRY_DIRECT="$SCHEMA_REGISTRY_URL"
scenario() { # $1 = name, $2 = fault function, $3 = set-up before the services start (optional)
  # A run number too: FAULTS_ONLY="broker-restart broker-restart" runs it twice on fresh topics.
  RUN=$((${RUN:-0} + 1)); NAME=$1; P="faults-$NAME-$ID-$RUN"; DB="faults_${NAME//-/_}_${ID}_$RUN"
  local started; started=$(date +%s)
  case $NAME in cluster-*) on_cluster ;; *) on_single ;; esac
  for t in tx pred alerts dlq labels; do
    deploy/local/kafka-topics.sh --create --topic "$P-$t" --partitions 6 >/dev/null 2>&1 || true
  done
  "${3:-:}"
  start_sink; start_scorer 1; start_scorer 2
  sleep 3
  "$BIN/producer" publish --input "$WORK/stream.csv" --transactions-topic "$P-tx" --labels-topic "$P-labels" \
    --id-prefix "$P" --rate "$(stream_rate)" --limit "$N" --label-delay 0 >"$WORK/$NAME-publish.log" 2>&1 &
  local publisher=$!; pids+=($publisher)
  EXPECTED=$N; DLQ_EXPECTED=0
  "$2"
  wait "$publisher"
  local ok=true
  wait_landed "$EXPECTED" 300 || ok=false
  sleep 2
  "${POST_CHECK:-:}"; unset POST_CHECK
  local landed_n tx_landed; landed_n=$(landed); tx_landed=$(landed transactions)
  read -r records distinct <<<"$(count_topic "$P-pred")"
  read -r dlq _ <<<"$(count_topic "$P-dlq")"
  read -r sink_dlq _ <<<"$(count_topic "$P-sink-dlq")"
  for p in ${SCORER_1:-} ${SCORER_2:-} ${SCORER_3:-} $SINK; do kill -TERM "$p" 2>/dev/null || true; done
  for p in ${SCORER_1:-} ${SCORER_2:-} ${SCORER_3:-} $SINK; do wait "$p" 2>/dev/null || true; done
  unset SCORER_3
  if [ -n "${SLOW_PROXY:-}" ]; then kill -TERM "$SLOW_PROXY"; wait "$SLOW_PROXY" 2>/dev/null || true; unset SLOW_PROXY; fi
  export SCHEMA_REGISTRY_URL="$REGISTRY_DIRECT"
  local dups=$((records - distinct)) lost=$((EXPECTED - landed_n))
  # Bad records on the transactions topic go to both dead-letter topics: the scorer's and the
  # sink's (it lands transactions too).
  [ "$records" -ge 0 ] && [ "$dups" -eq 0 ] && [ "$lost" -eq 0 ] && [ "$dlq" -eq "$DLQ_EXPECTED" ] && [ "$sink_dlq" -eq "$DLQ_EXPECTED" ] \
    && [ "$tx_landed" -eq "$EXPECTED" ] && ${FAULT_OK:-true} || ok=false
  results+=("| $NAME | $EXPECTED | $landed_n | $dups | $lost | $dlq / $sink_dlq | $(($(date +%s) - started)) s | $($ok && echo ok || echo FAIL) |")
  log "${results[-1]} (predictions topic: $distinct distinct of $records; transactions table: $tx_landed)"
  unset FAULT_OK
}

# count_topic TOPIC: "records distinct-ids" on TOPIC; a count that fails says so and gives -1 -1,
# which fails the scenario (not an empty row and bash's "integer expression expected").
count_topic() {
  local out
  if out=$("$TOOLS" count "$1" 2>>"$WORK/$NAME-count.log"); then
    echo "$out"
  else
    log "$NAME: counting $1 failed (the tool's error is in $WORK/$NAME-count.log)"
    echo "-1 -1"
  fi
}

# The fault comes once a third of the stream landed (mid-stream), or after 60 s at the latest.
at_third() {
  local end=$(($(date +%s) + 60))
  while [ "$(landed)" -lt $((N / 3)) ] && [ "$(date +%s)" -lt "$end" ]; do sleep 0.3; done
}
fault_none() { :; }
fault_scorer_kill() { at_third; kill -KILL "$SCORER_1"; wait "$SCORER_1" 2>/dev/null || true; start_scorer 1; }
fault_scorer_added() { at_third; start_scorer 3; }
fault_sink_kill() { at_third; kill -KILL "$SINK"; wait "$SINK" 2>/dev/null || true; start_sink; }
fault_clickhouse_down() { at_third; restart_clickhouse_after 20; }
fault_broker_restart() { at_third; restart_kafka; }
# Down for longer than transaction.timeout.ms: every open transaction times out, its messages with it.
fault_broker_down() { at_third; restart_kafka 40; }
fault_malformed() { DLQ_EXPECTED=$((N / 100)); at_third; "$TOOLS" garbage "$P-tx" "$DLQ_EXPECTED"; }
fault_corrupt_model() { at_third; "$TOOLS" corrupt-model "$P-models"; }
# Analyst rules changed mid-stream: one rule in force from the start; at a third, a scorer is
# SIGKILLed, a suppressing rule added and the first rule updated. Every prediction is there once,
# and each records the rule set it was decided under (none decided without the first rule).
rules_cli() { "$BIN/trainer" rules --rules-topic "$P-rules" "$@" >>"$WORK/$NAME-rules.log" 2>&1; }
setup_rules() { rules_cli add big --expr "amount > 500000" --action alert; POST_CHECK=check_rules; }
fault_rules_change() {
  at_third
  kill -KILL "$SCORER_1"; wait "$SCORER_1" 2>/dev/null || true; start_scorer 1
  rules_cli add allow --expr "name_orig.endsWith('7')" --action suppress
  rules_cli update big --expr "amount > 400000"
}
check_rules() {
  local without versions
  without=$(sql "SELECT count() FROM predictions FINAL WHERE rules_version = 0")
  versions=$(sql "SELECT groupUniqArray(rules_version) FROM predictions FINAL")
  log "$NAME: rule set versions in the predictions: $versions; decided without the rules: $without"
  [ "$without" = 0 ] || FAULT_OK=false
}
fault_schema_evolution() {
  at_third
  "$TOOLS" evolved "$P-tx" "$WORK/stream.csv" 5000 "$P-evolved" >/dev/null
  EXPECTED=$((N + 5000))
}
# The registry killed and started again (same data), then every scorer and the sink restarted
# as a deploy would: the new processes fetch by id the schemas the records in Kafka carry.
fault_registry_restart() {
  at_third; kill_registry; restart_services
  restart_scorer 1 TERM; restart_scorer 2 KILL; restart_sink TERM
}
# The registry down for 30 s while a scorer and the sink start (a crash during an outage): they
# wait for it; the other scorer goes on with the schemas it has.
fault_registry_down() {
  at_third; kill_registry
  restart_scorer 1 KILL; restart_sink KILL
  sleep 30; restart_services
}
# Every service talks to a registry that takes 3 s per answer; a scorer and the sink are
# restarted mid-stream, so they fetch everything again through it.
slow_registry() {
  local port; port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  scripts/slow-proxy.py --port "$port" --target "http://127.0.0.1:$REGISTRY_PORT" --delay 3 >"$WORK/$NAME-proxy.log" 2>&1 &
  SLOW_PROXY=$!; pids+=($SLOW_PROXY)
  until grep -q listening "$WORK/$NAME-proxy.log"; do sleep 0.1; done
  export SCHEMA_REGISTRY_URL="http://127.0.0.1:$port/apis/ccompat/v7"
}
fault_registry_slow() { at_third; restart_scorer 1 KILL; restart_sink KILL; }
# Records whose schema the (healthy) registry lost (404 for their id): dead-lettered by the
# scorers and the sink. Then the registry is restored from a backup and `producer replay-dlq`
# sends them back: the scorer DLQ's replay sends each once, the sink DLQ's (the same source
# records) none again; the running scorers and sink decode them (404s are not kept for ever).
fault_dlq_replay() {
  local k=$((N / 20)) id
  at_third
  id=$("$TOOLS" unknown-id "$P-tx" "$WORK/stream.csv" "$k" "$P-unknown" "$WORK/registry-backup.zip")
  DLQ_EXPECTED=$k; EXPECTED=$((N + k))
  local end=$(($(date +%s) + 120))
  until [ "$("$TOOLS" count "$P-dlq" | cut -d' ' -f1)" -ge "$k" ] && [ "$("$TOOLS" count "$P-sink-dlq" | cut -d' ' -f1)" -ge "$k" ]; do
    [ "$(date +%s)" -lt "$end" ] || { log "$NAME: the dead letters did not all arrive"; FAULT_OK=false; return; }
    sleep 1
  done
  "$TOOLS" restore-schema "$WORK/registry-backup.zip" "$id" || { FAULT_OK=false; return; }
  local replay=("$BIN/producer" replay-dlq --ledger-topic "$P-replayed")
  "${replay[@]}" --dlq-topic "$P-dlq" --dry-run | tail -3 >&2
  "${replay[@]}" --dlq-topic "$P-dlq" >"$WORK/$NAME-replay.log" 2>&1
  "${replay[@]}" --dlq-topic "$P-sink-dlq" >>"$WORK/$NAME-replay.log" 2>&1
  sed 's/^/    /' "$WORK/$NAME-replay.log" >&2
  grep -q "read: replayed $k," "$WORK/$NAME-replay.log" && grep -q "read: replayed 0, $k already replayed" "$WORK/$NAME-replay.log" \
    || { log "$NAME: replay-dlq did not replay each record once"; FAULT_OK=false; }
}

# The cluster. The node that leads most partitions of the input topic is SIGKILLed and stays
# down: the two others keep every topic (min.insync.replicas=2) and take over its partitions,
# group coordination and transactions. It is started again after the checks, for what follows.
cluster_kafka() { deploy/local/kafka-topics.sh "$@" 2>/dev/null; }
input_leader() {
  cluster_kafka --describe --topic "$P-tx" | grep -o 'Leader: [0-9]*' | awk '{print $2}' | sort | uniq -c | sort -rn \
    | awk 'NR == 1 {print $2}'
}
fault_cluster_leader_kill() {
  at_third
  local node; node=$(input_leader)
  log "$NAME: SIGKILL Kafka node $node (leads most of $P-tx), not restarted"
  kill -KILL "$(cat "$FS_RUN/kafka-$node.pid")"
  POST_CHECK=cluster_restore
}
cluster_restore() { deploy/local/cluster.sh up >>"$WORK/cluster-up.log" 2>&1 && wait_in_sync 120; }
# Until no partition of any topic lacks a replica in its ISR.
wait_in_sync() { # $1 = timeout s
  local end=$(($(date +%s) + $1)) under
  while [ "$(date +%s)" -lt "$end" ]; do
    under=$(cluster_kafka --describe --under-replicated-partitions | grep -c Partition || true)
    [ "$under" = 0 ] && return 0
    sleep 1
  done
  log "$NAME: $under partitions still under-replicated after $1 s"; return 1
}
# Each node in turn stopped gracefully (SIGTERM: it hands its leaderships over), started again,
# and given time to catch up before the next, as an upgrade does it.
fault_cluster_rolling_restart() {
  at_third
  local i
  for i in $(seq 1 "$CLUSTER_KAFKA_NODES"); do
    log "$NAME: restarting Kafka node $i"
    stop_by_pid_file "kafka-$i" 2>/dev/null
    cluster_restore || FAULT_OK=false
  done
}
# A ClickHouse replica SIGKILLed mid-stream while the sink writes through the other, started
# again 20 s later: it fetches what it missed from its peer, and both hold every row once.
fault_cluster_clickhouse_replica() {
  at_third
  kill -KILL "$(cat "$FS_RUN/clickhouse-2.pid")"
  sleep 20
  deploy/local/cluster.sh up >>"$WORK/cluster-up.log" 2>&1 || FAULT_OK=false
  POST_CHECK=check_replicas
}
replica_rows() { # $1 = replica, $2 = table
  curl -sf "http://127.0.0.1:$((CLUSTER_CLICKHOUSE_HTTP_PORT + $1 - 1))/?database=$DB" \
    --data-binary "SELECT uniqExact(transaction_id) FROM ${2}_local FINAL" 2>/dev/null || echo 0
}
check_replicas() {
  local end=$(($(date +%s) + 120)) counts
  while :; do
    counts="$(replica_rows 1 predictions) $(replica_rows 2 predictions) $(replica_rows 1 transactions) $(replica_rows 2 transactions)"
    [ "$counts" = "$EXPECTED $EXPECTED $EXPECTED $EXPECTED" ] && break
    [ "$(date +%s)" -lt "$end" ] || { FAULT_OK=false; break; }
    sleep 1
  done
  log "$NAME: predictions and transactions on replica 1 and 2: $counts"
}

ALL="baseline scorer-sigkill scorer-added sink-sigkill clickhouse-down-20s broker-restart broker-down-40s malformed-1pct corrupt-model rules-change schema-evolution registry-restart registry-down-30s registry-slow dlq-replay cluster-leader-kill cluster-rolling-restart cluster-clickhouse-replica"
for s in ${FAULTS_ONLY:-$ALL}; do
  case $s in
    baseline) scenario "$s" fault_none ;;
    scorer-sigkill) scenario "$s" fault_scorer_kill ;;
    scorer-added) scenario "$s" fault_scorer_added ;;
    sink-sigkill) scenario "$s" fault_sink_kill ;;
    clickhouse-down-20s) scenario "$s" fault_clickhouse_down ;;
    broker-restart) scenario "$s" fault_broker_restart ;;
    broker-down-40s) scenario "$s" fault_broker_down ;;
    malformed-1pct) scenario "$s" fault_malformed ;;
    corrupt-model) scenario "$s" fault_corrupt_model ;;
    rules-change) scenario "$s" fault_rules_change setup_rules ;;
    schema-evolution) scenario "$s" fault_schema_evolution ;;
    registry-restart) scenario "$s" fault_registry_restart ;;
    registry-down-30s) scenario "$s" fault_registry_down ;;
    registry-slow) scenario "$s" fault_registry_slow slow_registry ;;
    dlq-replay) scenario "$s" fault_dlq_replay ;;
    cluster-leader-kill) STREAM_SECONDS=30 scenario "$s" fault_cluster_leader_kill ;;
    cluster-rolling-restart) STREAM_SECONDS=90 scenario "$s" fault_cluster_rolling_restart ;;
    cluster-clickhouse-replica) STREAM_SECONDS=45 scenario "$s" fault_cluster_clickhouse_replica ;;
    *) echo "unknown scenario $s (known: $ALL)" >&2; exit 2 ;;
  esac
done

OUT="${FAULTS_OUT:-bench/results/faults.md}"
mkdir -p "$(dirname "$OUT")"
{
  echo "## fraudstream faults — $(date -u +%Y-%m-%dT%H:%MZ), $N transactions per scenario at $RATE tx/s"
  echo
  echo "| scenario | produced | landed (ClickHouse, FINAL) | duplicates (committed topic) | lost | DLQ (scorer / sink) | time | |"
  echo "|---|---:|---:|---:|---:|---:|---:|---|"
  printf '%s\n' "${results[@]}"
} | tee "$OUT"
failed=$(printf '%s\n' "${results[@]}" | grep -c 'FAIL |$' || true)
passed=$((${#results[@]} - failed))
echo "faults: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
