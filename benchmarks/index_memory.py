"""Memory and speed of the in-memory blob index at a given size, without a repository.

Generates index content directly (random 32-byte ids, ``--per-pack`` blobs per pack) into
``backupkit.repo.index.Index`` (or the dict-of-tuples index of a given git revision, for
comparison) and reports: resident bytes per blob (RSS growth over the blobs added), the
time to add them (what loading costs on top of decoding), and the time per lookup of a
present and of an absent id. Run in a fresh process per figure::

    python -m benchmarks.index_memory --blobs 10000000
    python -m benchmarks.index_memory --blobs 1000000 --rev 76610de   # the old index

Times move with the machine's load; bytes per blob do not.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import random
import subprocess
import sys
import time
import types


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def load_index_class(rev: str | None):
    if rev is None:
        from backupkit.repo.index import Index, PackInfo

        return Index, PackInfo
    src = subprocess.run(["git", "show", f"{rev}:backupkit/repo/index.py"], check=True, capture_output=True, text=True).stdout
    mod = types.ModuleType("old_index")
    sys.modules["old_index"] = mod
    exec(compile(src, f"{rev}:index.py", "exec"), mod.__dict__)
    return mod.Index, mod.PackInfo


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blobs", type=int, default=1_000_000)
    ap.add_argument("--per-pack", type=int, default=1000)
    ap.add_argument("--lookups", type=int, default=200_000)
    ap.add_argument("--bulk", action="store_true", help="add inside Index.bulk() (as loading does)")
    ap.add_argument("--rev", help="git revision whose index.py to measure instead of the working tree's")
    args = ap.parse_args(argv)
    Index, PackInfo = load_index_class(args.rev)
    rng = random.Random(1)
    probe = [rng.randbytes(32) for _ in range(args.lookups)]
    gc.collect()
    index = Index()
    before = rss_bytes()
    t0 = time.perf_counter()
    added = 0
    pack_no = 0
    keep_every = max(1, args.blobs // args.lookups)
    present = []
    ctx = index.bulk() if args.bulk else contextlib.nullcontext()
    ctx.__enter__()
    while added < args.blobs:
        n = min(args.per_pack, args.blobs - added)
        ids = [rng.randbytes(32) for _ in range(n)]
        present.extend(ids[i] for i in range(0, n, keep_every) if (added + i) % keep_every == 0)
        index.add_pack(PackInfo(pack_no.to_bytes(32, "big"), "data", 16 << 20), [(b, 16 * i, 16000, 30000) for i, b in enumerate(ids)])
        added += n
        pack_no += 1
    ctx.__exit__(None, None, None)
    add_s = time.perf_counter() - t0
    del ids
    gc.collect()
    grown = rss_bytes() - before - sys.getsizeof(present) - len(present) * 65  # minus the kept probes
    present = present[: args.lookups]
    t0 = time.perf_counter()
    hits = sum(1 for b in present if index.lookup(b) is not None)
    hit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    misses = sum(1 for b in probe if b not in index)
    miss_s = time.perf_counter() - t0
    assert hits == len(present) and misses == len(probe), (hits, misses)
    print(json.dumps({
        "index": args.rev or "working tree",
        "bulk": args.bulk,
        "blobs": len(index),
        "bytes_per_blob": round(grown / args.blobs, 1),
        "rss_mib": round(rss_bytes() / 2**20, 1),
        "add_s": round(add_s, 2),
        "lookup_hit_us": round(hit_s / max(1, len(present)) * 1e6, 2),
        "contains_miss_us": round(miss_s / len(probe) * 1e6, 2),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
