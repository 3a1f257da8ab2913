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
  # bk mount's tests mount for real: they need libfuse 3 and fusermount3 (package fuse3)
  if ! command -v fusermount3 >/dev/null 2>&1 || ! ldconfig -p 2>/dev/null | grep -q 'libfuse3\.so'; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      apt-get update -qq >/dev/null && apt-get install -y -qq fuse3 libfuse3-3 >/dev/null
    else
      echo "setup.sh: install fuse3 (libfuse 3 and fusermount3) for the bk mount tests" >&2
    fi
  fi
  .venv/bin/python -m pip install -q -e '.[test]'
  # Servers and clients the remote-backend tests run on loopback: restic (proves bk
  # serve speaks its protocol), rclone (rclone: stores, an independent REST server) and
  # OpenSSH's sshd (sftp: stores). Installed from the distribution when missing.
  missing=""
  command -v restic >/dev/null 2>&1 || missing="$missing restic"
  command -v rclone >/dev/null 2>&1 || missing="$missing rclone"
  [ -x /usr/sbin/sshd ] || command -v sshd >/dev/null 2>&1 || missing="$missing openssh-server"
  command -v ssh-keygen >/dev/null 2>&1 || missing="$missing openssh-client"
  if [ -n "$missing" ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      echo "installing$missing (apt-get)" >&2
      { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null; } \
        || echo "warning: apt-get could not install$missing: those tests are skipped" >&2
    else
      echo "warning: install$missing for the remote-backend tests (they are skipped without them)" >&2
    fi
  fi
else
  .venv/bin/python -m pip install -q -e .
fi
unset PYTHONWARNINGS
# Byte-compile everything bk imports: pip skips it when PYTHONDONTWRITEBYTECODE is set
# (as on this project's machines), and then every bk run compiles its modules from
# source again (~0.15-0.2 s a command). Existing .pyc files are read either way.
.venv/bin/python -m compileall -q -j0 backupkit cli .venv/lib >/dev/null 2>&1 || true
