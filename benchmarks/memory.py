"""Peak memory of bk at scale: a 10M-blob index, and a 1M-file tree (bk beside restic).

``index``: a repository with one small real snapshot, plus generated index objects
naming ``--blobs`` blobs in packs that exist as sparse files of the indexed size (nothing
in these steps reads a pack's content: ``snapshots`` reads no index, an unchanged ``backup`` only looks ids
up, ``prune --dry-run`` marks from the real snapshot and plans without reading packs).
Steps: ``bk snapshots``, ``bk backup`` (nothing changed), ``bk prune --dry-run``; then,
unless ``--no-restic``, the same three for restic on a restic repository beside bk's with
the same real snapshot and as many generated blobs in its own format
(``benchmarks/restic_index.py``), so that both peaks are measured, not estimated.

``files``: ``--files`` tiny files (``datagen.generate_many``); steps: first backup,
unchanged backup, for bk and, when installed, restic.

Peak RSS comes from ``measure.run`` (GNU time's maxrss / PSS of the process tree). Wall
times are printed too, but on a shared machine only the memory figures are stable::

    python -m benchmarks.memory index --blobs 10000000 --work /tmp/bkmem
    python -m benchmarks.memory files --files 1000000 --work /tmp/bkmem
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
from pathlib import Path

from benchmarks import datagen, measure, restic_index
from benchmarks.tools import bk_beside_python

PASSWORD = "benchmark-password"
TIMEOUT = 4 * 3600


BK: list[str] = []


def bk_argv() -> list[str]:
    return BK or [str(bk_beside_python())]


def bk_env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BK_", "RESTIC_"))}
    env.update(BK_REPOSITORY=str(work / "bk-repo"), BK_PASSWORD=PASSWORD, BK_CACHE_DIR=str(work / "bk-cache"))
    env.update(RESTIC_REPOSITORY=str(work / "restic-repo"), RESTIC_PASSWORD=PASSWORD, RESTIC_CACHE_DIR=str(work / "restic-cache"))
    return env


def step(rows: list[dict], name: str, argv: list[str], env: dict[str, str], work: Path, ok: tuple[int, ...] = (0,)) -> None:
    m = measure.run(measure.Cmd(argv, ok_codes=ok), env, work / "log" / "memory.log", TIMEOUT)
    row = {"step": name, "peak_mib": round(m.peak_kib / 1024, 1), "wall_s": round(m.wall, 1), "cpu_s": round(m.cpu, 1),
           "rc": m.rc, "errors": m.errors}
    rows.append(row)
    print(json.dumps(row), flush=True)


def inject_index(work: Path, blobs: int, per_pack: int, per_object: int) -> None:
    """Write index objects naming ``blobs`` random blobs in empty data packs."""
    from backupkit.repo.index import PackInfo
    from backupkit.repo.pack import KIND_DATA, TYPE_OF_KIND, PackEntry, pack_name
    from backupkit.repo.repository import Repository
    from backupkit.store.local import LocalObjectStore

    repo = Repository.open(LocalObjectStore(work / "bk-repo", fsync=False), PASSWORD.encode(), cache_root=work / "bk-cache", connections=2)
    rng = random.Random(13)
    t = TYPE_OF_KIND[KIND_DATA]
    done = 0
    while done < blobs:
        packs = []
        while done < blobs and len(packs) * per_pack < per_object:
            n = min(per_pack, blobs - done)
            info = PackInfo(rng.randbytes(32), KIND_DATA, 16 << 20)
            packs.append((info, [PackEntry(t, rng.randbytes(32), 4096 * i, 4000, 8000) for i in range(n)]))
            # a sparse file of the indexed size: a backup treats a pack listed at another
            # size as lost (and marks its blobs to be written again)
            path = work / "bk-repo" / pack_name(KIND_DATA, info.id)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as f:
                f.truncate(info.size)
            done += n
        repo.write_index(packs)
    repo.close()


def run_index(args: argparse.Namespace, work: Path, rows: list[dict]) -> None:
    env = bk_env(work)
    src = work / "small-src"
    bk = bk_argv()
    if not (args.reuse and (work / "bk-repo").exists()):
        datagen.generate_many(src, 500)
        for argv in ([*bk, "init"], [*bk, "backup", str(src)]):
            step(rows, "setup: " + argv[1], argv, env, work)
        inject_index(work, args.blobs, args.per_pack, args.per_object)
    step(rows, "bk snapshots", [*bk, "snapshots"], env, work)
    step(rows, "bk backup (unchanged)", [*bk, "backup", str(src)], env, work)
    step(rows, "bk prune --dry-run", [*bk, "prune", "--dry-run"], env, work)
    restic = shutil.which("restic")
    if restic and not args.no_restic:
        run_restic_index(args, work, rows, restic, env, src)


def run_restic_index(args: argparse.Namespace, work: Path, rows: list[dict], restic: str, env: dict[str, str],
                     src: Path) -> None:
    """restic's side of ``index``: the same tree backed up for real, as many generated
    blobs (in its cache too, as bk's are in bk's), the same three steps measured alike."""
    if not (args.reuse and (work / "restic-repo").exists()):
        for argv in ([restic, "init"], [restic, "backup", "-q", str(src)]):
            step(rows, "setup: restic " + argv[1], argv, env, work)
        restic_index.inject(work / "restic-repo", PASSWORD, args.blobs, args.per_pack, args.per_object,
                            cache=work / "restic-cache")
    step(rows, "restic snapshots", [restic, "snapshots"], env, work)
    step(rows, "restic backup (unchanged)", [restic, "backup", "-q", str(src)], env, work)
    step(rows, "restic prune --dry-run", [restic, "prune", "--dry-run"], env, work)


def run_files(args: argparse.Namespace, work: Path, rows: list[dict]) -> None:
    env = bk_env(work)
    src = work / "many-src"
    if not src.exists():
        print(datagen.generate_many(src, args.files), flush=True)
    bk = bk_argv()
    step(rows, "setup: bk init", [*bk, "init"], env, work)
    step(rows, "bk first backup", [*bk, "backup", str(src)], env, work)
    step(rows, "bk unchanged backup", [*bk, "backup", str(src)], env, work)
    restic = shutil.which("restic")
    if restic and not args.no_restic:
        step(rows, "setup: restic init", [restic, "init"], env, work)
        step(rows, "restic first backup", [restic, "backup", "-q", str(src)], env, work)
        step(rows, "restic unchanged backup", [restic, "backup", "-q", str(src)], env, work)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("index", "files"))
    ap.add_argument("--work", type=Path, required=True, help="scratch directory (deleted at the end unless --keep)")
    ap.add_argument("--blobs", type=int, default=10_000_000)
    ap.add_argument("--per-pack", type=int, default=2000)
    ap.add_argument("--per-object", type=int, default=100_000)
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--no-restic", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the repositories and trees")
    ap.add_argument("--reuse", action="store_true", help="index: measure again on a kept repository (e.g. with "
                    "PYTHONPATH set to another revision's checkout)")
    ap.add_argument("--bk", help="the bk command to measure (default: this venv's)")
    args = ap.parse_args(argv)
    if args.bk:
        BK[:] = [args.bk]
    work = args.work / args.what
    if work.exists() and not args.reuse:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    try:
        (run_index if args.what == "index" else run_files)(args, work, rows)
    finally:
        (work / f"rows-{os.getpid()}.json").write_text(json.dumps(rows, indent=1))
        if not args.keep:
            shutil.rmtree(work / "many-src", ignore_errors=True)
            for d in ("bk-repo", "bk-cache", "restic-repo", "restic-cache", "small-src"):
                shutil.rmtree(work / d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
