"""The ObjectStore contract suite: one set of checks every backend must pass.

Modelled on restic ``internal/backend/test/tests.go`` and kopia
``blobtesting.VerifyStorage``. Each check is a plain function taking a fresh, empty
store; they are gathered in ``CHECKS`` and can be run two ways:

* without pytest: ``verify_store(make_store)`` runs every check, each on a new store
  from ``make_store()``, and raises AssertionError at the first broken promise;
* with pytest: subclass ``StoreContract`` in a test module and give the class a
  ``store`` fixture that returns a fresh store; every check becomes a test method::

      class TestLocalStore(StoreContract):
          @pytest.fixture
          def store(self, tmp_path):
              return LocalObjectStore(tmp_path / "repo")

Checks use only the public contract in ``backupkit.store.base``. A store whose
``atomic_put_if_absent`` is False skips the race check (it promises nothing there).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from backupkit.errors import ObjectNotFound, StoreError
from backupkit.store.base import ObjectInfo, ObjectStore
from tests.support import store_contract_source

MiB = 1024 * 1024
#: Large enough to be uploaded in several parts by S3 (with a threshold below it).
LARGE_OBJECT_SIZE = 20 * MiB
#: More than one S3 listing page (1000 keys).
MANY_OBJECTS = 1100
#: Threads racing in the concurrency checks (the S3 pool's default size).
THREADS = 8
#: How far a store's clock may be from ours for the mtime check, in seconds.
CLOCK_SLACK = 5.0

INVALID_NAMES = [
    "",
    "/",
    "/abs",
    "trailing/",
    "a//b",
    ".",
    "..",
    "../escape",
    "a/../b",
    "a/./b",
    "sp ace",
    "back\\slash",
    "ümlaut",
    "new\nline",
    "star*",
]


def _expect(errors: type[BaseException] | tuple[type[BaseException], ...], fn: Callable[[], object], what: str) -> BaseException:
    try:
        fn()
    except errors as exc:
        return exc
    except BaseException as exc:
        raise AssertionError(f"{what}: expected {errors}, got {type(exc).__name__}: {exc}") from exc
    raise AssertionError(f"{what}: expected {errors}, nothing was raised")


def _listing(store: ObjectStore, prefix: str = "") -> dict[str, ObjectInfo]:
    """List ``prefix`` and check every name comes exactly once and matches it."""
    infos = list(store.list(prefix))
    names = [info.name for info in infos]
    dupes = sorted({n for n in names if names.count(n) > 1}) if len(set(names)) != len(names) else []
    assert not dupes, f"list({prefix!r}) yielded names more than once: {dupes[:5]}"
    wrong = [n for n in names if not n.startswith(prefix)]
    assert not wrong, f"list({prefix!r}) yielded names outside the prefix: {wrong[:5]}"
    return {info.name: info for info in infos}


def _put_all(store: ObjectStore, items: Iterable[tuple[str, bytes]]) -> None:
    with ThreadPoolExecutor(THREADS) as pool:
        for future in [pool.submit(store.put, name, data) for name, data in items]:
            future.result()


# -- the checks -------------------------------------------------------------------------


def check_put_get(store: ObjectStore) -> None:
    """put then get returns the bytes; stat and exists agree."""
    data = os.urandom(1000)
    store.put("config", data)
    assert store.get("config") == data, "get did not return what put stored"
    info = store.stat("config")
    assert info.name == "config" and info.size == len(data), f"stat says {info}"
    assert store.exists("config"), "exists is False for a stored object"
    store.put("keys/0123abcd", b"key")
    assert store.get("keys/0123abcd") == b"key"


def check_overwrite(store: ObjectStore) -> None:
    """put replaces an existing object, size included."""
    store.put("snapshots/aa", b"first version, longer")
    store.put("snapshots/aa", b"second")
    assert store.get("snapshots/aa") == b"second", "put did not replace the object"
    assert store.stat("snapshots/aa").size == 6, "stat size not updated by overwrite"
    assert list(_listing(store)) == ["snapshots/aa"], "overwrite left more than one object"


def check_get_range(store: ObjectStore) -> None:
    """get_range returns exact slices and refuses ranges past the end."""
    data = os.urandom(4096)
    store.put("data/ab/ab01", data)
    for offset, length in [(0, 1), (0, 4096), (100, 1000), (4095, 1), (4096, 0), (0, 0), (17, 0)]:
        got = store.get_range("data/ab/ab01", offset, length)
        assert got == data[offset : offset + length], f"get_range({offset}, {length}) is wrong"
    for offset, length in [(4095, 2), (4096, 1), (5000, 10), (0, 4097)]:
        _expect(
            StoreError,
            lambda o=offset, n=length: store.get_range("data/ab/ab01", o, n),
            f"get_range({offset}, {length}) past the end of 4096 bytes",
        )
    _expect(ObjectNotFound, lambda: store.get_range("data/ab/missing", 0, 1), "get_range of a missing object")


def check_missing(store: ObjectStore) -> None:
    """Every read of a missing object raises ObjectNotFound."""
    store.put("data/00/present", b"x")
    for name in ("nothing", "data/00/absent", "data/99/absent"):
        _expect(ObjectNotFound, lambda n=name: store.get(n), f"get({name!r})")
        _expect(ObjectNotFound, lambda n=name: store.stat(n), f"stat({name!r})")
        _expect(ObjectNotFound, lambda n=name: store.delete(n), f"delete({name!r})")
        _expect(ObjectNotFound, lambda n=name: store.get_range(n, 0, 1), f"get_range({name!r})")
        assert not store.exists(name), f"exists({name!r}) is True"
    # A name that is a "directory" of other objects is not an object.
    _expect(ObjectNotFound, lambda: store.get("data/00"), "get of a name that is only a prefix")
    _expect(ObjectNotFound, lambda: store.stat("data"), "stat of a name that is only a prefix")


def check_put_if_absent(store: ObjectStore) -> None:
    """put_if_absent creates once, then refuses without touching the object."""
    assert store.put_if_absent("locks/l1", b"mine") is True, "first put_if_absent failed"
    assert store.put_if_absent("locks/l1", b"theirs") is False, "second put_if_absent succeeded"
    assert store.get("locks/l1") == b"mine", "a refused put_if_absent changed the object"
    store.put("locks/l2", b"plain put")
    assert store.put_if_absent("locks/l2", b"x") is False, "put_if_absent over a put object"
    store.delete("locks/l1")
    assert store.put_if_absent("locks/l1", b"again") is True, "put_if_absent after delete"
    assert store.get("locks/l1") == b"again"


def check_rewrite_existing(store: ObjectStore) -> None:
    """rewrite_existing (a lock refresh) replaces an object and tells its store time; a
    missing object is ObjectNotFound and stays missing."""
    name = "locks/" + "e" * 64
    store.put(name, b"v1")
    mtime = store.rewrite_existing(name, b"v2")
    assert store.get(name) == b"v2", "rewrite_existing did not replace the object"
    assert abs(mtime - store.stat(name).mtime) <= 2, "rewrite_existing told another time than stat"
    store.delete(name)
    try:
        store.rewrite_existing(name, b"v3")
    except ObjectNotFound:
        pass
    else:
        raise AssertionError("rewrite_existing of a missing object did not raise ObjectNotFound")
    assert not store.exists(name), "rewrite_existing brought a deleted object back"


def check_put_if_absent_race(store: ObjectStore) -> None:
    """Threads racing put_if_absent on one name: exactly one wins, its bytes stay."""
    if not store.atomic_put_if_absent:
        return
    for round_ in range(5):
        name = f"locks/race-{round_}"
        barrier = threading.Barrier(THREADS)

        def contend(i: int, name: str = name, barrier: threading.Barrier = barrier) -> bool:
            barrier.wait(timeout=30)
            return store.put_if_absent(name, f"writer {i}".encode())

        with ThreadPoolExecutor(THREADS) as pool:
            results = list(pool.map(contend, range(THREADS)))
        winners = [i for i, won in enumerate(results) if won]
        assert len(winners) == 1, f"round {round_}: {len(winners)} writers won: {winners}"
        got = store.get(name)
        assert got == f"writer {winners[0]}".encode(), f"round {round_}: stored {got!r}, winner {winners[0]}"


def check_delete(store: ObjectStore) -> None:
    """delete removes the object from get, stat, exists and list; twice is an error."""
    store.put("index/i1", b"one")
    store.put("index/i2", b"two")
    store.delete("index/i1")
    _expect(ObjectNotFound, lambda: store.get("index/i1"), "get after delete")
    assert not store.exists("index/i1"), "exists after delete"
    assert set(_listing(store, "index/")) == {"index/i2"}, "list after delete"
    _expect(ObjectNotFound, lambda: store.delete("index/i1"), "second delete")
    assert store.get("index/i2") == b"two", "delete touched another object"


def check_list_prefixes(store: ObjectStore) -> None:
    """list yields every object under a prefix exactly once, with its size."""
    objects = {
        "config": b"c" * 3,
        "keys/k1": b"k" * 10,
        "keys/k2": b"",
        "data/00/00aa": b"d" * 7,
        "data/00/00ab": b"d" * 8,
        "data/01/01ba": b"d",
        "data/0a": b"top-level in data",
        "data-old": b"sibling of data",
        "data.bak": b"another sibling",
        "index/i1": b"i",
        "a/b/c/d/e/deep": b"deep",
    }
    _put_all(store, objects.items())
    everything = _listing(store)
    assert set(everything) == set(objects), f"list('') differs: {sorted(set(everything) ^ set(objects))}"
    for name, info in everything.items():
        assert info.size == len(objects[name]), f"list size of {name} is {info.size}"
    expected = {
        "data/": {"data/00/00aa", "data/00/00ab", "data/01/01ba", "data/0a"},
        "data/00/": {"data/00/00aa", "data/00/00ab"},
        "data/0": {"data/00/00aa", "data/00/00ab", "data/01/01ba", "data/0a"},
        "data/00/00a": {"data/00/00aa", "data/00/00ab"},
        "keys/": {"keys/k1", "keys/k2"},
        "keys/k": {"keys/k1", "keys/k2"},
        "a/b/": {"a/b/c/d/e/deep"},
        "data": {n for n in objects if n.startswith("data")},
        "nothing/": set(),
        "data/02/": set(),
        "config/": set(),
    }
    for prefix, names in expected.items():
        got = set(_listing(store, prefix))
        assert got == names, f"list({prefix!r}): missing {sorted(names - got)}, extra {sorted(got - names)}"


def check_list_many(store: ObjectStore) -> None:
    """More objects than one listing page: each listed exactly once."""
    items = [(f"data/{i % 16:02x}/{i:064x}", i.to_bytes(4, "big") * (i % 3)) for i in range(MANY_OBJECTS)]
    _put_all(store, items)
    store.put("other/x", b"not under data/")
    listed = _listing(store, "data/")
    assert len(listed) == MANY_OBJECTS, f"listed {len(listed)} of {MANY_OBJECTS} objects"
    for name, data in items:
        assert listed[name].size == len(data), f"size of {name}"
    assert len(_listing(store)) == MANY_OBJECTS + 1


def check_stat_mtime(store: ObjectStore) -> None:
    """stat and list report the store's modification time, close to now."""
    before = time.time()
    store.put("locks/mtime", b"lock")
    after = time.time()
    mtime = store.stat("locks/mtime").mtime
    assert before - CLOCK_SLACK <= mtime <= after + CLOCK_SLACK, (
        f"stat mtime {mtime} is not within {CLOCK_SLACK}s of [{before}, {after}]"
    )
    listed = _listing(store, "locks/")["locks/mtime"].mtime
    assert abs(listed - mtime) <= 1.0, f"list mtime {listed} disagrees with stat mtime {mtime}"


