"""Tests for backupkit.policy: restic's forget semantics, case by case and as properties."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backupkit.errors import UsageError
from backupkit.policy import (
    UNLIMITED,
    Decision,
    Duration,
    GroupKey,
    KeepPolicy,
    SnapshotInfo,
    apply_policy,
    filter_snapshots,
    group_snapshots,
    parse_duration,
    parse_group_by,
    parse_keep_count,
    parse_tag_list,
    plan_forget,
)

UTC = timezone.utc
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def at(text: str, tz: timezone | ZoneInfo = UTC) -> datetime:
    """'2016-01-04 12:30:03[.1]' in the given zone."""
    return datetime.fromisoformat(text).replace(tzinfo=tz)


def snaps_at(
    *times: str, host: str = "h", paths: tuple[str, ...] = ("/data",)
) -> list[SnapshotInfo]:
    """Snapshots with ids s00, s01, ... in the order given."""
    return [
        SnapshotInfo(id=f"{i:02x}", time=at(t), host=host, paths=paths)
        for i, t in enumerate(times)
    ]


def kept(decisions: list[Decision]) -> list[str]:
    """Kept snapshot times, newest first, as the strings tests are written in."""
    return [d.snapshot.time.strftime("%Y-%m-%d %H:%M") for d in decisions if d.keep]


def reasons(decisions: list[Decision]) -> dict[str, tuple[str, ...]]:
    return {d.snapshot.time.strftime("%Y-%m-%d %H:%M"): d.reasons for d in decisions if d.keep}


# ------------------------------------------------------------------- parsing inputs


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1y2m3d4h", Duration(1, 2, 3, 4)),
        ("7d", Duration(days=7)),
        ("3h1y", Duration(years=1, hours=3)),
        ("  2y  ", Duration(years=2)),
        ("1y1d1m", Duration(years=1, months=1, days=1)),
        ("0d", Duration()),
        ("100y", Duration(years=100)),
    ],
)
def test_parse_duration(text: str, expected: Duration) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["", "   ", "5", "d", "1w", "1.5d", "-1d", "1d2d", "1Y", "1 d", "y1"]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)


def test_duration_prints_in_restic_order() -> None:
    # restic golden files name "--keep-within 1y1d1m" as "within 1y1m1d"
    assert str(parse_duration("1y1d1m")) == "1y1m1d"
    assert str(parse_duration("3h2y")) == "2y3h"


@pytest.mark.parametrize(
    ("start", "duration", "expected"),
    [
        # Go AddDate normalises 2015-02-31 to 2015-03-03 rather than clamping
        ("2015-03-31 12:00", "1m", "2015-03-03 12:00"),
        ("2016-03-31 12:00", "1m", "2016-03-02 12:00"),  # leap year
        ("2016-02-29 00:00", "1y", "2015-03-01 00:00"),
        ("2016-01-18 12:02:03", "1y2m3d3h", "2014-11-15 09:02:03"),
        ("2016-01-01 02:00", "3h", "2015-12-31 23:00"),
        ("2016-01-10 00:00", "14m", "2014-11-10 00:00"),
    ],
)
def test_duration_before_uses_go_calendar_arithmetic(
    start: str, duration: str, expected: str
) -> None:
    assert parse_duration(duration).before(at(start)) == at(expected)


def test_duration_before_year_one_means_everything() -> None:
    assert parse_duration("9999y").before(at("2016-01-01 00:00")) is None


@pytest.mark.parametrize(
    ("text", "expected"), [("0", 0), ("5", 5), ("unlimited", UNLIMITED), (" 12 ", 12)]
)
def test_parse_keep_count(text: str, expected: int) -> None:
    assert parse_keep_count(text) == expected


@pytest.mark.parametrize("text", ["-1", "-5", "x", "", "1.0", "all"])
def test_parse_keep_count_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_keep_count(text)


def test_parse_tag_list_and_group_by() -> None:
    assert parse_tag_list("a, b ,c") == ("a", "b", "c")
    assert parse_tag_list("") == ("",)
    assert parse_group_by("host,paths") == {"host", "paths"}
    assert parse_group_by("hosts,path,tag") == {"host", "paths", "tags"}
    assert parse_group_by("") == frozenset()
    with pytest.raises(UsageError, match="unknown grouping option"):
        parse_group_by("host,user")


def test_keep_policy_validation_and_emptiness() -> None:
    assert KeepPolicy().is_empty()
    assert KeepPolicy(within=Duration()).is_empty()
    assert KeepPolicy(within_daily=parse_duration("0d")).is_empty()
    assert not KeepPolicy(last=UNLIMITED).is_empty()
    assert not KeepPolicy(tags=(("",),)).is_empty()
    assert not KeepPolicy(within_yearly=parse_duration("1y")).is_empty()
    with pytest.raises(UsageError):
        KeepPolicy(daily=-2)
    with pytest.raises(UsageError):
        Duration(days=-1)
    # a bare string is read as one --keep-tag value, not as single characters
    assert KeepPolicy(tags=("a,b",)).tags == (("a", "b"),)  # type: ignore[arg-type]


def test_keep_policy_str_in_restic_words() -> None:
    policy = KeepPolicy(
        daily=7,
        weekly=UNLIMITED,
        within_daily=parse_duration("7d"),
        tags=(("a", "b"),),
        within=parse_duration("1y"),
    )
    assert str(policy) == (
        "keep 7 daily, all weekly snapshots, daily snapshots within 7d"
        " and all snapshots with tags [[a, b]] and all snapshots within 1y of the newest"
    )
    assert str(KeepPolicy()) == "remove"


def test_empty_policy_is_refused() -> None:
    with pytest.raises(UsageError, match="refusing to forget: no keep rule given"):
        apply_policy(snaps_at("2020-01-01 00:00"), KeepPolicy(), now=NOW)
    with pytest.raises(UsageError, match="refusing to forget"):
        plan_forget([], KeepPolicy(within=Duration()))


def test_no_snapshots_no_decisions() -> None:
    assert apply_policy([], KeepPolicy(last=1), now=NOW) == []
    assert plan_forget([], KeepPolicy(last=1), now=NOW) == []


def test_snapshot_time_must_be_aware() -> None:
    with pytest.raises(ValueError):
        SnapshotInfo(id="00", time=datetime(2020, 1, 1), host="h")


# --------------------------------------------------------------- one rule at a time

# A fortnight with irregular backups: several on some days, none on others.
FORTNIGHT = (
    "2021-03-01 09:00",
    "2021-03-01 18:00",
    "2021-03-02 09:00",
    "2021-03-04 09:00",
    "2021-03-04 09:30",
    "2021-03-04 10:15",
    "2021-03-07 23:59",  # Sunday, ISO week 9
    "2021-03-08 00:00",  # Monday, ISO week 10
    "2021-03-12 12:00",
    "2021-03-14 08:00",
)

CASES: list[tuple[str, KeepPolicy, tuple[str, ...], list[str]]] = [
    ("last 3", KeepPolicy(last=3), FORTNIGHT, [
        "2021-03-14 08:00", "2021-03-12 12:00", "2021-03-08 00:00",
    ]),
    ("last more than there are", KeepPolicy(last=50), FORTNIGHT[:3], [
        "2021-03-02 09:00", "2021-03-01 18:00", "2021-03-01 09:00",
    ]),
    ("last unlimited", KeepPolicy(last=UNLIMITED), FORTNIGHT[:3], [
        "2021-03-02 09:00", "2021-03-01 18:00", "2021-03-01 09:00",
    ]),
    # the three 2021-03-04 snapshots fall into hours 09 and 10; 09:30 wins hour 09
    ("hourly 4", KeepPolicy(hourly=4), FORTNIGHT, [
        "2021-03-14 08:00", "2021-03-12 12:00", "2021-03-08 00:00", "2021-03-07 23:59",
    ]),
    ("hourly unlimited", KeepPolicy(hourly=UNLIMITED), FORTNIGHT[:6], [
        "2021-03-04 10:15", "2021-03-04 09:30", "2021-03-02 09:00",
        "2021-03-01 18:00", "2021-03-01 09:00",
    ]),
    # days without backups do not count; the newest snapshot of each day is kept
    ("daily 4", KeepPolicy(daily=4), FORTNIGHT, [
        "2021-03-14 08:00", "2021-03-12 12:00", "2021-03-08 00:00", "2021-03-07 23:59",
    ]),
    # unlimited never runs out, so the oldest snapshot is kept as well
    ("daily unlimited", KeepPolicy(daily=UNLIMITED), FORTNIGHT, [
        "2021-03-14 08:00", "2021-03-12 12:00", "2021-03-08 00:00", "2021-03-07 23:59",
        "2021-03-04 10:15", "2021-03-02 09:00", "2021-03-01 18:00", "2021-03-01 09:00",
    ]),
    # ISO weeks run Monday to Sunday: Sunday 23:59 and Monday 00:00 are two weeks
    ("weekly 2", KeepPolicy(weekly=2), FORTNIGHT, [
        "2021-03-14 08:00", "2021-03-07 23:59",
    ]),
    # two weeks with backups; the oldest snapshot is kept too while counts remain
    ("weekly 5, fewer weeks than asked", KeepPolicy(weekly=5), FORTNIGHT, [
        "2021-03-14 08:00", "2021-03-07 23:59", "2021-03-01 09:00",
    ]),
    ("monthly 2", KeepPolicy(monthly=2), (
        "2020-12-31 23:00", "2021-01-15 00:00", "2021-01-31 12:00", "2021-02-01 00:00",
    ), ["2021-02-01 00:00", "2021-01-31 12:00"]),
    ("yearly 2", KeepPolicy(yearly=2), (
        "2019-06-01 00:00", "2020-01-01 00:00", "2020-12-31 23:59", "2021-01-01 00:00",
    ), ["2021-01-01 00:00", "2020-12-31 23:59"]),
    ("yearly unlimited", KeepPolicy(yearly=UNLIMITED), (
        "2019-06-01 00:00", "2019-07-01 00:00", "2020-01-01 00:00", "2021-01-01 00:00",
    ), ["2021-01-01 00:00", "2020-01-01 00:00", "2019-07-01 00:00", "2019-06-01 00:00"]),
    # relative to the newest snapshot (2021-03-14 08:00), not to NOW (2030)
    ("within 3d", KeepPolicy(within=parse_duration("3d")), FORTNIGHT, [
        "2021-03-14 08:00", "2021-03-12 12:00",
    ]),
    # exactly at newest - D (2021-03-08 00:00) is not "within": restic wants strictly after
    ("within 6d8h boundary", KeepPolicy(within=parse_duration("6d8h")), FORTNIGHT, [
        "2021-03-14 08:00", "2021-03-12 12:00",
    ]),
    ("within 6d9h", KeepPolicy(within=parse_duration("6d9h")), FORTNIGHT, [
        "2021-03-14 08:00", "2021-03-12 12:00", "2021-03-08 00:00", "2021-03-07 23:59",
    ]),
    ("within-hourly 10d", KeepPolicy(within_hourly=parse_duration("10d")), FORTNIGHT, [
        "2021-03-14 08:00", "2021-03-12 12:00", "2021-03-08 00:00", "2021-03-07 23:59",
        "2021-03-04 10:15", "2021-03-04 09:30",
    ]),
    ("within-daily 10d", KeepPolicy(within_daily=parse_duration("10d")), FORTNIGHT, [
        "2021-03-14 08:00", "2021-03-12 12:00", "2021-03-08 00:00", "2021-03-07 23:59",
        "2021-03-04 10:15",
    ]),
    ("within-weekly 1m", KeepPolicy(within_weekly=parse_duration("1m")), FORTNIGHT, [
        "2021-03-14 08:00", "2021-03-07 23:59", "2021-03-01 09:00",
    ]),
    ("within-monthly 1y", KeepPolicy(within_monthly=parse_duration("1y")), (
        "2019-12-31 00:00", "2020-06-01 00:00", "2020-06-30 00:00", "2021-05-01 00:00",
    ), ["2021-05-01 00:00", "2020-06-30 00:00"]),
    ("within-yearly 2y", KeepPolicy(within_yearly=parse_duration("2y")), (
        "2018-12-31 00:00", "2019-06-01 00:00", "2019-12-31 00:00", "2021-05-01 00:00",
    ), ["2021-05-01 00:00", "2019-12-31 00:00"]),
]


@pytest.mark.parametrize(
    ("policy", "times", "expected"),
    [pytest.param(p, t, e, id=name) for name, p, t, e in CASES],
)
def test_single_rules(policy: KeepPolicy, times: tuple[str, ...], expected: list[str]) -> None:
    decisions = apply_policy(snaps_at(*times), policy, now=NOW)
    assert kept(decisions) == expected
    assert len(decisions) == len(times)


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        # 2020 has an ISO week 53 that runs into 2021: Thu 31 Dec .. Sun 3 Jan
        (("2020-12-28 10:00", "2020-12-31 10:00", "2021-01-01 10:00", "2021-01-03 10:00",
          "2021-01-04 10:00"), ["2021-01-04 10:00", "2021-01-03 10:00"]),
        # Mon 31 Dec 2018 already belongs to ISO week 1 of 2019
        (("2018-12-30 10:00", "2018-12-31 10:00", "2019-01-01 10:00", "2019-01-06 23:00"),
         ["2019-01-06 23:00", "2018-12-30 10:00"]),
        # Mon 30 Dec 2024 is ISO 2025-W01; Sun 29 Dec 2024 is 2024-W52
        (("2024-12-29 10:00", "2024-12-30 10:00", "2025-01-05 10:00"),
         ["2025-01-05 10:00", "2024-12-29 10:00"]),
    ],
)
def test_weekly_uses_iso_weeks_across_new_year(times: tuple[str, ...], expected: list[str]) -> None:
    assert kept(apply_policy(snaps_at(*times), KeepPolicy(weekly=2), now=NOW)) == expected


def test_buckets_use_each_snapshots_own_wall_clock() -> None:
    # Sunday 23:30 in New York is Monday 04:30 UTC: restic buckets by the recorded
    # zone, so this is still ISO week 53 of 2020, together with Friday's snapshot.
    ny = ZoneInfo("America/New_York")
    snaps = [
        SnapshotInfo("01", at("2021-01-01 12:00", ny), "h"),
        SnapshotInfo("02", at("2021-01-03 23:30", ny), "h"),
        SnapshotInfo("03", at("2021-01-04 12:00", ny), "h"),
    ]
    decisions = apply_policy(snaps, KeepPolicy(weekly=2), now=NOW)
    assert [d.snapshot.id for d in decisions if d.keep] == ["03", "02"]


def test_oldest_snapshot_kept_while_counts_remain() -> None:
    decisions = apply_policy(
        snaps_at("2019-03-01 00:00", "2019-09-01 00:00", "2020-05-01 00:00"),
        KeepPolicy(yearly=5),
        now=NOW,
    )
    assert reasons(decisions) == {
        "2020-05-01 00:00": ("yearly snapshot",),
        "2019-09-01 00:00": ("yearly snapshot",),
        "2019-03-01 00:00": ("oldest yearly snapshot",),
    }
    # ... but not once the count is spent
    decisions = apply_policy(
        snaps_at("2019-03-01 00:00", "2019-09-01 00:00", "2020-05-01 00:00"),
        KeepPolicy(yearly=2),
        now=NOW,
    )
    assert kept(decisions) == ["2020-05-01 00:00", "2019-09-01 00:00"]


def test_oldest_snapshot_kept_by_within_rule_when_in_range() -> None:
    decisions = apply_policy(
        snaps_at("2021-03-10 08:00", "2021-03-10 20:00", "2021-03-11 08:00"),
        KeepPolicy(within_daily=parse_duration("7d")),
        now=NOW,
    )
    assert reasons(decisions) == {
        "2021-03-11 08:00": ("daily within 7d",),
        "2021-03-10 20:00": ("daily within 7d",),
        "2021-03-10 08:00": ("oldest daily within 7d",),
    }


def test_forum_example_keep_daily_vs_keep_within_daily() -> None:
    # forum.restic.net/t/keep-vs-keep-within/6243: a1..a5, forget on May 5th
    times = ("2023-05-01 08:00", "2023-05-02 08:00", "2023-05-02 11:00",
             "2023-05-04 09:00", "2023-05-05 10:00")
    daily = apply_policy(snaps_at(*times), KeepPolicy(daily=4), now=NOW)
    assert kept(daily) == ["2023-05-05 10:00", "2023-05-04 09:00", "2023-05-02 11:00",
                           "2023-05-01 08:00"]
    within = apply_policy(snaps_at(*times), KeepPolicy(within_daily=parse_duration("4d")), now=NOW)
    assert kept(within) == ["2023-05-05 10:00", "2023-05-04 09:00", "2023-05-02 11:00"]


def test_future_snapshots_do_not_move_the_within_window() -> None:
    now = at("2021-03-14 12:00")
    times = ("2021-03-10 00:00", "2021-03-13 00:00", "2021-03-14 00:00", "2025-01-01 00:00")
    decisions = apply_policy(snaps_at(*times), KeepPolicy(within=parse_duration("2d")), now=now)
    # newest past snapshot is 2021-03-14 00:00; the future one is within and kept
    assert kept(decisions) == ["2025-01-01 00:00", "2021-03-14 00:00", "2021-03-13 00:00"]
    # with the clock past all of them, the window follows the 2025 snapshot
    decisions = apply_policy(snaps_at(*times), KeepPolicy(within=parse_duration("2d")), now=NOW)
    assert kept(decisions) == ["2025-01-01 00:00"]


def test_all_snapshots_in_the_future_are_all_within() -> None:
    times = ("2040-01-01 00:00", "2041-01-01 00:00")
    decisions = apply_policy(snaps_at(*times), KeepPolicy(within=parse_duration("1d")), now=NOW)
    assert kept(decisions) == ["2041-01-01 00:00", "2040-01-01 00:00"]


def test_keep_tag_needs_all_tags_of_one_list_and_lists_are_ored() -> None:
    snaps = [
        SnapshotInfo("01", at("2021-01-01 00:00"), "h", tags=("a",)),
        SnapshotInfo("02", at("2021-01-02 00:00"), "h", tags=("a", "b")),
        SnapshotInfo("03", at("2021-01-03 00:00"), "h", tags=("b", "c")),
        SnapshotInfo("04", at("2021-01-04 00:00"), "h", tags=()),
        SnapshotInfo("05", at("2021-01-05 00:00"), "h", tags=("c",)),
    ]
    only_ab = apply_policy(snaps, KeepPolicy(tags=(("a", "b"),)), now=NOW)
    assert {d.snapshot.id: d.reasons for d in only_ab if d.keep} == {"02": ("has tags [a, b]",)}
    ab_or_c = apply_policy(snaps, KeepPolicy(tags=(("a", "b"), ("c",))), now=NOW)
    assert {d.snapshot.id: d.reasons for d in ab_or_c if d.keep} == {
        "02": ("has tags [a, b]",),
        "03": ("has tags [c]",),
        "05": ("has tags [c]",),
    }
    untagged = apply_policy(snaps, KeepPolicy(tags=(("",),)), now=NOW)
    assert [d.snapshot.id for d in untagged if d.keep] == ["04"]
    # tag rules do not take buckets away from count rules
    mixed = apply_policy(snaps, KeepPolicy(tags=(("c",),), last=1), now=NOW)
    assert {d.snapshot.id: d.reasons for d in mixed if d.keep} == {
        "05": ("has tags [c]", "last snapshot"),
        "03": ("has tags [c]",),
    }


def test_combined_rules_list_every_reason_in_rule_order() -> None:
    snaps = [
        SnapshotInfo("01", at("2020-11-20 10:00"), "h"),
        SnapshotInfo("02", at("2020-12-31 10:00"), "h", tags=("keep",)),
        SnapshotInfo("03", at("2021-01-02 10:00"), "h"),
        SnapshotInfo("04", at("2021-01-03 10:00"), "h"),
        SnapshotInfo("05", at("2021-01-03 18:00"), "h"),
    ]
    policy = KeepPolicy(
        last=1, daily=2, weekly=1, monthly=2, yearly=1,
        within=parse_duration("1d"), within_daily=parse_duration("2d"),
        tags=(("keep",),),
    )
    got = {d.snapshot.id: d.reasons for d in apply_policy(snaps, policy, now=NOW)}
    assert got == {
        "05": ("within 1d", "last snapshot", "daily snapshot", "weekly snapshot",
               "monthly snapshot", "yearly snapshot", "daily within 2d"),
        "04": ("within 1d",),
        "03": ("daily snapshot", "daily within 2d"),
        # Thu 31 Dec 2020 is in ISO week 53, the same week as Sun 3 Jan 2021
        "02": ("has tags [keep]", "monthly snapshot"),
        "01": (),
    }


def test_restic_doc_100_years_of_daily_backups() -> None:
    # doc/060_forget.rst: with a backup every day for 100 years, --keep-daily 7
    # --keep-weekly 5 --keep-monthly 12 --keep-yearly 75 keeps 7 dailies, 4 more
    # weeklies (the dailies include one week's end), the monthlies and yearlies not
    # already kept. History ends on Sunday 17 November 2024, so the dailies are
    # exactly ISO week 46, the newest is also this month's and year's snapshot,
    # and 31 December 2023 is both a monthly and a yearly.
    start, end = at("1924-11-18 03:00"), at("2024-11-17 03:00")
    snaps = [
        SnapshotInfo(f"{i:06x}", start + timedelta(days=i), "h")
        for i in range((end - start).days + 1)
    ]
    assert end.isoweekday() == 7
    policy = KeepPolicy(daily=7, weekly=5, monthly=12, yearly=75)
    decisions = apply_policy(snaps, policy, now=NOW)
    kept_only = [d for d in decisions if d.keep]
    counts = {r: sum(r in d.reasons for d in kept_only) for r in
              ("daily snapshot", "weekly snapshot", "monthly snapshot", "yearly snapshot")}
    assert counts == {"daily snapshot": 7, "weekly snapshot": 5,
                      "monthly snapshot": 12, "yearly snapshot": 75}
    assert len(kept_only) == 7 + 4 + 11 + 73
    assert kept(decisions)[7:12] == [  # four weeklies and October's monthly
        "2024-11-10 03:00", "2024-11-03 03:00", "2024-10-31 03:00", "2024-10-27 03:00",
        "2024-10-20 03:00",
    ]
    assert kept(decisions)[-1] == "1950-12-31 03:00"


# ------------------------------------------- restic's own documentation and test data


def test_restic_doc_twelve_sundays_keep_daily_4() -> None:
    # doc/060_forget.rst, "Suppose you have only made one backup every Sunday for 12 weeks"
    table = [
        ("0a1f9759", "2019-09-01 11:00:00"), ("46cfe4d5", "2019-09-08 11:00:00"),
        ("f6b1f037", "2019-09-15 11:00:00"), ("eb430a5d", "2019-09-22 11:00:00"),
        ("8cf1cb9a", "2019-09-29 11:00:00"), ("5d33b116", "2019-10-06 11:00:00"),
        ("b9553125", "2019-10-13 11:00:00"), ("e1a7b58b", "2019-10-20 11:00:00"),
        ("8f8018c0", "2019-10-27 11:00:00"), ("59403279", "2019-11-03 11:00:00"),
        ("dfee9fb4", "2019-11-10 11:00:00"), ("e1ae2f40", "2019-11-17 11:00:00"),
    ]
    snaps = [SnapshotInfo(i, at(t), "mopped", ("/home/user/work",)) for i, t in table]
    [group] = plan_forget(snaps, KeepPolicy(daily=4), now=NOW)
    assert group.key == GroupKey("mopped", ("/home/user/work",))
    assert [s.id for s in group.kept] == ["e1ae2f40", "dfee9fb4", "59403279", "8f8018c0"]
    assert all(d.reasons == ("daily snapshot",) for d in group.decisions if d.keep)
    assert [s.id for s in group.removed] == [
        "e1a7b58b", "b9553125", "5d33b116", "8cf1cb9a",
        "eb430a5d", "f6b1f037", "46cfe4d5", "0a1f9759",
    ]


def test_restic_doc_snapshot_table_grouped_by_host_and_paths() -> None:
    # doc/060_forget.rst, "Remove a single snapshot": five snapshots, four groups
    table = [
        ("40dc1520", "2015-05-08 21:38:30", "kasimir", "/home/user/work"),
        ("79766175", "2015-05-08 21:40:19", "kasimir", "/home/user/work"),
        ("bdbd3439", "2015-05-08 21:45:17", "luigi", "/home/art"),
        ("590c8fc8", "2015-05-08 21:47:38", "kazik", "/srv"),
        ("9f0bc19e", "2015-05-08 21:46:11", "luigi", "/srv"),
    ]
    snaps = [SnapshotInfo(i, at(t), h, (p,)) for i, t, h, p in table]
    plan = plan_forget(snaps, KeepPolicy(last=1), now=NOW)
    assert [str(g.key) for g in plan] == [
        "host kasimir, paths [/home/user/work]",
        "host kazik, paths [/srv]",
        "host luigi, paths [/home/art]",
        "host luigi, paths [/srv]",
    ]
    assert [s.id for g in plan for s in g.removed] == ["40dc1520"]
    # the same with --host luigi: only luigi's two groups are planned
    plan = plan_forget(snaps, KeepPolicy(last=1), hosts=["luigi"], now=NOW)
    assert [[s.id for s in g.kept] for g in plan] == [["bdbd3439"], ["9f0bc19e"]]


# TestApplyPolicy's snapshot list from restic internal/data/snapshot_policy_test.go.
RESTIC_TIMES = """
2014-09-01 10:20:30|2014-09-02 10:20:30|2014-09-05 10:20:30|2014-09-06 10:20:30
2014-09-08 10:20:30|2014-09-09 10:20:30|2014-09-10 10:20:30|2014-09-11 10:20:30
2014-09-20 10:20:30|2014-09-22 10:20:30|2014-08-08 10:20:30|2014-08-10 10:20:30
2014-08-12 10:20:30|2014-08-13 10:20:30|2014-08-13 10:20:30.1|2014-08-15 10:20:30
2014-08-18 10:20:30|2014-08-20 10:20:30|2014-08-21 10:20:30|2014-08-22 10:20:30
2014-10-01 10:20:30 foo|2014-10-02 10:20:30 foo|2014-10-05 10:20:30 foo
2014-10-06 10:20:30 foo|2014-10-08 10:20:30 foo|2014-10-09 10:20:30 foo
2014-10-10 10:20:30 foo|2014-10-11 10:20:30 foo|2014-10-20 10:20:30 foo
2014-10-22 10:20:30 foo|2014-11-08 10:20:30 foo|2014-11-10 10:20:30 foo
2014-11-12 10:20:30 foo|2014-11-13 10:20:30 foo|2014-11-13 10:20:30.1 bar
2014-11-15 10:20:30 foo,bar|2014-11-18 10:20:30|2014-11-20 10:20:30
2014-11-21 10:20:30|2014-11-22 10:20:30|2015-09-01 10:20:30|2015-09-02 10:20:30
2015-09-05 10:20:30|2015-09-06 10:20:30|2015-09-08 10:20:30|2015-09-09 10:20:30
2015-09-10 10:20:30|2015-09-11 10:20:30|2015-09-20 10:20:30|2015-09-22 10:20:30
2015-08-08 10:20:30|2015-08-10 10:20:30|2015-08-12 10:20:30|2015-08-13 10:20:30
2015-08-13 10:20:30.1|2015-08-15 10:20:30|2015-08-18 10:20:30|2015-08-20 10:20:30
2015-08-21 10:20:30|2015-08-22 10:20:30|2015-10-01 10:20:30|2015-10-02 10:20:30
2015-10-05 10:20:30|2015-10-06 10:20:30|2015-10-08 10:20:30|2015-10-09 10:20:30
2015-10-10 10:20:30|2015-10-11 10:20:30|2015-10-20 10:20:30|2015-10-22 10:20:30
2015-10-22 10:20:30|2015-10-22 10:20:30 foo,bar|2015-10-22 10:20:30 foo,bar
2015-10-22 10:20:30 foo,bar path1,path2|2015-11-08 10:20:30|2015-11-10 10:20:30
2015-11-12 10:20:30|2015-11-13 10:20:30|2015-11-13 10:20:30.1|2015-11-15 10:20:30
2015-11-18 10:20:30|2015-11-20 10:20:30|2015-11-21 10:20:30|2015-11-22 10:20:30
2016-01-01 01:02:03|2016-01-01 01:03:03|2016-01-01 07:08:03|2016-01-03 07:02:03
2016-01-04 10:23:03|2016-01-04 11:23:03|2016-01-04 12:23:03|2016-01-04 12:24:03
2016-01-04 12:28:03|2016-01-04 12:30:03|2016-01-04 16:23:03|2016-01-05 09:02:03
2016-01-06 08:02:03|2016-01-07 10:02:03|2016-01-08 20:02:03|2016-01-09 21:02:03
2016-01-12 21:02:03|2016-01-12 21:08:03|2016-01-18 12:02:03
"""


def restic_snapshots() -> list[SnapshotInfo]:
    """restic's list; ids rise in list order, so equal times keep restic's stable order."""
    snaps = []
    for i, entry in enumerate(RESTIC_TIMES.replace("\n", "|").strip("|").split("|")):
        date, clock, *rest = entry.split(" ")
        tags = tuple(rest[0].split(",")) if rest else ()
        paths = tuple(rest[1].split(",")) if len(rest) > 1 else ()
        snaps.append(SnapshotInfo(f"{i:04x}", at(f"{date} {clock}"), "", paths, tags))
    return snaps


def restic_view(decisions: list[Decision]) -> list[tuple[str, str, tuple[str, ...]]]:
    """(time as in restic's golden files, tags, reasons) of each kept snapshot."""
    view = []
    for d in decisions:
        if d.keep:
            t = d.snapshot.time.isoformat(timespec="microseconds").replace("+00:00", "Z")
            t = t.replace(".000000Z", "Z").replace("00000Z", "Z")
            view.append((t, ",".join(d.snapshot.tags), d.reasons))
    return view


def _same(reason: str, *times: str) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(t, "", (reason,)) for t in times]


