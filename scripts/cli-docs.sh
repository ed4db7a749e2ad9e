#!/usr/bin/env bash
# Regenerates the README's command reference from the binaries' own --help (between the
# <!-- cli:start --> and <!-- cli:end --> markers), so the docs cannot drift from the flags.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fraudstream/target}"
cargo build -q --release -p producer -p scorer -p sink -p trainer -p review
BIN="$CARGO_TARGET_DIR/release"
ref="$(mktemp)"
{
  for cmd in "producer simulate" "producer split" "producer stats" "producer publish" "producer replay-dlq" "scorer" "sink" \
    "trainer bootstrap" "trainer train" "trainer watch" "trainer features" "trainer import" "trainer evaluate" "trainer list" "trainer show" "trainer promote" "trainer rollback" \
    "trainer rules" "trainer rules add" "trainer rules update" "trainer rules test" "review serve" "review hash-password"; do
    echo "<details><summary><code>$cmd --help</code></summary>"
    echo
    echo '```text'
    # shellcheck disable=SC2086
    COLUMNS=100 "$BIN"/$cmd --help
    echo '```'
    echo
    echo "</details>"
  done
} >"$ref"
awk -v ref="$ref" '
  /<!-- cli:start -->/ { print; while ((getline line < ref) > 0) print line; skip = 1; next }
  /<!-- cli:end -->/ { skip = 0 }
  !skip { print }
' README.md >README.md.new && mv README.md.new README.md
rm -f "$ref"
echo "README.md: command reference regenerated"
