"""What the repair managers share: their base class, deleting objects, the result JSON.

See ``repair_index.py``, ``repair_packs.py`` and ``repair_snapshots.py``; each plans, then
executes, under the exclusive lock its caller holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from backupkit.managers.base import Manager, PhaseReporter
from backupkit.repo.repository import Repository


def delete_objects(repo: Repository, names: Iterable[str], reporter: PhaseReporter | None = None) -> int:
    """Delete objects (and cached copies) through the repository; returns how many."""
    return repo.delete_objects(names, (lambda _n: reporter.advance(1)) if reporter is not None else None)


class RepairManager(Manager):
    """What every repair manager starts with: the repository, a reporter of phases
    (``base.PhaseReporter``), the lock check."""


def result_json(result: Any, **fields: Any) -> dict:
    """A repair result as JSON: ``dry_run``, the ``plan``, the verb's own ``fields``, ``seconds``."""
    return {"dry_run": result.dry_run, "plan": result.plan.to_json(), **fields, "seconds": round(result.seconds, 3)}