# Expected results transcribed from restic internal/data/testdata/policy_keep_snapshots_N
# (the golden files restic's own TestApplyPolicy checks against).
RESTIC_GOLDEN: list[tuple[str, KeepPolicy, list[tuple[str, str, tuple[str, ...]]]]] = [
    ("5: hourly 20", KeepPolicy(hourly=20), _same(
        "hourly snapshot",
        "2016-01-18T12:02:03Z", "2016-01-12T21:08:03Z", "2016-01-09T21:02:03Z",
        "2016-01-08T20:02:03Z", "2016-01-07T10:02:03Z", "2016-01-06T08:02:03Z",
        "2016-01-05T09:02:03Z", "2016-01-04T16:23:03Z", "2016-01-04T12:30:03Z",
        "2016-01-04T11:23:03Z", "2016-01-04T10:23:03Z", "2016-01-03T07:02:03Z",
        "2016-01-01T07:08:03Z", "2016-01-01T01:03:03Z", "2015-11-22T10:20:30Z",
        "2015-11-21T10:20:30Z", "2015-11-20T10:20:30Z", "2015-11-18T10:20:30Z",
        "2015-11-15T10:20:30Z", "2015-11-13T10:20:30.1Z",
    )),
    ("7: daily 10", KeepPolicy(daily=10), _same(
        "daily snapshot",
        "2016-01-18T12:02:03Z", "2016-01-12T21:08:03Z", "2016-01-09T21:02:03Z",
        "2016-01-08T20:02:03Z", "2016-01-07T10:02:03Z", "2016-01-06T08:02:03Z",
        "2016-01-05T09:02:03Z", "2016-01-04T16:23:03Z", "2016-01-03T07:02:03Z",
        "2016-01-01T07:08:03Z",
    )),
    ("15: daily 2 weekly 2 monthly 6", KeepPolicy(daily=2, weekly=2, monthly=6), [
        ("2016-01-18T12:02:03Z", "", ("daily snapshot", "weekly snapshot", "monthly snapshot")),
        ("2016-01-12T21:08:03Z", "", ("daily snapshot", "weekly snapshot")),
        *_same("monthly snapshot", "2015-11-22T10:20:30Z", "2015-10-22T10:20:30Z",
               "2015-09-22T10:20:30Z", "2015-08-22T10:20:30Z", "2014-11-22T10:20:30Z"),
    ]),
    ("16: yearly 10", KeepPolicy(yearly=10), [
        *_same("yearly snapshot", "2016-01-18T12:02:03Z", "2015-11-22T10:20:30Z",
               "2014-11-22T10:20:30Z"),
        ("2014-08-08T10:20:30Z", "", ("oldest yearly snapshot",)),
    ]),
    ("20: keep-tag foo, keep-tag bar", KeepPolicy(tags=(("foo",), ("bar",))), [
        ("2015-10-22T10:20:30Z", "foo,bar", ("has tags [foo]", "has tags [bar]")),
        ("2015-10-22T10:20:30Z", "foo,bar", ("has tags [foo]", "has tags [bar]")),
        ("2015-10-22T10:20:30Z", "foo,bar", ("has tags [foo]", "has tags [bar]")),
        ("2014-11-15T10:20:30Z", "foo,bar", ("has tags [foo]", "has tags [bar]")),
        ("2014-11-13T10:20:30.1Z", "bar", ("has tags [bar]",)),
        *[(t, "foo", ("has tags [foo]",)) for t in (
            "2014-11-13T10:20:30Z", "2014-11-12T10:20:30Z", "2014-11-10T10:20:30Z",
            "2014-11-08T10:20:30Z", "2014-10-22T10:20:30Z", "2014-10-20T10:20:30Z",
            "2014-10-11T10:20:30Z", "2014-10-10T10:20:30Z", "2014-10-09T10:20:30Z",
            "2014-10-08T10:20:30Z", "2014-10-06T10:20:30Z", "2014-10-05T10:20:30Z",
            "2014-10-02T10:20:30Z", "2014-10-01T10:20:30Z")],
    ]),
    ("32: within-weekly 1y2m3d3h", KeepPolicy(within_weekly=parse_duration("1y2m3d3h")), [
        *_same("weekly within 1y2m3d3h",
               "2016-01-18T12:02:03Z", "2016-01-12T21:08:03Z", "2016-01-09T21:02:03Z",
               "2016-01-03T07:02:03Z", "2015-11-22T10:20:30Z", "2015-11-15T10:20:30Z",
               "2015-11-08T10:20:30Z", "2015-10-22T10:20:30Z", "2015-10-11T10:20:30Z",
               "2015-10-02T10:20:30Z", "2015-09-22T10:20:30Z", "2015-09-20T10:20:30Z",
               "2015-09-11T10:20:30Z", "2015-09-06T10:20:30Z", "2015-08-22T10:20:30Z",
               "2015-08-15T10:20:30Z", "2015-08-08T10:20:30Z", "2014-11-22T10:20:30Z"),
        ("2014-11-15T10:20:30Z", "foo,bar", ("weekly within 1y2m3d3h",)),
    ]),
    ("39: daily 3 weekly 2 monthly/yearly unlimited",
     KeepPolicy(daily=3, weekly=2, monthly=UNLIMITED, yearly=UNLIMITED), [
        ("2016-01-18T12:02:03Z", "", ("daily snapshot", "weekly snapshot",
                                      "monthly snapshot", "yearly snapshot")),
        ("2016-01-12T21:08:03Z", "", ("daily snapshot", "weekly snapshot")),
        ("2016-01-09T21:02:03Z", "", ("daily snapshot",)),
        ("2015-11-22T10:20:30Z", "", ("monthly snapshot", "yearly snapshot")),
        *_same("monthly snapshot", "2015-10-22T10:20:30Z", "2015-09-22T10:20:30Z",
               "2015-08-22T10:20:30Z"),
        ("2014-11-22T10:20:30Z", "", ("monthly snapshot", "yearly snapshot")),
        ("2014-10-22T10:20:30Z", "foo", ("monthly snapshot",)),
        *_same("monthly snapshot", "2014-09-22T10:20:30Z", "2014-08-22T10:20:30Z"),
        ("2014-08-08T10:20:30Z", "", ("oldest monthly snapshot", "oldest yearly snapshot")),
    ]),
]


