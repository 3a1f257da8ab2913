"""The snapshot filter options (``--host``, ``--tag``, ``--path``) shared by the commands
that select snapshots, and the one way their values reach the engine."""

from __future__ import annotations

import os

import typer


def host_option():
    return typer.Option([], "--host", "-H", help="Only snapshots of this host (repeatable: any of them).")


def tag_option():
    return typer.Option([], "--tag", help="Only snapshots with these tags (a,b = both; repeat for either).")


def path_option():
    return typer.Option([], "--path", help="Only snapshots of this path (repeatable: all of them).")


def snapshot_paths(paths: list[str]) -> tuple[str, ...]:
    """Snapshots record absolute paths: match ``--path`` the same way (as forget does)."""
    return tuple(os.path.abspath(p) for p in paths)
