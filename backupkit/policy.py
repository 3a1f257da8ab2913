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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from backupkit.errors import BadArgument, UsageError

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

UNLIMITED = -1
"""Count for a keep-N rule that keeps every bucket (restic's ``unlimited``)."""

GROUP_BY_FIELDS = frozenset({"host", "paths", "tags"})
_GROUP_BY_ALIASES = {
    "host": "host",
    "hosts": "host",
    "path": "paths",
    "paths": "paths",
    "tag": "tags",
    "tags": "tags",
}


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class SnapshotInfo:
    """What the policy needs to know of a snapshot.

    Attributes:
        id: The snapshot id, lowercase hex.
        time: When the snapshot was taken; must be timezone-aware. Calendar
            buckets use this value's own wall clock, as restic does.
        host: Host name recorded in the snapshot.
        paths: Backed-up paths as recorded (not necessarily sorted).
        tags: Tags of the snapshot (not necessarily sorted).
    """

    id: str
    time: datetime
    host: str
    paths: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.time.tzinfo is None or self.time.utcoffset() is None:
            raise ValueError(f"snapshot {self.id}: time must be timezone-aware")

    def has_tags(self, tag_list: Sequence[str]) -> bool:
        """True if the snapshot carries every tag of ``tag_list``.

        The empty tag ``""`` matches a snapshot without any tags (restic's
        ``--tag ''`` / ``--keep-tag ''``). Like restic, tags are checked in order
        and an empty tag met on an untagged snapshot decides at once.
        """
        for tag in tag_list:
            if tag == "" and not self.tags:
                return True
            if tag not in self.tags:
                return False
        return True


@dataclass(frozen=True)
class Duration:
    """A calendar duration as restic writes it: ``1y2m3d4h``.

    Years, months and days are calendar steps (going back one month from
    31 March lands on 3 March, Go's ``AddDate`` normalisation); hours are
    absolute. All fields zero means "not set".
    """

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    def __post_init__(self) -> None:
        if min(self.years, self.months, self.days, self.hours) < 0:
            raise BadArgument(f"negative durations are not allowed: {self}")

    def is_zero(self) -> bool:
        """True if every field is zero (the rule is not set)."""
        return self.years == 0 and self.months == 0 and self.days == 0 and self.hours == 0

    def before(self, t: datetime) -> datetime | None:
        """The instant this duration before ``t``; None if before year 1.

        None means "earlier than any representable time", so every snapshot
        counts as within the duration (restic's time arithmetic does not
        overflow there either: ``--keep-within-yearly 9999y`` keeps all years).
        """
        month0 = t.month - 1 - self.months
        year = t.year - self.years + month0 // 12
        try:
            first = t.replace(year=year, month=month0 % 12 + 1, day=1)
            shifted = first + timedelta(days=t.day - 1 - self.days)
            return shifted.astimezone(timezone.utc) - timedelta(hours=self.hours)
        except (ValueError, OverflowError):
            return None

    def __str__(self) -> str:
        parts = [(self.years, "y"), (self.months, "m"), (self.days, "d"), (self.hours, "h")]
        return "".join(f"{n}{unit}" for n, unit in parts if n) or "0h"


def parse_duration(s: str) -> Duration:
    """Parse a restic duration such as ``"1y2m3d4h"`` or ``"7d"``.

    Units are ``y`` (years), ``m`` (months), ``d`` (days) and ``h`` (hours), each
    preceded by a decimal number, in any order. Surrounding whitespace is ignored.

    Raises:
        UsageError: empty input, a number without unit, an unknown unit, a
            negative number, or a unit given twice. (restic accepts the last two,
            and an empty string as "not set"; the forget command rejects
            negatives anyway, and a repeated unit is almost surely a typo.)
    """
    text = s.strip()
    if not text:
        raise BadArgument("empty duration; expected e.g. 1y2m3d4h")
    values: dict[str, int] = {}
    i = 0
    while i < len(text):
        start = i
        while i < len(text) and text[i] in "0123456789":
            i += 1
        if i == start:
            raise BadArgument(f"invalid duration {s!r}: expected a number at {text[start:]!r}")
        number = int(text[start:i])
        if i == len(text):
            raise BadArgument(f"invalid duration {s!r}: no unit after number {number}")
        unit = text[i]
        if unit not in "ymdh":
            raise BadArgument(f"invalid duration {s!r}: unknown unit {unit!r} (use y, m, d, h)")
        if unit in values:
            raise BadArgument(f"invalid duration {s!r}: unit {unit!r} given twice")
        values[unit] = number
        i += 1
    return Duration(
        years=values.get("y", 0),
        months=values.get("m", 0),
        days=values.get("d", 0),
        hours=values.get("h", 0),
    )


