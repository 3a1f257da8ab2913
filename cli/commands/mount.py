"""bk mount"""

from __future__ import annotations

import typer

from backupkit_cli.context import State


def command(
    ctx: typer.Context,
    mountpoint: str = typer.Argument(..., help="An empty directory to mount the repository on."),
    allow_other: bool = typer.Option(False, "--allow-other", help="Let other users access the mounted files (file modes still apply)."),
    host: list[str] = typer.Option([], "--host", "-H", help="Only snapshots of this host (repeatable)."),
    tag: list[str] = typer.Option([], "--tag", help="Only snapshots with these tags (a,b = both; repeat for either)."),
    path: list[str] = typer.Option([], "--path", help="Only snapshots that include this path (repeatable)."),
) -> None:
    import os
    import time

    from backupkit.mount.fs import MountFS
    from backupkit.mount.fuse import check_mountpoint, load_fuse, serve
    from backupkit.objects.reader import ContentReader
    from backupkit.snapshot import filter_snapshots, list_snapshots

    st: State = ctx.obj
    load_fuse()
    check_mountpoint(mountpoint)  # before opening the repository: a bad mount point fails fast
    console = st.console

    class Reporter:
        def on_error(self, fspath: str, error: Exception) -> None:
            console.warn(f"{fspath}: {error}")

    started = time.monotonic()
    with st.locked_repo(exclusive=False, operation="mount") as repo:
        with ContentReader(repo, connections=st.store_connections()) as reader:
            fs = MountFS(repo, lambda: filter_snapshots(list_snapshots(repo, repair_catalog=False), host, tag, [os.path.abspath(p) for p in path]), reader, Reporter())
            try:
                console.info(f"serving {len(fs.snapshots)} snapshots at {mountpoint}; quit with Ctrl-C or unmount it (fusermount3 -u {mountpoint})")
                serve(fs, mountpoint, allow_other=allow_other)
            finally:
                fs.close()
    summary = fs.summary(time.monotonic() - started)
    if st.json:
        console.json(summary.to_json())
    else:
        console.info(f"unmounted {mountpoint} after {summary.seconds:.0f}s ({summary.files_opened} files opened, {summary.errors} read errors)")
