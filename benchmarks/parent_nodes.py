"""How many trie nodes an unchanged backup reads from its parent, per node-cache size.

A backup asks the parent snapshot for each directory's children by key prefix
(``SnapshotTree.raw_children_by_name``), in the walk's order: depth first, names sorted.
A leaf holds the children of several directories that the walk reaches far apart, so a
node cache smaller than the tree reads some nodes more than once. This walks the
parent's directories in that order (from the tree, not the disk) with a node cache of
each given size and prints the node reads (``Hamt.loads``), the distinct nodes and the
time::

    python -m benchmarks.parent_nodes --repo R --password-file P --path /usr 65536 131072 262144

``--order key`` visits the same directories in the order of their trie keys instead: what
a walk that lists every directory first and then reads them by key would cost; it also
times that first listing of ``--path`` on disk.

It first prints the tree's size: its nodes, the leaves' entries, their plaintext bytes
(what ``--plain-mib`` caches) and what they take decoded (what the decoded cache holds).
The size that reads every node once is what ``Tuning.parent_node_cache`` would need for
this tree; what it costs in memory is measured on ``bk backup`` itself (docs/performance-limits.md).
"""

from __future__ import annotations

import argparse
import os
import time

from backupkit.objects.entry import Entry
from backupkit.repo.repository import Repository
from backupkit.snapshot import list_snapshots
from backupkit.store.local import LocalObjectStore
from backupkit.tree import SnapshotTree, make_hamt, normalize


def count(
    repo: Repository, root: bytes, top: bytes, cache_size: int, plain: int = 0, order: str = "walk"
) -> tuple[int, int, int, int, float]:
    """(directories, node visits, node reads, nodes cached at the end, seconds).

    ``order``: "walk" asks for each directory's children in the backup's order (depth
    first, names sorted); "key" in the order of the directories' trie key prefixes, as a
    walk that first listed every directory and then visited them by key would (the
    directories are found by a walk in the backup's order first, not timed)."""
    tree = SnapshotTree(repo, root, make_hamt(repo, cache_size=cache_size, plain_cache_bytes=plain))
    order_of = None
    if order == "key":
        order_of = sorted(_directories(SnapshotTree(repo, root, make_hamt(repo, cache_size=1 << 20)), top), key=tree.keyer.dir_prefix)
    t0 = time.monotonic()
    if order_of is not None:
        for d in order_of:
            _subdirs(tree, d)  # the same work per directory as _directories, in key order
        dirs = len(order_of)
    else:
        dirs = len(_directories(tree, top))
    hamt = tree.hamt
    return dirs, hamt.visits, hamt.loads, len(hamt._cache), time.monotonic() - t0


def _subdirs(tree: SnapshotTree, d: bytes) -> list[bytes]:
    """The subdirectories of ``d`` in the tree, names sorted (each child's entry decoded,
    as the backup's walk decodes them)."""
    pre = d if d == b"/" else d + b"/"
    kids = tree.raw_children_by_name(d)
    return [pre + name for name in sorted(kids) if Entry.decode(kids[name], pre + name).is_dir]


def _directories(tree: SnapshotTree, top: bytes) -> list[bytes]:
    """Every directory below ``top`` (itself included), asking ``tree`` for each one's
    children in the backup's order."""
    stack, out = [top], []
    while stack:
        d = stack.pop()
        out.append(d)
        stack.extend(reversed(_subdirs(tree, d)))
    return out


def list_directories_on_disk(top: bytes) -> tuple[int, float]:
    """(directories, seconds) of the first pass a walk in key order needs: every
    directory below ``top`` on disk, by ``os.scandir`` and the entries' d_type (no
    ``lstat``)."""
    t0 = time.monotonic()
    stack, n = [top], 0
    while stack:
        d = stack.pop()
        n += 1
        try:
            with os.scandir(d) as it:
                stack.extend(e.path for e in it if e.is_dir(follow_symlinks=False))
        except OSError:
            pass
    return n, time.monotonic() - t0


def tree_size(repo: Repository, root: bytes) -> tuple[int, int, int, int, int]:
    """(nodes, leaves, leaf entries, leaf plaintext bytes, bytes the leaves take decoded
    as ``Hamt`` caches them, by tracemalloc) of the trie at ``root``."""
    import tracemalloc

    import msgpack

    from backupkit.crypto import T_META_BLOB

    nodes = leaves = entries = plain = 0
    raws = []
    stack = [root]
    while stack:
        raw = repo.read_blob(stack.pop(), T_META_BLOB)
        n = msgpack.unpackb(raw)
        nodes += 1
        if n[0] == 0:
            leaves, entries, plain = leaves + 1, entries + len(n[1]), plain + len(raw)
            raws.append(raw)
        else:
            stack.extend(row[1] for row in n[4])
    tracemalloc.start()
    decoded = [msgpack.unpackb(r) for r in raws]
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del decoded
    return nodes, leaves, entries, plain, size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", required=True, help="a local repository")
    ap.add_argument("--password-file", required=True)
    ap.add_argument("--path", default="/", help="the directory the backup was of")
    ap.add_argument("--plain-mib", type=int, default=0, help="a plaintext node cache of this many MiB behind the decoded one")
    ap.add_argument("--order", choices=("walk", "key"), default="walk",
                    help="directories in the backup's order, or by their trie key prefix")
    ap.add_argument("sizes", nargs="+", type=int, help="node cache sizes (entries)")
    args = ap.parse_args(argv)
    with open(args.password_file, "rb") as f:
        password = f.read().rstrip(b"\r\n")
    repo = Repository.open(LocalObjectStore(args.repo), password, cache_root=False)
    snap = list_snapshots(repo)[-1]
    nodes, leaves, entries, plain, decoded = tree_size(repo, snap.root)
    print(f"tree: {nodes} nodes, {leaves} leaves holding {entries} entries; leaf plaintext {plain / 1e6:.1f} MB, "
          f"decoded {decoded / 1e6:.1f} MB")
    for size in args.sizes:
        dirs, visits, loads, cached, secs = count(repo, snap.root, normalize(args.path), size, args.plain_mib << 20, args.order)
        print(f"cache {size:>8}, plain {args.plain_mib} MiB, {args.order} order: {dirs} directories, {visits} node visits, {loads} node reads, {cached} nodes cached at the end, {secs:.2f} s")
    if args.order == "key":
        n, secs = list_directories_on_disk(normalize(args.path))
        print(f"listing the directories on disk first (os.scandir, d_type only): {n} directories, {secs:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
