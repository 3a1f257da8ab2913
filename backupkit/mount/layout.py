"""The directories above the snapshots in a mounted repository (restic's layout).

    /snapshots/<time>/        every snapshot, named by its time; ``latest`` links the newest
    /ids/<short id>/          every snapshot, named by its short id
    /hosts/<host>/<time>/     the snapshots of each host, with a ``latest`` link each
    /tags/<tag>/<time>/       the snapshots carrying each tag, with a ``latest`` link each

A time name is the snapshot's time in the local time zone, to the second, as RFC 3339
(``2026-12-02T16:34:24+01:00``, ``...Z`` in UTC): restic's default. Two snapshots of the
same second in one directory are told apart by a suffix (``...Z-1``), given in (time, id)
order, so names do not move when a newer snapshot arrives. A tag that is no file name is
changed as restic does: ``""`` and ``.`` become ``_``, ``..`` becomes ``__``, a slash
becomes ``_``. ``latest`` is a relative symlink to the newest time name beside it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from backupkit.snapshot import Snapshot

TOP = ("hosts", "ids", "snapshots", "tags")


@dataclass
class MetaNode:
    """A directory (``children``), a symlink (``target``) or a snapshot's root (``snap``)."""

    children: dict[str, MetaNode] | None = None
    target: str | None = None
    snap: Snapshot | None = None

    @property
    def is_dir(self) -> bool:
        return self.children is not None


@dataclass
class Layout:
    root: MetaNode
    #: newest snapshot time (ns): the times of the meta directories
    newest_ns: int = 0
    snapshots: tuple[Snapshot, ...] = field(default_factory=tuple)


def time_name(snap: Snapshot) -> str:
    """RFC 3339 in local time, to the second; UTC written ``Z`` (Go's ``time.RFC3339``)."""
    t = datetime.fromtimestamp(snap.time_ns // 1_000_000_000).astimezone()
    s = t.isoformat(timespec="seconds")
    return s[:-6] + "Z" if s.endswith("+00:00") else s


def tag_name(tag: str) -> str:
    if tag in ("", "."):
        return "_"
    if tag == "..":
        return "__"
    return tag.replace("/", "_")


def host_name(host: str) -> str:
    return tag_name(host)


def _unique(d: dict[str, MetaNode], name: str) -> str:
    out, i = name, 1
    while out in d or out == "latest":
        out = f"{name}-{i}"
        i += 1
    return out


def _dir() -> MetaNode:
    return MetaNode(children={})


def build_layout(snaps: Iterable[Snapshot]) -> Layout:
    """The meta tree of ``snaps`` (any order; they are placed in (time, id) order)."""
    ordered = sorted(snaps, key=lambda s: (s.time_ns, s.id))
    root = MetaNode(children={name: _dir() for name in TOP})
    top = root.children
    assert top is not None

    def place_timed(d: MetaNode, snap: Snapshot) -> None:
        kids = d.children
        assert kids is not None
        name = _unique(kids, time_name(snap))
        kids[name] = MetaNode(snap=snap)
        kids["latest"] = MetaNode(target=name)  # ordered: the last placed is the newest

    def subdir(d: MetaNode, name: str) -> MetaNode:
        kids = d.children
        assert kids is not None
        if name not in kids:
            kids[name] = _dir()
        return kids[name]

    for s in ordered:
        place_timed(top["snapshots"], s)
        ids = top["ids"].children
        assert ids is not None
        ids[_unique(ids, s.short_id)] = MetaNode(snap=s)
        place_timed(subdir(top["hosts"], host_name(s.host)), s)
        for tag in dict.fromkeys(tag_name(t) for t in s.tags):
            place_timed(subdir(top["tags"], tag), s)
    return Layout(root=root, newest_ns=ordered[-1].time_ns if ordered else 0, snapshots=tuple(ordered))


__all__ = ["Layout", "MetaNode", "TOP", "build_layout", "tag_name", "time_name"]
