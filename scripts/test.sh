#!/usr/bin/env bash
# The whole test suite on a fresh machine (what CI runs through .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --test
exec .venv/bin/python -m pytest -n 2 -q "$@"