@pytest.mark.parametrize(
    ("policy", "expected"), [pytest.param(p, e, id=name) for name, p, e in RESTIC_GOLDEN]
)
def test_restic_golden_files(
    policy: KeepPolicy, expected: list[tuple[str, str, tuple[str, ...]]]
) -> None:
    assert restic_view(apply_policy(restic_snapshots(), policy, now=NOW)) == expected


def test_restic_golden_26_within_1y1d1m() -> None:
    # policy_keep_snapshots_26: everything from 2015-08-08 on, "within 1y1m1d"
    snaps = restic_snapshots()
    decisions = apply_policy(snaps, KeepPolicy(within=parse_duration("1y1d1m")), now=NOW)
    expected = {s.id for s in snaps if s.time >= at("2015-08-08 00:00")}
    assert {d.snapshot.id for d in decisions if d.keep} == expected
    assert len(expected) == 63
    assert {d.reasons for d in decisions if d.keep} == {("within 1y1m1d",)}


# ------------------------------------------------------------- filter, group, plan

HOSTS_AND_TAGS = [
    SnapshotInfo("01", at("2021-01-01 00:00"), "alpha", ("/home", "/etc"), ("daily",)),
    SnapshotInfo("02", at("2021-01-02 00:00"), "alpha", ("/etc", "/home"), ("daily", "db")),
    SnapshotInfo("03", at("2021-01-03 00:00"), "alpha", ("/srv",), ()),
    SnapshotInfo("04", at("2021-01-04 00:00"), "beta", ("/home", "/etc"), ("db", "daily")),
    SnapshotInfo("05", at("2021-01-05 00:00"), "beta", ("/srv",), ("weekly",)),
]


