"""PackPlan on a crafted repository: packs filled in the order files come (as a backup
fills them, a few files apart), blobs in random order inside each pack. Each pack must be
read with one range request and no byte twice while the plan streams (reads start before
the last file is planned), also when its budgets force packs out early; and it never
holds more files open than it is given (then packs are read before all their files
are planned: in several requests)."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

from backupkit.objects.packplan import PackPlan
from backupkit.repo.index import BlobLocation, PackInfo
from backupkit.repo.pack import pack_name
from backupkit.tuning import Tuning

KiB = 1024


class _Index:
    def __init__(self, locs: dict[bytes, BlobLocation]) -> None:
        self.locs = locs

    def lookup(self, bid: bytes) -> BlobLocation | None:
        return self.locs.get(bid)


class _Repo:
    """Packs of blobs whose plaintext is their stored bytes; every range read recorded.
    A remote store's (a request costs: whole packs in one request) unless ``free``."""

    free_requests = False
    streams_ranges = False

    def __init__(self, packs: list[list[tuple[bytes, bytes]]], seed: int) -> None:
        rnd = random.Random(seed)
        self.data: dict[str, bytes] = {}
        locs: dict[bytes, BlobLocation] = {}
        for n, blobs in enumerate(packs):
            order = blobs[:]
            rnd.shuffle(order)  # blob order inside a pack is random, as bk writes it
            pid = n.to_bytes(32, "big")
            body = b"".join(raw for _bid, raw in order)
            info = PackInfo(pid, "data", len(body) + 100)
            off = 0
            for bid, raw in order:
                locs[bid] = BlobLocation(bid, info, off, len(raw), len(raw))
                off += len(raw)
            self.data[pack_name("data", pid)] = body
        self.index = _Index(locs)
        self.ranges: list[tuple[str, int, int]] = []
        self.lock = threading.Lock()
        self.streams = self.live = self.held = 0
        self.cut_after: int | None = None

    def read_raw_range(self, name: str, offset: int, length: int) -> bytes:
        with self.lock:
            self.ranges.append((name, offset, length))
        return self.data[name][offset : offset + length]

    def read_raw_ranges(self, name: str, ranges):
        """A streaming store's: one request from the first range to the last, each range
        handed over in turn; ``held`` counts the pieces alive at once, ``cut_after``
        (pieces) makes the stream fail there as a connection lost for good would."""
        from backupkit.errors import StoreUnavailable

        ranges = list(ranges)
        with self.lock:
            self.ranges.append((name, ranges[0][0], ranges[-1][0] + ranges[-1][1] - ranges[0][0]))
            self.streams += 1
        for k, (offset, length) in enumerate(ranges):
            if self.cut_after is not None and k >= self.cut_after:
                raise StoreUnavailable(f"reading {name}: the download was cut short")
            with self.lock:
                self.live += 1
                self.held = max(self.held, self.live)
            try:
                yield self.data[name][offset : offset + length]
            finally:
                with self.lock:
                    self.live -= 1

    def open_blobs(self, kind, data, items) -> list:
        return [bytes(data[off : off + ln]) for off, ln, _bid, _raw in items]

    def read_blob(self, bid, kind) -> bytes:
        loc = self.index.locs[bid]
        return self.read_raw_range(pack_name("data", loc.pack.id), loc.offset, loc.length)


class _File:
    def __init__(self, size: int) -> None:
        self.remaining = 0
        self.buf = bytearray(size)
        self.error: BaseException | None = None

    def write(self, offset: int, data: bytes) -> None:
        self.buf[offset : offset + len(data)] = data

    def fail(self, err: BaseException) -> None:
        self.error = err


def _crafted(n_packs: int = 12, per_pack: int = 30, seed: int = 1):
    """Packs filled in file order, files of 1-4 blobs, neighbours swapped (a backup's
    readers finish files a little out of order), one blob repeated in a near file."""
    rnd = random.Random(seed)
    blobs = [(b"b%05d" % i, rnd.randbytes(rnd.randint(1, 6) * KiB)) for i in range(n_packs * per_pack)]
    packs = [blobs[i * per_pack : (i + 1) * per_pack] for i in range(n_packs)]
    files: list[list[tuple[bytes, bytes]]] = []
    i = 0
    while i < len(blobs):
        k = rnd.randint(1, 4)
        files.append(blobs[i : i + k])
        i += k
    for j in range(0, len(files) - 1, 3):
        files[j], files[j + 1] = files[j + 1], files[j]
    files[10] = files[10] + [files[8][0]]  # shared with a file planned just before
    return _Repo(packs, seed), files


