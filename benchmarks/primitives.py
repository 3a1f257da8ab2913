"""Speed of the primitives a backup is made of, on a real data set, one thread and two.

Usage::

    python -m benchmarks.primitives DIR [--threads 2] [--level 3] [--limit-mib N]
    python -m benchmarks.primitives DIR --per-file          # lstat, entry encode, tiny blobs
    python -m benchmarks.primitives DIR --by-content        # zstd on what compresses and what does not

Content primitives (default): every regular file under DIR is read (warm cache: read it
once first), cut with bk's C chunker, and each chunk given a blob id (HMAC-SHA256 with
the id key, as ``Sealer.blob_id``); chunks not seen before are compressed with zstd at
bk's level (``encode_payload``) and sealed with AES-256-GCM (``Sealer.seal``), exactly
the calls ``Repository.add_blob`` makes. Each primitive is timed on its own with the
process CPU clock and the wall clock, so the figures are seconds per GB of source data
on one core; the floor of a first backup is their sum (plus the read).

``--threads 2`` then runs each primitive on two threads over two halves of the chunks
and reports wall and CPU seconds: a primitive that releases the GIL shows about 2 CPU
seconds per wall second when two cores are free (compare with the load average).

``--by-content``: zstd at bk's level over every file in 1 MiB blocks, the blocks that
stay at 95% of their size or more (what does not compress: media, archives) timed apart
from the rest: what skipping incompressible data could save.

``--per-file``: per-file costs of a tree of small files: ``os.lstat``, ``os.listdir``,
building and encoding an ``Entry`` (msgpack), the path's trie key (two keyed hashes),
and add_blob's primitives on a tiny blob (id, compress, seal), in microseconds per file.
"""

from __future__ import annotations

import argparse
import mmap
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # work tree

from backupkit.chunker import DEFAULT_AVG, DEFAULT_MAX, DEFAULT_MIN, Chunker
from backupkit.crypto import T_DATA_BLOB, MasterKeys, Sealer
from backupkit.entry import Keyer
from backupkit.objects.entry import entry_from_stat
from backupkit.repo.pack import encode_payload
from cli.tuning import tune_malloc

MB = 1e6


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def files_under(root: str) -> list[str]:
    out = []
    for d, dirs, names in os.walk(root):
        dirs.sort()
        for n in sorted(names):
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p):
                out.append(p)
    return out


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    w, c = time.perf_counter(), cpu()
    fn()
    return time.perf_counter() - w, cpu() - c


def on_threads(n: int, work: list, fn: Callable[[list], object]) -> tuple[float, float]:
    """(wall, cpu) of ``fn`` over ``n`` interleaved shares of ``work`` on ``n`` threads."""
    shares = [work[i::n] for i in range(n)]
    threads = [threading.Thread(target=fn, args=(s,)) for s in shares]
    w, c = time.perf_counter(), cpu()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - w, cpu() - c


