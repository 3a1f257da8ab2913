"""Retention policy for ``bk forget``: which snapshots to keep, and why.

A pure function of snapshot metadata: no repository, no I/O, no printing. The
semantics are restic's ``forget`` (``internal/data/snapshot_policy.go``,
``snapshot_group.go``, ``snapshot_find.go``, ``doc/060_forget.rst``), reproduced
exactly unless a comment says otherwise.

Vocabulary:

    snapshot info   The few fields of a snapshot the policy looks at
                    (:class:`SnapshotInfo`): id, time, host, paths, tags.
    filter          ``--host`` / ``--tag`` / ``--path``: which snapshots forget
                    considers at all. Snapshots that do not match are neither kept
                    nor removed; they are simply not part of the plan.
    group           Snapshots sharing a :class:`GroupKey` (host, paths and/or tags,
                    as chosen by ``--group-by``). The policy is applied to each
                    group on its own.
    keep rule       One ``--keep-*`` option. A snapshot is kept if any rule keeps
                    it (the rules are OR'ed) and removed otherwise.
    count rule      ``--keep-last/-hourly/-daily/-weekly/-monthly/-yearly N``: the
                    newest snapshot of each of the N newest calendar buckets that
                    hold a snapshot. N = -1 (:data:`UNLIMITED`) means every bucket.
    within rule     ``--keep-within D``: every snapshot newer than the group's
                    newest snapshot minus D. ``--keep-within-daily D`` etc.: the
                    newest snapshot of every calendar bucket newer than that.
    tag rule        ``--keep-tag a,b``: every snapshot carrying all of a and b.
                    Several ``--keep-tag`` values are OR'ed.
    bucket          A calendar period a snapshot falls into: its hour, day, ISO
                    week, month or year, read from the snapshot's own wall clock
                    (the UTC offset it was recorded with). For keep-last every
                    snapshot is its own bucket.
    reason          Why a snapshot is kept, in restic's words ("daily snapshot",
                    "oldest monthly snapshot", "within 1y", "weekly within 1m",
                    "has tags [a, b]"). A snapshot kept by several rules lists
                    all of them, in rule order.

This module applies the rules (``apply_policy``, ``plan_forget``) and holds the
verdicts; the rules as given live in ``policy_keep.py``, the filter and the groups in
``policy_groups.py``. Every name is importable from here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from backupkit.errors import UsageError
from backupkit.policy_groups import (
    GroupKey,
    SnapshotInfo,
    filter_snapshots,
    group_snapshots,
    parse_group_by,
)
from backupkit.policy_keep import (
    UNLIMITED,
    Duration,
    KeepPolicy,
    parse_duration,
    parse_keep_count,
    parse_tag_list,
    tag_list_str,
)

__all__ = [
    "UNLIMITED",
    "Decision",
    "Duration",
    "GroupDecision",
    "GroupKey",
    "KeepPolicy",
    "SnapshotInfo",
    "apply_policy",
    "filter_snapshots",
    "group_snapshots",
    "parse_duration",
    "parse_group_by",
    "parse_keep_count",
    "parse_tag_list",
    "plan_forget",
]


# -------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Decision:
    """The verdict on one snapshot.

    Attributes:
        snapshot: The snapshot judged.
        keep: True to keep it, False to forget it.
        reasons: Why it is kept, one entry per matching rule, in rule order;
            empty for removed snapshots.
    """

    snapshot: SnapshotInfo
    keep: bool
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class GroupDecision:
    """The verdicts for one group, newest snapshot first."""

    key: GroupKey
    decisions: tuple[Decision, ...]

    @property
    def kept(self) -> tuple[SnapshotInfo, ...]:
        """Snapshots to keep, newest first."""
        return tuple(d.snapshot for d in self.decisions if d.keep)

    @property
    def removed(self) -> tuple[SnapshotInfo, ...]:
        """Snapshots to forget, newest first."""
        return tuple(d.snapshot for d in self.decisions if not d.keep)


# ------------------------------------------------------------------------- the policy

# How the rules are evaluated (restic ApplyPolicy, step for step).
#
# Snapshots are sorted newest first and visited once, in that order. Each count
# rule has a bucket function (hour, day, ISO week, month, year of the snapshot's
# own wall clock; for keep-last the position in the list) and remembers the
# bucket of the last snapshot it kept. A snapshot whose bucket differs from that
# is the newest of a new bucket: the rule keeps it and spends one of its N
# (unlimited never runs out). So "N daily" is "the newest snapshot of each of the
# N newest days that have a snapshot": days without a snapshot cost nothing,
# which is why a stalled backup never makes forget eat into old snapshots.
#
# The oldest snapshot of the group is special: while a rule still has counts
# left it keeps the oldest snapshot even if its bucket was already taken (reason
# "oldest <rule>"), so history is as long as possible while a young repository
# has not filled its N buckets yet (restic 0.16+, PRs #4366 and #5039).
#
# Within rules compare against the newest snapshot's time, not the clock:
# forget run a year late must not wipe everything. Snapshots dated after `now`
# are not used as "newest" (a clock error or a forged date cannot push all real
# snapshots out of range) but are within range themselves, so they are kept.
# keep-within keeps everything newer than newest - D; keep-within-<unit> runs a
# bucket rule without a count over the snapshots newer than newest - D, with
# the same oldest-snapshot rule.
#
# Tag rules are not counted and do not consume buckets. Every rule sees every
# snapshot, so one snapshot can collect several reasons; the rules are OR'ed.
#
# Ties in time are broken by id so the result never depends on input order
# (restic keeps the listing order, which is arbitrary).

_Bucket = tuple[int, ...]


def _position(_: datetime, nr: int) -> _Bucket:
    return (nr,)


def _hour(t: datetime, _: int) -> _Bucket:
    return (t.year, t.month, t.day, t.hour)


def _day(t: datetime, _: int) -> _Bucket:
    return (t.year, t.month, t.day)


def _iso_week(t: datetime, _: int) -> _Bucket:
    iso = t.isocalendar()
    return (iso.year, iso.week)


def _month(t: datetime, _: int) -> _Bucket:
    return (t.year, t.month)


def _year(t: datetime, _: int) -> _Bucket:
    return (t.year,)


_Bucketer = Callable[[datetime, int], _Bucket]

#: The bucket of a snapshot for each count field (``policy_keep.COUNT_FIELDS``); the
#: within-period rules use the same calendar buckets.
_BUCKET_OF: dict[str, _Bucketer] = {
    "last": _position, "hourly": _hour, "daily": _day, "weekly": _iso_week, "monthly": _month, "yearly": _year,
}


@dataclass
class _CountRule:
    count: int
    bucket_of: _Bucketer
    reason: str
    last: _Bucket | None = None


@dataclass
class _WithinRule:
    cutoff: datetime | None  # None: every snapshot is within
    duration: Duration
    bucket_of: _Bucketer
    reason: str
    last: _Bucket | None = None


def _newest_time(snaps: Sequence[SnapshotInfo], now: datetime) -> datetime | None:
    past = [sn.time for sn in snaps if sn.time < now]
    return max(past) if past else None


def _is_within(t: datetime, cutoff: datetime | None) -> bool:
    return cutoff is None or t > cutoff


def apply_policy(
    snaps: Iterable[SnapshotInfo], policy: KeepPolicy, now: datetime | None = None
) -> list[Decision]:
    """Decide for each snapshot of one group whether to keep it, and why.

    Args:
        snaps: The snapshots of one group, in any order.
        policy: The keep rules; must not be empty.
        now: The current time, only used to ignore snapshots dated in the future
            when finding the newest snapshot for within rules. Defaults to the
            system clock; pass it for reproducible results.

    Returns:
        One decision per snapshot, newest first (ties by id). An empty input
        gives an empty list. Unlike :func:`plan_forget`, this does not refuse a
        result that keeps nothing.

    Raises:
        UsageError: the policy is empty.
    """
    if policy.is_empty():
        raise UsageError("refusing to forget: no keep rule given")
    ordered = sorted(sorted(snaps, key=lambda sn: sn.id), key=lambda sn: sn.time, reverse=True)
    if not ordered:
        return []
    if now is None:
        now = datetime.now(timezone.utc)
    elif now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")

    count_rules = [_CountRule(n, _BUCKET_OF[name], f"{name} snapshot") for name, n in policy.counts() if n != 0]
    newest = _newest_time(ordered, now)

    def cutoff(d: Duration) -> datetime | None:
        return None if newest is None else d.before(newest)

    within_rules = [
        _WithinRule(cutoff(d), d, _BUCKET_OF[period], f"{period} within")
        for period, d in policy.withins()
        if d is not None and not d.is_zero()
    ]
    within = policy.within if policy.within is not None and not policy.within.is_zero() else None
    within_cutoff = cutoff(within) if within is not None else None

    decisions = []
    oldest = len(ordered) - 1
    for nr, sn in enumerate(ordered):
        reasons = [f"has tags {tag_list_str(t)}" for t in policy.tags if sn.has_tags(t)]
        if within is not None and _is_within(sn.time, within_cutoff):
            reasons.append(f"within {within}")
        for rule in count_rules:
            if rule.count == 0:
                continue  # all N buckets spent
            bucket = rule.bucket_of(sn.time, nr)
            if bucket != rule.last or nr == oldest:
                prefix = "oldest " if bucket == rule.last else ""
                reasons.append(prefix + rule.reason)
                rule.last = bucket
                if rule.count > 0:
                    rule.count -= 1
        for wrule in within_rules:
            if not _is_within(sn.time, wrule.cutoff):
                continue
            bucket = wrule.bucket_of(sn.time, nr)
            if bucket != wrule.last or nr == oldest:
                prefix = "oldest " if bucket == wrule.last else ""
                reasons.append(f"{prefix}{wrule.reason} {wrule.duration}")
                wrule.last = bucket
        decisions.append(Decision(snapshot=sn, keep=bool(reasons), reasons=tuple(reasons)))
    return decisions


def plan_forget(
    snaps: Iterable[SnapshotInfo],
    policy: KeepPolicy,
    group_by: Iterable[str] = frozenset({"host", "paths"}),
    hosts: Iterable[str] = (),
    tags: Iterable[str | Sequence[str]] = (),
    paths: Iterable[str] = (),
    now: datetime | None = None,
) -> list[GroupDecision]:
    """Plan a policy-driven ``bk forget``: filter, group, apply the policy per group.

    Snapshots excluded by the filters appear in no group: they are not touched.

    Args:
        snaps: All snapshots of the repository.
        policy: The keep rules; must not be empty.
        group_by: Fields to group by (see :func:`group_snapshots`); restic's
            default is host and paths.
        hosts: ``--host`` filter (see :func:`filter_snapshots`).
        tags: ``--tag`` filter.
        paths: ``--path`` filter.
        now: See :func:`apply_policy`.

    Returns:
        One :class:`GroupDecision` per group, in key order.

    Raises:
        UsageError: the policy is empty, or it would remove every snapshot of a
            group (possible with ``--keep-tag`` alone); restic refuses both.
    """
    if policy.is_empty():
        raise UsageError("refusing to forget: no keep rule given")
    if now is None:
        now = datetime.now(timezone.utc)
    selected = filter_snapshots(snaps, hosts=hosts, tags=tags, paths=paths)
    plan = []
    for key, members in group_snapshots(selected, group_by).items():
        decisions = tuple(apply_policy(members, policy, now=now))
        if not any(d.keep for d in decisions):
            raise UsageError(f'refusing to delete last snapshot of snapshot group "{key}"')
        plan.append(GroupDecision(key=key, decisions=decisions))
    return plan