class _Pool(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(4)
        self.submitted = 0
        self.names: list[str] = []  # the pack of each read, in the order they were submitted

    def submit(self, fn, name, *a, **kw):
        self.submitted += 1
        self.names.append(name)
        return super().submit(fn, name, *a, **kw)


def _run(repo: _Repo, files, tuning: Tuning, max_files: int | None = None, order: list | None = None):
    """Plan ``files`` in order as a restore does; (reads submitted before the last file
    was planned, most files held at once: added and not yet handed back). ``order``
    gets the pack names read, in submission order."""
    outs = [_File(sum(len(raw) for _b, raw in f)) for f in files]
    held = peak = 0
    with _Pool() as pool:
        plan = PackPlan(repo, pool, tuning, max_files)  # type: ignore[arg-type]
        for out, f in zip(outs, files):
            assert plan.add(out, [bid for bid, _raw in f]) == len(out.buf)
            held += 1
            peak = max(peak, held)
            held -= len(plan.done())
        reads_while_planning = pool.submitted
        for batch in plan.finish():
            held -= len(batch)
        if order is not None:
            order.extend(pool.names)
    assert held == 0
    for out, f in zip(outs, files):
        assert out.error is None and bytes(out.buf) == b"".join(raw for _b, raw in f)
    return reads_while_planning, peak


def _per_pack(repo: _Repo) -> dict[str, list[tuple[int, int]]]:
    by: dict[str, list[tuple[int, int]]] = {}
    for name, off, n in repo.ranges:
        by.setdefault(name, []).append((off, off + n))
    return by


def _assert_each_pack_once_and_no_byte_twice(repo: _Repo) -> None:
    by = _per_pack(repo)
    assert set(by) == set(repo.data)
    for name, spans in by.items():
        assert len(spans) == 1, (name, spans)  # one range request per pack
    fetched = sum(e - s for spans in by.values() for s, e in spans)
    assert fetched == sum(len(d) for d in repo.data.values())  # every byte once: no gap, no repeat


def test_each_pack_is_read_once_as_the_plan_moves_past_it():
    repo, files = _crafted()
    tuning = Tuning(restore_pack_idle_files=4, restore_pack_idle_bytes=16 * KiB, restore_queued_bytes=64 * KiB,
                    restore_read_bytes_in_flight=64 * KiB)
    during, _peak = _run(repo, files, tuning)
    _assert_each_pack_once_and_no_byte_twice(repo)
    assert during >= len(repo.data) // 2, "reads start while files are still being planned"


def test_the_pending_budget_reads_the_least_recently_wanted_pack_first():
    repo, files = _crafted(seed=2)
    per_pack = max(len(d) for d in repo.data.values())
    # idleness never triggers: only the budget of pending bytes pushes packs out
    tuning = Tuning(restore_pack_idle_files=1 << 20, restore_pending_bytes=3 * per_pack)
    during, _peak = _run(repo, files, tuning)
    _assert_each_pack_once_and_no_byte_twice(repo)
    assert during >= len(repo.data) - 4


def test_over_the_budget_the_pack_wanted_longest_ago_is_read_not_the_one_wanted_first():
    """Pack A is wanted first and again later, B only once between: over the pending
    budget B is read first (least recently wanted), where first-in-first-out reads A."""
    rnd = random.Random(6)
    packs = [[(b"%s%d" % (k, i), rnd.randbytes(4 * KiB)) for i in range(4)] for k in (b"A", b"B", b"C")]
    repo = _Repo(packs, 6)
    a, b, c = packs
    files = [[a[0]], [b[0]], [a[1]], [c[0]], [a[2]], [c[1]]]  # pending: 4, 8, ..., 24 KiB
    tuning = Tuning(restore_pack_idle_files=1 << 20, restore_pending_bytes=20 * KiB)
    order: list[str] = []
    _run(repo, files, tuning, order=order)
    names = [pack_name("data", n.to_bytes(32, "big")) for n in range(3)]
    assert order == [names[1], names[0], names[2]], "B (wanted once, long ago), then A, then C"


def test_files_held_open_stay_within_the_limit():
    repo, files = _crafted(seed=3)
    tuning = Tuning(restore_pack_idle_files=1 << 20, restore_queued_bytes=16 * KiB)
    _during, peak = _run(repo, files, tuning, max_files=5)
    assert peak <= 5 + 1  # the file being added on top of the limit
    # packs forced out before their files were all planned are read in several requests
    assert len(repo.ranges) > len(repo.data)


def test_a_blob_wanted_again_after_its_pack_was_read_is_read_again():
    repo, files = _crafted(seed=4)
    again = files[0][0][0]
    files.append([(again, dict(files[0])[again])])  # the first file's blob, at the very end
    tuning = Tuning(restore_pack_idle_files=2, restore_pack_idle_bytes=1)
    _run(repo, files, tuning)
    name = pack_name("data", repo.index.locs[again].pack.id)
    assert len(_per_pack(repo)[name]) == 2


def test_a_large_file_does_not_make_the_packs_it_shares_with_later_files_idle():
    """A backup packs a large file's blobs beside the small files read with it; the
    restore walks the large file (bytes move, files do not) and then those small files."""
    rnd = random.Random(5)
    big = [(b"big%03d" % i, rnd.randbytes(4 * KiB)) for i in range(40)]
    small = [(b"s%03d" % i, rnd.randbytes(2 * KiB)) for i in range(10)]
    packs = [big[:5] + small, big[5:20], big[20:]]
    repo = _Repo(packs, 5)
    files = [big] + [[b] for b in small]
    _run(repo, files, Tuning(restore_pack_idle_files=2, restore_pack_idle_bytes=1))
    _assert_each_pack_once_and_no_byte_twice(repo)
    # the bytes alone would have read the first pack before the small files came
    repo = _Repo(packs, 5)
    _run(repo, files, Tuning(restore_pack_idle_files=0, restore_pack_idle_bytes=1))
    assert len(repo.ranges) > len(packs)


def test_where_requests_cost_nothing_a_pack_is_read_in_spans_of_at_most_the_local_size():
    """A local directory: each pack's wanted bytes in several range reads, none larger
    than ``restore_span_max_local`` (a blob is never cut), together every byte once."""
    repo, files = _crafted(seed=3)
    repo.free_requests = True
    most = 16 * KiB
    tuning = Tuning(restore_pack_idle_files=4, restore_pack_idle_bytes=16 * KiB, restore_span_max_local=most)
    _run(repo, files, tuning)
    by = _per_pack(repo)
    assert set(by) == set(repo.data)
    largest_blob = max(loc.length for loc in repo.index.locs.values())
    assert all(e - s <= most or e - s <= largest_blob for spans in by.values() for s, e in spans)
    assert sum(len(spans) for spans in by.values()) > 2 * len(repo.data)  # packs are split
    for name, spans in by.items():
        spans.sort()
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:])), name  # adjacent: no gap, no overlap
        assert spans[0][0] == 0 and spans[-1][1] == len(repo.data[name])


