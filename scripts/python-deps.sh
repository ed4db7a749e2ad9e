#!/usr/bin/env bash
# scripts/python-deps.sh: installs (once, cached) the Python packages that train a LightGBM model
# the way a data scientist would (lightgbm, pandas from PyPI) into $FRAUDSTREAM_CACHE/python, and
# prints that directory: use it as PYTHONPATH for scripts/python-train.py.
set -euo pipefail
DIR="${FRAUDSTREAM_CACHE:-$HOME/.cache/fraudstream}/python"
if [ ! -f "$DIR/.complete" ]; then
  echo "[python] installing lightgbm, pandas into $DIR" >&2
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --disable-pip-version-check --target "$DIR" \
    lightgbm pandas numpy >&2
  touch "$DIR/.complete"
fi
echo "$DIR"
