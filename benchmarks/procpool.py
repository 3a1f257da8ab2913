"""A first backup's CPU stages on a thread pool (as bk runs them) and on a process pool.

Issue 13 asks, where threads cannot keep both cores busy, for a measurement of a process
pool for the CPU stages. This runs the same content pipeline over a tree both ways::

    python -m benchmarks.procpool DIR [--workers 2] [--rounds 2]

The walking thread does what bk's walk does per path: ``lstat``, build and encode the
entry (``entry_from_stat``, msgpack) and its trie key. The content stages run in
``--workers`` workers, per task (one file of 64 KiB or more, or up to 64 smaller ones, as
bk batches them): read the file, cut it with the C chunker, give each chunk its blob id
and, when the worker has not seen it, compress it (zstd level 3) and seal it (AES-GCM),
exactly ``Repository.add_blob``'s calls, and append the sealed blob to the worker's own
spool file (bk spools packs to temporary files the same way). ``threads``: one
``ThreadPoolExecutor`` sharing the seen set (bk's layout); ``processes``: a ``fork``
pool, each process with its own keys' copy and seen set, paths in and (id, sizes) rows
out (so a chunk two processes both meet first is sealed twice: rare in a first backup,
counted in the output). Modes alternate per round.

Printed per mode and round: wall seconds, CPU seconds of the whole run (the parent and
its children), cores used, peak resident memory (the parent's plus each worker's), and
the blobs and bytes stored. Read it warm (run once first) so both modes read from the
page cache; compare with ``bk backup`` of the same tree (``/usr/bin/time``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from backupkit.chunker import DEFAULT_AVG, DEFAULT_MAX, DEFAULT_MIN, Chunker
from backupkit.concurrency import bounded_map
from backupkit.crypto import T_DATA_BLOB, MasterKeys, Sealer
from backupkit.entry import Keyer
from backupkit.objects.entry import entry_from_stat
from backupkit.repo.pack import encode_payload
from cli.tuning import tune_malloc

SMALL = 64 * 1024
PER_TASK = 64

#: per worker (a thread's or a process's): keys, chunker, seen set and spool file
_state = threading.local()
_shared_seen: set[bytes] = set()


def _setup(keys: MasterKeys, spool_dir: str, shared: bool) -> None:
    _state.sealer = Sealer(keys)
    _state.chunker = Chunker(keys.chunker_key, DEFAULT_MIN, DEFAULT_AVG, DEFAULT_MAX)
    _state.seen = _shared_seen if shared else set()
    fd, _name = tempfile.mkstemp(prefix="spool-", dir=spool_dir)
    _state.spool = os.fdopen(fd, "wb", buffering=0)


def _content(paths: list[bytes]) -> list[tuple[bytes, int, int]]:
    """(blob id, raw length, sealed length or 0 when already seen) of every chunk of
    ``paths``' contents."""
    sealer, chunker, seen, spool = _state.sealer, _state.chunker, _state.seen, _state.spool
    out = []
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            data = f.read()
        v = memoryview(data)
        off = 0
        for n in chunker.cut_all(v, True):
            c = v[off : off + n]
            off += n
            bid = sealer.blob_id(c)
            if bid in seen:
                out.append((bid, n, 0))
                continue
            seen.add(bid)
            sealed = sealer.seal(T_DATA_BLOB, bid, encode_payload(c, 3))
            spool.write(sealed)
            out.append((bid, n, len(sealed)))
    return out


def _thread_content(args: tuple[MasterKeys, str, list[bytes]]) -> list[tuple[bytes, int, int]]:
    keys, spool_dir, paths = args
    if not hasattr(_state, "sealer"):
        _setup(keys, spool_dir, shared=True)
    return _content(paths)


def _tasks(root: bytes, keyer: Keyer, entries: list[int]):
    """Walk ``root`` as bk's walk does (per path: lstat, entry, encoding, trie key) and
    yield the content tasks: a large file alone, small files by up to PER_TASK."""
    small: list[bytes] = []
    stack = [root]
    while stack:
        d = stack.pop()
        names = sorted(os.listdir(d))
        subdirs = []
        for name in names:
            p = os.path.join(d, name)
            st = os.lstat(p)
            entry_from_stat(st).encode()
            keyer.key(p)
            entries[0] += 1
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(p)
            elif stat.S_ISREG(st.st_mode):
                if st.st_size >= SMALL:
                    yield [p]
                else:
                    small.append(p)
                    if len(small) >= PER_TASK:
                        yield small
                        small = []
        stack.extend(reversed(subdirs))
    if small:
        yield small


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run(mode: str, root: bytes, workers: int, spool_dir: str) -> dict:
    keys = MasterKeys.generate()
    keyer = Keyer(Sealer(keys).keyed_hash)
    _shared_seen.clear()
    entries = [0]
    rows: list[tuple[bytes, int, int]] = []
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    ch0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    peak_workers = 0
    if mode == "threads":
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for r in bounded_map(pool, _thread_content, ((keys, spool_dir, t) for t in _tasks(root, keyer, entries)), workers * 4):
                rows.extend(r)
    else:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(workers, initializer=_setup, initargs=(keys, spool_dir, False)) as pool:
            pids = [p.pid for p in pool._pool]  # noqa: SLF001 (peak memory of each worker)
            for r in pool.imap(_content, _tasks(root, keyer, entries), chunksize=1):
                rows.extend(r)
            peak_workers = sum(_rss_kib(pid) for pid in pids)
            pool.close()
            pool.join()
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    ch1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) + (
        ch1.ru_utime + ch1.ru_stime - ch0.ru_utime - ch0.ru_stime
    )
    ids = {bid for bid, _n, _s in rows}
    sealed = [s for _b, _n, s in rows if s]
    return {
        "mode": mode,
        "wall": wall,
        "cpu": cpu,
        "peak_mib": (ru1.ru_maxrss + peak_workers) / 1024,
        "entries": entries[0],
        "chunks": len(rows),
        "unique": len(ids),
        "sealed_twice": len(sealed) - len(ids),
        "stored_mb": sum(sealed) / 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--spool-dir", default=None, help="where the workers' spool files go (default: TMPDIR)")
    ap.add_argument("--one", choices=("threads", "processes"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not os.path.isdir(args.dir):
        ap.error(f"{args.dir}: not a directory")
    if args.one:  # one run in a process of its own, so that its peak memory is its own
        tune_malloc()  # as bk's bulk commands
        spool = tempfile.mkdtemp(prefix="bk-procpool-", dir=args.spool_dir)
        try:
            print(json.dumps(run(args.one, os.fsencode(os.path.abspath(args.dir)), args.workers, spool)))
        finally:
            shutil.rmtree(spool, ignore_errors=True)
        return 0
    print(f"{args.dir}: {args.workers} workers, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    print("| round | mode | wall s | CPU s | cores | peak MiB | entries | chunks | unique | sealed twice | stored MB |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for rnd in range(1, args.rounds + 1):
        for mode in ("threads", "processes"):
            cmd = [sys.executable, "-m", "benchmarks.procpool", args.dir, "--workers", str(args.workers), "--one", mode]
            if args.spool_dir:
                cmd += ["--spool-dir", args.spool_dir]
            r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            print(
                f"| {rnd} | {mode} | {r['wall']:.2f} | {r['cpu']:.2f} | {r['cpu'] / r['wall']:.2f} | {r['peak_mib']:.0f} | "
                f"{r['entries']} | {r['chunks']} | {r['unique']} | {r['sealed_twice']} | {r['stored_mb']:.0f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