def check_invalid_names(store: ObjectStore) -> None:
    """Names outside the grammar are refused and never reach the store."""
    for name in INVALID_NAMES:
        _expect(ValueError, lambda n=name: store.put(n, b"x"), f"put({name!r})")
        _expect(ValueError, lambda n=name: store.put_if_absent(n, b"x"), f"put_if_absent({name!r})")
        for op, call in [
            ("get", lambda n=name: store.get(n)),
            ("stat", lambda n=name: store.stat(n)),
            ("delete", lambda n=name: store.delete(n)),
            ("get_range", lambda n=name: store.get_range(n, 0, 1)),
        ]:
            _expect((ValueError, ObjectNotFound), call, f"{op}({name!r})")
    assert _listing(store) == {}, "an invalid name created an object"


def check_empty_object(store: ObjectStore) -> None:
    """Zero-byte objects are objects."""
    store.put("empty", b"")
    assert store.get("empty") == b""
    assert store.stat("empty").size == 0
    assert store.get_range("empty", 0, 0) == b""
    _expect(StoreError, lambda: store.get_range("empty", 0, 1), "get_range(0, 1) of an empty object")
    assert _listing(store)["empty"].size == 0
    assert store.put_if_absent("empty2", b"") is True
    assert store.get("empty2") == b""


