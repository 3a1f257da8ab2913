"""bk find"""

from __future__ import annotations

from typing import Optional

import typer

from backupkit_cli.select import HOSTS, PATHS, TAGS, selection
from backupkit_cli.context import State
from backupkit_cli.fmt import local_time, mode_string


def command(
    ctx: typer.Context,
    patterns: list[str] = typer.Argument(..., metavar="PATTERN...", help="restic path patterns: '*.conf' (any name), '/etc/ssh' (from the root, and all below), 'a/b'; ids with --blob/--tree/--pack."),
    ignore_case: bool = typer.Option(False, "--ignore-case", "-i", help="Ignore case in the patterns."),
    long: bool = typer.Option(False, "--long", "-l", help="Mode, size and time of each match."),
    newest: Optional[str] = typer.Option(None, "--newest", "-N", help="Only entries modified at or before this time (YYYY-MM-DD[ HH:MM[:SS]], local)."),
    oldest: Optional[str] = typer.Option(None, "--oldest", "-O", help="Only entries modified at or after this time."),
    blob: bool = typer.Option(False, "--blob", help="The patterns are blob ids (or prefixes): which files hold them."),
    tree: bool = typer.Option(False, "--tree", help="The patterns are trie node ids: which snapshots hold them."),
    pack: bool = typer.Option(False, "--pack", help="The patterns are pack ids (or prefixes): which files hold their blobs."),
    snapshot: list[str] = typer.Option([], "--snapshot", "-s", help="Search only this snapshot (latest, id or prefix; repeatable)."),
    host: list[str] = HOSTS,
    tag: list[str] = TAGS,
    path: list[str] = PATHS,
) -> int:
    from backupkit.errors import BadArgument
    from backupkit.managers.find import BLOB, NAME, PACK, TREE, FindManager, FindOptions, parse_find_time

    st: State = ctx.obj
    kinds = [k for k, on in ((BLOB, blob), (TREE, tree), (PACK, pack)) if on]
    if len(kinds) > 1:
        raise BadArgument("--blob, --tree and --pack exclude each other")
    opts = FindOptions(
        patterns=tuple(patterns), kind=kinds[0] if kinds else NAME, ignore_case=ignore_case,
        oldest=parse_find_time(oldest, "--oldest") if oldest else None,
        newest=parse_find_time(newest, "--newest") if newest else None,
        **selection(snapshot, host, tag, path),
    )
    with st.locked_repo(exclusive=False, operation="find", read_only=True) as repo:
        res = FindManager(repo, st.snapshots(repo)).run(opts)
    if st.json:
        st.console.json(res.to_json())
        return 0
    from datetime import datetime

    for group in res.snapshots:
        s = group.snapshot
        st.console.info(f"Found {len(group.matches)} matching entries in snapshot {s.short_id} from {local_time(s.time)}")
        for m in group.matches:
            name = m.path.decode("utf-8", "backslashreplace")
            if m.blob is not None:
                line = f"{m.found_in} {m.blob[:16]}{f' (pack {m.pack[:16]})' if m.pack else ''}: {name}"
            elif long:
                t = datetime.fromtimestamp(m.mtime_ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")
                line = f"{mode_string(m.type, m.mode)} {m.size:>12} {t} {name}"
            else:
                line = name
            st.console.data(line)
    st.console.info(f"{res.hits} matches in {len(res.snapshots)} of {res.searched} snapshots")
    return 0
