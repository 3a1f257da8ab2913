"""bk tag"""

from __future__ import annotations

import typer

from backupkit_cli.select import HOSTS, PATHS, TAGS, selection
from backupkit_cli.context import State


def command(
    ctx: typer.Context,
    snapshots: list[str] = typer.Argument(None, help="Snapshots to change (latest, ids or prefixes); default: every snapshot the filters select."),
    add: list[str] = typer.Option([], "--add", metavar="TAGS", help="Add these tags (a,b; repeatable)."),
    remove: list[str] = typer.Option([], "--remove", metavar="TAGS", help="Remove these tags (a,b; repeatable)."),
    set_: list[str] = typer.Option(None, "--set", metavar="TAGS", help="Replace all tags with these (a,b; repeatable; --set '' removes every tag)."),
    host: list[str] = HOSTS,
    tag: list[str] = TAGS,
    path: list[str] = PATHS,
) -> None:
    from backupkit.managers.tag import TagManager, TagOptions

    st: State = ctx.obj
    opts = TagOptions(
        **selection(snapshots, host, tag, path), add=tuple(add), remove=tuple(remove), set=tuple(set_) if set_ is not None else None,
    )
    with st.locked_repo(exclusive=True, operation="tag") as repo:
        res = TagManager(repo).run(opts)
    if st.json:
        st.console.json(res.to_json())
        return
    for c in res.changed:
        st.console.data(f"{c.old.short_id} -> {c.new.short_id}  tags: {','.join(c.new.tags) or '(none)'}")
    st.console.success(f"modified {len(res.changed)} snapshot(s)" + (f", {len(res.unchanged)} already as asked" if res.unchanged else ""))