def check_large_object(store: ObjectStore) -> None:
    """A 20 MiB object round-trips (S3: a multipart upload) and ranges cross parts."""
    data = os.urandom(LARGE_OBJECT_SIZE)
    store.put("data/ff/large", data)
    assert store.stat("data/ff/large").size == len(data)
    assert store.get("data/ff/large") == data, "large object corrupted"
    for offset, length in [(5 * MiB - 10, MiB), (LARGE_OBJECT_SIZE - 7, 7), (0, 16 * MiB + 1)]:
        assert store.get_range("data/ff/large", offset, length) == data[offset : offset + length]
    assert store.put_if_absent("data/ff/large2", data) is True
    assert store.put_if_absent("data/ff/large2", data[::-1]) is False, "large put_if_absent over a taken name"
    assert store.get_range("data/ff/large2", 0, 100) == data[:100]
    assert store.stat("data/ff/large2").size == len(data)


def check_concurrent_use(store: ObjectStore) -> None:
    """Many threads putting, reading and listing at once see consistent objects."""
    items = [(f"packs/{t}/{i}", os.urandom(100 + t * 10 + i)) for t in range(THREADS) for i in range(10)]

    def worker(t: int) -> None:
        mine = [(n, d) for n, d in items if n.startswith(f"packs/{t}/")]
        for name, data in mine:
            store.put(name, data)
        for name, data in mine:
            assert store.get(name) == data, f"{name} read back wrong"
            assert store.get_range(name, 1, 10) == data[1:11]
        assert len(_listing(store, f"packs/{t}/")) == len(mine)

    with ThreadPoolExecutor(THREADS) as pool:
        for future in [pool.submit(worker, t) for t in range(THREADS)]:
            future.result()
    assert len(_listing(store, "packs/")) == len(items)


