"""bk mount"""

from __future__ import annotations

import typer

from backupkit_cli.context import State
from backupkit_cli.select import HOSTS, PATHS, TAGS


def command(
    ctx: typer.Context,
    mountpoint: str = typer.Argument(..., help="An empty directory to mount the repository on."),
    allow_other: bool = typer.Option(
        False, "--allow-other", help="Let other users access the mounted files (file modes still apply)."
    ),
    host: list[str] = HOSTS,
    tag: list[str] = TAGS,
    path: list[str] = PATHS,
) -> None:
    """Serve the repository as a read-only file system (restic's layout: snapshots/,
    ids/, hosts/, tags/, latest) until Ctrl-C, SIGTERM or an unmount; exit 0 then."""
    import time

    from backupkit.mount.fs import MountFS
    from backupkit.mount.fuse import check_mountpoint, load_fuse, serve
    from backupkit.objects.reader import ContentReader
    from backupkit_cli import signals
    from backupkit_cli.fmt import count, display_name
    from backupkit_cli.select import select_snapshots

    st: State = ctx.obj
    load_fuse()
    check_mountpoint(mountpoint)  # before opening the repository: a bad mount point fails fast
    console = st.console

    class Reporter:
        def on_error(self, fspath: str, error: Exception) -> None:
            console.warn(f"{display_name(fspath)}: {error}")

    started = time.monotonic()
    with st.locked_repo(exclusive=False, operation="mount", read_only=True) as repo:
        with ContentReader(repo, connections=st.store_connections()) as reader:
            fs = MountFS(repo, lambda: select_snapshots(st, repo, host, tag, path), reader, Reporter())
            try:
                where = display_name(mountpoint)
                console.info(f"serving {count(len(fs.snapshots), 'snapshot')} at {where}; quit with Ctrl-C or unmount it (fusermount3 -u {where})")
                # libfuse ends its loop on SIGINT, SIGTERM and SIGHUP (then bk unmounts,
                # releases the lock and exits 0), but only takes signals left at default
                with signals.left_to_c_library():
                    serve(fs, mountpoint, allow_other=allow_other)
            finally:
                fs.close()
    summary = fs.summary(time.monotonic() - started)
    if st.json:
        console.json(summary.to_json())
    else:
        console.info(
            f"unmounted {display_name(mountpoint)} after {summary.seconds:.0f}s "
            f"({count(summary.files_opened, 'file')} opened, {count(summary.errors, 'read error')})"
        )
