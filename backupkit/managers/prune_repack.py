"""Prune's repack: the live blobs of partly used packs copied into new packs.

Vocabulary:
    run     live blobs of one pack close enough together to be read with one range
            request (each within ``gap`` bytes of the next, spanning at most ``span``).

Only the live blobs' ranges are read (a pack picked for repacking is partly unused, often
mostly), a run at a time: metadata packs from the cache when it holds them, data packs
from the store. Each blob of a run is verified (decrypted and re-hashed against its id)
before any of the run is handed to the ``PackWriter``, which spools it (packspool.py), so
repacking holds at most one run per connection in memory, never whole packs and copies
of their blobs. A run that fails verification is read once more from the store; if it
fails again the prune stops with ``DamagedRepository`` before anything is indexed or
deleted (what was uploaded is unindexed garbage for the next prune). Sealed bytes are
copied unchanged: the envelope is bound to (type, blob id), not to a pack.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from backupkit.concurrency import bounded_map
from backupkit.errors import DamagedRepository, FormatError, IntegrityError, StoreError
from backupkit.repo.blobruns import runs
from backupkit.repo.index import PackInfo
from backupkit.repo.pack import TYPE_OF_KIND, PackEntry, pack_name
from backupkit.repo.packwriter import PackWriter
from backupkit.repo.repository import Repository

#: the most bytes one range read of a repack spans (a single larger blob is read alone)
REPACK_SPAN = 4 * 1024 * 1024

Live = tuple[int, int, bytes, int]  # offset, length, blob id, raw length


def repack(
    repo: Repository,
    packs: Sequence[PackInfo],
    entries: Callable[[bytes], Iterable[tuple[bytes, int, int, int]]],
    live: Container[bytes],
    advance: Callable[[int], None],
) -> list[tuple[PackInfo, list[PackEntry]]]:
    """Copy the live blobs of ``packs`` (their index entries from ``entries(pack id)``)
    into new packs; returns the packs written with their entries."""
    writer = repo.pack_writer()
    gap = repo.join_gap
    try:
        with ThreadPoolExecutor(max_workers=repo.connections) as pool:

            def one(p: PackInfo) -> PackInfo:
                wanted = [(off, ln, bid, raw) for bid, off, ln, raw in entries(p.id) if bid in live]
                for start, end, run in runs(wanted, gap, REPACK_SPAN):
                    _copy_run(repo, writer, p, start, end, run)
                return p

            for p in bounded_map(pool, one, packs, repo.connections):
                advance(p.size)
        return writer.flush()
    except BaseException:
        # refused or interrupted: the packs this run already wrote (full ones, while
        # another pack was still being copied) are referenced by nothing; remove them so
        # a refused prune leaves the store as it found it
        written = writer.abandon()
        try:
            repo.delete_objects(pack_name(info.kind, info.id) for info, _entries in written)
        except StoreError:
            pass  # left for the next prune, unreferenced
        raise
    finally:
        writer.close()


def _copy_run(repo: Repository, writer: PackWriter, p: PackInfo, start: int, end: int, run: list[Live]) -> None:
    t = TYPE_OF_KIND[p.kind]
    try:
        data = repo.read_pack_range(p, start, end - start)
        _verify(repo, p, t, start, data, run)
    except (IntegrityError, FormatError):
        try:  # a damaged read is retried once, from the store
            data = repo.read_pack_range(p, start, end - start, refresh=True)
            _verify(repo, p, t, start, data, run)
        except (IntegrityError, FormatError) as e:
            raise DamagedRepository(
                f"refusing to prune, nothing was deleted: a blob to repack is damaged ({e}); run bk check --read-data"
            ) from None
    view = memoryview(data)
    for off, length, bid, raw in run:  # every blob of the run verified before any is written
        writer.add(t, bid, view[off - start : off - start + length], raw)


def _verify(repo: Repository, p: PackInfo, t: int, start: int, data: bytes, run: list[Live]) -> None:
    view = memoryview(data)
    for off, length, bid, raw in run:
        sealed = view[off - start : off - start + length]
        if len(sealed) != length:
            raise IntegrityError(f"blob {bid.hex()[:16]} in pack {p.id.hex()[:16]}: short read")
        repo.verify_blob(bid, t, sealed, f"blob {bid.hex()[:16]} in pack {p.id.hex()[:16]}", raw_length=raw, view=True)
