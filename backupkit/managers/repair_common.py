"""What the repair managers share: the progress protocol and deleting objects.

See ``repair_index.py``, ``repair_packs.py`` and ``repair_snapshots.py``; each plans, then
executes, under the exclusive lock its caller holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from backupkit.repo.repository import Repository


class RepairReporter(Protocol):
    """Progress of a repair: a phase starts (total units or None), then advances."""

    def phase(self, name: str, total: int | None) -> None: ...
    def advance(self, n: int = 1) -> None: ...


class NullRepairReporter:
    def phase(self, name: str, total: int | None) -> None: ...
    def advance(self, n: int = 1) -> None: ...


def delete_objects(repo: Repository, names: Iterable[str], reporter: RepairReporter | None = None) -> int:
    """Delete objects (and cached copies) through the repository; returns how many."""
    return repo.delete_objects(names, (lambda _n: reporter.advance(1)) if reporter is not None else None)


def lock_checker(repo: Repository, lock_check: Callable[[], None] | None) -> Callable[[], None]:
    """What raises if our exclusive lock was lost: the given callable, else the
    repository's (``Repository.check_lock``, installed by whoever took the lock)."""
    return lock_check if lock_check is not None else repo.check_lock


class RepairManager:
    """What every repair manager starts with: the repository, a reporter, the lock check."""

    def __init__(
        self, repo: Repository, reporter: RepairReporter | None = None, lock_check: Callable[[], None] | None = None
    ) -> None:
        self.repo = repo
        self.reporter = reporter or NullRepairReporter()
        self.lock_check = lock_checker(repo, lock_check)


def result_json(result: Any, **fields: Any) -> dict:
    """A repair result as JSON: ``dry_run``, the ``plan``, the verb's own ``fields``, ``seconds``."""
    return {"dry_run": result.dry_run, "plan": result.plan.to_json(), **fields, "seconds": round(result.seconds, 3)}
