"""The backup walk's directory read-ahead alone, for several bounds and thread counts.

Every directory below ``--path`` is listed in the walk's order (``walk_parts.walk``)
through ``dirscan.scan`` with a ``dirscan.read_ahead`` of each setting, its entries'
``os.stat_result``s made as the walk makes them; nothing is compared with a
parent. The settings alternate round by round; with ``--cold`` the page cache is
dropped before each (root only), which is where the thread count shows::

    python -m benchmarks.read_ahead --path /usr --rounds 3 --cold 4096:2 16384:4 16384:8

Each setting prints its rounds sorted: wall seconds / CPU seconds of the process.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

from backupkit import dirscan
from benchmarks.measure import drop_caches
from benchmarks.walk_parts import walk


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def setting(text: str) -> tuple[int, int]:
    """``ENTRIES:THREADS`` -> (entries, threads)."""
    entries, _, threads = text.partition(":")
    return int(entries), int(threads or 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", required=True, help="the tree to walk")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cold", action="store_true", help="drop the page cache before every walk")
    ap.add_argument("settings", nargs="+", type=setting, metavar="ENTRIES:THREADS")
    args = ap.parse_args(argv)
    root = os.fsencode(os.path.abspath(args.path))
    if args.cold and not drop_caches():
        ap.error("--cold: the page cache cannot be dropped here (root only)")
    runs: dict[tuple[int, int], list[tuple[float, float]]] = {s: [] for s in args.settings}
    counts = set()
    for _ in range(args.rounds):
        for entries, threads in args.settings:
            if args.cold:
                drop_caches()
            c0, t0 = _cpu(), time.perf_counter()
            ahead = dirscan.read_ahead(os, root, entries, 5.0, -1, threads)
            try:
                counts.add(walk(root, lambda fs, path, ahead=ahead: dirscan.scan(fs, path, ahead))[0])
            finally:
                ahead.close()
            runs[(entries, threads)].append((time.perf_counter() - t0, _cpu() - c0))
    print(f"{args.path}: {', '.join(map(str, sorted(counts)))} entries, {'cold' if args.cold else 'warm'}")
    for (entries, threads), got in runs.items():
        print(f"  {entries:>6} entries, {threads} threads: " + "  ".join(f"{w:.2f}/{c:.2f}" for w, c in sorted(got)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