def content(args: argparse.Namespace) -> None:
    tune_malloc()  # as bk's bulk commands do
    keys = MasterKeys.generate()
    sealer = Sealer(keys)
    chunker = Chunker(keys.chunker_key, DEFAULT_MIN, DEFAULT_AVG, DEFAULT_MAX)
    paths = files_under(args.dir)
    limit = args.limit_mib * (1 << 20) if args.limit_mib else None

    # read everything (warm); keep the first ``limit`` bytes
    datas: list[bytes] = []
    total = 0
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            data = f.read()
        datas.append(data)
        total += len(data)
        if limit and total >= limit:
            break
    paths = paths[: len(datas)]
    area_size = DEFAULT_MAX + (2 << 20)  # the chunker's read buffer

    def read_fresh() -> None:
        # as the chunker's readinto path: a fresh anonymous map per buffer, filled by readv
        for p in paths:
            fd = os.open(p, os.O_RDONLY)
            try:
                while True:
                    area = mmap.mmap(-1, area_size)
                    n = os.readv(fd, [area])
                    area.close()
                    if n < area_size:
                        break
            finally:
                os.close(fd)

    reuse = mmap.mmap(-1, area_size)

    def read_reused() -> None:
        # the copy alone: readv into one buffer that stays mapped
        for p in paths:
            fd = os.open(p, os.O_RDONLY)
            try:
                while os.readv(fd, [reuse]) == area_size:
                    pass
            finally:
                os.close(fd)
    print(f"data: {len(datas)} files, {total / MB:.0f} MB from {args.dir} (zstd level {args.level})")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    chunks: list[memoryview] = []

    def cut(ds: list[bytes]) -> None:
        for d in ds:
            v = memoryview(d)
            off = 0
            for n in chunker.cut_all(v, True):
                chunks.append(v[off : off + n])
                off += n

    rows = []
    rows.append(("read: readv into a fresh 10 MiB map (warm)", *timed(read_fresh)))
    rows.append(("read: readv into a reused buffer (warm)", *timed(read_reused)))
    rows.append(("chunker (C cut_all)", *timed(lambda: cut(datas))))
    ids = [sealer.blob_id(c) for c in chunks]
    rows.append(("blob id (HMAC-SHA256)", *timed(lambda: [sealer.blob_id(c) for c in chunks])))
    seen: set[bytes] = set()
    unique = []
    for i, c in zip(ids, chunks):
        if i not in seen:
            seen.add(i)
            unique.append((i, c))
    uniq_bytes = sum(len(c) for _, c in unique)
    # outputs are dropped as they come (as in bk), so malloc reuses their memory
    rows.append(("zstd (encode_payload)", *timed(lambda: [encode_payload(c, args.level) and None for _, c in unique])))
    payloads = [encode_payload(c, args.level) for _, c in unique]
    stored = sum(len(p) for p in payloads)
    sealed_pairs = list(zip((i for i, _ in unique), payloads))
    rows.append(("AES-GCM seal (Sealer.seal)", *timed(lambda: [sealer.seal(T_DATA_BLOB, i, p) and None for i, p in sealed_pairs])))
    # the local repository's writes: the payloads as 16 MiB pack files (write + close,
    # no fsync), then removed
    packdir = tempfile.mkdtemp(prefix="bk-primitives-", dir=args.write_dir)

    def write_packs() -> None:
        buf, n = [], 0
        for i, p in enumerate(payloads):
            buf.append(p)
            n += len(p)
            if n >= 16 << 20 or i == len(payloads) - 1:
                fd = os.open(os.path.join(packdir, f"p{i}"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    os.write(fd, b"".join(buf))
                finally:
                    os.close(fd)
                buf, n = [], 0

    try:
        rows.append(("write packs to the page cache (os.write, 16 MiB files)", *timed(write_packs)))
    finally:
        shutil.rmtree(packdir, ignore_errors=True)
    print(
        f"chunks: {len(chunks)} ({total / len(chunks) / 1024:.0f} KiB average), unique {len(unique)} "
        f"({uniq_bytes / MB:.0f} MB), payloads {stored / MB:.0f} MB ({stored / max(1, uniq_bytes):.0%} of unique)"
    )
    print()
    print("| primitive | wall s | CPU s | CPU s per GB of source | MB/s on one core |")
    print("|---|---:|---:|---:|---:|")
    sum_cpu = 0.0
    for name, w, c in rows:
        if not name.startswith(("read: readv into a fresh", "write packs")):
            sum_cpu += c
        print(f"| {name} | {w:.2f} | {c:.2f} | {c / total * 1e9:.2f} | {total / MB / max(c, 1e-9):.0f} |")
    print(f"| **sum (read into a reused buffer, no writes)** | | {sum_cpu:.2f} | {sum_cpu / total * 1e9:.2f} | {total / MB / sum_cpu:.0f} |")

    if args.threads > 1:
        n = args.threads
        print()
        print(f"{n} threads (load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())}):")
        print()
        print("| primitive | wall s | CPU s | CPU s / wall s |")
        print("|---|---:|---:|---:|")

        def th_cut(ds: list) -> None:
            for d in ds:
                chunker.cut_all(d, True)

        tests = [
            ("chunker (C cut_all)", datas, th_cut),
            ("blob id (HMAC-SHA256)", chunks, lambda cs: [sealer.blob_id(c) for c in cs]),
            ("zstd (encode_payload)", [c for _, c in unique], lambda cs: [encode_payload(c, args.level) and None for c in cs]),
            ("AES-GCM seal (Sealer.seal)", sealed_pairs, lambda ps: [sealer.seal(T_DATA_BLOB, i, p) and None for i, p in ps]),
        ]
        for name, work, fn in tests:
            w, c = on_threads(n, work, fn)
            print(f"| {name} | {w:.2f} | {c:.2f} | {c / w:.2f} |")


def by_content(args: argparse.Namespace) -> None:
    block = 1 << 20
    seconds = {True: 0.0, False: 0.0}
    sizes = {True: 0, False: 0}
    for p in files_under(args.dir):
        with open(p, "rb", buffering=0) as f:
            data = f.read()
        view = memoryview(data)
        for at in range(0, len(data), block):
            piece = view[at : at + block]
            t = cpu()
            out = encode_payload(piece, args.level)
            spent = cpu() - t
            stays = len(out) >= 0.95 * len(piece)
            seconds[stays] += spent
            sizes[stays] += len(piece)
    print(f"zstd level {args.level} over {args.dir} in 1 MiB blocks (process CPU clock, one thread)\n")
    print("| blocks | MB | CPU s | MB/s on one core |")
    print("|---|---:|---:|---:|")
    for stays, name in ((True, "stay at >= 95% of their size"), (False, "shrink")):
        mb = sizes[stays] / MB
        print(f"| {name} | {mb:.0f} | {seconds[stays]:.2f} | {mb / seconds[stays] if seconds[stays] else 0:.0f} |")


def per_file(args: argparse.Namespace) -> None:
    keys = MasterKeys.generate()
    sealer = Sealer(keys)
    keyer = Keyer(sealer.keyed_hash)
    dirs: list[bytes] = []
    paths: list[bytes] = []
    root = os.fsencode(args.dir)
    for d, subdirs, names in os.walk(root):
        subdirs.sort()
        dirs.append(d)
        paths.extend(os.path.join(d, n) for n in sorted(names))
    if args.limit_files:
        paths = paths[: args.limit_files]
    n = len(paths)
    print(f"tree: {n} files in {len(dirs)} directories under {args.dir}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for p in paths:  # warm the dentry and inode caches
        os.lstat(p)
    rows = []
    sts: list[os.stat_result] = []
    rows.append(("os.listdir (per file, warm)", *timed(lambda: [os.listdir(d) for d in dirs])))
    rows.append(("os.lstat (warm)", *timed(lambda: sts.extend(os.lstat(p) for p in paths))))
    ents: list = []
    rows.append(("entry_from_stat (Entry)", *timed(lambda: ents.extend(entry_from_stat(s) for s in sts))))
    rows.append(("Entry.encode (msgpack)", *timed(lambda: [e.encode() for e in ents])))
    rows.append(("trie key (Keyer.key)", *timed(lambda: [keyer.key(p) for p in paths])))

    def read_all() -> list[bytes]:
        out = []
        for p in paths:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NOATIME)
            try:
                os.fstat(fd)
                out.append(os.read(fd, 1 << 16))
                os.fstat(fd)
            finally:
                os.close(fd)
        return out

    datas: list[bytes] = []
    rows.append(("open+fstat+read+fstat+close (warm)", *timed(lambda: datas.extend(read_all()))))
    ids: list[bytes] = []
    rows.append(("blob id of the content", *timed(lambda: ids.extend(sealer.blob_id(d) for d in datas))))
    pls: list[bytes] = []
    rows.append(("encode_payload (zstd)", *timed(lambda: pls.extend(encode_payload(d, args.level) for d in datas))))
    rows.append(("Sealer.seal", *timed(lambda: [sealer.seal(T_DATA_BLOB, i, p) for i, p in zip(ids, pls)])))
    size = sum(len(d) for d in datas)
    print(f"content: {size / MB:.1f} MB, {size / max(1, n):.0f} bytes per file on average")
    print()
    print("| per file | CPU s | wall s | µs per file (CPU) |")
    print("|---|---:|---:|---:|")
    total = 0.0
    for name, w, c in rows:
        total += c
        print(f"| {name} | {c:.2f} | {w:.2f} | {c / n * 1e6:.1f} |")
    print(f"| **sum** | {total:.2f} | | {total / n * 1e6:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--level", type=int, default=3, help="zstd level (bk's default: 3)")
    ap.add_argument("--limit-mib", type=int, default=0, help="use only the first N MiB of files")
    ap.add_argument("--per-file", action="store_true")
    ap.add_argument("--by-content", action="store_true", help="zstd's time on what compresses and what does not")
    ap.add_argument("--limit-files", type=int, default=0)
    ap.add_argument("--write-dir", default=None, help="where the pack-write primitive writes (default: TMPDIR)")
    args = ap.parse_args()
    if args.per_file:
        per_file(args)
    elif args.by_content:
        by_content(args)
    else:
        content(args)


if __name__ == "__main__":
    main()
