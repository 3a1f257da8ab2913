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
from backupkit.repo.repository import Repository

KINDS = ("snapshots", "index", "packs", "keys", "locks", "blobs")


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise BadArgument(f"cannot list {kind!r}: give one of {', '.join(KINDS)}")
    return kind


def list_objects(repo: Repository, kind: str) -> Iterator[str]:
    """The ids ``bk list KIND`` prints, as they are found; blobs: ``list_blobs``."""
    if check_kind(kind) == "blobs":
        raise BadArgument("blobs are listed with their kind: list_blobs")
    if kind == "packs":
        for p in repo.iter_packs():
            yield p.id.hex()
    else:
        for i in repo.list_ids(kind):
            yield i.hex()


def list_blobs(repo: Repository) -> Iterator[tuple[str, str]]:
    """(pack kind, blob id) of every blob the index names, as they are found (a large
    index is not held twice): ``data`` or ``meta``."""
    for b in repo.index.blobs():
        yield b.pack.kind, b.blob_id.hex()


__all__ = ["KINDS", "check_kind", "list_blobs", "list_objects"]