def grouped_ids(group_by: object) -> dict[str, list[str]]:
    groups = group_snapshots(HOSTS_AND_TAGS, group_by)  # type: ignore[arg-type]
    return {str(k): [s.id for s in v] for k, v in groups.items()}


def test_group_by_host() -> None:
    assert grouped_ids({"host"}) == {"host alpha": ["01", "02", "03"], "host beta": ["04", "05"]}


def test_group_by_host_and_paths_sorts_paths() -> None:
    assert grouped_ids({"host", "paths"}) == {
        "host alpha, paths [/etc, /home]": ["01", "02"],
        "host alpha, paths [/srv]": ["03"],
        "host beta, paths [/etc, /home]": ["04"],
        "host beta, paths [/srv]": ["05"],
    }


def test_group_by_tags_sorts_tags() -> None:
    assert grouped_ids({"tags"}) == {
        "all snapshots": ["03"],
        "tags [daily]": ["01"],
        "tags [daily, db]": ["02", "04"],
        "tags [weekly]": ["05"],
    }


def test_group_by_nothing_is_one_group() -> None:
    assert grouped_ids(set()) == {"all snapshots": ["01", "02", "03", "04", "05"]}
    assert grouped_ids("") == grouped_ids(set())


def test_group_by_accepts_restic_spellings_and_rejects_others() -> None:
    assert grouped_ids({"hosts", "path"}) == grouped_ids({"host", "paths"})
    assert grouped_ids("host,paths") == grouped_ids({"host", "paths"})
    with pytest.raises(UsageError):
        group_snapshots(HOSTS_AND_TAGS, {"user"})


