"""What a cold page cache costs bk's imports, and what reading its files ahead would save.

    python -m benchmarks.coldimport [--rounds 3] -- --repo R --password-file P backup DATA --quiet

Runs the bk command once under ``python -X importtime`` (warm, not timed) to learn which
modules it imports, then, each round: drops the page cache (root) and times a child
Python importing exactly those modules; drops it again and times the same with a thread
that first asks the kernel to read their files (``posix_fadvise(WILLNEED)`` on every
``.pyc`` and on ``.so`` files up to 2 MiB) while the imports run; and once warm. Session
13 measured this and did not keep the read-ahead (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from benchmarks.measure import drop_caches

_CHILD = r"""
import importlib, json, os, sys, threading, time
mods, files, ahead = json.load(open(sys.argv[1]))
start = time.perf_counter()
def read_ahead():
    for f in files:
        try:
            fd = os.open(f, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if not f.endswith(".so") or os.fstat(fd).st_size <= 2 << 20:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)
if ahead:
    threading.Thread(target=read_ahead, daemon=True).start()
n = 0
for m in mods:
    try:
        importlib.import_module(m)
        n += 1
    except Exception:
        pass
print(json.dumps([n, time.perf_counter() - start]))
"""

_FILES = r"""
import importlib, json, sys
out = []
for m in json.load(open(sys.argv[1])):
    try:
        mod = importlib.import_module(m)
    except Exception:
        continue
    for f in (getattr(getattr(mod, "__spec__", None), "cached", None), getattr(mod, "__file__", None)):
        if f and f.endswith((".pyc", ".so")):
            out.append(f)
print(json.dumps(sorted(set(out))))
"""


def modules_of(bk_args: list[str]) -> list[str]:
    """The modules the bk command imports, in import order (``-X importtime``)."""
    p = subprocess.run([sys.executable, "-X", "importtime", "-P", "-m", "backupkit_cli", *bk_args],
                       capture_output=True, text=True)
    mods = []
    for line in p.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name and name != "package":
                mods.append(name)
    return mods


def _child(spec: str, env: dict[str, str]) -> tuple[int, float]:
    out = subprocess.run([sys.executable, "-P", "-c", _CHILD, spec], capture_output=True, text=True, check=True, env=env)
    n, secs = json.loads(out.stdout)
    return n, secs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("bk_args", nargs=argparse.REMAINDER, help="-- then bk's arguments")
    a = ap.parse_args(argv)
    bk_args = a.bk_args[1:] if a.bk_args[:1] == ["--"] else a.bk_args
    mods = modules_of(bk_args)
    with tempfile.TemporaryDirectory() as tmp:
        listed = os.path.join(tmp, "mods.json")
        with open(listed, "w") as f:
            json.dump(mods, f)
        files = json.loads(subprocess.run([sys.executable, "-P", "-c", _FILES, listed], capture_output=True,
                                          text=True, check=True).stdout)
        print(f"{len(mods)} modules, {len(files)} files, {sum(os.path.getsize(f) for f in files) / 1e6:.1f} MB; "
              f"load {os.getloadavg()[0]:.2f}\n")
        print("| round | cold | cold, files read ahead | warm |")
        print("|---|---:|---:|---:|")
        env = dict(os.environ)
        for r in range(1, a.rounds + 1):
            times = []
            for ahead in (False, True):
                spec = os.path.join(tmp, f"spec{int(ahead)}.json")
                with open(spec, "w") as f:
                    json.dump([mods, files, ahead], f)
                drop_caches()
                time.sleep(0.2)
                times.append(_child(spec, env)[1])
            times.append(_child(spec, env)[1])  # warm: the same, right after
            print(f"| {r} | {times[0]:.3f} s | {times[1]:.3f} s | {times[2]:.3f} s |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
