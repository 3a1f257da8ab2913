"""The parts of an unchanged backup's walk, timed apart (the listing and the compare in C and in Python).

``list``: every directory below ``--path`` listed and its entries lstat'ed, by
``dirscan.scan`` (C, ``_dirscan.c``) and by ``dirscan.scan_py`` (``os.listdir`` and an
``os.lstat`` per entry), with the Python objects made as the walk makes them.
With ``--repo``: ``index load`` (the merged index decoded and sorted), ``parent
listings`` (every directory's children in the last snapshot of ``--path``, listed as
the backup walk lists them: ``raw_children_by_name``, the backup's trie caches),
``snapshot walk`` (every entry of that snapshot, as restore, ls and find walk it:
``SnapshotTree.walk`` with the trie it makes itself, entries decoded), and
``compare``: every regular file the last snapshot of ``--path`` holds compared with its
lstat, by the C matcher (``backup_parent.content_matcher``) and by the Python path
(``wire``, ``inline_content``, ``file_unchanged``); both counts must agree::

    python -m benchmarks.walk_parts --path /usr                                  # list only
    python -m benchmarks.walk_parts --repo R --password-file P [--cache-dir C] --path /usr   # and the rest

Warm: each part runs ``--rounds`` times and the best is printed (drop the page cache
before a run to see the first, cold listing). The module imports nothing of
``benchmarks``, so an older revision's engine can be timed by this file::

    PYTHONPATH=EXPORT python -P benchmarks/walk_parts.py --repo R ...   # EXPORT: s3bench.export_source(REV)
"""

from __future__ import annotations

import argparse
import os
import stat
import time

from backupkit import dirscan
from backupkit.managers.backup_parent import content_matcher, file_unchanged, inline_content, wire
from backupkit.repo.repository import Repository
from backupkit.snapshot import find_snapshot
from backupkit.store.local import LocalObjectStore
from backupkit.tree import SnapshotTree, make_hamt, normalize
from backupkit.tuning import Tuning


def walk(root: bytes, scan) -> tuple[int, float]:
    """Entries listed below ``root`` by ``scan(fs, path)`` (dirscan.scan or scan_py), in
    the backup walk's order (depth first, names sorted), and seconds."""
    t = time.perf_counter()
    n = 0
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            names, stats = scan(os, d)
        except OSError:
            continue
        pre = d if d == b"/" else d + b"/"
        subdirs = []
        for name, st in zip(names, stats):
            n += 1
            if not isinstance(st, OSError) and stat.S_ISDIR(st.st_mode):
                subdirs.append(pre + name)
        stack.extend(reversed(subdirs))
    return n, time.perf_counter() - t


def file_entries(repo: Repository, root: bytes) -> list[tuple[bytes, bytes, os.stat_result]]:
    """(path, the snapshot's encoded entry, its lstat now) of each regular file below
    ``root`` in the last snapshot of ``root``."""
    snap = find_snapshot(repo, "latest", paths=(os.fsdecode(root),))
    tree = SnapshotTree(repo, snap.root)
    out = []
    stack = [root]
    while stack:
        d = stack.pop()
        pre = d if d == b"/" else d + b"/"
        for name, raw in tree.raw_children_by_name(d).items():
            p = pre + name
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                stack.append(p)
            elif stat.S_ISREG(st.st_mode):
                out.append((p, raw, st))
    return out


def load_index(repo: Repository) -> tuple[int, float]:
    """Blobs in the merged index, and the seconds to load it (decode and merge)."""
    repo.drop_index()
    t = time.perf_counter()
    n = len(repo.index)
    return n, time.perf_counter() - t


def parent_listings(repo: Repository, root: bytes) -> tuple[int, float]:
    """Entries the last snapshot of ``root`` lists for its directories, and the seconds to
    list them all as the backup walk does (``raw_children_by_name`` with a trie cache of
    the backup's sizes, ``Tuning.parent_node_cache`` and ``parent_node_plain``)."""
    snap = find_snapshot(repo, "latest", paths=(os.fsdecode(root),))
    repo.index  # loaded before the clock starts
    dirs = [os.fsencode(d) for d, _ds, _fs in os.walk(root)]  # in the walk's order (depth first)
    t = Tuning()
    tree = SnapshotTree(repo, snap.root, make_hamt(repo, t.parent_node_cache, t.parent_node_plain))
    start = time.perf_counter()
    n = sum(len(tree.raw_children_by_name(d)) for d in dirs)
    return n, time.perf_counter() - start


def snapshot_walk(repo: Repository, root: bytes) -> tuple[int, float]:
    """Entries of the last snapshot of ``root``, and the seconds to walk them all as a
    restore does (``SnapshotTree.walk`` from "/", each entry decoded; a fresh trie)."""
    snap = find_snapshot(repo, "latest", paths=(os.fsdecode(root),))
    repo.index  # loaded before the clock starts
    tree = SnapshotTree(repo, snap.root)
    start = time.perf_counter()
    n = sum(1 for _p, _e in tree.walk(b"/"))
    return n, time.perf_counter() - start


def compare(files, match) -> tuple[int, float]:
    """Files found unchanged, and seconds: by ``match`` (C), or by Python when None."""
    t = time.perf_counter()
    n = 0
    for p, raw, st in files:
        if match is not None:
            n += match(raw, st) is not None
        else:
            m = wire(p, raw)
            n += inline_content(m) is not None and file_unchanged(m, st)
    return n, time.perf_counter() - t


def best(fn, rounds: int) -> tuple[int, float]:
    runs = [fn() for _ in range(rounds)]
    return runs[0][0], min(s for _n, s in runs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--path", required=True, help="the directory (the one backed up, for compare)")
    ap.add_argument("--repo", help="a local repository holding a backup of --path: also time the compare")
    ap.add_argument("--password-file")
    ap.add_argument("--cache-dir", help="the repository's cache (as bk backup uses it; default: none)")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    root = normalize(os.path.abspath(a.path))
    if dirscan.C_AVAILABLE:
        n, secs = best(lambda: walk(root, dirscan.scan), a.rounds)
        print(f"list, C (dirscan.scan):        {n} entries, {secs:.3f} s")
    n, secs = best(lambda: walk(root, dirscan.scan_py), a.rounds)
    print(f"list, Python (listdir, lstat): {n} entries, {secs:.3f} s")
    if a.repo:
        if not a.password_file:
            ap.error("--repo needs --password-file")
        with open(a.password_file, "rb") as f:
            password = f.read().rstrip(b"\r\n")
        repo = Repository.open(LocalObjectStore(a.repo), password, cache_root=a.cache_dir or False)
        n, secs = best(lambda: load_index(repo), a.rounds)
        print(f"index load: {n} blobs, {secs:.3f} s")
        n, secs = best(lambda: parent_listings(repo, root), a.rounds)
        print(f"parent listings (every directory's children, the backup's caches): {n} entries, {secs:.3f} s")
        n, secs = best(lambda: snapshot_walk(repo, root), a.rounds)
        print(f"snapshot walk (every entry, as restore, ls and find walk it): {n} entries, {secs:.3f} s")
        files = file_entries(repo, root)
        match = content_matcher()
        got = {}
        for label, m in (("C (_parentmatch)", match), ("Python (wire, file_unchanged)", None)):
            if label.startswith("C") and m is None:
                continue
            n, secs = best(lambda m=m: compare(files, m), a.rounds)
            got[label] = n
            print(f"compare, {label}: {n} of {len(files)} files unchanged, {secs:.3f} s")
        if len(set(got.values())) > 1:
            print("the two compares disagree")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