def test_group_key_fields() -> None:
    [key, *_] = group_snapshots(HOSTS_AND_TAGS, {"host", "paths", "tags"})
    assert key == GroupKey("alpha", ("/etc", "/home"), ("daily",))
    assert str(key) == "host alpha, paths [/etc, /home], tags [daily]"


@pytest.mark.parametrize(
    ("hosts", "tags", "paths", "expected"),
    [
        ((), (), (), ["01", "02", "03", "04", "05"]),
        (("beta",), (), (), ["04", "05"]),
        (("alpha", "beta"), (), (), ["01", "02", "03", "04", "05"]),
        (("gamma",), (), (), []),
        ((), ("db",), (), ["02", "04"]),
        ((), ("daily,db",), (), ["02", "04"]),  # one --tag value: all of its tags
        ((), (("daily", "db"),), (), ["02", "04"]),
        ((), ("db", "weekly"), (), ["02", "04", "05"]),  # several --tag: any of them
        ((), ("",), (), ["03"]),  # --tag '' selects untagged snapshots
        ((), (), ("/home",), ["01", "02", "04"]),
        ((), (), ("/home", "/etc"), ["01", "02", "04"]),  # all given paths
        ((), (), ("/home", "/srv"), []),
        (("alpha",), ("daily",), ("/etc",), ["01", "02"]),  # filters are AND'ed
    ],
)
def test_filter_snapshots(
    hosts: tuple[str, ...], tags: tuple[object, ...], paths: tuple[str, ...], expected: list[str]
) -> None:
    got = filter_snapshots(
        HOSTS_AND_TAGS, hosts=hosts, tags=tags, paths=paths  # type: ignore[arg-type]
    )
    assert [s.id for s in got] == expected