def test_a_span_is_opened_in_groups_of_bounded_plaintext():
    from backupkit.objects.packplan import _Slot, _groups

    info = PackInfo(bytes(32), "data", 1 << 20)
    sizes = [300, 300, 300, 2000, 100, 100, 1000]
    slots = [_Slot(BlobLocation(bytes([i]) * 32, info, i * 4000, n, n)) for i, n in enumerate(sizes)]
    groups = [[s.loc.raw_length for s in g] for g in _groups(slots, 1000)]
    assert groups == [[300, 300, 300], [2000], [100, 100], [1000]]
    assert [s for g in _groups(slots, 1000) for s in g] == slots  # every slot once, in order
    assert list(_groups([], 1000)) == []


def test_a_store_that_streams_reads_each_pack_once_a_group_at_a_time():
    """S3: a span is read with one request and taken a group of blobs at a time (its
    plaintext bounded by ``restore_open_bytes``), so a worker holds one group, not the
    pack; every pack still read once, no byte twice, every file whole."""
    repo, files = _crafted(seed=5)
    repo.streams_ranges = True
    tuning = Tuning(restore_pack_idle_files=4, restore_pack_idle_bytes=16 * KiB, restore_open_bytes=8 * KiB)
    _run(repo, files, tuning)
    _assert_each_pack_once_and_no_byte_twice(repo)
    assert repo.streams == len(repo.data)  # every pack's span came in groups
    assert repo.held <= 4  # one group per worker (the pool has 4) at most


def test_a_stream_cut_off_for_good_leaves_the_rest_of_the_span_to_blob_reads():
    """A span whose stream fails after its first group: that group's blobs are written
    from it, each later blob is read alone (``read_blob``), and every file is whole."""
    repo, files = _crafted(seed=6)
    repo.streams_ranges = True
    repo.cut_after = 1
    tuning = Tuning(restore_pack_idle_files=4, restore_pack_idle_bytes=16 * KiB, restore_open_bytes=8 * KiB)
    _run(repo, files, tuning)
    by = _per_pack(repo)
    whole = {name for name, spans in by.items() for s, e in spans if (s, e) == (0, len(repo.data[name]))}
    assert whole == set(repo.data)  # one request for each whole pack ...
    assert sum(len(spans) for spans in by.values()) > 2 * len(repo.data)  # ... then blob by blob
