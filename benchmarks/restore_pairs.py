"""Restores side by side with the kernel's floor, in alternating rounds.

    python -m benchmarks.restore_pairs --set mixed [--source /usr] [--rounds 2] [--cold]
                                       [--tools bk,restic] [--work /var/tmp/backupkit-bench/full]

Reuses the repositories a ``benchmarks.run`` left in WORK (``WORK/<tool>/<set>``: run the
harness first) and restores each tool's latest snapshot with the very command the harness
times. Every round runs, one after the other: ``tar -xf`` of a TAR of the set held in
``/dev/shm`` (one thread creating the same files and writing the same bytes: the
kernel's part of a restore, nothing else), then each tool's restore. Per run: wall, user
and system seconds, minor page faults. Every target is a new directory, and all of them
are deleted only after the last round (``WORK/trash-pairs``, as ``benchmarks.run`` does): on
this machine's ext4 without a journal, a restore right after a big delete pays for it.
``--cold`` drops the page cache before each run (root).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.measure import Cmd, drop_caches, run
from benchmarks.tools import Workspace, locate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.restore_pairs", description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", default="mixed", choices=("mixed", "many", "tree"))
    ap.add_argument("--source", type=Path, help="the tree set's source (e.g. /usr); the others are WORK/data/SET")
    ap.add_argument("--tools", default="bk,restic")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("BK_BENCH_WORK", "/var/tmp/backupkit-bench")) / "full")
    ap.add_argument("--shm", type=Path, default=Path("/dev/shm"), help="where the set's TAR is held")
    ap.add_argument("--timeout", type=float, default=3600)
    a = ap.parse_args(argv)
    src = a.source if a.set == "tree" else a.work / "data" / a.set
    if src is None or not src.is_dir():
        ap.error(f"no source directory for the {a.set} set ({src}): give --source, or run benchmarks.run first")
    tools = locate([t for t in a.tools.split(",") if t])
    spaces = {name: Workspace(a.work / name / a.set) for name in tools}
    for name, ws in spaces.items():
        if tools[name].missing or not ws.repo.is_dir():
            ap.error(f"{name}: no repository at {ws.repo} (run benchmarks.run with this set first)")
    if a.cold and not drop_caches():
        ap.error("--cold needs permission to write /proc/sys/vm/drop_caches (root)")
    scratch = a.work / "trash-pairs"
    scratch.mkdir(parents=True, exist_ok=True)
    tar = a.shm / f"bk-restore-pairs-{os.getpid()}.tar"
    logs = a.work / "logs"
    logs.mkdir(exist_ok=True)
    try:
        subprocess.run(["tar", "-cf", str(tar), "-C", str(src.parent), src.name], check=True)
        for rnd in range(1, a.rounds + 1):
            runs = [("tar -xf", None)] + [(name, tools[name]) for name in tools]
            for label, tool in runs:
                target = scratch / f"pairs-{os.getpid()}-{rnd}-{label.split()[0]}"
                target.mkdir()
                if tool is None:
                    cmd, env = Cmd(["tar", "-xf", str(tar), "-C", str(target)]), dict(os.environ)
                else:
                    (cmd,) = tool.restore(spaces[label], target)
                    env = tool.env(spaces[label])
                if a.cold:
                    drop_caches()
                m = run(cmd, env, logs / f"restore-pairs-{label.split()[0]}.log", a.timeout)
                if not m.ok:
                    print(f"{label} failed in round {rnd}: {m.errors[-1]}", file=sys.stderr)
                    return 1
                print(f"round {rnd} {label:>8}: {m.wall:7.2f} s wall, {m.cpu - m.sys_cpu:6.2f} user + "
                      f"{m.sys_cpu:6.2f} sys s, {m.minflt:8d} minor faults", flush=True)
    finally:
        tar.unlink(missing_ok=True)
        shutil.rmtree(scratch, ignore_errors=True)
        os.sync()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
