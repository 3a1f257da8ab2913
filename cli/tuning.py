"""Process tuning for the bulk commands (backup, restore, check, prune).

The pipeline allocates and frees many 1-16 MiB buffers. glibc serves those with fresh
mmaps whose pages fault in on first touch, which cost more system time than the crypto.
Raising the mmap threshold (to 32 MiB: packs are 16) lets freed buffers be reused
instead; the trim threshold of 8 MiB returns what piles up beyond that, which kept
peak memory of a 400 MB backup at ~205 MiB instead of ~245 MiB with 64 MiB.

glibc also gives threads malloc arenas of their own, up to 8 per core, and each keeps
its freed buffers: capped at one arena per core, the first backup of `/usr` (5.7 GB,
138k entries, warm, 2 cores) peaked at 160-175 MiB in eight runs against 185 MiB in two
without the cap (and 174-189 in four before; restic 170-178), no slower; the mixed set's
first backup at 118-121 MiB instead of 134-136, check --read-data of it at 100-102
instead of 111-113. It costs the unchanged backup of 200k tiny files 10 MiB (110 against
100-101; restic 128). docs/benchmarks.md, 2026-12-03 12:27 and 13:26 sections (the
``benchmarks.ab`` commands that repeat these).
"""

from __future__ import annotations

import os
import sys

#: the trim threshold applied (0: none yet)
_done = 0
#: the trim threshold of the commands that read packs in bulk (check, restore): freed
#: pack buffers are kept for the next read instead of returned and faulted in again
READ_TRIM = 64 * 1024 * 1024


def tune_malloc(trim_threshold: int = 8 * 1024 * 1024) -> None:
    """malloc thresholds (Linux) and the cyclic garbage collector (everywhere).

    ``trim_threshold``: check reads whole packs (16-18 MiB, one after the other) into
    new buffers; with 64 MiB the freed ones are reused instead of returned and faulted in
    again: check --read-data of the mixed set took 0.35 system CPU s instead of 0.62-0.83
    (three runs each, warm), of `/usr` 0.83-0.88 instead of 1.71-1.86 (two each), for 1-4
    MiB more at the peak. Restore too (session 12): its read threads free pack spans
    and blobs that, trimmed at 8 MiB, came back as fresh pages: a restore of the mixed set
    took 103-117k minor faults (restic 50k), with 64 MiB 43k at the same peak (123 MiB);
    of `/usr` 99.5k -> 53.2k, peak 167 -> 172 MiB (restic 218-236). Backup keeps 8 MiB
    (above).

    A bulk command allocates millions of short-lived containers (decoded entries, index
    rows) while holding a large set of long-lived ones (the index): with the default
    thresholds the collector ran every 700 allocations and its full passes walked the
    whole index again and again, 10-15% of a restore's CPU. Collections are 100x rarer
    and full ones much rarer; the data has no reference cycles worth collecting early.
    """
    global _done
    if _done == trim_threshold:
        return
    _done = trim_threshold  # once per process and threshold (a second command in one process may differ)
    import gc

    gc.set_threshold(100_000, 50, 1000)
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
        libc.mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024)
        libc.mallopt(M_TRIM_THRESHOLD, trim_threshold)
        libc.mallopt(M_ARENA_MAX, max(2, os.cpu_count() or 2))
    except (OSError, AttributeError):
        pass


def quick_gil_handoff(seconds: float = 0.0005) -> None:
    """A thread that asks for the GIL gets it after ``seconds`` at most (CPython's
    default: 5 ms).

    A backup's walking thread gives the GIL up for every system call (lstat, listdir)
    and then waits for it while the reader and sealing threads run Python; it is the one
    thread a backup of many small files waits on. At 0.5 ms a first backup of 200k tiny
    files took 24.1 s instead of 27.2 s (warm, two pairs, docs/performance-limits.md)."""
    sys.setswitchinterval(seconds)


def raise_open_files() -> None:
    """Raise the soft limit of open files to the hard one (as Go programs, restic among
    them, do at start): a restore into a directory keeps each file it has planned open
    until its last blob is written (``Tuning.restore_open_files``, capped by this
    limit), and every restored directory open until the end."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = 1 << 20
        if soft != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, OSError, ValueError):
        pass


def limit_arenas(arenas: int = 2) -> None:
    """At most ``arenas`` glibc malloc arenas (Linux; call before threads start).

    Restore's read threads each allocate a pack span (up to 16 MiB) and its blobs; with
    an arena per thread, each kept its own freed spans: a 273 MB restore peaked at ~220
    MiB, with two arenas at ~150 MiB (~105 MiB with 32 MiB of spans in flight).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        M_ARENA_MAX = -8
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, arenas)
    except (OSError, AttributeError):
        pass
