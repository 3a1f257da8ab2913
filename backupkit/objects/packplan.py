"""PackPlan: a restore's reads planned per pack, each pack's wanted span read once.

Vocabulary:
    target   where one file's content goes: anything with ``write(offset, data)`` and
             ``fail(err)`` (the restore's temporary file). ``write`` is called from
             worker threads, any order, once per reference.
    ref      one use of a blob: (target, offset in the file). A blob shared by files
             (or repeated in one) has several refs and is read and verified once.
    pending  a pack whose wanted blobs are being gathered, across files, not yet read.
             Files are added in order; each blob's ref joins its pack's pending entry.
             A pack is read (flushed) once the plan has moved on: no new blob of it
             was wanted in the last ``restore_pack_idle_files`` files and
             ``restore_pack_idle_bytes`` of new blobs planned. A backup fills packs in
             the order it reads files, which is the order a restore walks them, so by
             then a full restore has asked for every blob of the pack, and the pack is
             read with one request, as restic reads it (restic plans the whole
             restore first; this plan keeps only what is pending). Both measures are
             needed: a large file moves the bytes and not the files, a run of tiny
             files the files and not the bytes. Packs are also flushed, the least recently wanted
             first, when the pending blobs reach ``restore_pending_bytes`` or
             ``restore_pending_refs``, and when the files not yet complete (each holds a
             descriptor) reach the plan's ``max_files``; ``finish`` flushes the rest.
    span     wanted blobs of one pack read with one request: consecutive blobs closer
             than ``restore_join_gap``, up to ``restore_span_max`` bytes, or
             ``restore_span_max_local`` where requests cost nothing (a local directory:
             a whole pack in one span would let the bytes-in-flight budget hold one pack
             at a time, so one worker would read, verify and write while the others wait).
    queued   spans submitted to the pool and not yet written; the planner waits while
             they hold ``restore_queued_bytes``.

A blob wanted again while its span is still queued gets the new ref added to the read
that is queued (no second request); only a blob wanted again after its bytes were
written is read again.

A target is handed back by :meth:`PackPlan.done` (or :meth:`PackPlan.finish`) as soon as
each of its refs has been written or has failed (a count per target, ``remaining``), so
the caller completes files while other packs are still read. Bytes of spans held at once
are bounded by ``restore_read_bytes_in_flight``.

Failures stay with their targets: a span that cannot be fetched (a truncated or missing
pack) is read blob by blob, a blob that fails verification is read alone once more from
the store (``Repository.read_blob``), and a blob that still cannot be read fails every
target that wants it, named by the caller; the other blobs of the pack are written.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from backupkit.crypto import T_DATA_BLOB
from backupkit.errors import BlobNotFound, StoreError
from backupkit.repo.blobruns import runs
from backupkit.repo.index import BlobLocation
from backupkit.repo.pack import pack_name
from backupkit.repo.repository import Repository
from backupkit.tuning import DEFAULT_TUNING, Tuning


class Target(Protocol):
    #: refs not yet written or failed (kept by the plan)
    remaining: int

    def write(self, offset: int, data: bytes) -> None: ...
    def fail(self, err: BaseException) -> None: ...


class _Slot:
    """One wanted blob: its location and the refs that want it."""

    __slots__ = ("loc", "refs", "queued", "taken")

    def __init__(self, loc: BlobLocation) -> None:
        self.loc = loc
        self.refs: list = []
        self.queued = False  # its pack's read is submitted (set by the planner)
        self.taken = False  # a worker has its refs


class _Pending:
    """A pack's wanted blobs, gathered until the pack is read."""

    __slots__ = ("slots", "bytes", "last_file", "last_byte")

    def __init__(self) -> None:
        self.slots: list[_Slot] = []
        self.bytes = 0
        # the plan's clocks (files planned, bytes of new blobs) when it last got a new blob
        self.last_file = 0
        self.last_byte = 0