def test_plan_forget_applies_the_policy_per_group() -> None:
    plan = plan_forget(HOSTS_AND_TAGS, KeepPolicy(last=1), now=NOW)
    assert {str(g.key): ([s.id for s in g.kept], [s.id for s in g.removed]) for g in plan} == {
        "host alpha, paths [/etc, /home]": (["02"], ["01"]),
        "host alpha, paths [/srv]": (["03"], []),
        "host beta, paths [/etc, /home]": (["04"], []),
        "host beta, paths [/srv]": (["05"], []),
    }
    plan = plan_forget(HOSTS_AND_TAGS, KeepPolicy(last=1), group_by=frozenset(), now=NOW)
    assert [[s.id for s in g.kept] for g in plan] == [["05"]]
    assert len(plan[0].removed) == 4


def test_plan_forget_leaves_filtered_out_snapshots_alone() -> None:
    plan = plan_forget(
        HOSTS_AND_TAGS, KeepPolicy(last=1), group_by={"host"}, tags=["daily"], now=NOW
    )
    assert [(str(g.key), [s.id for s in g.kept], [s.id for s in g.removed]) for g in plan] == [
        ("host alpha", ["02"], ["01"]),
        ("host beta", ["04"], []),
    ]


def test_plan_forget_refuses_to_empty_a_group() -> None:
    # a keep-tag-only policy keeps nothing of a group without the tag: restic aborts
    message = 'refusing to delete last snapshot of snapshot group "host beta"'
    with pytest.raises(UsageError, match=message):
        plan_forget(HOSTS_AND_TAGS, KeepPolicy(tags=(("daily", "db"), ("",))),
                    group_by={"host"}, paths=["/srv"], now=NOW)


