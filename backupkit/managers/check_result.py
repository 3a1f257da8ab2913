"""What ``bk check`` is asked and what it answers: options, findings, the result, progress.

Vocabulary as in ``check.py``: a *finding* is one problem or remark as data, with a
*severity* (``error``, ``warning``, ``info``); the result holds the findings, errors
first. The checking itself is in ``check.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from backupkit.reporters import silent
from backupkit.managers.base import PhaseReporter
from backupkit.managers.json_fields import json_fields

ERROR = "error"
WARNING = "warning"
INFO = "info"
SEVERITY_ORDER = {ERROR: 0, WARNING: 1, INFO: 2}


@dataclass(frozen=True)
class Finding:
    """One thing check found.

    Attributes:
        severity: ``error``, ``warning`` or ``info``.
        kind: a stable machine-readable name (see docs/lifecycle.md).
        object: the store object or blob concerned (``data/3f/3f..``, ``blob 3fab..``).
        message: one human-readable line.
        snapshots: ids of the snapshots affected, sorted.
        paths: (snapshot id, path) pairs affected, sorted; the path is ``None`` when a
            tree node is lost and the paths below it are unknown.
    """

    severity: str
    kind: str
    object: str
    message: str
    snapshots: tuple[str, ...] = ()
    paths: tuple[tuple[str, str | None], ...] = ()

    def to_json(self) -> dict:
        return json_fields(self, paths=[{"snapshot": s, "path": p} for s, p in self.paths])


@dataclass(frozen=True)
class CheckOptions:
    #: download every pack and verify every blob (not only the index and the snapshots)
    read_data: bool = False
    #: ``n/t`` (group n of t, by pack id) or ``x%`` (a random x% of the packs); implies read_data
    read_data_subset: str | None = None
    #: seed for ``x%`` (None: random)
    seed: int | None = None


@dataclass(frozen=True)
class CheckResult:
    """What ``bk check`` found, and how much it looked at."""

    #: every problem found, errors and warnings
    findings: tuple[Finding, ...]
    #: what was checked: snapshots, index objects, indexed packs and blobs
    snapshots: int
    index_objects: int
    packs: int
    blobs: int
    #: packs downloaded and verified (``read_data``), and their bytes
    packs_read: int
    bytes_read: int
    seconds: float

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == ERROR)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict:
        return {"ok": self.ok, "errors": len(self.errors), **json_fields(self, seconds=round(self.seconds, 3))}


class CheckReporter(PhaseReporter, Protocol):
    """Check's phases, and each finding as it is made."""

    def finding(self, finding: Finding) -> None: ...


NullCheckReporter = silent(CheckReporter)
