"""SnapshotTree: a snapshot's HAMT seen as a file tree (get, list a directory, walk).

Listing a directory scans the key prefix its children share, so it touches only the
nodes holding them; walking a subtree lists directories recursively in name order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from backupkit.crypto import T_META_BLOB
from backupkit.entry import Keyer, join, parent_of
from backupkit.errors import FormatError, PathNotFound
from backupkit.hamt import Hamt
from backupkit.objects.content import content_list
from backupkit.objects.entry import Entry
from backupkit.repo.repository import Repository

try:
    from backupkit import _hamtleaf
except ImportError:  # pragma: no cover - the extension is built by pip install
    _hamtleaf = None


#: ``on_error(path, error, subtree)``: what a tolerant walk could not read
OnError = Callable[[bytes, Exception, bool], None]


#: the plaintext of trie nodes a SnapshotTree made without a Hamt keeps (a walk of a
#: snapshot, as restore, ls and find make, visits each leaf once per directory it holds
#: children of, far apart: `/usr` 16.6k node loads without it, 5.4k with it)
WALK_PLAIN_CACHE = 16 * 1024 * 1024


def make_hamt(repo: Repository, cache_size: int = 65536, plain_cache_bytes: int = 0) -> Hamt:
    return Hamt(
        lambda nid: repo.read_blob(nid, T_META_BLOB),
        lambda data: repo.add_blob(T_META_BLOB, data)[0],
        cache_size=cache_size,
        plain_cache_bytes=plain_cache_bytes,
    )


def normalize(path: str | bytes) -> bytes:
    """An absolute snapshot path from user input: ``/a/b``, ``a/b/`` -> ``b"/a/b"``."""
    if isinstance(path, str):
        path = path.encode("utf-8", "surrogateescape")
    parts = [p for p in path.split(b"/") if p and p != b"."]
    return b"/" + b"/".join(parts)


class SnapshotTree:
    """Read access to one snapshot's entries."""

    def __init__(self, repo: Repository, root: bytes, hamt: Hamt | None = None) -> None:
        self.repo = repo
        self.root = root
        self.hamt = hamt or make_hamt(repo, plain_cache_bytes=WALK_PLAIN_CACHE)
        self.keyer = Keyer(repo.sealer.keyed_hash)

    def get(self, path: bytes) -> Entry | None:
        raw = self.hamt.get(self.root, self.keyer.key(path), path)
        return Entry.decode(raw, path) if raw is not None else None

    def require(self, path: bytes) -> Entry:
        e = self.get(path)
        if e is None:
            raise PathNotFound(f"{path.decode('utf-8', 'backslashreplace')} is not in the snapshot")
        return e

    def children(self, dirpath: bytes, on_error: OnError | None = None) -> list[tuple[bytes, Entry]]:
        """(path, entry) of the directory's children, sorted by name.

        With ``on_error``, a malformed child entry is passed to it (``subtree=False``)
        and left out, instead of raising FormatError.
        """
        out = []
        for p, v in self.raw_children(dirpath):
            try:
                out.append((p, Entry.decode(v, p)))
            except FormatError as err:
                if on_error is None:
                    raise
                on_error(p, err, False)
        out.sort(key=lambda pe: pe[0])
        return out

    def raw_children(self, dirpath: bytes) -> list[tuple[bytes, bytes]]:
        """(path, encoded entry) of the directory's children, in trie order, not decoded."""
        prefix = self.keyer.dir_prefix(dirpath)
        if _hamtleaf is not None:  # the comprehension below, a leaf per call, in C
            return self._children_in_c([], dirpath, prefix)
        return [(p, v) for _k, p, v in self.hamt.scan_prefix(self.root, prefix) if parent_of(p) == dirpath]

    def raw_children_by_name(self, dirpath: bytes) -> dict[bytes, bytes]:
        """name -> encoded entry of the directory's children (``raw_children`` keyed by
        name; of two equal names the later in trie order wins)."""
        prefix = self.keyer.dir_prefix(dirpath)
        if _hamtleaf is not None:  # the comprehension below, a leaf per call, in C
            return self._children_in_c({}, dirpath, prefix)
        pre = dirpath if dirpath == b"/" else dirpath + b"/"
        n = len(pre)
        # p = pre + name with no "/" in name is what parent_of(p) == dirpath means (the
        # root's own path aside, which is never the child of anything)
        return {
            p[n:]: v
            for _k, p, v in self.hamt.scan_prefix(self.root, prefix)
            if p.startswith(pre) and b"/" not in p[n:] and p != dirpath
        }

    def _children_in_c(self, out, dirpath: bytes, prefix: bytes):
        """``out`` filled with the children of ``dirpath`` from each leaf that may hold
        them (``_hamtleaf``: a dict gets name -> entry, a list (path, entry) of every
        row); leaves as their plaintext where the trie keeps it (read without making
        rows into Python objects), else decoded (and cached decoded)."""
        pre = dirpath if dirpath == b"/" else dirpath + b"/"
        for rows in self.hamt.prefix_leaves(self.root, prefix, plain=self.hamt.keeps_plain):
            if type(rows) is bytes:
                _hamtleaf.leaf_children_into(out, rows, prefix, pre, dirpath)
            else:
                _hamtleaf.children_into(out, rows, prefix, pre, dirpath)
        return out

    def walk(
        self, path: bytes = b"/", on_error: OnError | None = None, top: Entry | None = None, max_depth: int | None = None
    ) -> Iterator[tuple[bytes, Entry]]:
        """Depth-first, parents before children, names sorted; starts with ``path`` itself.

        Without ``on_error`` any damage raises. With it, the walk goes on past damage:
        a directory whose children cannot be listed (a damaged tree node) is reported as
        ``on_error(dirpath, error, True)`` and its subtree skipped; a malformed entry as
        ``on_error(path, error, False)``. ``top``: the entry of ``path``, if known.
        ``max_depth``: how many levels below ``path`` (0: ``path`` alone); None: all.
        Directories deeper than that are not read.
        """
        if top is None:
            top = self.require(path)
        yield path, top
        if not top.is_dir or (max_depth is not None and max_depth < 1):
            return
        stack = [iter(self._listing(path, on_error))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                continue
            p, e = nxt
            yield p, e
            if e.is_dir and (max_depth is None or len(stack) < max_depth):
                stack.append(iter(self._listing(p, on_error)))

    def _listing(self, dirpath: bytes, on_error: OnError | None) -> list[tuple[bytes, Entry]]:
        if on_error is None:
            return self.children(dirpath)
        malformed: list[bytes] = []

        def bad_child(p: bytes, err: Exception, subtree: bool) -> None:
            on_error(p, err, subtree)
            malformed.append(p)

        try:
            out = self.children(dirpath, bad_child)
        except Exception as err:  # noqa: BLE001 - any damage below a directory is reported
            on_error(dirpath, err, True)
            return []
        for p in malformed:  # a malformed directory entry: what is below it is lost too
            try:
                below = sum(1 for _k, c, _v in self.hamt.scan_prefix(self.root, self.keyer.dir_prefix(p)) if parent_of(c) == p)
            except Exception:  # noqa: BLE001 - reported with the entry already
                below = 0
            if below:
                on_error(p, FormatError(f"its entry is malformed, so the {below} entries below it are not restored"), True)
        return out

    def content(self, entry: Entry) -> list:
        return content_list(entry, lambda bid: self.repo.read_blob(bid, T_META_BLOB))

    def all_entries(self) -> Iterator[tuple[bytes, Entry]]:
        """Every entry in trie order (fast, unordered by path)."""
        for _k, p, v in self.hamt.items(self.root):
            yield p, Entry.decode(v, p)


def entry_change(keyer: Keyer, path: bytes, entry: Entry | None) -> tuple[bytes, bytes, bytes | None]:
    return keyer.key(path), path, (entry.encode() if entry is not None else None)


__all__ = ["SnapshotTree", "make_hamt", "normalize", "entry_change", "join"]
