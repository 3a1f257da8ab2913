"""What managers share: how a manager starts, the progress of phased verbs, and the
snapshot selection of the verbs that work on chosen snapshots.

``Manager`` holds the repository, a reporter (the class's do-nothing one when none is
given) and the lock check, which every manager reaches the same way: the callable given,
else ``Repository.check_lock`` (installed by whoever took the lock; a no-op without one).

``SnapshotSelection`` is the ``refs``/``hosts``/``tags``/``paths`` part of an options
dataclass (keyword-only, so a verb's own fields keep their positions), and
``select_snapshots`` turns it into snapshots through the one snapshot filter.
``ContentReading`` is likewise the ``connections`` of the verbs that read file contents.

``TrieReader`` starts the verbs that only read the tries of chosen snapshots (find,
stats): the repository, every snapshot as the caller listed them, and a trie reader
with the verb's node cache.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from backupkit.reporters import silent
from backupkit.repo.repository import Repository
from backupkit.snapshot import Snapshot, filter_snapshots, list_snapshots, resolve_ref
from backupkit.tree import make_hamt


class PhaseReporter(Protocol):
    """Progress in phases (prune, check, the repairs): a phase starts (total units or None), then advances."""

    def phase(self, name: str, total: int | None) -> None: ...
    def advance(self, n: int = 1) -> None: ...


NullPhaseReporter = silent(PhaseReporter)


def lock_checker(repo: Repository, lock_check: Callable[[], None] | None) -> Callable[[], None]:
    """What raises if our lock was lost: the given callable, else the repository's
    (``Repository.check_lock``, installed by whoever took the lock)."""
    return lock_check if lock_check is not None else repo.check_lock


R = TypeVar("R")


class Manager(Generic[R]):
    """The repository, a reporter (of the Protocol ``R``) and the lock check; a subclass
    names its do-nothing reporter in ``null_reporter`` and calls ``self.lock_check()``
    right before it publishes or deletes anything."""

    null_reporter: ClassVar[Callable[[], Any]] = NullPhaseReporter

    def __init__(self, repo: Repository, reporter: R | None = None, lock_check: Callable[[], None] | None = None) -> None:
        self.repo = repo
        self.reporter: R = reporter or self.null_reporter()
        self.lock_check = lock_checker(repo, lock_check)


@dataclass(frozen=True, kw_only=True)
class SnapshotSelection:
    """Which snapshots a verb works on: the given refs (ids, prefixes, ``latest``), or
    without refs every snapshot the host, tag and path filters select."""

    refs: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ContentReading:
    """The part of an options dataclass of a verb that reads file contents (restore,
    dump, copy): how many store reads its ``ContentReader`` keeps in flight."""

    connections: int = 8


def select_snapshots(repo: Repository, sel: SnapshotSelection, snaps: list[Snapshot] | None = None) -> list[Snapshot]:
    """Without ``sel.refs``: every snapshot the filters select. With them: the snapshots
    they name, ``latest`` among those the filters select, an id or prefix whatever the
    filters say (restic's rule, as ``cli/select.py``). Oldest first, each once.
    ``snaps``: every snapshot, as the caller listed them (the CLI lists without
    rewriting a stale catalog under ``--no-lock``); None: listed here."""
    if snaps is None:
        snaps = list_snapshots(repo)
    pool = filter_snapshots(snaps, sel.hosts, sel.tags, sel.paths)
    if not sel.refs:
        return pool
    chosen = {}
    for ref in sel.refs:
        s = resolve_ref(pool if ref == "latest" else snaps, ref)
        chosen[s.id] = s
    return sorted(chosen.values(), key=lambda s: (s.time_ns, s.id))


class TrieReader:
    """A verb that reads the tries of chosen snapshots and writes nothing (find, stats).

    ``snapshots``: every snapshot of ``repo`` as the caller listed them (None: listed
    here, repairing a stale catalog; ``select_snapshots``). A subclass sizes the trie
    node cache of ``self.hamt`` in ``node_cache``."""

    node_cache: ClassVar[int] = 1 << 16

    def __init__(self, repo: Repository, snapshots: list[Snapshot] | None = None) -> None:
        self.repo = repo
        self.all_snapshots = snapshots
        self.hamt = make_hamt(repo, cache_size=self.node_cache)

    def every_snapshot(self) -> list[Snapshot]:
        """Every snapshot of the repository: as the caller listed them, else listed now."""
        return list_snapshots(self.repo) if self.all_snapshots is None else self.all_snapshots
