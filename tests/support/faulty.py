"""FaultyStore: a wrapper that makes a store fail on purpose, for tests.

Vocabulary: an *op* is one of the ObjectStore methods ``get``, ``get_range``, ``put``,
``put_if_absent``, ``delete``, ``list``, ``stat`` (``exists`` goes through ``stat``). A
*fault* is a rule added with one of the methods below; every rule counts only the calls
it matches (its op, and its name or prefix when given), so "the 3rd get of
``index/..``" is ``fail_call("get", nth=3, name=lambda n: n.startswith("index/"))``.

Modelled on kopia ``blobtesting/faulty.go`` and restic's ``errorOnceBackend`` /
``corruptPartialOnceBackend``::

    store = FaultyStore(MemoryObjectStore(), fail_rate=0.05, seed=1)   # 5% StoreUnavailable
    store.fail_call("put", nth=2)                  # the 2nd put raises StoreUnavailable
    store.fail_call("put", nth=1, after=True)      # the put lands, then the caller sees an error
    store.corrupt_reads("data/ab/ab12", mode="flip")   # the first read returns a flipped byte
    store.break_list(after_items=10)               # list yields 10 objects, then raises
    store.drop_deletes = True                      # delete says yes and keeps the object

Randomness (which calls fail at ``fail_rate``, which byte is flipped) comes from one
``random.Random(seed)``, so a failing test can be replayed.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Union

from backupkit.errors import ObjectNotFound, StoreUnavailable
from backupkit.store.base import ObjectInfo, ObjectStore
from backupkit.store.retry import REQUEST_KINDS

OPS = ("get", "get_range", "put", "put_if_absent", "delete", "list", "stat")
_KIND_OF_OP = {
    "get": "GET", "get_range": "GET_RANGE", "put": "PUT", "put_if_absent": "PUT",
    "delete": "DELETE", "list": "LIST", "stat": "HEAD",
}

#: A name filter: an exact name, or a predicate over names.
NameMatch = Union[str, Callable[[str], bool], None]
#: What a failing call raises: an exception class (built with a message) or instance.
ErrorSpec = Union[type[BaseException], BaseException]


def _matches(match: NameMatch, name: str) -> bool:
    if match is None:
        return True
    if isinstance(match, str):
        return match == name
    return bool(match(name))


def _make_error(error: ErrorSpec, message: str) -> BaseException:
    return error(message) if isinstance(error, type) else error


@dataclass
class _Rule:
    """One fault: fires on matching calls number ``nth`` .. ``nth + count - 1``."""

    ops: tuple[str, ...]
    name: NameMatch
    nth: int
    count: int
    seen: int = 0

    def hit(self, op: str, name: str) -> bool:
        """Count this call if it matches; True when the fault fires on it."""
        if op not in self.ops or not _matches(self.name, name):
            return False
        self.seen += 1
        return self.nth <= self.seen < self.nth + self.count


@dataclass
class _FailRule(_Rule):
    error: ErrorSpec = StoreUnavailable
    after: bool = False


@dataclass
class _CorruptRule(_Rule):
    mode: str = "flip"


@dataclass
class _ListRule(_Rule):
    after_items: int = 0
    error: ErrorSpec | None = StoreUnavailable  # None: end quietly (a lying listing)


class FaultyStore(ObjectStore):
    """Wraps ``inner`` and injects the faults configured on it.

    Args:
        inner: the store that does the real work.
        fail_rate: probability that a call of one of ``fail_ops`` raises
            StoreUnavailable before reaching ``inner``.
        fail_ops: the ops ``fail_rate`` applies to (default: all).
        seed: seeds the one RNG behind ``fail_rate`` and byte flips.
        drop_deletes: if True, ``delete`` reports success and keeps the object.
        lie_put_if_absent: if True, ``put_if_absent`` overwrites and returns True, like
            an S3-compatible store that ignores If-None-Match.

    Attributes:
        calls: how often each op was called (a Counter; faulty calls included).
        injected: how many faults fired in all.
    """

    def __init__(
        self,
        inner: ObjectStore,
        *,
        fail_rate: float = 0.0,
        fail_ops: tuple[str, ...] = OPS,
        seed: int = 0,
        drop_deletes: bool = False,
        lie_put_if_absent: bool = False,
    ) -> None:
        unknown = set(fail_ops) - set(OPS)
        if unknown:
            raise ValueError(f"unknown ops: {sorted(unknown)}")
        self.inner = inner
        self.location = inner.location
        self.fail_rate = fail_rate
        self.fail_ops = tuple(fail_ops)
        self.drop_deletes = drop_deletes
        self.lie_put_if_absent = lie_put_if_absent
        self.calls: Counter[str] = Counter()
        self.injected = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._fail_rules: list[_FailRule] = []
        self._corrupt_rules: list[_CorruptRule] = []
        self._list_rules: list[_ListRule] = []
        self._hook: Callable[[str, str], None] | None = None

    # -- configuring faults ---------------------------------------------------------------

    def fail_call(
        self,
        op: str | tuple[str, ...],
        nth: int = 1,
        *,
        count: int = 1,
        name: NameMatch = None,
        error: ErrorSpec = StoreUnavailable,
        after: bool = False,
    ) -> None:
        """Make matching calls ``nth`` .. ``nth + count - 1`` (1-based) of ``op`` raise.

        Args:
            op: an op, or a tuple of ops that share one call count.
            nth: the first matching call that fails.
            count: how many consecutive matching calls fail (a large number: all).
            name: only calls on this name (or names this predicate accepts) count.
            error: what is raised: a class (given a message) or an instance; a
                BaseException such as KeyboardInterrupt models a crash.
            after: perform the call on ``inner`` first, then raise (the work happened
                but the caller never heard: a lost response).
        """
        ops = (op,) if isinstance(op, str) else tuple(op)
        self._check_ops(ops)
        with self._lock:
            self._fail_rules.append(_FailRule(ops, name, nth, count, error=error, after=after))

    def corrupt_reads(
        self, name: NameMatch = None, *, mode: str = "flip", nth: int = 1, count: int = 1
    ) -> None:
        """Damage what matching ``get``/``get_range`` calls ``nth`` .. return.

        The stored object is untouched, so a retry can read it intact (restic
        ``errorOnceBackend``); use a large ``count`` for damage that persists.

        Args:
            name: which objects (exact name or predicate); None for all.
            mode: ``"flip"`` inverts one byte at a seeded random position;
                ``"truncate"`` returns the first half.
            nth: the first matching read that is damaged (1-based).
            count: how many matching reads are damaged.
        """
        if mode not in ("flip", "truncate"):
            raise ValueError(f"unknown corruption mode {mode!r}")
        with self._lock:
            self._corrupt_rules.append(
                _CorruptRule(("get", "get_range"), name, nth, count, mode=mode)
            )

    def break_list(
        self,
        *,
        after_items: int = 0,
        prefix: str | None = None,
        nth: int = 1,
        count: int = 1,
        error: ErrorSpec | None = StoreUnavailable,
    ) -> None:
        """Make matching ``list`` calls stop after ``after_items`` objects.

        Args:
            after_items: how many objects are yielded before the fault.
            prefix: only listings of exactly this prefix count; None for all.
            nth: the first matching listing that breaks (1-based).
            count: how many matching listings break.
            error: raised at the break; None ends the listing quietly, like a backend
                that reports a cut-short or empty listing as complete (restic #4612).
        """
        with self._lock:
            self._list_rules.append(
                _ListRule(("list",), prefix, nth, count, after_items=after_items, error=error)
            )

    def set_hook(self, hook: Callable[[str, str], None] | None) -> None:
        """Call ``hook(op, name)`` before every call reaches ``inner``; it may raise."""
        self._hook = hook

    def clear(self) -> None:
        """Remove every fault rule and the hook; turn off fail_rate, drops and lies."""
        with self._lock:
            self._fail_rules.clear()
            self._corrupt_rules.clear()
            self._list_rules.clear()
            self._hook = None
            self.fail_rate = 0.0
            self.drop_deletes = False
            self.lie_put_if_absent = False

    # -- plumbing -------------------------------------------------------------------------

    @staticmethod
    def _check_ops(ops: tuple[str, ...]) -> None:
        unknown = set(ops) - set(OPS)
        if unknown:
            raise ValueError(f"unknown ops: {sorted(unknown)}")

    def _enter(self, op: str, name: str) -> BaseException | None:
        """Count the call and raise a fault due before it; return one due after it."""
        before: BaseException | None = None
        after: BaseException | None = None
        with self._lock:
            self.calls[op] += 1
            for rule in self._fail_rules:
                if rule.hit(op, name):
                    err = _make_error(rule.error, f"injected fault: {op} {name}")
                    if rule.after:
                        after = after or err
                    else:
                        before = before or err
            if (
                before is None
                and self.fail_rate
                and op in self.fail_ops
                and self._rng.random() < self.fail_rate
            ):
                before = StoreUnavailable(f"injected fault: {op} {name} (random)")
            if before is not None or after is not None:
                self.injected += 1
            hook = self._hook
        if hook is not None:
            hook(op, name)
        if before is not None:
            raise before
        return after

    def _damage(self, op: str, name: str, data: bytes) -> bytes:
        with self._lock:
            hits = [r for r in self._corrupt_rules if r.hit(op, name)]
            if not hits:
                return data
            self.injected += 1
            if hits[0].mode == "truncate":
                return data[: len(data) // 2]
            if not data:
                return data
            damaged = bytearray(data)
            damaged[self._rng.randrange(len(data))] ^= 0xFF
            return bytes(damaged)

    # -- the contract -----------------------------------------------------------------------

    @property  # type: ignore[override]
    def atomic_put_if_absent(self) -> bool:
        return self.inner.atomic_put_if_absent

    def probe_conditional_writes(self) -> bool:
        return self.inner.probe_conditional_writes()

    @property  # type: ignore[override]
    def request_bytes(self) -> int:
        return self.inner.request_bytes

    def remove_abandoned(self, older_than: float) -> int:
        return self.inner.remove_abandoned(older_than)

    def get(self, name: str, max_size: int | None = None) -> bytes:
        after = self._enter("get", name)
        data = self.inner.get(name, max_size=max_size)
        if after is not None:
            raise after
        return self._damage("get", name, data)

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        after = self._enter("get_range", name)
        data = self.inner.get_range(name, offset, length)
        if after is not None:
            raise after
        return self._damage("get_range", name, data)

    def put(self, name: str, data: bytes) -> None:
        after = self._enter("put", name)
        self.inner.put(name, data)
        if after is not None:
            raise after

    def put_if_absent(self, name: str, data: bytes) -> bool:
        after = self._enter("put_if_absent", name)
        if self.lie_put_if_absent:
            self.inner.put(name, data)
            created = True
        else:
            created = self.inner.put_if_absent(name, data)
        if after is not None:
            raise after
        return created

    def delete(self, name: str) -> None:
        after = self._enter("delete", name)
        if self.drop_deletes:
            if not self.inner.exists(name):
                raise ObjectNotFound(f"object {name} not found")
        else:
            self.inner.delete(name)
        if after is not None:
            raise after

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        after = self._enter("list", prefix)
        with self._lock:
            hits = [r for r in self._list_rules if r.hit("list", prefix)]
            rule = hits[0] if hits else None
            if rule is not None:
                self.injected += 1
        for i, info in enumerate(self.inner.list(prefix)):
            if rule is not None and i >= rule.after_items:
                break
            yield info
        if rule is not None and rule.error is not None:
            raise _make_error(rule.error, f"injected fault: list {prefix} broke")
        if after is not None:
            raise after

    def stat(self, name: str) -> ObjectInfo:
        after = self._enter("stat", name)
        info = self.inner.stat(name)
        if after is not None:
            raise after
        return info

    def stats(self) -> dict[str, int]:
        """The inner store's ``stats()`` plus ``faults_injected``; for an inner store that
        counts nothing, the calls made through this wrapper, by request kind."""
        inner = self.inner.stats()
        if inner is None:
            inner = dict.fromkeys(REQUEST_KINDS, 0)
            for op, n in self.calls.items():
                kind = _KIND_OF_OP[op]
                inner[kind] = inner.get(kind, 0) + n
        result: dict[str, int] = dict(inner)
        result["faults_injected"] = self.injected
        return result

    def close(self) -> None:
        self.inner.close()
