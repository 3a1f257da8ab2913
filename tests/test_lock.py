"""Repository locks (backupkit.repo.lock) on the memory and local stores.

Clients are impersonated with LockManager(host=, pid=, node=). Store time is made to
pass with a MemoryObjectStore on a FakeClock, or with os.utime on a local store; the
client's own clock is a separate FakeClock (or a skewed real one), so tests can show
that only the store's clock decides staleness.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from backupkit.errors import Interrupted, LockError, StoreUnavailable
from backupkit.repo.lock import LOCK_PREFIX, LockConflict, LockLost, LockManager, human_age
from backupkit.repo.repository import Repository
from backupkit.store.local import LocalObjectStore
from backupkit.store.memory import MemoryObjectStore
from tests.support.faulty import FaultyStore
from tests.support.kit import INSECURE_TEST_KDF

PW = b"pw"
TTL = 1800.0


class FakeClock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.t

    def advance(self, dt: float) -> None:
        with self._lock:
            self.t += dt


class NonAtomicMemoryStore(MemoryObjectStore):
    """put_if_absent as check-then-put, as on a store without conditional writes."""

    atomic_put_if_absent = False

    def put_if_absent(self, name: str, data: bytes) -> bool:
        if self.exists(name):
            return False
        time.sleep(0)  # let a racing thread in between the check and the put
        self.put(name, data)
        return True


def make_repo(store) -> Repository:
    return Repository.init(store, PW, kdf=INSECURE_TEST_KDF, cache_root=False)


def other(repo, **kw) -> LockManager:
    """A client on another machine (its pid means nothing here)."""
    kw.setdefault("refresh", 0)
    kw.setdefault("recheck_delay", 0)
    return LockManager(repo, host=kw.pop("host", "db1"), pid=kw.pop("pid", 4242), node=kw.pop("node", "other-node"), **kw)


def me(repo, **kw) -> LockManager:
    kw.setdefault("refresh", 0)
    kw.setdefault("recheck_delay", 0)
    return LockManager(repo, **kw)


@pytest.fixture(params=["memory", "local"])
def repo(request, tmp_path):
    store = MemoryObjectStore() if request.param == "memory" else LocalObjectStore(tmp_path / "repo", fsync=False)
    r = make_repo(store)
    yield r
    r.close()


@pytest.fixture
def clocked():
    """A memory repository whose store clock the test moves: (repo, store_clock)."""
    clock = FakeClock()
    r = make_repo(MemoryObjectStore(clock=clock))
    return r, clock


def lock_names(store) -> list[str]:
    return sorted(o.name for o in store.list(LOCK_PREFIX))


# -- basic semantics ---------------------------------------------------------------------------


def test_shared_locks_coexist(repo):
    with me(repo).acquire(False, "backup") as a, other(repo).acquire(False, "restore") as b:
        assert a.name != b.name
        assert len(lock_names(repo.store)) == 2
        a.check()
        b.check()
    assert lock_names(repo.store) == []


def test_exclusive_excludes_everything(repo):
    with other(repo).acquire(True, "prune"):
        for exclusive in (False, True):
            with pytest.raises(LockConflict) as ei:
                me(repo).acquire(exclusive, "backup")
            msg = str(ei.value)
            assert "locked exclusively by" in msg and "@db1 (pid 4242, prune)" in msg, msg
            assert ei.value.holder is not None and ei.value.holder.doc["operation"] == "prune"
    with other(repo).acquire(False, "backup"):
        with pytest.raises(LockConflict) as ei:
            me(repo).acquire(True, "forget")
        assert "locked by" in str(ei.value) and "(pid 4242, backup)" in str(ei.value)
        with me(repo).acquire(False, "ls"):
            pass
    # Nothing is left behind by the failed attempts.
    assert lock_names(repo.store) == []


def test_lock_objects_are_sealed_and_names_reveal_nothing(repo):
    with other(repo).acquire(True, "prune"):
        names = lock_names(repo.store)
        for n in names:
            tail = n[len(LOCK_PREFIX) :]
            assert len(tail) == 64 and int(tail, 16) >= 0
            raw = repo.store.get(n)
            assert b"prune" not in raw and b"db1" not in raw
        # An atomic store gets the sentinel besides the lock object.
        assert len(names) == (2 if repo.store.atomic_put_if_absent else 1)


def test_unreadable_lock_object_blocks_until_stale(clocked):
    repo, clock = clocked
    repo.store.put(LOCK_PREFIX + "ab" * 32, b"garbage")
    with pytest.raises(LockConflict, match="unreadable lock object"):
        me(repo).acquire(False, "backup")
    clock.advance(TTL + 1)
    with me(repo).acquire(True, "prune"):
        pass


def test_a_name_bk_never_writes_under_locks_blocks_nothing(clocked):
    """Issue 10.3: junk under locks/ is no lock of any bk process: ignored with a warning."""
    repo, _clock = clocked
    repo.store.put(LOCK_PREFIX + "zz", b"garbage")
    with me(repo).acquire(True, "prune"):
        pass
    assert any("locks/zz" in w for w in repo.warnings)


def test_unreadable_lock_advice_is_what_removes_it(clocked):
    """Issue 9.10: the advice for an unreadable lock must name what removes it: plain
    'bk unlock' only once it is stale (and says when), --remove-all at once."""
    repo, clock = clocked
    name = LOCK_PREFIX + "cd" * 32
    repo.store.put(name, b"garbage")
    with pytest.raises(LockConflict) as ei:
        me(repo).acquire(False, "backup")
    msg = str(ei.value)
    assert "unreadable lock object" in msg and "--remove-all" in msg and "once stale, in 30m" in msg, msg
    assert me(repo).remove_stale() == []  # fresh: plain unlock removes nothing, as said
    clock.advance(TTL + 1)
    assert [li.name for li, _why in me(repo).remove_stale()] == [name]


# -- staleness by the store's clock -------------------------------------------------------------


def test_stale_lock_taken_over_after_ttl_without_unlock(clocked):
    repo, clock = clocked
    dead = other(repo).acquire(True, "prune")  # its holder "dies": no refresh, no release
    clock.advance(TTL - 10)
    with pytest.raises(LockConflict, match="since 29m ago"):
        me(repo).acquire(False, "backup")
    clock.advance(20)
    with me(repo).acquire(True, "prune") as lock:
        lock.check()
    assert dead.name in lock_names(repo.store)  # ignored, not deleted (bk unlock does that)


def test_stale_lock_on_local_store_by_file_mtime(tmp_path):
    repo = make_repo(LocalObjectStore(tmp_path / "repo", fsync=False))
    other(repo).acquire(True, "prune")
    with pytest.raises(LockConflict):
        me(repo).acquire(False, "backup")
    old = time.time() - 2 * 3600
    for n in lock_names(repo.store):
        os.utime(tmp_path / "repo" / n, (old, old))
    with me(repo).acquire(True, "prune"):
        pass


@pytest.mark.parametrize("skew", [-5 * 3600, +5 * 3600])
def test_client_clock_skew_does_not_change_staleness(clocked, skew):
    repo, clock = clocked

    def skewed():
        return clock() + skew

    holder = other(repo, clock=skewed).acquire(True, "prune")
    for client_skew in (-skew, skew, 0):
        client = me(repo, clock=lambda s=client_skew: clock() + s)
        with pytest.raises(LockConflict, match=r"since 0s ago"):
            client.acquire(False, "backup")
    clock.advance(TTL / 2)
    holder.refresh()
    clock.advance(TTL / 2 + 60)  # 30m since creation, 15m since the refresh: alive
    with pytest.raises(LockConflict, match=r"since 31m ago"):
        me(repo, clock=lambda: clock() - skew).acquire(False, "backup")
    clock.advance(TTL)
    with me(repo, clock=lambda: clock() - skew).acquire(True, "prune"):
        pass


def test_same_machine_dead_pid_is_stale_at_once(repo):
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(p.stdout)
    LockManager(repo, refresh=0, recheck_delay=0, pid=dead_pid).acquire(True, "prune")
    now_ref, locks = me(repo).list_locks()
    assert all("process %d on this machine is gone" % dead_pid == me(repo).stale_reason(li, now_ref) for li in locks)
    with me(repo).acquire(True, "prune"):
        pass
    me(repo).remove_all()
    # Same host name but another machine (or pid namespace): the pid proves nothing.
    other(repo, host=LockManager(repo).host, pid=dead_pid).acquire(True, "prune")
    with pytest.raises(LockConflict, match=r"\(pid %d, prune\)" % dead_pid):
        me(repo).acquire(False, "backup")


# -- refresh and loss ----------------------------------------------------------------------------


def test_refresh_keeps_a_lock_alive_past_the_ttl(clocked):
    repo, clock = clocked
    holder = other(repo).acquire(True, "prune")
    for _ in range(5):  # 5 x 0.6 TTL = 3 TTLs in all
        clock.advance(TTL * 0.6)
        holder.refresh()
        with pytest.raises(LockConflict, match=r"since 1h|since [0-9]+m"):
            me(repo).acquire(False, "backup")
    holder.check()
    holder.release()
    with me(repo).acquire(True, "prune"):
        pass


def test_background_refresh_thread(tmp_path):
    repo = make_repo(LocalObjectStore(tmp_path / "repo", fsync=False))
    with LockManager(repo, ttl=2.0, refresh=0.1, recheck_delay=0).acquire(True, "prune") as lock:
        time.sleep(2.5)
        with pytest.raises(LockConflict):
            me(repo, ttl=2.0).acquire(False, "backup")
        lock.check()
        assert lock.lost is None


def test_removed_lock_is_lost(repo):
    lock = me(repo).acquire(False, "backup")
    me(repo).remove_all()
    with pytest.raises(LockLost, match="removed"):
        lock.check()
    with pytest.raises(LockLost):
        lock.check()  # stays lost
    lock.release()


def test_suspended_holder_loses_its_lock_when_taken_over(clocked):
    """SIGSTOP for longer than the TTL: someone takes over; the holder must notice."""
    repo, clock = clocked
    holder = me(repo).acquire(False, "backup")
    clock.advance(TTL + 5)
    with other(repo).acquire(True, "prune"):
        pass
    with pytest.raises(LockLost, match="without a refresh"):
        holder.check()
    holder.release()


def test_gap_just_under_the_ttl_margin_is_fine(clocked):
    repo, clock = clocked
    holder = me(repo).acquire(False, "backup")
    clock.advance(TTL - 10)
    holder.check()
    clock.advance(TTL - 10)
    holder.check()


def test_refresh_failing_longer_than_ttl_loses_the_lock():
    store_clock, client_clock = FakeClock(), FakeClock()
    faulty = FaultyStore(MemoryObjectStore(clock=store_clock))
    repo = make_repo(faulty)
    lock = me(repo, clock=client_clock).acquire(False, "backup")
    faulty.fail_call("put", count=10**6, name=lock.name)
    client_clock.advance(TTL / 2)
    lock.check()  # failing, but still inside the TTL: fine
    with pytest.raises(StoreUnavailable):
        lock.refresh()
    client_clock.advance(TTL / 2)
    with pytest.raises(LockLost, match="could not refresh"):
        lock.check()


def test_backup_with_a_lost_lock_publishes_no_snapshot(tmp_path):
    from backupkit.managers.backup import BackupManager, BackupOptions
    from backupkit.snapshot import list_snapshots

    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"hello" * 1000)
    repo = make_repo(MemoryObjectStore())
    with me(repo).acquire(False, "backup") as lock:
        repo.install_lock_check(lock.check)
        BackupManager(repo).run(BackupOptions(paths=(str(src),)))
    before = [s.id for s in list_snapshots(repo)]
    assert len(before) == 1
    (src / "b").write_bytes(b"new file")
    with me(repo).acquire(False, "backup") as lock:
        me(repo).remove_all()  # e.g. a cron job ran 'bk unlock --remove-all'
        repo.install_lock_check(lock.check)
        with pytest.raises(LockLost):
            BackupManager(repo).run(BackupOptions(paths=(str(src),)))
    assert [s.id for s in list_snapshots(repo)] == before
    assert len(list(repo.store.list("snapshots/"))) == 1


# -- unlock --------------------------------------------------------------------------------------


def test_remove_stale_keeps_fresh_locks(clocked):
    repo, clock = clocked
    old = other(repo, host="old").acquire(False, "backup")
    clock.advance(TTL + 1)
    fresh = other(repo, host="fresh").acquire(True, "prune")
    removed = me(repo).remove_stale()
    assert [li.name for li, _ in removed] == [old.name]
    assert "not refreshed for 30m" in removed[0][1]
    names = lock_names(repo.store)
    assert fresh.name in names and old.name not in names
    assert sorted(me(repo).remove_all()) == names
    assert lock_names(repo.store) == []
    with pytest.raises(LockLost):
        fresh.check()


def test_remove_stale_also_clears_a_dead_unlock_probe(clocked):
    repo, clock = clocked
    probe = me(repo)._probe()
    name, _ = probe.__enter__()  # an unlock that died before deleting its probe
    assert me(repo).list_locks()[1] == []  # probes are not locks
    clock.advance(TTL + 1)
    assert [li.name for li, _ in me(repo).remove_stale()] == [name]
    assert lock_names(repo.store) == []


def test_list_locks_ages_come_from_the_store(clocked):
    repo, clock = clocked
    holder = other(repo, clock=lambda: 0.0).acquire(True, "prune")
    clock.advance(600)
    holder.refresh()
    clock.advance(60)
    now_ref, locks = me(repo).list_locks()
    mine = [li for li in locks if li.name == holder.name][0]
    assert mine.to_json(now_ref)["age"] == pytest.approx(660)
    assert mine.to_json(now_ref)["idle"] == pytest.approx(60)
    assert lock_names(repo.store) == sorted(li.name for li in locks)  # the probe is gone


# -- the exclusive sentinel ----------------------------------------------------------------------


def test_stale_sentinel_of_a_dead_holder_is_cleared(clocked):
    repo, clock = clocked
    dead = other(repo).acquire(True, "prune")
    assert dead.has_sentinel
    clock.advance(TTL + 1)
    with me(repo).acquire(True, "prune") as lock:
        assert lock.has_sentinel
    assert lock_names(repo.store) == [dead.name]


def test_sentinel_not_used_without_atomic_create():
    repo = make_repo(NonAtomicMemoryStore())
    with me(repo).acquire(True, "prune") as lock:
        assert not lock.has_sentinel
        assert lock_names(repo.store) == [lock.name]


# -- the wait before listing ------------------------------------------------------------------


class LaggingListingsStore(MemoryObjectStore):
    """A store whose listings may lag behind its writes (as a network store's may)."""

    immediate_listings = False


@pytest.mark.parametrize("store_kind,waits_expected", [("memory", [[], []]), ("local", [[], []]), ("lagging", [[], [0.4]])])
def test_the_wait_before_listing_only_where_listings_may_lag(tmp_path, store_kind, waits_expected):
    """Where listings may lag, an exclusive contender waits twice the delay before it
    lists and a shared one not at all (the same margin as restic's 200 ms in both:
    lock_acquire.py, "Listings that lag"); where they cannot, nobody waits."""
    store = {
        "memory": MemoryObjectStore,
        "local": lambda: LocalObjectStore(tmp_path / "repo", fsync=False),
        "lagging": LaggingListingsStore,
    }[store_kind]()
    r = make_repo(store)
    seen = []
    for exclusive in (False, True):
        waits: list[float] = []
        with me(r, sleep=waits.append, recheck_delay=0.2).acquire(exclusive, "backup"):
            pass
        seen.append(waits)
    assert seen == waits_expected
    r.close()


class LaggedStore(MemoryObjectStore):
    """A store whose listings really lag: an object shows in a listing only ``lag``
    seconds after its write; with ``read_your_writes``, at once to the thread that wrote
    it (the harder case: a contender's own object in its listing then says nothing
    about the others'). Reads and deletes are immediate."""

    immediate_listings = False

    def __init__(self, lag: float, read_your_writes: bool = True) -> None:
        super().__init__()
        self.lag = lag
        self.read_your_writes = read_your_writes
        self._written: dict[str, tuple[float, int]] = {}

    def put(self, name: str, data: bytes) -> None:
        super().put(name, data)
        self._written[name] = (time.monotonic(), threading.get_ident())

    def put_if_absent(self, name: str, data: bytes) -> bool:
        if super().put_if_absent(name, data):
            self._written[name] = (time.monotonic(), threading.get_ident())
            return True
        return False

    def list(self, prefix: str = ""):
        cutoff, me_ = time.monotonic() - self.lag, threading.get_ident()

        def shown(name: str) -> bool:
            at, writer = self._written.get(name, (0.0, 0))
            return at <= cutoff or (self.read_your_writes and writer == me_)

        return iter([o for o in super().list(prefix) if shown(o.name)])


def _lagged_race(lag: float, delay: float, races: int, spread: float) -> tuple[int, int]:
    """Shared against exclusive on a LaggedStore, the second contender starting at an
    offset drawn from (-spread, spread) from the first; returns (races where both held
    the lock at once, races where at least one got it)."""
    import random

    rng = random.Random(11)
    repo = make_repo(LaggedStore(lag))
    managers = [me(repo, recheck_delay=delay, settle_polls=2), me(repo, recheck_delay=delay, settle_polls=2)]
    overlaps = won = 0
    for r in range(races):
        offset = rng.uniform(-spread, spread)
        inside: list[int] = []  # who holds the lock now
        held: list[int] = []  # who got it in this race
        both = [False]
        guard = threading.Lock()

        def run(i: int, exclusive: bool, start: float) -> None:
            time.sleep(start)
            try:
                lock = managers[i].acquire(exclusive, "race")
            except LockConflict:
                return
            with lock:
                with guard:
                    inside.append(i)
                    held.append(i)
                    both[0] = both[0] or len(inside) > 1
                time.sleep(spread + 3 * delay)  # held until the other has listed
                with guard:
                    inside.remove(i)
        modes = (True, False) if r % 2 else (False, True)
        threads = [threading.Thread(target=run, args=(0, modes[0], max(0.0, -offset))),
                   threading.Thread(target=run, args=(1, modes[1], max(0.0, offset)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        overlaps += both[0]
        won += len(held) > 0
    return overlaps, won


def test_a_shared_lock_that_lists_at_once_keeps_restics_margin_for_lagging_listings():
    """Listings that lag 15 ms (each contender sees its own write at once), a delay of
    20 ms: shared contenders list at once and exclusive ones wait 40 ms, and a shared
    and an exclusive lock are never held together, whatever the order and the offset
    (lock_acquire.py, "Listings that lag": safe while the lag is at most the delay)."""
    overlaps, won = _lagged_race(lag=0.015, delay=0.02, races=40, spread=0.03)
    assert overlaps == 0 and won >= 36, (overlaps, won)


def test_the_lagging_store_can_show_an_overlap():
    """The control: the same race with listings lagging past the margin (60 ms against a
    delay of 10 ms: 20 ms of exclusive wait), offsets inside the unsafe window, does let
    both in, so the test above can fail."""
    overlaps, _ = _lagged_race(lag=0.06, delay=0.01, races=8, spread=0.02)
    assert overlaps >= 4, overlaps


def test_a_shared_lock_whose_own_object_does_not_show_yet_lists_again():
    repo = make_repo(LaggedStore(0.03, read_your_writes=False))
    waits: list[float] = []

    def sleep(dt: float) -> None:
        waits.append(dt)
        time.sleep(dt)

    with me(repo, sleep=sleep, recheck_delay=0.05).acquire(False, "backup"):
        pass
    assert waits == [0.05]  # the first listing missed our own object; the second showed it


# -- retry ---------------------------------------------------------------------------------------


def test_retry_lock_backs_off_and_succeeds_when_the_holder_leaves(clocked):
    repo, _ = clocked
    client = FakeClock(0.0)
    holder = other(repo).acquire(True, "prune")
    waits: list[float] = []

    def fake_sleep(dt: float) -> None:
        waits.append(dt)
        client.advance(dt)
        if len(waits) == 4:
            holder.release()

    retries = []
    mgr = me(repo, clock=client, sleep=fake_sleep, retry_lock=300, on_retry=lambda e, w: retries.append((str(e), w)))
    with mgr.acquire(False, "backup"):
        pass
    assert waits == [5.0, 10.0, 20.0, 40.0]
    assert "prune" in retries[0][0]


def test_retry_lock_gives_up_at_the_deadline(clocked):
    repo, _ = clocked
    client = FakeClock(0.0)
    other(repo).acquire(True, "prune")
    waits: list[float] = []

    def fake_sleep(dt):
        waits.append(dt)
        client.advance(dt)

    with pytest.raises(LockConflict, match="gave up after retrying for 2m"):
        me(repo, clock=client, sleep=fake_sleep, retry_lock=120).acquire(False, "backup")
    assert waits == [5.0, 10.0, 20.0, 40.0, 45.0]


def test_human_age():
    assert [human_age(s) for s in (0, 59, 60, 3599, 3600, 3660, 86400, 90000)] == [
        "0s", "59s", "1m", "59m", "1h", "1h1m", "1d", "1d1h",
    ]


# -- races ---------------------------------------------------------------------------------------

RACES = 200
#: How long a winner holds the lock: long enough for a late contender to walk in on it.
HOLD = 0.004


def _race(make_manager, races: int, exclusive_pairs=((True, True),)) -> tuple[int, int]:
    """Two threads want the lock at once, ``races`` times; returns (overlaps, no-winner races)."""
    inside = [0]
    overlaps = [0]
    guard = threading.Lock()
    overlaps_lock = threading.Lock()
    barrier = threading.Barrier(2)
    wins = [0, 0]
    managers = [make_manager(i) for i in range(2)]
    no_winner = 0
    for r in range(races):
        modes = exclusive_pairs[r % len(exclusive_pairs)]
        won = [False, False]

        def run(i: int) -> None:
            barrier.wait()
            try:
                lock = managers[i].acquire(modes[i], "race")
            except LockConflict:
                return
            with lock:
                with guard:
                    inside[0] += 1
                    bad = inside[0] > 1 and (modes[0] or modes[1])
                if bad:
                    with overlaps_lock:
                        overlaps[0] += 1
                time.sleep(HOLD)
                with guard:
                    inside[0] -= 1
                won[i] = True

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wins[0] += won[0]
        wins[1] += won[1]
        no_winner += not any(won)
    return overlaps[0], no_winner


def _jittery(inner):
    """Random 0-2 ms delays before writes and listings, to widen every interleaving."""
    import random

    rng = random.Random(7)
    store = FaultyStore(inner)
    store.set_hook(lambda op, name: time.sleep(rng.random() * 0.002) if op in ("put", "put_if_absent", "list") else None)
    return store


STORES = {
    "memory": lambda tmp: MemoryObjectStore(),
    "memory-jitter": lambda tmp: _jittery(MemoryObjectStore()),
    "memory-nonatomic-jitter": lambda tmp: _jittery(NonAtomicMemoryStore()),
    "memory-nonatomic": lambda tmp: NonAtomicMemoryStore(),
    "memory-lying": lambda tmp: FaultyStore(MemoryObjectStore(), lie_put_if_absent=True),
    "local": lambda tmp: LocalObjectStore(tmp / "repo", fsync=False),
}


@pytest.mark.parametrize("kind", list(STORES))
def test_exclusive_race_never_two_holders(kind, tmp_path):
    repo = make_repo(STORES[kind](tmp_path))
    overlaps, no_winner = _race(lambda i: me(repo, recheck_delay=0.001, settle_polls=50), RACES)
    assert overlaps == 0
    # Liveness: ranks (and the sentinel) pick a winner nearly every time.
    assert no_winner <= RACES * 0.05, no_winner
    assert lock_names(repo.store) == []


def test_shared_exclusive_race_never_overlap(tmp_path):
    repo = make_repo(LocalObjectStore(tmp_path / "repo", fsync=False))
    overlaps, _ = _race(
        lambda i: me(repo, recheck_delay=0.001), RACES // 2, exclusive_pairs=((True, False), (False, True))
    )
    assert overlaps == 0


# -- two processes on a local store --------------------------------------------------------------


def _worker(root: str, exclusive: bool, rounds: int, marks: str, out) -> None:
    """Take the lock ``rounds`` times; count overlaps through O_EXCL marker files."""
    repo = Repository.open(LocalObjectStore(root, fsync=False), PW, cache_root=False)
    mgr = LockManager(repo, refresh=0, recheck_delay=0.002, retry_lock=30, retry_backoff=(0.002, 0.02))
    overlaps = 0
    mark_dir = Path(marks)
    mine = mark_dir / (f"ex-{os.getpid()}" if exclusive else f"sh-{os.getpid()}")
    for _ in range(rounds):
        with mgr.acquire(exclusive, "worker"):
            fd = os.open(mine, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.close(fd)
            others = [p for p in os.listdir(mark_dir) if p != mine.name]
            if any(p.startswith("ex-") for p in others) or (exclusive and others):
                overlaps += 1
            time.sleep(0.002)
            os.unlink(mine)
    out.put(overlaps)


@pytest.mark.parametrize("modes", [(True, True), (False, True)], ids=["prune+prune", "backup+prune"])
def test_two_processes_never_overlap(tmp_path, modes):
    make_repo(LocalObjectStore(tmp_path / "repo", fsync=False))
    marks = tmp_path / "marks"
    marks.mkdir()
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(str(tmp_path / "repo"), ex, 25, str(marks), out)) for ex in modes
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert results == [0, 0]


def test_check_after_release_is_an_error(repo):
    lock = me(repo).acquire(False, "backup")
    lock.release()
    lock.release()  # idempotent
    with pytest.raises(LockError):
        lock.check()


class _SignalAfterSentinel(MemoryObjectStore):
    """A signal (Interrupted) that lands inside put_if_absent once the sentinel is
    written, the first time."""

    signalled = False

    def put_if_absent(self, name: str, data: bytes) -> bool:
        placed = super().put_if_absent(name, data)
        if placed and not self.signalled:
            self.signalled = True
            raise Interrupted(15)
        return placed


def test_a_signal_inside_the_sentinels_write_leaves_no_lock_behind():
    store = _SignalAfterSentinel()
    r = make_repo(store)
    with pytest.raises(Interrupted):
        me(r).acquire(True, "prune")
    assert lock_names(store) == []  # neither the lock object nor the sentinel
    with me(r).acquire(True, "prune"):  # and the next exclusive lock is granted
        pass
