"""Loading the index: every index object of the store, merged into one ``Index``.

``load_index(repo, tolerant)`` is the one loader: the repository uses it strictly (any
unreadable index object is an error: prune must never take a damaged index for a
smaller one), ``check`` and ``bk repair index`` tolerantly (each unreadable object is
reported by name with the reason, and the index is merged from the others).

Each object is read from the cache when a copy is there (a cached copy that does not
authenticate is dropped and fetched again), else from the store (and then cached);
``from_store=True`` always reads the store (check verifies the store, not the cache).
Objects listed by another object's ``supersedes`` are decoded but not merged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from backupkit.crypto import T_INDEX
from backupkit.errors import FormatError, IntegrityError, ObjectNotFound
from backupkit.repo.index import Index
from backupkit.repo.index_codec import IndexObject, decode_index

if TYPE_CHECKING:
    from backupkit.repo.repository import Repository


@dataclass
class IndexLoad:
    """What ``load_index`` found.

    Attributes:
        index: the merged index of every readable, not superseded index object.
        objects: index object name -> its decoded content (superseded ones included);
            only with ``keep_objects``.
        failures: index object name -> why it could not be read (tolerant loads only).
        names: every index object listed, sorted.
        merged: the names whose packs are in ``index`` (not superseded), sorted.
    """

    index: Index
    objects: dict[str, IndexObject] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)


def load_index(
    repo: Repository,
    tolerant: bool,
    *,
    from_store: bool = False,
    on_object: Callable[[], None] | None = None,
    keep_objects: bool = False,
) -> IndexLoad:
    """Read and merge every index object listed under ``index/``.

    Args:
        tolerant: report unreadable objects in ``failures`` and go on; otherwise the
            first one raises (IntegrityError, FormatError or ObjectNotFound).
        from_store: ignore cached copies (and cache nothing).
        on_object: called once per index object read (progress).
        keep_objects: fill ``objects`` (check compares them); otherwise each decoded
            object is dropped once merged, so the peak is the compact index, not every
            blob as Python tuples.
    """
    # oldest first, and a later object's location of a blob wins: a blob written again
    # (its first copy was lost or damaged) is found where it was written last
    mtimes = {o.name: o.mtime for o in repo.store.list("index/")}
    names = sorted(repo.index_names(), key=lambda n: (mtimes.get(n, 0.0), n))
    decoding = threading.Lock()

    def fetch_quiet(name: str) -> IndexObject | str:
        return fetch(name, None)

    def fetch(name: str, on_object: Callable[[], None] | None = on_object) -> IndexObject | str:
        try:
            return _read_one(repo, name, from_store, decoding)
        except (IntegrityError, FormatError, ObjectNotFound) as e:
            if not tolerant:
                raise
            return str(e)
        finally:
            if on_object is not None:
                on_object()

    out = IndexLoad(Index(), names=names)
    window = max(2, repo.connections)

    def merge_all(index: Index, known: set[str], first: bool) -> bool:
        """Read the objects a window at a time and merge each as it comes (nothing but
        the compact index stays); True when an object superseded one already merged
        (rare: prune's new index and the objects it replaces, between its two writes)."""
        redo = False
        todo = [n for n in names if n not in out.failures]
        with ThreadPoolExecutor(max_workers=repo.connections) as pool, index.bulk():
            for i in range(0, len(todo), window):
                batch = todo[i : i + window]
                for name, r in zip(batch, pool.map(fetch if first else fetch_quiet, batch)):
                    if isinstance(r, str):
                        out.failures[name] = r
                        continue
                    if first and keep_objects:
                        out.objects[name] = r
                    for s in r.supersedes:
                        sname = "index/" + s.hex()
                        known.add(sname)
                        redo = redo or sname in merged
                    if name in known:
                        continue
                    merged.add(name)
                    for pack, entries in r.packs:
                        index.add_pack(pack, entries, override=True)
        return redo

    known: set[str] = set()
    merged: set[str] = set()
    if merge_all(out.index, known, True):
        out.index = Index()
        merged.clear()
        merge_all(out.index, known, False)
    out.merged = [n for n in names if n in merged]
    if not from_store:
        repo.forget_cached("index/", keep=names)
    return out


def _read_one(repo: Repository, name: str, from_store: bool, decoding: threading.Lock) -> IndexObject:
    """One index object; reads run in parallel, decodes one at a time (``decoding``):
    a decode holds the GIL anyway, and this way only one object's msgpack rows exist
    at once."""
    obj_id = bytes.fromhex(name.split("/", 1)[1])
    if not from_store:
        raw = repo.cache.get(name)
        if raw is not None:
            try:
                plain = repo.open_object(T_INDEX, obj_id, raw, name)
                with decoding:
                    return decode_index(plain, name)
            except (IntegrityError, FormatError):
                repo.cache.delete(name)
    plain, raw = repo.get_object_raw(T_INDEX, name, obj_id)
    with decoding:
        obj = decode_index(plain, name)
    if not from_store:
        repo.cache.put(name, raw)
    return obj
