#!/usr/bin/env bash
# The main job on a fresh machine: install, then back up a real directory (default: this
# checkout) to the default local repository, list it, restore it and compare.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
BK=.venv/bin/bk
SRC=$(realpath "${1:-.}")
if ! $BK snapshots >/dev/null 2>&1; then
  $BK init
fi
$BK backup "$SRC" --exclude .venv --exclude .git --tag demo
$BK snapshots
$BK ls latest "$SRC" --max-depth 1
OUT=$(mktemp -d)
$BK restore latest --path "$SRC" --target "$OUT" --verify
diff -r --no-dereference -x .venv -x .git "$SRC" "$OUT$SRC" && echo "restored copy in $OUT$SRC is identical to $SRC"
