#!/usr/bin/env bash
# make bench: measures on the local services and prints a markdown table of medians of $RUNS runs
# (also written to bench/results/latest.md). Each later service adds its rows here.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-3}"
ROWS="${BENCH_ROWS:-6362620}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fraudstream/target}"
cargo build -q --release -p producer
BIN="$CARGO_TARGET_DIR/release"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/fraudstream-bench.XXXXXX")"
trap 'rm -rf "$WORK"; deploy/local/kafka-topics.sh --delete --topic "bench-.*" >/dev/null 2>&1 || true' EXIT

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
rate_of() { grep -Eo '\(([0-9]+) (rows|tx)/s\)' | grep -Eo '[0-9]+' | head -1; }

echo "bench: $RUNS runs each, $ROWS simulated rows, $(nproc) cores" >&2
sim=(); pub=(); pubtx=()
for i in $(seq 1 "$RUNS"); do
  sim+=("$("$BIN/producer" simulate --rows "$ROWS" --seed "$i" --out "$WORK/paysim.csv" | rate_of)")
  echo "  simulate run $i: ${sim[-1]} rows/s" >&2
done
"$BIN/producer" split -i "$WORK/paysim.csv" --out-dir "$WORK" >/dev/null
STREAM_ROWS=$(($(wc -l <"$WORK/stream.csv") - 1))
for i in $(seq 1 "$RUNS"); do
  pub+=("$("$BIN/producer" publish -i "$WORK/stream.csv" --transactions-topic "bench-tx-$i-$$" \
    --labels-topic "bench-labels-$i-$$" --label-delay 0 2>/dev/null | rate_of)")
  echo "  publish run $i (transactions + labels): ${pub[-1]} tx/s" >&2
done

mkdir -p bench/results
{
  echo "## fraudstream bench — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, medians of $RUNS runs"
  echo
  echo "| what | median | runs | goal |"
  echo "|---|---:|---|---:|"
  echo "| producer simulate ($ROWS rows to CSV) | $(printf '%s\n' "${sim[@]}" | median) rows/s | ${sim[*]} | ≥ 1,000,000 |"
  echo "| producer publish ($STREAM_ROWS tx + as many labels, Avro, idempotent, lz4) | $(printf '%s\n' "${pub[@]}" | median) tx/s | ${pub[*]} | ≥ 200,000 |"
} | tee bench/results/latest.md
