"""bk mount against restic mount: sequential read of one large file, and ``find`` over a
snapshot of many small files, each on a freshly started mount (nothing cached in the
kernel or the process).

    python -m benchmarks.mountbench [--work DIR] [--big-mib 200] [--files 10000] [--runs 3]

Needs root (FUSE), fusermount3, restic and bk on PATH (or --bk CMD). Data: one file of
random bytes (incompressible, so both tools read every byte from their packs) and
``datagen.generate_many`` tiny files, in one snapshot; local repositories.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.datagen import generate_many

PASSWORD = "mountbench"


def _env(tool: str, repo: Path, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BK_", "RESTIC_"))}
    if tool == "bk":
        env.update(BK_REPOSITORY=str(repo), BK_PASSWORD=PASSWORD, BK_CACHE_DIR=str(cache))
    else:
        env.update(RESTIC_REPOSITORY=str(repo), RESTIC_PASSWORD=PASSWORD, RESTIC_CACHE_DIR=str(cache))
    return env


def _mounted(mp: Path) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == str(mp) for line in f)


class Mounted:
    def __init__(self, argv: list[str], env: dict[str, str], mp: Path, ready: Path) -> None:
        self.mp = mp
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen([*argv, "mount", str(mp)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not (_mounted(mp) and ready.exists()):
            if self.proc.poll() is not None or time.perf_counter() - self.t0 > 120:
                raise RuntimeError(f"{argv} mount did not come up")
            time.sleep(0.02)
        self.ready_s = time.perf_counter() - self.t0

    def __enter__(self) -> Mounted:
        return self

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if _mounted(self.mp):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mp)], check=False)


def _read_all(path: Path) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = 0
    with open(path, "rb", buffering=0) as f:
        while b := f.read(1 << 20):
            n += len(b)
    return n, time.perf_counter() - t0


def _find(path: Path) -> tuple[int, float]:
    t0 = time.perf_counter()
    out = subprocess.run(f"find {shlex.quote(str(path))} | wc -l", shell=True, capture_output=True, check=True)
    return int(out.stdout), time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=os.environ.get("BK_BENCH_WORK", "/var/tmp/backupkit-bench") + "/mount")
    ap.add_argument("--big-mib", type=int, default=200)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bk", default="bk")
    args = ap.parse_args(argv)
    work = Path(args.work)
    tools = {"bk": shlex.split(args.bk), "restic": ["restic"]}
    big_src, many_src = work / "big", work / "many"
    if not (big_src / "big.bin").exists() or (big_src / "big.bin").stat().st_size != args.big_mib << 20:
        shutil.rmtree(big_src, ignore_errors=True)
        big_src.mkdir(parents=True)
        rng = random.Random(1)
        with open(big_src / "big.bin", "wb") as f:
            for _ in range(args.big_mib):
                f.write(rng.randbytes(1 << 20))
    if not many_src.exists():
        generate_many(many_src, args.files)
    results: dict[str, dict[str, list[float]]] = {}
    for tool, cmd in tools.items():
        repo, cache = work / f"repo-{tool}", work / f"cache-{tool}"
        shutil.rmtree(repo, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
        env = _env(tool, repo, cache)
        subprocess.run([*cmd, "init"], env=env, check=True, capture_output=True)
        subprocess.run([*cmd, "backup", str(big_src), str(many_src)], env=env, check=True, capture_output=True)
        r = results[tool] = {"read_mbs": [], "find_s": [], "entries": [], "ready_s": []}
        for _ in range(args.runs):
            for what in ("read", "find"):
                mp = Path(tempfile.mkdtemp(prefix=f"mountbench-{tool}-"))
                latest = mp / "snapshots" / "latest"
                try:
                    with Mounted(cmd, env, mp, mp / "snapshots") as m:
                        r["ready_s"].append(m.ready_s)
                        if what == "read":
                            n, s = _read_all(latest / str(big_src).lstrip("/") / "big.bin")
                            assert n == args.big_mib << 20, n
                            r["read_mbs"].append(n / s / 1e6)
                        else:
                            count, s = _find(latest / str(many_src).lstrip("/"))
                            r["find_s"].append(s)
                            r["entries"].append(count)
                finally:
                    mp.rmdir()
    for tool, r in results.items():
        print(
            f"{tool:7} read {statistics.median(r['read_mbs']):7.1f} MB/s (runs {', '.join(f'{x:.0f}' for x in r['read_mbs'])})  "
            f"find {statistics.median(r['find_s']):6.2f} s for {r['entries'][0]} entries (runs {', '.join(f'{x:.2f}' for x in r['find_s'])})  "
            f"mount ready {statistics.median(r['ready_s']):.2f} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
