"""bk list"""

from __future__ import annotations

import typer

from backupkit_cli.context import State


def command(
    ctx: typer.Context,
    kind: str = typer.Argument(..., metavar="TYPE", help="snapshots, index, packs, keys, locks or blobs"),
) -> None:
    """List the ids of one kind of object, one per line (as restic's list; blobs as
    "data ID" or "meta ID"). Takes no lock: it only lists."""
    from backupkit.managers.listing import check_kind, list_objects

    st: State = ctx.obj
    check_kind(kind)  # a wrong type is a usage error before the repository is opened
    repo = st.open_repo()
    if st.json:
        lines = list_objects(repo, kind)
        if kind == "blobs":
            st.console.json([{"type": t, "id": i} for t, i in (line.split(" ") for line in lines)])
        else:
            st.console.json(list(lines))
        return
    for line in list_objects(repo, kind):
        st.console.data(line)