def parse_keep_count(s: str) -> int:
    """Parse a ``--keep-last/-daily/...`` value: a non-negative integer or ``unlimited``.

    Raises:
        UsageError: anything else (restic: "negative values not allowed, use
            'unlimited' instead").
    """
    text = s.strip()
    if text == "unlimited":
        return UNLIMITED
    try:
        value = int(text, 10)
    except ValueError:
        raise BadArgument(f"invalid count {s!r}: expected a number or 'unlimited'") from None
    if value < 0:
        raise BadArgument("negative values not allowed, use 'unlimited' instead")
    return value


def parse_tag_list(s: str) -> tuple[str, ...]:
    """Split one ``--tag`` / ``--keep-tag`` value ``"a, b"`` into ``("a", "b")``.

    As in restic, whitespace around each tag is stripped and ``""`` yields
    ``("",)``, the tag list that matches untagged snapshots.
    """
    return tuple(t.strip() for t in s.split(","))


def parse_group_by(s: str) -> frozenset[str]:
    """Parse ``--group-by``: comma-separated ``host``, ``paths``, ``tags``.

    The singular/plural spellings restic accepts (``hosts``, ``path``, ``tag``)
    are accepted too; ``""`` disables grouping.

    Raises:
        UsageError: an unknown grouping option.
    """
    return _normalize_group_by(s.split(","))


def _normalize_group_by(options: Iterable[str]) -> frozenset[str]:
    if isinstance(options, str):
        options = options.split(",")
    fields = set()
    for option in options:
        if option == "":
            continue
        if option not in _GROUP_BY_ALIASES:
            raise BadArgument(f"unknown grouping option: {option!r}")
        fields.add(_GROUP_BY_ALIASES[option])
    return frozenset(fields)


@dataclass(frozen=True)
class KeepPolicy:
    """The ``--keep-*`` options of one forget run.

    Count fields: 0 = rule off, N > 0 = the N newest buckets, :data:`UNLIMITED`
    (-1) = every bucket. Duration fields: None or a zero duration = rule off.
    ``tags`` holds one tag list per ``--keep-tag`` option.

    Raises:
        UsageError: a count below -1.
    """

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: Duration | None = None
    within_hourly: Duration | None = None
    within_daily: Duration | None = None
    within_weekly: Duration | None = None
    within_monthly: Duration | None = None
    within_yearly: Duration | None = None
    tags: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        # A bare string would be iterated tag by tag as characters; read it as
        # the CLI value "a,b" instead, and freeze lists into tuples.
        tag_lists = tuple(
            parse_tag_list(t) if isinstance(t, str) else tuple(t) for t in self.tags
        )
        object.__setattr__(self, "tags", tag_lists)
        for name in ("last", "hourly", "daily", "weekly", "monthly", "yearly"):
            if getattr(self, name) < UNLIMITED:
                raise BadArgument(
                    f"keep-{name}: negative values other than -1 (unlimited) are not allowed"
                )

    def is_empty(self) -> bool:
        """True if no keep rule is set (restic ``ExpirePolicy.Empty``)."""
        counts = (self.last, self.hourly, self.daily, self.weekly, self.monthly, self.yearly)
        durations = (
            self.within,
            self.within_hourly,
            self.within_daily,
            self.within_weekly,
            self.within_monthly,
            self.within_yearly,
        )
        return (
            not self.tags
            and all(c == 0 for c in counts)
            and all(d is None or d.is_zero() for d in durations)
        )

    def __str__(self) -> str:
        """A one-line summary in restic's words, e.g. ``keep 7 daily, 4 weekly snapshots``."""
        counts = []
        for count, word in (
            (self.last, "latest"),
            (self.hourly, "hourly"),
            (self.daily, "daily"),
            (self.weekly, "weekly"),
            (self.monthly, "monthly"),
            (self.yearly, "yearly"),
        ):
            if count > 0:
                counts.append(f"{count} {word}")
            elif count == UNLIMITED:
                counts.append(f"all {word}")
        withins = [
            f"{word} snapshots within {d}"
            for d, word in (
                (self.within_hourly, "hourly"),
                (self.within_daily, "daily"),
                (self.within_weekly, "weekly"),
                (self.within_monthly, "monthly"),
                (self.within_yearly, "yearly"),
            )
            if d is not None and not d.is_zero()
        ]
        text = f"{', '.join(counts)} snapshots" if counts else ""
        if withins:
            text = ", ".join(([text] if text else []) + withins)
        if self.tags:
            lists = " ".join(_tag_list_str(t) for t in self.tags)
            text += (" and " if text else "") + f"all snapshots with tags [{lists}]"
        if self.within is not None and not self.within.is_zero():
            text += (" and " if text else "") + f"all snapshots within {self.within} of the newest"
        return f"keep {text}" if text else "remove"


