#!/usr/bin/env bash
# Build prerequisites that rustup and Debian's defaults lack, installed idempotently:
#  - CMake >= 3.28 for LightGBM (Debian 12 ships 3.25), from PyPI into ~/.cache/fraudstream/cmake;
#  - libclang for LightGBM's bindgen, from Debian;
#  - chromium and chromium-driver for the review page's browser test, from Debian.
# Prints nothing when everything is there.
set -euo pipefail
CACHE="${FRAUDSTREAM_CACHE:-$HOME/.cache/fraudstream}"
CMAKE_DIR="$CACHE/cmake"
if [ ! -x "$CMAKE_DIR/cmake/data/bin/cmake" ]; then
  echo "[deps] installing CMake >= 3.28 from PyPI into $CMAKE_DIR" >&2
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --disable-pip-version-check --target "$CMAKE_DIR" "cmake>=3.28,<4" >&2
fi
# libclang itself (libclang.so / libclang-NN.so), not libclang-cpp, which some images ship alone.
have_libclang=false
for f in /usr/lib/llvm-*/lib/libclang.so* /usr/lib/*/libclang.so* /usr/lib/*/libclang-[0-9]*.so*; do
  [ -e "$f" ] && have_libclang=true
done
if ! $have_libclang; then
  echo "[deps] installing libclang-dev from Debian" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 && apt-get install -y -qq libclang-dev >/dev/null
fi
# promtool (Debian's prometheus package) checks the Prometheus config and rules in the tests.
if ! command -v promtool >/dev/null; then
  echo "[deps] installing prometheus (for promtool) from Debian" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
# Chromium and ChromeDriver (Debian's) drive the review page's end-to-end test in a real browser.
if [ ! -x /usr/bin/chromedriver ] || [ ! -x /usr/bin/chromium ]; then
  echo "[deps] installing chromium and chromium-driver from Debian (the review page's browser test)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 && apt-get install -y -qq chromium chromium-driver >/dev/null
fi
# chDB (current ClickHouse, in-process) proves the DDL and dashboard SQL beyond Debian's 18.16.
CHDB_DIR="$CACHE/chdb"
if [ ! -d "$CHDB_DIR/chdb" ]; then
  echo "[deps] installing chDB from PyPI into $CHDB_DIR" >&2
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --disable-pip-version-check --target "$CHDB_DIR" chdb >&2
fi
