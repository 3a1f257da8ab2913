"""Where ``bk check --read-data`` spends its time, part by part (docs/performance-limits.md,
check row, "12-03 evening").

    python -m benchmarks.check_parts --repo R --password-file P phases
    python -m benchmarks.check_parts --repo R --password-file P threads --packs 40 --threads 1,2,3,4
    python -m benchmarks.check_parts --repo R --password-file P profile --packs 30
    python -m benchmarks.check_parts --repo R --password-file P heap
    python -m benchmarks.check_parts primitives

``phases``: one check with every ``_CheckRun`` phase timed (wall seconds; since e07f662
the packs are read while the trees are walked, so ``_check_trees`` includes the first reads
and ``_read_data`` is what is left after the walk). ``threads``:
``verify_pack`` alone over the first N packs, read into memory first, on each number of
threads (wall, CPU, cores). ``profile``: the same on one thread under cProfile, the top
functions by own time. ``primitives``: zstd decompression and SHA-256 of 4 MiB, on one
thread and on two (whether they release the GIL). ``heap``: one check with ``tracemalloc``
on; at the end of the trees' walk (the packs still being read) the Python heap and its
largest allocation sites (the --top of them).
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import os
import pstats
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from backupkit.managers import check as check_mod
from backupkit.repo.packverify import verify_pack
from backupkit.repo.repository import Repository
from backupkit.store.local import LocalObjectStore

PHASES = ("_check_config", "_check_keys", "_check_snapshots", "_load_index", "_check_packs", "_check_trees", "_read_data", "_attribute")


def _open(args) -> Repository:
    with open(args.password_file, "rb") as f:
        password = f.read().strip()
    return Repository.open(LocalObjectStore(args.repo), password, cache_root=None)


def phases(args) -> None:
    t = time.perf_counter()
    repo = _open(args)
    print(f"open {time.perf_counter() - t:.2f} s")
    for name in PHASES:
        fn = getattr(check_mod._CheckRun, name, None)  # noqa: SLF001 - timing each phase is the point
        if fn is None:
            continue

        def timed(self, *a, _fn=fn, _name=name, **kw):
            t0 = time.perf_counter()
            try:
                return _fn(self, *a, **kw)
            finally:
                print(f"{_name} {time.perf_counter() - t0:.2f} s")

        setattr(check_mod._CheckRun, name, timed)  # noqa: SLF001
    res = check_mod.CheckManager(repo).run(check_mod.CheckOptions(read_data=True))
    print("ok" if res.ok else f"{len(res.errors)} errors")


def heap(args) -> None:
    import tracemalloc

    repo = _open(args)
    walk = check_mod._CheckRun._check_trees  # noqa: SLF001 - the point in the run to look at

    def looked(self, *a, **kw):
        out = walk(self, *a, **kw)
        cur, peak = tracemalloc.get_traced_memory()
        print(f"after the trees' walk: {cur / 2**20:.1f} MiB traced, {peak / 2**20:.1f} MiB at the peak so far")
        for st in tracemalloc.take_snapshot().statistics("traceback")[: args.top]:
            where = " <- ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in list(st.traceback)[-3:])
            print(f"  {st.size / 2**20:7.1f} MiB {st.count:9d} blocks  {where}")
        return out

    check_mod._CheckRun._check_trees = looked  # noqa: SLF001
    tracemalloc.start(8)
    try:
        res = check_mod.CheckManager(repo).run(check_mod.CheckOptions(read_data=True))
    finally:
        tracemalloc.stop()
        check_mod._CheckRun._check_trees = walk  # noqa: SLF001
    print("ok" if res.ok else f"{len(res.errors)} errors")


def _packs_in_memory(args):
    repo = _open(args)
    entries: dict[bytes, dict] = {}
    for b in repo.index.blobs():
        entries.setdefault(b.pack.id, {})[b.blob_id] = (b.offset, b.length, b.raw_length)
    packs = [p for p in repo.index.packs() if p.id in entries][: args.packs]
    datas = {p.id: repo.read_pack(p) for p in packs}
    blobs = sum(len(entries[p.id]) for p in packs)
    print(f"{len(packs)} packs, {blobs} blobs, {sum(map(len, datas.values())) / 2**20:.1f} MiB in memory")

    def one(p) -> None:
        header, bad = verify_pack(repo.sealer, p.id, p.kind, p.size, datas[p.id], entries[p.id])
        assert not header and not bad, (header, bad)

    return packs, one


def threads(args) -> None:
    packs, one = _packs_in_memory(args)
    for n in args.threads:
        c, w = time.process_time(), time.perf_counter()
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(one, packs))
        c, w = time.process_time() - c, time.perf_counter() - w
        print(f"threads {n}: wall {w:.3f} s, CPU {c:.3f} s, cores {c / w:.2f}")


def profile(args) -> None:
    packs, one = _packs_in_memory(args)
    prof = cProfile.Profile()
    prof.runcall(lambda: [one(p) for p in packs])
    pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)


def _stdlib_bytes(n: int) -> bytes:
    """``n`` bytes of this Python's standard library sources (the same on every machine)."""
    import sysconfig

    out = bytearray()
    for root, _dirs, files in sorted(os.walk(sysconfig.get_paths()["stdlib"])):
        for name in sorted(files):
            if name.endswith(".py") and len(out) < n:
                with open(os.path.join(root, name), "rb") as f:
                    out += f.read()
    return bytes(out[:n])


def primitives(args) -> None:
    import zstandard

    raw = _stdlib_bytes(4 << 20)  # real files: zstd's speed depends on what it decompresses
    packed = zstandard.ZstdCompressor(level=3).compress(raw)
    for name, fn in (
        ("zstd decompress", lambda: zstandard.ZstdDecompressor().decompress(packed)),
        ("sha256", lambda: hashlib.sha256(raw).digest()),
    ):
        t = time.perf_counter()
        for _ in range(40):
            fn()
        one = time.perf_counter() - t
        ts = [threading.Thread(target=lambda: [fn() for _ in range(40)]) for _ in range(2)]
        t = time.perf_counter()
        for x in ts:
            x.start()
        for x in ts:
            x.join()
        two = time.perf_counter() - t
        print(f"{name}: 40 calls on 1 thread {one:.2f} s, 80 on 2 threads {two:.2f} s: {2 * one / two:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo")
    ap.add_argument("--password-file")
    ap.add_argument("what", choices=("phases", "threads", "profile", "primitives", "heap"))
    ap.add_argument("--packs", type=int, default=40)
    ap.add_argument("--threads", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 3, 4])
    ap.add_argument("--top", type=int, default=14)
    args = ap.parse_args()
    if args.what != "primitives" and not (args.repo and args.password_file):
        ap.error("--repo and --password-file are needed")
    {"phases": phases, "threads": threads, "profile": profile, "primitives": primitives, "heap": heap}[args.what](args)


if __name__ == "__main__":
    main()