def check_capabilities(store: ObjectStore) -> None:
    """The capabilities: probe_conditional_writes answers what atomic_put_if_absent then
    says; stats() is None or counters that count; request_bytes is a size."""
    answer = store.probe_conditional_writes()
    assert isinstance(answer, bool) and answer == store.atomic_put_if_absent, (answer, store.atomic_put_if_absent)
    assert isinstance(store.request_bytes, int) and store.request_bytes >= 0
    before = store.stats()
    if before is None:
        return
    from backupkit.store.retry import REQUEST_KINDS

    assert all(isinstance(n, int) and n >= 0 for n in before.values()), before
    store.put("config", b"abc")
    store.get("config")
    after = store.stats()
    assert after is not None and set(REQUEST_KINDS) <= set(after), after
    assert after["PUT"] > before.get("PUT", 0) and after["GET"] > before.get("GET", 0), (before, after)


def check_get_max_size(store: ObjectStore) -> None:
    """``get(name, max_size=N)`` returns objects of up to N bytes and refuses larger ones
    with ObjectTooLarge (without reading them)."""
    from backupkit.errors import ObjectTooLarge

    store.put("locks/big", b"x" * 1000)
    assert store.get("locks/big", max_size=1000) == b"x" * 1000
    _expect(ObjectTooLarge, lambda: store.get("locks/big", max_size=999), "get with max_size below the size")
    _expect(ObjectNotFound, lambda: store.get("locks/none", max_size=10), "get of a missing object with max_size")


CHECKS: list[Callable[[ObjectStore], None]] = [
    check_put_get,
    check_overwrite,
    check_get_range,
    check_missing,
    check_put_if_absent,
    check_rewrite_existing,
    check_put_if_absent_race,
    check_delete,
    check_list_prefixes,
    check_list_many,
    check_stat_mtime,
    check_invalid_names,
    check_empty_object,
    check_get_max_size,
    check_large_object,
    check_concurrent_use,
    check_capabilities,
    *store_contract_source.CHECKS,
]


def verify_store(make_store: Callable[[], ObjectStore], *, skip: Iterable[str] = ()) -> None:
    """Run every contract check, each on a fresh store from ``make_store()``.

    Args:
        make_store: returns a new, empty store each time it is called.
        skip: names of checks to leave out (e.g. ``{"check_large_object"}``).
    """
    skipped = set(skip)
    for check in CHECKS:
        if check.__name__ in skipped:
            continue
        store = make_store()
        try:
            check(store)
        finally:
            store.close()


class StoreContract:
    """Mixin turning each contract check into a pytest test method.

    The subclass provides a ``store`` fixture that returns a fresh, empty store.
    """


def _as_test(check: Callable[[ObjectStore], None]) -> Callable[[object, ObjectStore], None]:
    def test(self: object, store: ObjectStore) -> None:
        check(store)

    test.__name__ = "test_" + check.__name__.removeprefix("check_")
    test.__doc__ = check.__doc__
    return test


for _check in CHECKS:
    _test = _as_test(_check)
    setattr(StoreContract, _test.__name__, _test)
del _check, _test
