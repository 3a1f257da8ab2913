"""PackPlan: a restore's reads planned per pack, each pack span read once.

Vocabulary:
    target   where one file's content goes: anything with ``write(offset, data)`` and
             ``fail(err)`` (the restore's temporary file). ``write`` is called from
             worker threads, any order, once per reference.
    ref      one use of a blob: (target, offset in the file). A blob shared by files
             (or repeated in one) has several refs and is read and verified once.
    window   the refs planned together: files are added in order until the window
             holds ``restore_window_bytes`` of distinct blobs (or ``restore_window_blobs``
             refs, or ``restore_window_files`` files); then its blobs are grouped by
             pack and each pack's wanted blobs are read with one range request per
             span, on the pool. A file larger than a window is split across windows.
    span     wanted blobs of one pack read with one request: consecutive blobs closer
             than ``restore_join_gap``, up to ``restore_span_max`` bytes.

A target is handed back by :meth:`PackPlan.done` (or :meth:`PackPlan.finish`) as soon as
each of its refs has been written or has failed (a count per target, ``remaining``), so
the caller completes files while other packs are still read. At most
``restore_windows_in_flight`` windows are read at a time while the caller plans the next.
Bytes of spans held at once are bounded by ``restore_read_bytes_in_flight``.

Failures stay with their targets: a span that cannot be fetched (a truncated or missing
pack) is read blob by blob, a blob that fails verification is read alone once more from
the store (``Repository.read_blob``), and a blob that still cannot be read fails every
target that wants it, named by the caller; the other blobs of the pack are written.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from backupkit.crypto import T_DATA_BLOB
from backupkit.errors import BlobNotFound, FormatError, IntegrityError, StoreError
from backupkit.repo.index import BlobLocation, PackInfo
from backupkit.repo.pack import pack_name
from backupkit.repo.repository import Repository
from backupkit.tuning import DEFAULT_TUNING, Tuning


class Target(Protocol):
    #: refs not yet written or failed (kept by the plan)
    remaining: int

    def write(self, offset: int, data: bytes) -> None: ...
    def fail(self, err: BaseException) -> None: ...


class _Window:
    __slots__ = ("blobs", "bytes", "refs", "files", "futures")

    def __init__(self) -> None:
        #: blob id -> (location, [(target, offset), ...])
        self.blobs: dict[bytes, tuple[BlobLocation, list]] = {}
        self.bytes = 0
        self.refs = 0
        self.files = 0
        self.futures: list[Future] = []


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
    """Plans and runs the pack reads of a stream of files (one caller thread)."""

    def __init__(self, repo: Repository, pool: ThreadPoolExecutor, tuning: Tuning = DEFAULT_TUNING, max_files: int | None = None) -> None:
        self.repo = repo
        self.tuning = tuning
        self._pool = pool
        self._max_files = max(1, min(tuning.restore_window_files, max_files or tuning.restore_window_files))
        self._budget = _Budget(tuning.restore_read_bytes_in_flight)
        self._cur = _Window()
        self._flying: deque[_Window] = deque()
        self._cv = threading.Condition()
        self._ready: list = []  # targets complete, not yet handed out
        self._incomplete = 0  # targets added, not yet complete

    # -- planning --------------------------------------------------------------------------
    def add(self, target: Any, items: Iterable) -> int | None:
        """Plan one file's content: ``items`` (blob ids and holes) written from offset 0;
        returns its size by the index. A blob the index does not know fails the target
        at once (and None is returned)."""
        if self._cur.files >= self._max_files:
            self._submit()
        win = self._cur
        win.files += 1
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
            slot = win.blobs.get(bid)
            if slot is None:
                loc = index.lookup(bid)
                if loc is None:
                    target.fail(BlobNotFound(f"data blob {bid.hex()[:16]} is not in the index"))
                    off = -1
                    break
                slot = win.blobs[bid] = (loc, [])
                win.bytes += loc.length
            slot[1].append((target, off))
            planned += 1
            win.refs += 1
            off += slot[0].raw_length
            if win.bytes >= self.tuning.restore_window_bytes or win.refs >= self.tuning.restore_window_blobs:
                self._submit()
                win = self._cur
                win.files += 1  # the rest of this file holds a descriptor here too
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
        self._submit()
        while True:
            self._harvest(block=False)  # a worker's own failure (a bug) surfaces here
            with self._cv:
                if not self._ready and self._incomplete:
                    if not self._flying:  # every read is done, yet files are not
                        raise RuntimeError(f"restore plan: {self._incomplete} file(s) never completed")
                    self._cv.wait(0.05)
                batch, self._ready = self._ready, []
                left = self._incomplete
            if batch:
                yield batch
            elif not left:
                break
        while self._flying:
            self._harvest(block=True)

    def abort(self) -> None:
        """Stop: nothing more is read; returns once no worker writes any more."""
        wins = list(self._flying)
        self._flying.clear()
        for w in wins:
            for f in w.futures:
                f.cancel()
        for w in wins:
            for f in w.futures:
                if not f.cancelled():
                    try:
                        f.result()
                    except BaseException:  # noqa: BLE001 - stopping anyway
                        pass

    # -- running ---------------------------------------------------------------------------
    def _submit(self) -> None:
        win, self._cur = self._cur, _Window()
        if not win.blobs:
            return
        while len(self._flying) >= self.tuning.restore_windows_in_flight:
            self._harvest(block=True)
        packs: dict[PackInfo, list] = {}
        for loc, refs in win.blobs.values():
            packs.setdefault(loc.pack, []).append((loc, refs))
        for pack, blobs in packs.items():
            blobs.sort(key=lambda b: b[0].offset)
            for span in self._spans(blobs):
                win.futures.append(self._pool.submit(self._read_span, pack_name(pack.kind, pack.id), span))
        self._flying.append(win)

    def _spans(self, blobs: list) -> Iterable[list]:
        gap, most = self.tuning.restore_join_gap, self.tuning.restore_span_max
        span = [blobs[0]]
        start, end = blobs[0][0].offset, blobs[0][0].offset + blobs[0][0].length
        for b in blobs[1:]:
            loc = b[0]
            if loc.offset - end > gap or loc.offset + loc.length - start > most:
                yield span
                span, start = [], loc.offset
            span.append(b)
            end = max(end, loc.offset + loc.length)
        yield span

    def _harvest(self, block: bool) -> None:
        while self._flying:
            win = self._flying[0]
            if not block and not all(f.done() for f in win.futures):
                return
            for f in win.futures:
                f.result()  # a worker's own failure (a bug) surfaces here
            self._flying.popleft()
            block = False

    def _release(self, target: Any, n: int) -> None:
        with self._cv:
            target.remaining -= n
            if target.remaining == 0:
                self._incomplete -= 1
                self._ready.append(target)
                self._cv.notify()

    def _read_span(self, name: str, span: list) -> None:
        start = span[0][0].offset
        size = max(loc.offset + loc.length for loc, _refs in span) - start
        self._budget.acquire(size)
        try:
            data: memoryview | None = None
            try:
                data = memoryview(self.repo.read_raw_range(name, start, size))
            except StoreError:
                pass  # e.g. a truncated pack: each blob alone, so the intact ones restore
            for loc, refs in span:
                plain, err = self._open(name, loc, data, start)
                for target, off in refs:
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
            self._budget.release(size)

    def _open(self, name: str, loc: BlobLocation, data: memoryview | None, start: int) -> tuple[Any, BaseException | None]:
        if data is not None:
            raw = data[loc.offset - start : loc.offset - start + loc.length]
            what = f"blob {loc.blob_id.hex()[:16]} in pack {loc.pack.id.hex()[:16]}"
            try:
                return self.repo.verify_blob(loc.blob_id, T_DATA_BLOB, raw, what, loc.raw_length), None
            except (IntegrityError, FormatError):
                pass  # read alone, with its retry
        try:
            return self.repo.read_blob(loc.blob_id, T_DATA_BLOB), None
        except Exception as err:  # noqa: BLE001 - charged to the targets that want it
            return None, err


__all__ = ["PackPlan", "Target"]
