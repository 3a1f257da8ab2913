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
    from backupkit.managers.listing import check_kind, list_blobs, list_objects

    st: State = ctx.obj
    check_kind(kind)  # a wrong type is a usage error before the repository is opened
    repo = st.open_repo()
    if kind == "blobs":
        if st.json:
            st.console.json([{"type": t, "id": i} for t, i in list_blobs(repo)])
        else:
            for t, i in list_blobs(repo):
                st.console.data(f"{t} {i}")
    elif st.json:
        st.console.json(list(list_objects(repo, kind)))
    else:
        for i in list_objects(repo, kind):
            st.console.data(i)
