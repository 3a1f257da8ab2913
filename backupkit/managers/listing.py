"""List: the ids of one kind of repository object, one per line, as restic's ``list``
prints them (for scripts: ``bk list snapshots``, ``bk list locks``).

``snapshots``, ``index``, ``keys`` and ``locks`` are what the store lists under their
prefixes (not the catalog: a snapshot object the catalog lacks is listed too);
``packs`` every pack the store lists, data then metadata; ``blobs`` every blob the index
names, as ``data ID`` or ``meta ID`` (restic says ``tree`` for its metadata; bk's
metadata blobs hold trie nodes and content lists). Names in the store that bk does not
write are left out with a warning on the repository, as every listing does.
"""

from __future__ import annotations

from collections.abc import Iterator

from backupkit.errors import BadArgument
from backupkit.repo.pack import KIND_DATA
from backupkit.repo.repository import Repository

KINDS = ("snapshots", "index", "packs", "keys", "locks", "blobs")


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise BadArgument(f"cannot list {kind!r}: give one of {', '.join(KINDS)}")
    return kind


def list_objects(repo: Repository, kind: str) -> Iterator[str]:
    """The lines ``bk list KIND`` prints, as they are found (a large index is not held
    twice)."""
    check_kind(kind)
    if kind == "blobs":
        for b in repo.index.blobs():
            yield f"{'data' if b.pack.kind == KIND_DATA else 'meta'} {b.blob_id.hex()}"
    elif kind == "packs":
        for p in repo.iter_packs():
            yield p.id.hex()
    else:
        for i in repo.list_ids(kind):
            yield i.hex()


__all__ = ["KINDS", "check_kind", "list_objects"]
