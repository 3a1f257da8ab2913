"""Summaries of perf and py-spy profiles of bk, as used in docs/performance-limits.md.

Usage::

    perf record -F 499 -g -o perf.data -- bk backup DIR
    perf script -i perf.data | python -m benchmarks.profsum perf [CPU_SECONDS]

    py-spy record --gil --threads -r 200 -f raw -o gil.txt -- bk backup DIR
    python -m benchmarks.profsum stages gil.txt [--rate 200]

    py-spy record --idle --threads -r 100 -f raw -o idle.txt -- bk backup DIR
    python -m benchmarks.profsum waits idle.txt

    python -m benchmarks.profsum evict DIR      # drop DIR's file data from the page cache

``perf``: each sample under the first kernel path of its call chain that says why the
kernel ran (a page fault, a write, a read, open/stat, futex...), or for user samples the
library of the leaf (zstd, the interpreter, OpenSSL, the chunker, libc, msgpack).
``stages``: the samples of a ``py-spy --gil`` profile (only the thread holding the GIL is
sampled) under the innermost frame that names a pipeline stage. ``waits``: per thread
group, the share of samples by the innermost backupkit frame and the leaf frame, i.e. what
each thread does or waits on. ``evict``: ``POSIX_FADV_DONTNEED`` on every file of a tree,
a cold read of its data without dropping the whole page cache (inodes stay cached).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys

KERNEL_PATHS = [  # (category, kernel functions any of which in the chain decides it)
    ("kernel: page faults (first touch of new memory)", ("exc_page_fault",)),
    ("kernel: munmap / mmap / madvise / brk", ("__vm_munmap", "__x64_sys_munmap", "do_mmap", "__x64_sys_madvise", "__do_sys_brk")),
    ("kernel: write / pwrite into the page cache", ("ksys_write", "vfs_write", "__x64_sys_pwrite64", "vfs_writev")),
    ("kernel: read / readv / pread from the page cache", ("ksys_read", "vfs_read", "do_preadv", "do_readv", "__x64_sys_pread64")),
    ("kernel: fsync", ("do_fsync", "__x64_sys_fsync", "__x64_sys_fdatasync")),
    ("kernel: open / stat / listdir / close / rename / mkdir / xattr", (
        "do_sys_openat2", "vfs_statx", "__x64_sys_newfstatat", "__do_sys_newfstatat", "__x64_sys_statx", "iterate_dir",
        "__x64_sys_close", "do_renameat2", "do_unlinkat", "__x64_sys_newfstat", "do_mkdirat", "__x64_sys_getdents64",
        "__x64_sys_lgetxattr", "__x64_sys_llistxattr", "__x64_sys_lseek", "__x64_sys_fadvise64", "__x64_sys_readlink",
        "__x64_sys_utimensat", "__x64_sys_fchmod", "__x64_sys_fchown", "__x64_sys_ftruncate")),
    ("kernel: futex / scheduling (threads waking each other)", ("futex", "__schedule", "finish_task_switch", "do_nanosleep")),
    ("kernel: getrandom", ("__x64_sys_getrandom",)),
    ("kernel: interrupts / softirq / I/O completion", ("handle_softirqs", "asm_common_interrupt", "sysvec_", "irq_exit_rcu")),
]
USER_LIBS = [
    ("user: zstd", ("backend_c", "libzstd")),
    ("user: Python interpreter (bytecode, objects, malloc)", ("libpython", "python3")),
    ("user: AES-GCM / HMAC / SHA-256 (OpenSSL)", ("libcrypto", "_rust.abi3", "_hashlib")),
    ("user: chunker (_cdc)", ("_cdc",)),
    ("user: libc (memcpy, memset, malloc)", ("libc.so", "libc-")),
    ("user: msgpack", ("_cmsgpack",)),
]

STAGES = [  # the innermost frame naming one of these decides the sample's stage
    ("seal (Sealer.seal: key derivation, AESGCM, envelope)", ["Sealer.seal"]),
    ("compress (encode_payload)", ["encode_payload"]),
    ("blob id (Sealer.blob_id)", ["Sealer.blob_id"]),
    ("index lookups (Index)", ["Index._locked_find", "Index.__contains__", "BlobAccess.has_blob", "BlobAccess.has_blobs", "Index.missing", "Index.lookup"]),
    ("pack assembly (PackBuilder.finish)", ["PackBuilder.finish"]),
    ("pack indexing / index load (Index.add_pack)", ["BlobAccess._pack_uploaded", "Index.add_pack", "load_index"]),
    ("index objects (encode_index, write_index)", ["encode_index", "Repository.write_index"]),
    ("add_blob bookkeeping (lock, reserve, stats)", ["BlobAccess.add_blob", "PackWriter.add", "ContentWriter.store_chunk"]),
    ("trie update (Hamt.update, ChangeLog.slot)", ["Hamt.update", "Hamt.update_by_slot", "ChangeLog.slot"]),
    ("entry encode (Entry.encode)", ["Entry.encode"]),
    ("trie change record (Keyer.key, ChangeLog.add)", ["BackupWalk._record"]),
    ("entry from lstat (_meta_entry)", ["BackupWalk._meta_entry"]),
    ("parent compare (unchanged, items_indexed, children)", [
        "BackupWalk._same", "BackupWalk._items_indexed", "BackupWalk._parent_children",
        "unchanged", "ParentView.items_indexed", "ParentView.content_indexed", "ParentView.children"]),
    ("chunker buffers (Chunker.chunks)", ["Chunker.chunks"]),
    ("file open/read/close (ContentWriter.read_file)", ["ContentWriter.read_file", "read_upto"]),
    ("restore: verify blobs (PackPlan._open)", ["PackPlan._open", "PackPlan._read_span"]),
    ("restore: plan and create files (DirRestorer, PackPlan.add)", ["DirRestorer", "PackPlan.add", "PackPlan._harvest"]),
    ("snapshot tree walk (SnapshotTree)", ["SnapshotTree"]),
    ("check: verify packs (_verify_pack)", ["_CheckRun._verify_pack"]),
    ("thread pool machinery (futures, queue, notify)", ["Future.", "ThreadPoolExecutor.", "_worker", "_WorkItem.run", "Condition.", "Event.wait"]),
    ("per-file result (_read_file, _finish_file, drain)", [
        "BackupWalk._read_file", "BackupWalk._finish_file", "BackupWalk._drain", "BackupWalk._read_small",
        "FileReads._read_file", "FileReads._finish_file", "FileReads.drain", "FileReads._read_small", "FileReads.add"]),
    ("walk (_visit, _leaf: listdir, lstat, joins)", ["BackupWalk._visit", "BackupWalk._leaf"]),
    ("start-up (imports)", ["_find_and_load"]),
]


def _samples(lines):
    """perf script: each sample is a header line and indented frame lines."""
    frames: list[str] = []
    for line in lines:
        if line.strip() and line[0] in " \t":
            frames.append(line.strip())
            continue
        if frames:
            yield frames
        frames = []
    if frames:
        yield frames


def perf(args: argparse.Namespace) -> None:
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for frames in _samples(sys.stdin):
        total += 1
        chain = " ".join(frames)
        if "[kernel.kallsyms]" in frames[0]:
            name = next((n for n, keys in KERNEL_PATHS if any(k in chain for k in keys)), "kernel: other")
        else:
            name = next((n for n, keys in USER_LIBS if any(k in frames[0] for k in keys)), "user: other")
        counts[name] += 1
    cpu = args.cpu_seconds
    print("| where | share of samples |" + (" CPU s |" if cpu else ""))
    print("|---|---:|" + ("---:|" if cpu else ""))
    for name, c in counts.most_common():
        print(f"| {name} | {100 * c / total:.1f}% |" + (f" {cpu * c / total:.2f} |" if cpu else ""))
    print(f"| total ({total} samples) | 100% |" + (f" {cpu:.2f} |" if cpu else ""))


def _raw(path: str):
    """py-spy raw (collapsed) lines: (thread label, [frame names], count)."""
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, n = line.rsplit(" ", 1)
            frames = stack.split(";")
            m = re.match(r"thread \(\d+\)(?:: (.*))?", frames[0])
            thread = re.sub(r"_\d+$", "", m.group(1) or "?") if m else "?"
            names = [f.split(" (")[0] for f in (frames[1:] if m else frames)]
            yield thread, frames[1:] if m else frames, names, int(n)


def stages(args: argparse.Namespace) -> None:
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for _thread, _frames, names, n in _raw(args.profile):
        total += n
        for name in reversed(names):
            stage = next((s for s, keys in STAGES if any(name == k or name.startswith(k) for k in keys)), None)
            if stage:
                counts[stage] += n
                break
        else:
            counts["other"] += n
    print("| stage | share of GIL-held samples | GIL-held s |")
    print("|---|---:|---:|")
    for name, c in counts.most_common():
        print(f"| {name} | {100 * c / total:.1f}% | {c / args.rate:.2f} |")
    print(f"| total | {total} samples | {total / args.rate:.2f} |")


def waits(args: argparse.Namespace) -> None:
    per: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    totals: collections.Counter[str] = collections.Counter()
    for thread, frames, _names, n in _raw(args.profile):
        def short(f: str) -> str:
            m = re.match(r"(.*) \((.*?):(\d+)\)$", f)
            return f"{m.group(1)} {m.group(2).split('/')[-1]}:{m.group(3)}" if m else f

        mine = [f for f in frames if "backupkit/" in f]
        key = (short(mine[-1]) if mine else "-") + "  >  " + (short(frames[-1]) if frames else "?")
        per[thread][key] += n
        totals[thread] += n
    for thread, t in totals.most_common():
        print(f"{thread}: {t} samples")
        for key, c in per[thread].most_common(args.top):
            print(f"  {100 * c / t:5.1f}%  {key}")


def evict(args: argparse.Namespace) -> None:
    n = 0
    for d, _dirs, names in os.walk(args.dir):
        for name in names:
            try:
                fd = os.open(os.path.join(d, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                n += 1
            finally:
                os.close(fd)
    print(f"evicted the data of {n} files", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("perf", help="perf script on stdin: CPU by kernel path and library")
    p.add_argument("cpu_seconds", nargs="?", type=float, default=0.0, help="the command's CPU s, to print seconds")
    p.set_defaults(fn=perf)
    p = sub.add_parser("stages", help="py-spy --gil raw profile: GIL-held samples by pipeline stage")
    p.add_argument("profile")
    p.add_argument("--rate", type=float, default=200.0, help="py-spy's sampling rate (-r)")
    p.set_defaults(fn=stages)
    p = sub.add_parser("waits", help="py-spy --idle --threads raw profile: what each thread does or waits on")
    p.add_argument("profile")
    p.add_argument("--top", type=int, default=6)
    p.set_defaults(fn=waits)
    p = sub.add_parser("evict", help="drop a tree's file data from the page cache")
    p.add_argument("dir")
    p.set_defaults(fn=evict)
    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
