# Helpers shared by the bench scripts (sourced).
# median: the median of the numbers on stdin, one per line.
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
# rate_of: the rate a service prints at its end ("(123 tx/s)" or "(123 rows/s)").
rate_of() { grep -Eo '\(([0-9]+) (rows|tx)/s\)' | grep -Eo '[0-9]+' | head -1; }
# ratio A B: A / B with two decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
log() { echo "  $*" >&2; }
# pct NAME: the value of NAME=N in a line of the latency probe (pct p99 <<<"n=100 p50=3 p99=9" → 9).
pct() { grep -Eo "$1=[0-9]+" | cut -d= -f2; }

# latency_run RATE RUN [SCORER_FLAGS...]: end-to-end latency at a fixed rate, producer → scorer
# (exactly-once) → committed prediction, on the services use_services chose; prints the probe's
# percentile line, then what each Kafka transaction held the scorer's loop, phase by phase (means
# from its metrics: "hold drain=2.1 offsets=1.8 endtxn=0.6 ms, 772 transactions"). Needs BIN, WORK
# (with stream.csv), ID, and MODEL_FLAGS (how the scorer gets its model).
latency_run() { # $1 = rate, $2 = run
  local tag="bench-lat-$1-$2-$ID" port
  port=$(free_port)
  "$BIN/scorer" --instance-id "$tag" --group "$tag" --transactions-topic "$tag-tx" --predictions-topic "$tag-out" \
    --alerts-topic "$tag-alerts" --dlq-topic "$tag-dlq" "${MODEL_FLAGS[@]}" --metrics-addr "127.0.0.1:$port" \
    --commit-interval-ms 20 --partitions 6 "${@:3}" >/dev/null 2>&1 &
  local scorer_pid=$!
  deploy/local/kafka-topics.sh --create --topic "$tag-tx" --partitions 6 >/dev/null 2>&1 || true
  deploy/local/kafka-topics.sh --create --topic "$tag-out" --partitions 6 >/dev/null 2>&1 || true
  sleep 4 # the scorer joins its group
  probe_while_publishing "$1" "$tag" "$tag-out"
  curl -sf "http://127.0.0.1:$port/metrics" >"$WORK/lat-metrics" || true
  kill -TERM "$scorer_pid" 2>/dev/null; wait "$scorer_pid" 2>/dev/null || true
  echo "$(tail -1 "$WORK/lat"); hold $(commit_hold <"$WORK/lat-metrics")"
}

# free_port: a TCP port free on 127.0.0.1 now.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# commit_hold: from a scorer's /metrics on stdin, the mean time per Kafka transaction of each
# commit phase, in ms.
commit_hold() {
  awk '$1 ~ /^scorer_(drain|send_offsets|commit)_seconds_(sum|count)$/ {v[$1] = $2}
    function ms(m) { n = v["scorer_" m "_seconds_count"]; return n ? v["scorer_" m "_seconds_sum"] * 1000 / n : 0 }
    END {printf "drain=%.1f offsets=%.1f endtxn=%.1f ms, %d transactions\n", ms("drain"), ms("send_offsets"), ms("commit"), v["scorer_commit_seconds_count"]}'
}
# hold NAME: the value of NAME=X.Y in latency_run's line (hold drain <<<"... hold drain=2.1 ..." → 2.1).
hold() { grep -Eo "$1=[0-9.]+" | cut -d= -f2; }

# producer_latency RATE RUN: the first hop alone, `publish` → broker → a read_committed reader of
# the transactions topic (no scorer, no transaction); prints the probe's percentile line. The
# end-to-end latency above is this hop plus the scorer's. PUBLISH_FLAGS (e.g. "-X linger.ms=10")
# go to `publish` in both.
producer_latency() { # $1 = rate, $2 = run
  local tag="bench-hop-$1-$2-$ID"
  deploy/local/kafka-topics.sh --create --topic "$tag-tx" --partitions 6 >/dev/null 2>&1 || true
  probe_while_publishing "$1" "$tag" "$tag-tx"
  tail -1 "$WORK/lat"
}

# probe_while_publishing RATE TAG TOPIC: the latency probe reads TOPIC (into $WORK/lat) while
# `publish` sends 10 s of transactions at RATE to TAG-tx; returns when the probe has them all.
probe_while_publishing() {
  local n=$(($1 * 10))
  "$BIN/examples/e2e_latency" "$3" "$n" >"$WORK/lat" 2>/dev/null &
  local probe_pid=$!
  sleep 2
  "$BIN/producer" publish -i "$WORK/stream.csv" --transactions-topic "$2-tx" --labels-topic "$2-labels" \
    --label-delay 0 --rate "$1" --limit "$n" --loop ${PUBLISH_FLAGS:-} >/dev/null 2>&1
  wait "$probe_pid" || true
}
