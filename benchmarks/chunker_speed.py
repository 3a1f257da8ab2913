"""Throughput of the chunker scan loop: C single thread, C on N threads, Python reference.

Usage: python benchmarks/chunker_speed.py [--mib 64] [--threads 2] [--repeat 3]

Multi-thread numbers are aggregate (N threads each cutting their own copy of the data);
about N times the single-thread figure means the C loop really runs without the GIL.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # work tree

from backupkit.chunker import C_AVAILABLE, DEFAULT_AVG, DEFAULT_MAX, DEFAULT_MIN, Chunker

MIB = 1024 * 1024


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=64, help="MiB of random data per thread")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--python-mib", type=int, default=4, help="MiB for the reference")
    args = parser.parse_args()
    if not C_AVAILABLE:
        raise SystemExit("C extension not built: python setup.py build_ext --inplace")

    key = os.urandom(32)
    size = args.mib * MIB
    datas = [os.urandom(size) for _ in range(max(1, args.threads))]
    params = (DEFAULT_MIN, DEFAULT_AVG, DEFAULT_MAX)
    chunker = Chunker(key, *params, impl="c")
    print(f"params min/avg/max = {params}, {args.mib} MiB random data per thread")

    t = best_of(args.repeat, lambda: chunker.cut_all(datas[0], True))
    n_chunks = len(chunker.cut_all(datas[0], True))
    single = size / MIB / t
    print(f"C, 1 thread : {single:8.0f} MiB/s  ({n_chunks} chunks, {t * 1000:.1f} ms)")

    def threaded() -> None:
        workers = [
            threading.Thread(target=chunker.cut_all, args=(d, True)) for d in datas
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    t = best_of(args.repeat, threaded)
    total = size * len(datas) / MIB / t
    print(
        f"C, {len(datas)} threads: {total:8.0f} MiB/s aggregate "
        f"({total / single:.2f}x single thread)"
    )

    small = Chunker(key, 2048, 8192, 65536, impl="c")
    t = best_of(args.repeat, lambda: small.cut_all(datas[0], True))
    print(f"C, 1 thread, min/avg/max 2K/8K/64K: {size / MIB / t:8.0f} MiB/s")

    py = Chunker(key, *params, impl="python")
    pdata = datas[0][: args.python_mib * MIB]
    t = best_of(1, lambda: py.cut_all(pdata, True))
    print(f"Python reference: {len(pdata) / MIB / t:8.2f} MiB/s (bytes before min_size skipped)")


if __name__ == "__main__":
    main()
