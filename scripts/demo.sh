#!/usr/bin/env bash
# make demo: the pipeline on the local services (deploy/local), end to end, then a summary.
# What exists today: simulate PaySim data, split it by time, publish the stream part with labels.
# The scorer, sink and trainer join this script as they land.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fraudstream/target}"
ROWS="${DEMO_ROWS:-1000000}"
DATA="${DEMO_DIR:-$HOME/.cache/fraudstream/demo}"
. deploy/local/env.sh
export KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
export SCHEMA_REGISTRY_URL="http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7"
mkdir -p "$DATA"

echo "== building (release)"
cargo build -q --release -p producer
BIN="$CARGO_TARGET_DIR/release"

echo "== 1. simulate $ROWS PaySim-like rows"
"$BIN/producer" simulate --rows "$ROWS" --seed 42 --out "$DATA/paysim.csv" --stats
echo
echo "== 2. split by time: 90% historical (training), 10% stream"
"$BIN/producer" split --input "$DATA/paysim.csv" --ratio 0.9 --out-dir "$DATA"
echo
echo "== 3. publish the stream part: transactions now, labels 24 PaySim steps later"
"$BIN/producer" publish --input "$DATA/stream.csv" --id-prefix "demo-$(date +%s)" --label-delay 24steps
echo
echo "== look inside"
echo "  kcat -b $KAFKA_BROKERS -L                                   # topics and partitions"
echo "  kcat -b $KAFKA_BROKERS -C -t transactions -c 3 -f 'key=%k partition=%p offset=%o %S bytes\n'"
echo "  # kcat builds with Avro support decode values too: add -s value=avro -r $SCHEMA_REGISTRY_URL"
echo "  deploy/local/kafka-topics.sh --describe --topic transactions"
echo
echo "demo: producer done. (scorer, sink, trainer and the summary arrive with issues 4-7)"
