"""bk diff"""

from __future__ import annotations

import typer

from backupkit_cli.context import State
from backupkit_cli.fmt import human_bytes
from backupkit_cli.select import HOSTS, PATHS, TAGS

_MARK = {"added": "+", "removed": "-", "modified": "M", "metadata": "U"}


def command(
    ctx: typer.Context,
    first: str = typer.Argument(..., help="The older snapshot: latest, an id or a unique prefix."),
    second: str = typer.Argument(..., help="The newer snapshot."),
    metadata: bool = typer.Option(True, "--metadata/--no-metadata", help="List metadata-only changes (mode, owner, times)."),
    host: list[str] = HOSTS,
    tag: list[str] = TAGS,
    path: list[str] = PATHS,
) -> None:
    from backupkit.managers.diff import DiffManager
    from backupkit_cli.select import select_snapshot

    from backupkit.errors import BadArgument

    st: State = ctx.obj
    for ref in (first, second):
        if ":" in ref:
            raise BadArgument(f"{ref}: diff compares whole snapshots (REF:PATH is for ls and restore)")
    with st.locked_repo(exclusive=False, operation="diff", read_only=True) as repo:
        snaps = st.snapshots(repo)
        a, b = (select_snapshot(st, repo, ref, host, tag, path, snaps=snaps) for ref in (first, second))
        res = DiffManager(repo).diff(a, b)
    if st.json:
        st.console.json(res.to_json())
        return
    st.console.info(f"comparing snapshot {a.short_id} to {b.short_id}:")
    for c in res.changes:
        if c.kind == "metadata" and not metadata:
            continue
        suffix = "/" if "d" in (c.type_a, c.type_b) else ""
        st.console.data(f"{_MARK[c.kind]}    {c.display}{suffix}")
    st.console.info(
        f"{res.added} added, {res.removed} removed, {res.modified} modified, {res.metadata} metadata only; "
        f"files added {human_bytes(res.size_added)}, removed {human_bytes(res.size_removed)}; "
        f"new data {human_bytes(res.data_added)}, data no longer used {human_bytes(res.data_removed)}"
    )
