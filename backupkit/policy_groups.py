"""Which snapshots ``bk forget`` (and every other command) considers, and how it groups them.

Vocabulary as in ``policy.py``: *snapshot info* (the fields a policy looks at),
*filter* (``--host`` / ``--tag`` / ``--path``), *group* (snapshots sharing a
``GroupKey`` chosen by ``--group-by``). Holds ``SnapshotInfo``, ``GroupKey``, the one
snapshot filter and the grouping with its ``--group-by`` parser.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from backupkit.errors import BadArgument
from backupkit.policy_keep import parse_tag_list

GROUP_BY_FIELDS = frozenset({"host", "paths", "tags"})
_GROUP_BY_ALIASES = {
    "host": "host",
    "hosts": "host",
    "path": "paths",
    "paths": "paths",
    "tag": "tags",
    "tags": "tags",
}


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


@dataclass(frozen=True, order=True)
class GroupKey:
    """What the snapshots of one group share.

    Fields not grouped by stay empty. ``paths`` and ``tags`` are sorted, so the
    order a backup listed them in does not split groups.
    """

    host: str = ""
    paths: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    def to_json(self, fields: Iterable[str] = GROUP_BY_FIELDS) -> dict:
        """The key as JSON: ``host``, ``paths`` and ``tags``, or only ``fields``."""
        doc = {"host": self.host, "paths": list(self.paths), "tags": list(self.tags)}
        return {f: doc[f] for f in sorted(_normalize_group_by(fields))}

    def __str__(self) -> str:
        parts = []
        if self.host:
            parts.append(f"host {self.host}")
        if self.paths:
            parts.append(f"paths [{', '.join(self.paths)}]")
        if self.tags:
            parts.append(f"tags [{', '.join(self.tags)}]")
        return ", ".join(parts) if parts else "all snapshots"


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
