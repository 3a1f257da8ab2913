"""The keep rules of ``bk forget`` as a user gives them: durations, counts, tag lists.

Vocabulary as in ``policy.py`` (keep rule, count rule, within rule, tag rule).
Holds ``KeepPolicy`` (every ``--keep-*`` option, validated, with its restic-style
description), ``Duration`` (``1y2m3d4h``) and the parsers of option text. How the
rules are applied is in ``policy.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from backupkit.errors import BadArgument

UNLIMITED = -1
"""Count for a keep-N rule that keeps every bucket (restic's ``unlimited``)."""

#: The calendar periods of the count rules and the within-period rules, shortest first.
PERIODS = ("hourly", "daily", "weekly", "monthly", "yearly")
#: The count fields of ``KeepPolicy``: ``last`` (the N newest snapshots), then a period each.
COUNT_FIELDS = ("last", *PERIODS)
#: The duration fields of ``KeepPolicy``: ``within`` (every snapshot), then ``within_<period>``.
WITHIN_FIELDS = ("within", *(f"within_{period}" for period in PERIODS))


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
        for name, count in self.counts():
            if count < UNLIMITED:
                raise BadArgument(
                    f"keep-{name}: negative values other than -1 (unlimited) are not allowed"
                )

    def counts(self) -> tuple[tuple[str, int], ...]:
        """(field, N) of every count rule: ``last``, then one a period (``PERIODS``)."""
        return tuple((name, getattr(self, name)) for name in COUNT_FIELDS)

    def withins(self) -> tuple[tuple[str, Duration | None], ...]:
        """(period, duration) of every within-period rule (``within_<period>``)."""
        return tuple((period, getattr(self, f"within_{period}")) for period in PERIODS)

    def is_empty(self) -> bool:
        """True if no keep rule is set (restic ``ExpirePolicy.Empty``)."""
        durations = (self.within, *(d for _, d in self.withins()))
        return (
            not self.tags
            and all(c == 0 for _, c in self.counts())
            and all(d is None or d.is_zero() for d in durations)
        )

    def __str__(self) -> str:
        """A one-line summary in restic's words, e.g. ``keep 7 daily, 4 weekly snapshots``."""
        counts = []
        for name, count in self.counts():
            word = "latest" if name == "last" else name
            if count > 0:
                counts.append(f"{count} {word}")
            elif count == UNLIMITED:
                counts.append(f"all {word}")
        withins = [f"{period} snapshots within {d}" for period, d in self.withins() if d is not None and not d.is_zero()]
        text = f"{', '.join(counts)} snapshots" if counts else ""
        if withins:
            text = ", ".join(([text] if text else []) + withins)
        if self.tags:
            lists = " ".join(tag_list_str(t) for t in self.tags)
            text += (" and " if text else "") + f"all snapshots with tags [{lists}]"
        if self.within is not None and not self.within.is_zero():
            text += (" and " if text else "") + f"all snapshots within {self.within} of the newest"
        return f"keep {text}" if text else "remove"


def tag_list_str(tags: Sequence[str]) -> str:
    return "[" + ", ".join(tags) + "]"