def _tag_list_str(tags: Sequence[str]) -> str:
    return "[" + ", ".join(tags) + "]"


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


@dataclass(frozen=True, order=True)
class GroupKey:
    """What the snapshots of one group share.

    Fields not grouped by stay empty. ``paths`` and ``tags`` are sorted, so the
    order a backup listed them in does not split groups.
    """

    host: str = ""
    paths: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    def __str__(self) -> str:
        parts = []
        if self.host:
            parts.append(f"host {self.host}")
        if self.paths:
            parts.append(f"paths [{', '.join(self.paths)}]")
        if self.tags:
            parts.append(f"tags [{', '.join(self.tags)}]")
        return ", ".join(parts) if parts else "all snapshots"


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


# ------------------------------------------------------------------ filter and group


def filter_snapshots(
    snaps: Iterable[SnapshotInfo],
    hosts: Iterable[str] = (),
    tags: Iterable[str | Sequence[str]] = (),
    paths: Iterable[str] = (),
) -> list[SnapshotInfo]:
    """The snapshots matching restic's ``--host``, ``--tag`` and ``--path`` filters.

    Args:
        snaps: Snapshots to filter; order is preserved.
        hosts: Keep snapshots whose host is any of these (none given: any host).
        tags: Tag lists; keep snapshots that carry all tags of at least one list
            (none given: any tags). A string element is one ``--tag`` value and is
            split at commas, so ``["a,b", "c"]`` means "(a and b) or c".
        paths: Keep snapshots that contain every one of these paths exactly
            (callers make them absolute first, as restic's CLI does; a trailing
            slash is ignored).

    This is the one snapshot filter: ``snapshot.filter_snapshots`` (every command)
    and ``plan_forget`` both use it.
    """
    host_set = set(hosts)
    tag_lists = [parse_tag_list(t) if isinstance(t, str) else tuple(t) for t in tags]
    path_list = [p.rstrip("/") or "/" for p in paths]
    result = []
    for sn in snaps:
        if host_set and sn.host not in host_set:
            continue
        if tag_lists and not any(sn.has_tags(t) for t in tag_lists):
            continue
        if not all(p in sn.paths for p in path_list):
            continue
        result.append(sn)
    return result


def group_snapshots(
    snaps: Iterable[SnapshotInfo], group_by: Iterable[str]
) -> dict[GroupKey, list[SnapshotInfo]]:
    """Split snapshots into groups by the chosen fields.

    Args:
        snaps: Snapshots to group; each group keeps their order.
        group_by: A subset of ``{"host", "paths", "tags"}`` (restic's singular
            and plural spellings both work); empty puts everything in one group.

    Returns:
        Groups in key order (host, then paths, then tags).

    Raises:
        UsageError: an unknown field in ``group_by``.
    """
    fields = _normalize_group_by(group_by)
    groups: dict[GroupKey, list[SnapshotInfo]] = {}
    for sn in snaps:
        key = GroupKey(
            host=sn.host if "host" in fields else "",
            paths=tuple(sorted(sn.paths)) if "paths" in fields else (),
            tags=tuple(sorted(sn.tags)) if "tags" in fields else (),
        )
        groups.setdefault(key, []).append(sn)
    return {key: groups[key] for key in sorted(groups)}


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

    count_rules = [
        _CountRule(n, bucket_of, reason)
        for n, bucket_of, reason in (
            (policy.last, _position, "last snapshot"),
            (policy.hourly, _hour, "hourly snapshot"),
            (policy.daily, _day, "daily snapshot"),
            (policy.weekly, _iso_week, "weekly snapshot"),
            (policy.monthly, _month, "monthly snapshot"),
            (policy.yearly, _year, "yearly snapshot"),
        )
        if n != 0
    ]
    newest = _newest_time(ordered, now)

    def cutoff(d: Duration) -> datetime | None:
        return None if newest is None else d.before(newest)

    within_rules = [
        _WithinRule(cutoff(d), d, bucket_of, reason)
        for d, bucket_of, reason in (
            (policy.within_hourly, _hour, "hourly within"),
            (policy.within_daily, _day, "daily within"),
            (policy.within_weekly, _iso_week, "weekly within"),
            (policy.within_monthly, _month, "monthly within"),
            (policy.within_yearly, _year, "yearly within"),
        )
        if d is not None and not d.is_zero()
    ]
    within = policy.within if policy.within is not None and not policy.within.is_zero() else None
    within_cutoff = cutoff(within) if within is not None else None

    decisions = []
    oldest = len(ordered) - 1
    for nr, sn in enumerate(ordered):
        reasons = [f"has tags {_tag_list_str(t)}" for t in policy.tags if sn.has_tags(t)]
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
