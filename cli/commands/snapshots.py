"""bk snapshots"""

from __future__ import annotations

from typing import Optional

import typer

from backupkit_cli.context import State
from backupkit_cli.select import HOSTS, PATHS, TAGS
from backupkit_cli.fmt import count, display_name, human_bytes, local_time


def command(
    ctx: typer.Context,
    compact: bool = typer.Option(False, "--compact", "-c", help="One line per snapshot: no paths, no size."),
    group_by: str = typer.Option("", "--group-by", "-g", help="List in groups by host, paths and/or tags (e.g. host,paths)."),
    latest: Optional[int] = typer.Option(
        None, "--latest", metavar="N", help="Only the N newest snapshots of each host and set of paths."
    ),
    host: list[str] = HOSTS,
    tag: list[str] = TAGS,
    path: list[str] = PATHS,
) -> None:
    from backupkit.policy import parse_group_by
    from backupkit.snapshot import group_by as group, latest_per_source

    from backupkit_cli.select import select_snapshots

    st: State = ctx.obj
    fields = parse_group_by(group_by)  # a bad field fails before the repository is opened
    # No lock, on purpose: listing is one catalog read plus one LIST (<= 3 requests on S3,
    # a lock would add four and 200 ms), it deletes nothing, and the snapshot listing is
    # the source of truth, so a concurrent forget costs at most a catalog rewrite.
    repo = st.open_repo()
    # snapshots record absolute paths: match --path the same way (as forget does)
    snaps = select_snapshots(st, repo, host, tag, path)
    if latest is not None:
        snaps = latest_per_source(snaps, latest)
    groups = group(snaps, fields) if fields else None
    if st.json:
        if groups is None:
            st.console.json([s.to_json() for s in snaps])
        else:  # restic's shape: one object per group, its key and its snapshots
            st.console.json([
                {"group_key": k.to_json(fields), "snapshots": [s.to_json() for s in members]}
                for k, members in groups
            ])
        return
    for key, members in groups if groups is not None else [(None, snaps)]:
        # a group's heading is the table's title: on stdout with it, as restic's
        _table(st, members, compact, None if key is None else f"snapshots for ({key}):")
        st.console.info(count(len(members), "snapshot"))


def _table(st: State, snaps: list, compact: bool, title: str | None) -> None:
    from rich.table import Table

    table = Table(box=None, header_style="bold", title=title, title_justify="left", title_style="bold")
    for col in ("ID", "Time", "Host", "Tags") if compact else ("ID", "Time", "Host", "Tags", "Paths", "Size"):
        table.add_column(col)
    for s in snaps:
        row = [s.short_id, local_time(s.time), display_name(s.host), display_name(",".join(s.tags))]
        if not compact:
            row += ["\n".join(display_name(p) for p in s.paths), human_bytes(s.summary.get("bytes_total", 0))]
        table.add_row(*row)
    st.console.table(table)
