"""Forget: remove snapshots by id, or by a retention policy (``backupkit.policy``).

Vocabulary (see ``policy`` for the rules themselves):
    refs        snapshot references given explicitly (``bk forget 1a2b 3c4d``). Without
                a policy they are all removed; with one, the policy decides among them
                (restic's behaviour).
    group       snapshots the policy judges together (``--group-by``); the result
                lists each group with the snapshots kept, the reasons, and the removed.

Only snapshot objects and the catalog change here; the data stays until ``prune``.
A policy that would remove every snapshot of a group is refused (``plan_forget``)
unless explicit refs were given.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from backupkit.reporters import silent
from backupkit.errors import BadArgument
from backupkit.managers.base import Manager, SnapshotSelection
from backupkit.managers.json_fields import json_fields
from backupkit.policy import (
    GroupKey,
    KeepPolicy,
    apply_policy,
    group_snapshots,
    plan_forget,
)
from backupkit.snapshot import Snapshot, list_snapshots, remove_snapshots, select_snapshot, snapshot_info

DEFAULT_GROUP_BY = frozenset({"host", "paths"})


@dataclass(frozen=True)
class ForgetOptions(SnapshotSelection):
    """What to forget. ``policy`` None (or empty) means "only the refs". As in restic,
    the host, tag and path filters apply to the refs too (each ref must match them)."""

    policy: KeepPolicy | None = None
    group_by: frozenset[str] = DEFAULT_GROUP_BY
    dry_run: bool = False
    #: the current time for within rules (None: the clock)
    now: datetime | None = None


@dataclass(frozen=True)
class Kept:
    snapshot: Snapshot
    reasons: tuple[str, ...]

    def to_json(self) -> dict:
        return dict(self.snapshot.to_json(), reasons=list(self.reasons))


@dataclass(frozen=True)
class ForgetGroup:
    """One group's verdict, newest first. ``key`` is None for explicit refs without a policy."""

    key: GroupKey | None
    kept: tuple[Kept, ...]
    removed: tuple[Snapshot, ...]

    def to_json(self) -> dict:
        k = self.key
        return {
            "group": None if k is None else k.to_json(),
            "keep": [kp.to_json() for kp in self.kept],
            "remove": [s.to_json() for s in self.removed],
        }


@dataclass(frozen=True)
class ForgetResult:
    #: each group's verdict (one group without a key for explicit refs)
    groups: tuple[ForgetGroup, ...]
    #: every snapshot removed (or, with dry_run, that would be)
    removed: tuple[Snapshot, ...]
    #: the policy in words (``keep 7 daily, 4 weekly snapshots``), or "remove the given
    #: snapshots" without one
    policy: str
    dry_run: bool

    def to_json(self) -> dict:
        return json_fields(self, "policy", "dry_run", "groups", "removed")


class ForgetReporter(Protocol):
    def removed(self, snapshot: Snapshot) -> None: ...


NullForgetReporter = silent(ForgetReporter)


class ForgetManager(Manager[ForgetReporter]):
    """Plans and applies one forget. The caller holds the exclusive lock."""

    null_reporter = NullForgetReporter

    def plan(self, opts: ForgetOptions) -> tuple[ForgetGroup, ...]:
        """Decide what to keep and remove, reading only."""
        policy = opts.policy if opts.policy is not None and not opts.policy.is_empty() else None
        snaps = list_snapshots(self.repo)
        by_id = {s.id: s for s in snaps}
        if opts.refs:
            chosen: dict[str, Snapshot] = {}
            for ref in opts.refs:
                s = select_snapshot(snaps, ref, opts.hosts, opts.tags, opts.paths)
                chosen[s.id] = s
            if policy is None:
                ordered = sorted(chosen.values(), key=lambda s: (s.time_ns, s.id), reverse=True)
                return (ForgetGroup(None, (), tuple(ordered)),)
            groups = []
            for key, members in group_snapshots([snapshot_info(s) for s in chosen.values()], opts.group_by).items():
                decisions = apply_policy(members, policy, now=opts.now)
                groups.append(self._group(key, decisions, by_id))
            return tuple(groups)
        if policy is None:
            raise BadArgument("nothing to forget: give snapshot ids or at least one --keep-* rule")
        plan = plan_forget(
            [snapshot_info(s) for s in snaps],
            policy,
            group_by=opts.group_by,
            hosts=opts.hosts,
            tags=opts.tags,
            paths=opts.paths,
            now=opts.now,
        )
        return tuple(self._group(g.key, g.decisions, by_id) for g in plan)

    @staticmethod
    def _group(key: GroupKey, decisions, by_id: dict[str, Snapshot]) -> ForgetGroup:
        kept = tuple(Kept(by_id[d.snapshot.id], d.reasons) for d in decisions if d.keep)
        removed = tuple(by_id[d.snapshot.id] for d in decisions if not d.keep)
        return ForgetGroup(key, kept, removed)

    def run(self, opts: ForgetOptions) -> ForgetResult:
        """Plan, then (unless ``dry_run``) delete the removed snapshots and update the catalog."""
        groups = self.plan(opts)
        removed = tuple(s for g in groups for s in g.removed)
        if removed and not opts.dry_run:
            self.lock_check()  # raises if our exclusive lock was lost
            remove_snapshots(self.repo, [s.id for s in removed])
            for s in removed:
                self.reporter.removed(s)
        policy = str(opts.policy) if opts.policy is not None and not opts.policy.is_empty() else "remove the given snapshots"
        return ForgetResult(groups, removed, policy, opts.dry_run)
