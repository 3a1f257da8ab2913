#!/usr/bin/env bash
# Creates .venv and installs backupkit (with the C chunker) and, with --test, the test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [ "${1:-}" = "--test" ]; then
  .venv/bin/python -m pip install -q -e '.[test,s3]'
else
  .venv/bin/python -m pip install -q -e '.[s3]'
fi
