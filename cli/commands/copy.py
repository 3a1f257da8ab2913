"""bk copy"""

from __future__ import annotations

from typing import Optional

import typer

from backupkit_cli.commands.fromrepo import from_password_command_option, from_password_file_option, from_repo_option, source_state
from backupkit_cli.select import HOSTS, PATHS, TAGS, selection
from backupkit_cli.context import State


def command(
    ctx: typer.Context,
    snapshots: list[str] = typer.Argument(None, help="Snapshots of the source to copy (latest, ids or prefixes); default: every snapshot the filters select."),
    from_repo: Optional[str] = from_repo_option(),
    from_password_file: Optional[str] = from_password_file_option(),
    from_password_command: Optional[str] = from_password_command_option(),
    host: list[str] = HOSTS,
    tag: list[str] = TAGS,
    path: list[str] = PATHS,
) -> None:
    from backupkit.managers.copy import CopyManager, CopyOptions

    st: State = ctx.obj
    src_st = source_state(st, from_repo, from_password_file, from_password_command)
    opts = CopyOptions(**selection(snapshots, host, tag, path), connections=max(4, src_st.store_connections()))
    with src_st.locked_repo(exclusive=False, operation="copy (source)") as source:
        with st.locked_repo(exclusive=False, operation="copy") as target:
            res = CopyManager(source, target).run(opts)
    if st.json:
        st.console.json(res.to_json())
        return
    for c in res.copied:
        st.console.data(f"snapshot {c.source.short_id} copied to {c.target.short_id} ({c.files} files)")
    how = "blobs copied as they are" if res.same_chunker else "files re-chunked (the chunker parameters differ)"
    st.console.success(f"copied {len(res.copied)} snapshot(s), {len(res.skipped)} already in the target; "
                       f"{res.blobs_added} blobs added; {how}")
