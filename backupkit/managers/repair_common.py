"""What the repair managers share: their base class, deleting objects, their results' JSON.

See ``repair_index.py``, ``repair_packs.py`` and ``repair_snapshots.py``; each plans, then
executes, under the exclusive lock its caller holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from typing import Any

from backupkit.managers.base import Manager, PhaseReporter
from backupkit.managers.json_fields import json_fields
from backupkit.repo.repository import Repository


def delete_objects(repo: Repository, names: Iterable[str], reporter: PhaseReporter | None = None) -> int:
    """Delete objects (and cached copies) through the repository; returns how many."""
    return repo.delete_objects(names, (lambda _n: reporter.advance(1)) if reporter is not None else None)


class RepairManager(Manager[PhaseReporter]):
    """What every repair manager starts with: the repository, a reporter of phases
    (``base.PhaseReporter``), the lock check."""


class RepairResult:
    """The ``to_json`` of every repair result (a frozen dataclass with a ``plan``, the
    verb's own fields, ``seconds`` and ``dry_run``): ``dry_run``, the ``plan``, the own
    fields in their order, ``seconds``."""

    plan: Any
    seconds: float
    dry_run: bool

    def to_json(self) -> dict:
        own = [f.name for f in fields(self) if f.name not in ("plan", "seconds", "dry_run")]  # type: ignore[arg-type]
        return json_fields(self, "dry_run", "plan", *own, "seconds", seconds=round(self.seconds, 3))