# ----------------------------------------------------------------------- properties

OFFSETS = [timezone.utc, timezone(timedelta(hours=-5)), timezone(timedelta(hours=9, minutes=30))]


@st.composite
def snapshot_lists(draw: st.DrawFn) -> list[SnapshotInfo]:
    n = draw(st.integers(min_value=0, max_value=40))
    base = datetime(2018, 12, 20, tzinfo=UTC)
    # minutes over ~3 years, few distinct values so ties and shared buckets happen
    minutes = draw(st.lists(
        st.one_of(st.integers(0, 3 * 366 * 24 * 60), st.sampled_from([0, 59, 60, 1440, 10080])),
        min_size=n, max_size=n,
    ))
    snaps = []
    for i, m in enumerate(minutes):
        tz = draw(st.sampled_from(OFFSETS))
        tags = tuple(draw(st.lists(st.sampled_from(["a", "b", "c"]), max_size=2, unique=True)))
        snaps.append(SnapshotInfo(f"{i:04x}", (base + timedelta(minutes=m)).astimezone(tz), "h",
                                  ("/p",), tags))
    return snaps


counts = st.sampled_from([0, 0, 1, 2, 3, 7, UNLIMITED])
durations = st.one_of(st.none(), st.builds(
    Duration, years=st.integers(0, 1), months=st.integers(0, 3),
    days=st.integers(0, 10), hours=st.integers(0, 30)))
