"""bk ls"""

from __future__ import annotations

from typing import Optional

import typer

from backupkit_cli.context import State
from backupkit_cli.fmt import mode_string
from backupkit_cli.select import HOSTS, PATHS, TAGS


def command(
    ctx: typer.Context,
    snapshot: str = typer.Argument(..., help="Snapshot: latest, an id or a unique prefix (REF:DIR starts at DIR)."),
    path: Optional[str] = typer.Argument(None, help="Directory or file inside the snapshot (default /)."),
    long: bool = typer.Option(False, "--long", "-l", help="Mode, owner, size and time."),
    recursive: bool = typer.Option(
        True, "--recursive", "-R", hidden=True, help="Everything below the path (the default; kept for old scripts)."
    ),
    max_depth: Optional[int] = typer.Option(
        None, "--max-depth", "-d", metavar="N", min=0, help="Only N levels below the path (1: its contents, as a plain ls)."
    ),
    reverse: bool = typer.Option(False, "--reverse", help="The order backwards (with --sort, or by name)."),
    sort: str = typer.Option(
        "name", "--sort", "-s", metavar="KEY", help="Order by name, size, time (mtime) or extension."
    ),
    host: list[str] = HOSTS,
    tag: list[str] = TAGS,
    paths: list[str] = PATHS,
) -> None:
    """List the files in a snapshot: everything below the path (as restic), or --max-depth levels."""
    from datetime import datetime

    from backupkit.errors import BadArgument
    from backupkit.managers.ls import LsManager, check_sort, sorted_entries
    from backupkit_cli.select import select_snapshot, split_ref

    st: State = ctx.obj
    check_sort(sort)  # a wrong key is a usage error before the repository is opened
    ref, sub = split_ref(snapshot)
    if sub is not None and path is not None:
        raise BadArgument(f"give the directory once: {snapshot} or {ref} {path}")
    with st.locked_repo(exclusive=False, operation="ls", read_only=True) as repo:
        snap = select_snapshot(st, repo, ref, host, tag, paths)
        entries = LsManager(repo).ls(snap, sub or path or "/", recursive=True, max_depth=max_depth)
        if sort != "name" or reverse:  # restic's --sort / --reverse: the whole listing first
            entries = sorted_entries(entries, sort, reverse)
        if st.json:
            entries = list(entries)
        else:
            # print while walking: a large snapshot's listing starts at once
            for e in entries:
                st.console.data(_line(e, long, datetime) if long else e.path)
            return
    st.console.json({"snapshot": snap.to_json(), "entries": [e.to_json() for e in entries]})


def _line(e, long: bool, datetime) -> str:
    t = datetime.fromtimestamp(e.mtime_ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")
    owner = f"{e.user or e.uid}:{e.group or e.gid}"
    line = f"{mode_string(e.type, e.mode)} {owner:>15} {e.size:>12} {t} {e.path}"
    if e.link_target is not None:
        line += f" -> {e.link_target}"
    return line