class _Budget:
    """Bytes of spans held at once; a span larger than the budget runs alone."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._cond = threading.Condition()

    def acquire(self, n: int) -> None:
        with self._cond:
            while self.used and self.used + n > self.limit:
                self._cond.wait()
            self.used += n

    def release(self, n: int) -> None:
        with self._cond:
            self.used -= n
            self._cond.notify_all()


class PackPlan:
    """Plans and runs the pack reads of a stream of files (one caller thread).

    ``max_files``: files not yet complete the plan may hold at once (each holds the
    caller's descriptor); ``restore_open_files`` when not given.
    """

    def __init__(self, repo: Repository, pool: ThreadPoolExecutor, tuning: Tuning = DEFAULT_TUNING, max_files: int | None = None) -> None:
        self.repo = repo
        self.tuning = tuning
        self._pool = pool
        self._max_files = max(1, min(tuning.restore_open_files, max_files or tuning.restore_open_files))
        self._budget = _Budget(tuning.restore_read_bytes_in_flight)
        self._span_max = tuning.restore_span_max_local if repo.free_requests else tuning.restore_span_max
        self._streams = repo.streams_ranges
        #: blob id -> slot, from its first ref until a worker takes its refs
        self._slots: dict[bytes, _Slot] = {}
        self._pending: OrderedDict[bytes, _Pending] = OrderedDict()  # by pack id, least recently wanted first
        self._pending_bytes = 0
        self._pending_refs = 0
        self._files = 0  # files planned so far and ...
        self._planned = 0  # ... bytes of new blobs: the plan's clocks
        self._futures: deque[Future] = deque()
        self._queued = 0  # bytes of spans submitted and not yet done
        self._cv = threading.Condition()  # guards slots' refs, _ready, _incomplete, _queued
        self._ready: list = []  # targets complete, not yet handed out
        self._incomplete = 0  # targets added, not yet complete

    # -- planning --------------------------------------------------------------------------
    def add(self, target: Any, items: Iterable) -> int | None:
        """Plan one file's content: ``items`` (blob ids and holes) written from offset 0;
        returns its size by the index. A blob the index does not know fails the target
        at once (and None is returned)."""
        self._make_room()
        self._files += 1
        index = self.repo.index
        items = list(items)
        # one count per ref, plus one held here until every ref is planned
        total = sum(1 for i in items if not isinstance(i, int))
        target.remaining = total + 1
        with self._cv:
            self._incomplete += 1
        planned = 0
        off = 0
        for item in items:
            if isinstance(item, int):
                off += item
                continue
            bid = bytes(item)
            with self._cv:
                slot = self._slots.get(bid)
                if slot is not None and slot.taken:
                    slot = None
                if slot is not None:
                    slot.refs.append((target, off))
            if slot is None:
                loc = index.lookup(bid)
                if loc is None:
                    target.fail(BlobNotFound(f"data blob {bid.hex()[:16]} is not in the index"))
                    off = -1
                    break
                slot = self._want(bid, loc)
                slot.refs.append((target, off))  # not yet visible to any worker
            if not slot.queued:
                self._pending_refs += 1
            planned += 1
            off += slot.loc.raw_length
            self._flush_due()
        self._release(target, total - planned + 1)  # refs not planned: after a blob the index lacks
        self._harvest(block=False)
        return off if off >= 0 else None

    def done(self) -> list:
        """Targets whose every ref is written (or failed) since the last call."""
        self._harvest(block=False)
        with self._cv:
            out, self._ready = self._ready, []
        return out

    def finish(self) -> Iterator[list]:
        """Read everything planned; yields the targets not yet handed out by ``done``,
        in batches as they complete."""
        while self._pending:
            self._flush_oldest()
        while True:
            self._harvest(block=False)  # a worker's own failure (a bug) surfaces here
            with self._cv:
                if not self._ready and self._incomplete:
                    if not self._futures:  # every read is done, yet files are not
                        raise RuntimeError(f"restore plan: {self._incomplete} file(s) never completed")
                    self._cv.wait(0.05)
                batch, self._ready = self._ready, []
                left = self._incomplete
            if batch:
                yield batch
            elif not left:
                break
        while self._futures:
            self._harvest(block=True)

    def abort(self) -> None:
        """Stop: nothing more is read; returns once no worker writes any more."""
        futures = list(self._futures)
        self._futures.clear()
        self._pending.clear()
        for f in futures:
            f.cancel()
        for f in futures:
            if not f.cancelled():
                try:
                    f.result()
                except BaseException:  # noqa: BLE001 - stopping anyway
                    pass

    # -- pending packs ---------------------------------------------------------------------
    def _want(self, bid: bytes, loc: BlobLocation) -> _Slot:
        slot = _Slot(loc)
        with self._cv:
            self._slots[bid] = slot
        pid = loc.pack.id
        pend = self._pending.get(pid)
        if pend is None:
            pend = self._pending[pid] = _Pending()
        pend.slots.append(slot)
        pend.bytes += loc.length
        self._pending_bytes += loc.length
        self._planned += loc.length
        pend.last_file, pend.last_byte = self._files, self._planned
        self._pending.move_to_end(pid)
        return slot

    def _flush_due(self) -> None:
        """Read the packs the plan has moved past, and the least recently wanted ones while
        the pending blobs are over their budget."""
        t = self.tuning
        while self._pending:
            pend = next(iter(self._pending.values()))
            idle = (self._files - pend.last_file >= t.restore_pack_idle_files
                    and self._planned - pend.last_byte >= t.restore_pack_idle_bytes)
            over = self._pending_bytes > t.restore_pending_bytes or self._pending_refs > t.restore_pending_refs
            if not (idle or over):
                return
            self._flush_oldest()

    def _make_room(self) -> None:
        """Before a file is added: while the files not yet complete reach ``max_files``,
        wait for the reads submitted (they complete files), and only when none is left
        read the least recently wanted pack (perhaps before all its files are planned:
        the rest of it is read again later)."""
        while True:
            with self._cv:
                if self._incomplete < self._max_files:
                    return
            if self._futures:
                self._harvest(block=True, one=True)
            elif self._pending:
                self._flush_oldest()
            else:
                return  # nothing is pending or being read: no file can complete by waiting

    def _flush_oldest(self) -> None:
        pid, pend = self._pending.popitem(last=False)
        self._pending_bytes -= pend.bytes
        self._pending_refs -= sum(len(s.refs) for s in pend.slots)
        slots = sorted(pend.slots, key=lambda s: s.loc.offset)
        for s in slots:
            s.queued = True
        name = pack_name(slots[0].loc.pack.kind, pid)
        for span in self._spans(slots):
            start = span[0].loc.offset
            size = max(s.loc.offset + s.loc.length for s in span) - start
            while True:  # bounded queue: wait for the oldest reads (and surface their errors)
                with self._cv:
                    if not self._queued or self._queued + size <= self.tuning.restore_queued_bytes:
                        self._queued += size
                        break
                self._harvest(block=True, one=True)
            self._futures.append(self._pool.submit(self._read_span, name, span, start, size))

    def _spans(self, slots: list[_Slot]) -> Iterable[list[_Slot]]:
        members = ((s.loc.offset, s.loc.length, s) for s in slots)
        for _start, _end, run in runs(members, self.tuning.restore_join_gap, self._span_max):
            yield [m[2] for m in run]

    # -- running ---------------------------------------------------------------------------
    def _harvest(self, block: bool, one: bool = False) -> None:
        """Drop finished reads from the front (a worker's own failure, a bug, surfaces
        here); with ``block``, first wait for the oldest (``one``: just that one)."""
        while self._futures:
            f = self._futures[0]
            if not block and not f.done():
                return
            self._futures.popleft()
            f.result()
            if block and one:
                return
            block = False

    def _release(self, target: Any, n: int) -> None:
        with self._cv:
            target.remaining -= n
            if target.remaining == 0:
                self._incomplete -= 1
                self._ready.append(target)
                self._cv.notify_all()

    def _take(self, slot: _Slot) -> list:
        """The slot's refs, once: later refs to its blob plan a read of their own."""
        with self._cv:
            slot.taken = True
            if self._slots.get(slot.loc.blob_id) is slot:
                del self._slots[slot.loc.blob_id]
            return slot.refs

    def _read_span(self, name: str, span: list[_Slot], start: int, size: int) -> None:
        groups = list(_groups(span, self.tuning.restore_open_bytes))
        # a store that streams a span's ranges (S3): the span is taken a group at a time
        # as it arrives, one request still, and only a group's bytes are held
        ranges = [_extent(g) for g in groups] if self._streams and len(groups) > 1 else None
        held = size if ranges is None else max(n for _o, n in ranges)
        self._budget.acquire(held)
        pieces: Any = None
        try:
            data: bytes | None = None
            if ranges is None:
                try:
                    data = self.repo.read_raw_range(name, start, size)
                except StoreError:
                    pass  # e.g. a truncated pack: each blob alone, so the intact ones restore
            else:
                pieces = self.repo.read_raw_ranges(name, ranges)
            for group in groups:
                base = start
                if pieces is not None:
                    base = group[0].loc.offset
                    try:
                        data = next(pieces)
                    except (StoreError, StopIteration):
                        # cut off for good: the rest of the span is read blob by blob
                        pieces.close()
                        pieces = None
                        data = None
                opened: list = [None] * len(group)
                if data is not None:  # the group's blobs opened at once, the GIL released once
                    items = [(s.loc.offset - base, s.loc.length, s.loc.blob_id, s.loc.raw_length) for s in group]
                    opened = self.repo.open_blobs(T_DATA_BLOB, data, items)
                if pieces is not None:
                    data = None  # this group's bytes only
                for slot, got in zip(group, opened):
                    plain, err = (got, None) if isinstance(got, bytes) else self._read_alone(slot.loc)
                    for target, off in self._take(slot):
                        try:
                            if err is not None:
                                target.fail(err)
                            else:
                                target.write(off, plain)
                        except Exception as werr:  # noqa: BLE001 - this target's problem only
                            target.fail(werr)
                        finally:
                            self._release(target, 1)
        finally:
            if pieces is not None:
                pieces.close()
            self._budget.release(held)
            with self._cv:
                self._queued -= size
                self._cv.notify_all()

    def _read_alone(self, loc: BlobLocation) -> tuple[Any, BaseException | None]:
        """A blob its span could not give (not fetched, or not verified): read alone from
        the store, with ``read_blob``'s retry."""
        try:
            return self.repo.read_blob(loc.blob_id, T_DATA_BLOB), None
        except Exception as err:  # noqa: BLE001 - charged to the targets that want it
            return None, err


def _extent(group: list[_Slot]) -> tuple[int, int]:
    """(offset, length) of the pack's bytes that hold the group's blobs."""
    first = group[0].loc.offset
    return first, max(s.loc.offset + s.loc.length for s in group) - first


def _groups(span: list[_Slot], limit: int) -> Iterator[list[_Slot]]:
    """The span's slots in runs of at most ``limit`` bytes of plaintext (a larger blob
    alone): what one ``open_blobs`` call holds decoded before it is written."""
    group: list[_Slot] = []
    held = 0
    for s in span:
        if group and held + s.loc.raw_length > limit:
            yield group
            group, held = [], 0
        group.append(s)
        held += s.loc.raw_length
    if group:
        yield group


__all__ = ["PackPlan", "Target"]
