"""find and stats over many snapshots: bk against restic on the same generated history.

    python -m benchmarks.find_bench [--files 20000] [--snapshots 100] [--work DIR]

Generates the "many" set (tiny files, 100 per directory), then takes ``--snapshots``
backups with each tool, applying a 0.2% change (``datagen.apply_change``) before each
but the first. bk's backups run in-process (one open repository; only the queries are
measured, through the real ``bk``), restic's through its CLI. Then times, warm (one
untimed run first), the median of three runs of each query with each tool:
``find PATTERN`` for a name anywhere, ``find /ABS/DIR`` for an anchored directory, and
``stats`` in restore-size and raw-data mode. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from benchmarks.datagen import apply_change, generate_many

PASSWORD = "benchmark-password-not-secret"


def run(argv, env, check=True) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if check and r.returncode != 0:
        raise SystemExit(f"{argv} failed: {r.stderr[-2000:]}")
    return dt, r


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--snapshots", type=int, default=100)
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("BK_BENCH_WORK", "/var/tmp/backupkit-bench")) / "find")
    ap.add_argument("--bk", default=shutil.which("bk") or "bk")
    args = ap.parse_args()
    w = args.work
    data, pwf = w / "data", w / "password"
    fresh = not (w / "done").exists()
    if fresh:
        shutil.rmtree(w, ignore_errors=True)
        w.mkdir(parents=True)
        pwf.write_text(PASSWORD + "\n")
        generate_many(data, args.files)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BK_", "RESTIC_"))}
    env.update(BK_REPOSITORY=str(w / "bk-repo"), BK_PASSWORD_FILE=str(pwf), BK_CACHE_DIR=str(w / "bk-cache"),
               RESTIC_REPOSITORY=str(w / "restic-repo"), RESTIC_PASSWORD_FILE=str(pwf), RESTIC_CACHE_DIR=str(w / "restic-cache"))
    bk = [args.bk]
    if fresh:
        run([*bk, "init"], env)
        run(["restic", "init"], env)
        from backupkit.managers.backup import BackupManager, BackupOptions
        from backupkit.repo.repository import Repository
        from backupkit.store.local import LocalObjectStore

        repo = Repository.open(LocalObjectStore(w / "bk-repo"), PASSWORD.encode(), cache_root=w / "bk-cache")
        t_bk = t_restic = 0.0
        for i in range(args.snapshots):
            if i:
                apply_change(data, seed=i, fraction=0.002)
            t0 = time.perf_counter()
            BackupManager(repo).run(BackupOptions(paths=(str(data),), host="bench"))
            t_bk += time.perf_counter() - t0
            t_restic += run(["restic", "backup", "--host", "bench", str(data)], env)[0]
        repo.close()
        (w / "done").write_text(f"bk backups {t_bk:.1f} s, restic backups {t_restic:.1f} s\n")
    some_dir = sorted(p for p in data.iterdir() if p.is_dir())[len(list(data.iterdir())) // 2]
    sub = sorted(p for p in some_dir.iterdir() if p.is_dir())[0]
    queries = [
        ("find 'new_1_*' (a name anywhere)", ["find", "new_1_*"], ["find", "new_1_*"]),
        (f"find /…/{some_dir.name}/{sub.name} (anchored directory)", ["find", str(sub)], ["find", str(sub)]),
        ("stats (restore-size)", ["stats"], ["stats"]),
        ("stats --mode raw-data", ["stats", "--mode", "raw-data"], ["stats", "--mode", "raw-data"]),
    ]
    rows = []
    for name, bq, rq in queries:
        times = {}
        for tool, argv in (("bk", [*bk, *bq]), ("restic", ["restic", *rq])):
            run(argv, env)  # warm
            times[tool] = statistics.median(run(argv, env)[0] for _ in range(3))
        _d, r = run([*bk, "--json", *bq], env)
        hits = ""
        if bq[0] == "find":
            import json

            hits = json.loads(r.stdout)["hits"]
        rows.append((name, hits, times["bk"], times["restic"]))
    print((w / "done").read_text().strip())
    print(f"{args.files} files, {args.snapshots} snapshots\n")
    print("| query | bk matches | bk s | restic s | bk/restic |")
    print("|---|---:|---:|---:|---:|")
    for name, hits, tb, tr in rows:
        print(f"| {name} | {hits} | {tb:.2f} | {tr:.2f} | {tb / tr:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
