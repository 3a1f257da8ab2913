"""Snapshot selection, the same for every command (restic's habits).

A reference is ``latest``, an id, a unique prefix of at least 4 hex digits, or
``snapshot/<id>``; ``REF:PATH`` names a file or folder inside it (restic's
``latest:/home/u/dir``). ``--host``, ``--tag`` and ``--path`` filter the snapshots the
reference is looked up among, so ``latest --host h`` is the newest snapshot of host h; an
id names its snapshot whatever the filters say (as restic).
The options are declared once here; commands take them as their defaults.
"""

from __future__ import annotations

import os
from typing import Any

import typer

HOSTS = typer.Option([], "--host", "-H", help="Only snapshots of this host (repeatable: any of them).")
TAGS = typer.Option([], "--tag", help="Only snapshots with these tags (a,b = both; repeat for either).")
PATHS = typer.Option([], "--path", help="Only snapshots that include this path (repeatable: all of them).")


def split_ref(text: str) -> tuple[str, str | None]:
    """``"latest:/home/u"`` -> ``("latest", "/home/u")``; ``"latest"`` -> ``("latest", None)``.

    The part after the first colon is a path inside the snapshot (made absolute); a
    snapshot reference never contains a colon.
    """
    ref, sep, sub = text.partition(":")
    if not sep:
        return text, None
    return ref, "/" + sub.lstrip("/") if sub else "/"


def abs_paths(paths: list[str] | tuple[str, ...]) -> list[str]:
    """``--path`` values as snapshots record them: absolute, as ``backup`` resolved them."""
    return [os.path.abspath(p) for p in paths]


def selection(refs: list[str] | None, hosts: list[str], tags: list[str], paths: list[str]) -> dict[str, tuple[str, ...]]:
    """The snapshot arguments and ``--host``/``--tag``/``--path`` as the fields of an
    options dataclass's ``SnapshotSelection``, to pass as keyword arguments."""
    return {"refs": tuple(refs or ()), "hosts": tuple(hosts), "tags": tuple(tags), "paths": tuple(abs_paths(paths))}


def select_snapshots(st: Any, repo: Any, hosts=(), tags=(), paths=()) -> list[Any]:
    """The snapshots the filters keep, oldest first."""
    from backupkit.snapshot import filter_snapshots

    return filter_snapshots(st.snapshots(repo), hosts, tags, abs_paths(paths))


def select_snapshot(st: Any, repo: Any, ref: str, hosts=(), tags=(), paths=(), snaps: list[Any] | None = None) -> Any:
    """The snapshot ``ref`` names; ``latest`` among those the filters keep (``snaps``: already
    listed). A ref naming a damaged snapshot object fails with that object's error."""
    from backupkit.errors import SnapshotNotFound
    from backupkit.snapshot import raise_if_unreadable, select_snapshot as select

    pool = st.snapshots(repo) if snaps is None else snaps
    try:
        return select(pool, ref, hosts, tags, abs_paths(paths))
    except SnapshotNotFound:
        raise_if_unreadable(repo, ref, pool)
        raise