policies = st.builds(
    KeepPolicy,
    last=counts, hourly=counts, daily=counts, weekly=counts, monthly=counts, yearly=counts,
    within=durations, within_hourly=durations, within_daily=durations,
    within_weekly=durations, within_monthly=durations, within_yearly=durations,
    tags=st.lists(st.lists(st.sampled_from(["a", "b", "c", ""]), min_size=1, max_size=2)
                  .map(tuple), max_size=2).map(tuple),
).filter(lambda p: not p.is_empty())


@settings(max_examples=150, deadline=None)
@given(snaps=snapshot_lists(), policy=policies)
def test_property_partition_and_reasons(snaps: list[SnapshotInfo], policy: KeepPolicy) -> None:
    decisions = apply_policy(snaps, policy, now=NOW)
    assert sorted(d.snapshot.id for d in decisions) == sorted(s.id for s in snaps)
    assert all(bool(d.reasons) == d.keep for d in decisions)
    times = [d.snapshot.time for d in decisions]
    assert times == sorted(times, reverse=True)
    time_rules = (policy.last, policy.hourly, policy.daily, policy.weekly, policy.monthly,
                  policy.yearly, policy.within, policy.within_hourly, policy.within_daily,
                  policy.within_weekly, policy.within_monthly, policy.within_yearly)
    if snaps and any(r and not (isinstance(r, Duration) and r.is_zero()) for r in time_rules):
        assert decisions[0].keep  # every count and within rule keeps the newest


@settings(max_examples=150, deadline=None)
@given(snaps=snapshot_lists(), policy=policies, data=st.data())
def test_property_independent_of_input_order(
    snaps: list[SnapshotInfo], policy: KeepPolicy, data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(snaps))
    assert apply_policy(shuffled, policy, now=NOW) == apply_policy(snaps, policy, now=NOW)
    plan = plan_forget(snaps, KeepPolicy(last=1), group_by={"tags"}, now=NOW)
    assert plan_forget(shuffled, KeepPolicy(last=1), group_by={"tags"}, now=NOW) == plan


@settings(max_examples=150, deadline=None)
@given(snaps=snapshot_lists(), n=st.integers(min_value=1, max_value=50))
def test_property_keep_last_keeps_exactly_the_newest(snaps: list[SnapshotInfo], n: int) -> None:
    decisions = apply_policy(snaps, KeepPolicy(last=n), now=NOW)
    kept_ids = [d.snapshot.id for d in decisions if d.keep]
    newest = sorted(snaps, key=lambda s: (-s.time.timestamp(), s.id))[: min(n, len(snaps))]
    assert kept_ids == [s.id for s in newest]
    assert all(d.reasons == ("last snapshot",) for d in decisions if d.keep)


@settings(max_examples=100, deadline=None)
@given(snaps=snapshot_lists(), policy=policies)
def test_property_plan_covers_exactly_the_filtered_snapshots(
    snaps: list[SnapshotInfo], policy: KeepPolicy
) -> None:
    try:
        plan = plan_forget(snaps, policy, group_by={"tags"}, tags=["a"], now=NOW)
    except UsageError:
        return  # a tag-only policy emptied a group; covered by its own test
    planned = sorted(d.snapshot.id for g in plan for d in g.decisions)
    assert planned == sorted(s.id for s in snaps if "a" in s.tags)
    for g in plan:
        assert set(g.kept).isdisjoint(g.removed)
        assert len(g.kept) + len(g.removed) == len(g.decisions)
