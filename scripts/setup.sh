#!/usr/bin/env bash
# Creates .venv and installs backupkit (with the C chunker) and, with --test, the test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# setuptools tells every editable install to beware of same-named folders (ours is the
# checkout itself): silence that one notice, keep every other warning.
export PYTHONWARNINGS="ignore:Editable installation"
if [ "${1:-}" = "--test" ]; then
  .venv/bin/python -m pip install -q -e '.[test]'
else
  .venv/bin/python -m pip install -q -e .
fi
unset PYTHONWARNINGS
# Byte-compile everything bk imports: pip skips it when PYTHONDONTWRITEBYTECODE is set
# (as on this project's machines), and then every bk run compiles its modules from
# source again (~0.15-0.2 s a command). Existing .pyc files are read either way.
.venv/bin/python -m compileall -q -j0 backupkit cli .venv/lib >/dev/null 2>&1 || true
