"""bk ls"""

from __future__ import annotations

from typing import Optional

import typer

from backupkit_cli.context import State
from backupkit_cli.fmt import mode_string


def command(
    ctx: typer.Context,
    snapshot: str = typer.Argument(..., help="Snapshot: latest, an id or a unique prefix."),
    path: Optional[str] = typer.Argument(None, help="Directory or file inside the snapshot (default /)."),
    long: bool = typer.Option(False, "--long", "-l", help="Mode, owner, size and time."),
    recursive: bool = typer.Option(False, "--recursive", "-R", help="Everything below the path."),
) -> None:
    from datetime import datetime

    from backupkit.managers.ls import LsManager
    from backupkit_cli.select import select_snapshot

    st: State = ctx.obj
    with st.locked_repo(exclusive=False, operation="ls", read_only=True) as repo:
        snap = select_snapshot(st, repo, snapshot)
        entries = LsManager(repo).ls(snap, path or "/", recursive=recursive)
    if st.json:
        st.console.json({"snapshot": snap.to_json(), "entries": [e.to_json() for e in entries]})
        return
    for e in entries:
        if long:
            t = datetime.fromtimestamp(e.mtime_ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")
            owner = f"{e.user or e.uid}:{e.group or e.gid}"
            line = f"{mode_string(e.type, e.mode)} {owner:>15} {e.size:>12} {t} {e.path}"
            if e.link_target is not None:
                line += f" -> {e.link_target}"
            st.console.data(line)
        else:
            st.console.data(e.path)
