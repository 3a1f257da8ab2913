"""What writing into new page-cache pages costs on this machine: a restore's floor.

A restore writes every byte it restores into pages the page cache allocates for it; on a
VM those pages may cost the host's work on first touch, and that cost lands in the
writer's system time (``copy_folio_from_iter_atomic``). This writes ``--mib`` MiB into
new files of 100 MiB with ``pwrite`` in pieces of each ``--piece`` size, from a 256 MiB
buffer (as a restore writes decoded blobs, not one hot buffer), after ``sync`` and
``drop_caches`` (root; ``--no-drop`` to skip), and prints each run's wall and system
seconds. The pieces are taken in turn, ``--rounds`` times, so the host's swings spread
over all sizes::

    python -m benchmarks.pagecache --dir /var/tmp/pc [--mib 3000] [--piece 65536 --piece 1048576] [--rounds 2]

The files are removed after each run (before the next drop).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import time
from pathlib import Path

from benchmarks.measure import drop_caches

MiB = 1 << 20
FILE_SIZE = 100 * MiB


def write_run(directory: Path, total: int, piece: int, source: memoryview) -> tuple[float, float, float]:
    """(wall, system, user) seconds to write ``total`` bytes as new files in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.monotonic()
    done = pos = n = 0
    while done < total:
        fd = os.open(directory / f"f{n}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        n += 1
        try:
            off = 0
            while off < FILE_SIZE and done < total:
                if pos + piece > len(source):
                    pos = 0
                k = os.pwrite(fd, source[pos : pos + min(piece, total - done)], off)
                pos, off, done = pos + k, off + k, done + k
        finally:
            os.close(fd)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    return wall, after.ru_stime - before.ru_stime, after.ru_utime - before.ru_utime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, required=True, help="a scratch directory (made, emptied after each run)")
    ap.add_argument("--mib", type=int, default=3000)
    ap.add_argument("--piece", type=int, action="append", help="bytes per pwrite (repeatable; default 64 KiB and 1 MiB)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-drop", action="store_true", help="do not drop the page cache before each run")
    a = ap.parse_args(argv)
    if a.dir.exists() and any(a.dir.iterdir()):
        ap.error(f"{a.dir} is not empty")
    pieces = a.piece or [64 * 1024, MiB]
    if min(pieces) <= 0 or a.mib <= 0:
        ap.error("--mib and --piece must be positive")
    source = memoryview(bytearray(os.urandom(MiB)) * 256)  # 256 MiB, touched once here
    print("| round | piece | wall s | system s | user s |")
    print("|---:|---:|---:|---:|---:|")
    try:
        for rnd in range(1, a.rounds + 1):
            for piece in pieces:
                if not a.no_drop and not drop_caches():
                    ap.error("dropping the page cache needs root (or give --no-drop)")
                wall, system, user = write_run(a.dir, a.mib * MiB, piece, source)
                print(f"| {rnd} | {piece} | {wall:.2f} | {system:.2f} | {user:.2f} |", flush=True)
                shutil.rmtree(a.dir)
    finally:
        shutil.rmtree(a.dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
