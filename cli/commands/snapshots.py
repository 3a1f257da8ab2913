"""bk snapshots"""

from __future__ import annotations


import typer

from backupkit_cli.context import State
from backupkit_cli.select import HOSTS, PATHS, TAGS
from backupkit_cli.fmt import count, display_name, human_bytes, local_time


def command(
    ctx: typer.Context,
    host: list[str] = HOSTS,
    tag: list[str] = TAGS,
    path: list[str] = PATHS,
) -> None:
    from backupkit_cli.select import select_snapshots

    st: State = ctx.obj
    # No lock, on purpose: listing is one catalog read plus one LIST (<= 3 requests on S3,
    # a lock would add four and 200 ms), it deletes nothing, and the snapshot listing is
    # the source of truth, so a concurrent forget costs at most a catalog rewrite.
    repo = st.open_repo()
    # snapshots record absolute paths: match --path the same way (as forget does)
    snaps = select_snapshots(st, repo, host, tag, path)
    if st.json:
        st.console.json([s.to_json() for s in snaps])
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("ID", "Time", "Host", "Tags", "Paths", "Size"):
        table.add_column(col)
    for s in snaps:
        table.add_row(
            s.short_id,
            local_time(s.time),
            display_name(s.host),
            display_name(",".join(s.tags)),
            "\n".join(display_name(p) for p in s.paths),
            human_bytes(s.summary.get("bytes_total", 0)),
        )
    st.console.table(table)
    st.console.info(count(len(snaps), "snapshot"))
