"""CoalescingReader: blobs known to be wanted soon are fetched together, per pack.

Vocabulary:
    expected  a blob some caller announced (``expect``) and will ``read`` later; the
              restore's read-ahead announces every blob it schedules.
    run       consecutive expected blobs of one pack, each within ``gap`` bytes of the
              next, spanning at most ``max_span``: fetched with one range request.
    arrived   plaintext of run members fetched for a later ``read``: a run's blobs are
              opened and verified together when it arrives (``Repository.open_blobs``:
              in C, the GIL released once), a blob that does not verify is not kept
              and its own ``read`` fetches it alone, with ``read_blob``'s retry.

Reading blob by blob costs one request each: a 270 MB restore of a tree with 5,000
small files made 5,300 range requests on S3 (restic reads what it needs of each pack at
once). When ``read`` finds other expected blobs of the same pack close to the wanted
one, it fetches the whole run in one request and keeps the others' bytes until their
own ``read`` comes; only bytes of expected blobs (and the small gaps between them) are
transferred, so nothing is read in vain however the blobs are spread. Memory held for
arrived blobs is bounded by ``budget``: beyond it the oldest are dropped and, if still
wanted, read alone.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter, OrderedDict

from backupkit.errors import StoreError
from backupkit.repo.index import BlobLocation
from backupkit.repo.pack import pack_name
from backupkit.repo.repository import Repository

class CoalescingReader:
    """Thread-safe ``read(blob_id, blob_type)`` like ``Repository.read_blob``, plus ``expect``."""

    def __init__(
        self,
        repo: Repository,
        gap: int | None = None,
        max_span: int = 16 * 1024 * 1024,
        budget: int = 64 * 1024 * 1024,
    ) -> None:
        """``gap``: unwanted bytes worth reading between two wanted blobs to save a
        request (default: ``Repository.join_gap``)."""
        self.repo = repo
        self.gap = gap if gap is not None else repo.join_gap
        self.max_span = max_span
        self.budget = budget
        self._lock = threading.Lock()
        self._expected: Counter[bytes] = Counter()
        #: per pack name: sorted (offset, blob id) of expected blobs not fetched yet
        self._pending: dict[str, list[tuple[int, bytes]]] = {}
        self._arrived: OrderedDict[bytes, bytes] = OrderedDict()
        self._held = 0
        self._fetching: dict[bytes, threading.Event] = {}
        #: range requests made, and blobs served from another blob's request
        self.requests = 0
        self.coalesced = 0

    def expect(self, blob_id: bytes) -> None:
        """Announce that ``read(blob_id)`` will come (once per announcement)."""
        loc = self.repo.index.lookup(blob_id)
        if loc is None:
            return
        with self._lock:
            self._expected[blob_id] += 1
            if self._expected[blob_id] == 1 and blob_id not in self._arrived:
                bisect.insort(self._pending.setdefault(pack_name(loc.pack.kind, loc.pack.id), []), (loc.offset, blob_id))

    def read(self, blob_id: bytes, blob_type: int) -> bytes:
        loc = self.repo.index.lookup(blob_id)
        if loc is None:
            return self.repo.read_blob(blob_id, blob_type)
        name = pack_name(loc.pack.kind, loc.pack.id)
        while True:
            with self._lock:
                plain = self._take(blob_id)
                if plain is None:
                    ev = self._fetching.get(blob_id)
                    if ev is None:
                        run = self._claim_run(name, loc)
                        break
            if plain is not None:
                return plain
            ev.wait()  # someone is fetching a run holding it
        return self._fetch_run(name, run, blob_id, blob_type)

    # -- internals (``_lock`` held where noted) ----------------------------------------------
    def _take(self, blob_id: bytes) -> bytes | None:
        """Arrived plaintext of ``blob_id``, consuming one expectation (lock held)."""
        plain = self._arrived.get(blob_id)
        if plain is None:
            return None
        self._expected[blob_id] -= 1
        if self._expected[blob_id] <= 0:
            del self._expected[blob_id]
            del self._arrived[blob_id]
            self._held -= len(plain)
        self.coalesced += 1
        return plain

    def _claim_run(self, name: str, loc: BlobLocation) -> list[tuple[int, bytes]]:
        """The run of pending blobs around ``loc`` (removed from pending; lock held)."""
        pend = self._pending.get(name, [])
        i = bisect.bisect_left(pend, (loc.offset, loc.blob_id))
        if i >= len(pend) or pend[i][1] != loc.blob_id:
            return []  # not expected (or already taken): read alone
        lo = hi = i
        start, end = loc.offset, loc.offset + loc.length
        index = self.repo.index
        while lo > 0:
            prev = index.lookup(pend[lo - 1][1])
            if prev is None or start - (prev.offset + prev.length) > self.gap or end - prev.offset > self.max_span:
                break
            lo -= 1
            start = prev.offset
        while hi + 1 < len(pend):
            nxt = index.lookup(pend[hi + 1][1])
            if nxt is None or nxt.offset - end > self.gap or nxt.offset + nxt.length - start > self.max_span:
                break
            hi += 1
            end = max(end, nxt.offset + nxt.length)
        run = pend[lo : hi + 1]
        del pend[lo : hi + 1]
        if not pend:
            del self._pending[name]
        ev = threading.Event()
        for _off, bid in run:
            self._fetching[bid] = ev
        return run

    def _fetch_run(self, name, run, blob_id, blob_type) -> bytes:
        if len(run) <= 1:
            try:
                return self.repo.read_blob(blob_id, blob_type)
            finally:
                self._settle(run, {}, skip=blob_id)
        locs = [self.repo.index.lookup(bid) for _o, bid in run]
        start = min(l.offset for l in locs)
        end = max(l.offset + l.length for l in locs)
        got: dict[bytes, bytes] = {}
        try:
            data = self.repo.store.get_range(name, start, end - start)
            with self._lock:
                self.requests += 1
            opened = self.repo.open_blobs(blob_type, data, [(l.offset - start, l.length, l.blob_id, l.raw_length) for l in locs])
            got = {l.blob_id: plain for l, plain in zip(locs, opened) if isinstance(plain, bytes)}
        except StoreError:
            pass  # e.g. a truncated pack: read each blob of the run alone, so intact ones restore
        finally:
            mine = got.get(blob_id)
            self._settle(run, got, skip=blob_id)
        if mine is None:  # not fetched, or did not verify: alone, with read_blob's retry
            return self.repo.read_blob(blob_id, blob_type)
        return mine

    def _settle(self, run, got: dict[bytes, bytes], skip: bytes | None = None) -> None:
        """Publish a run's opened blobs and wake whoever waits for them.

        ``skip`` is the blob the caller reads now: one of its expectations is used up
        (its bytes are kept only if it is expected again).
        """
        with self._lock:
            if skip is not None and skip in self._expected:
                self._expected[skip] -= 1
                if self._expected[skip] <= 0:
                    del self._expected[skip]
            for bid, plain in got.items():
                if self._expected.get(bid, 0) > 0:
                    self._arrived[bid] = plain
                    self._held += len(plain)
            while self._held > self.budget and self._arrived:
                _bid, plain = self._arrived.popitem(last=False)
                self._held -= len(plain)
            events = {self._fetching.pop(bid, None) for _o, bid in run}
        for ev in events:
            if ev is not None:
                ev.set()
