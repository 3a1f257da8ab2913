"""bk cache"""

from __future__ import annotations

import typer

from backupkit_cli.context import State
from backupkit_cli.fmt import human_bytes


def command(
    ctx: typer.Context,
    cleanup: bool = typer.Option(False, "--cleanup", help="Remove the caches of repositories not used for --max-age days."),
    max_age: int = typer.Option(30, "--max-age", min=0, metavar="DAYS", help="Caches unused for longer are old."),
    no_size: bool = typer.Option(False, "--no-size", help="Do not measure the caches (faster)."),
) -> None:
    """List the local caches (repository id, last used, size), or remove old ones.

    Each repository has its own cache directory below the cache root (--cache-dir,
    BK_CACHE_DIR, else ~/.cache/backupkit); bk marks it used every time it opens the
    repository. Takes no repository, password or lock.
    """
    from backupkit.errors import UsageError
    from backupkit.repo.cache_dirs import list_caches, remove_old_caches

    st: State = ctx.obj
    root = st.cache_root()
    if root is False:
        raise UsageError("the cache is disabled (--no-cache): nothing to list or clean")
    if cleanup:
        done = remove_old_caches(root, max_age)
        for failure in done.failed:
            st.console.warn(f"could not remove {failure}")
        if st.json:
            st.console.json(done.to_json())
        elif done.removed or done.locations_removed:
            n = len(done.removed)
            st.console.success(
                f"removed {n} old cache{'' if n == 1 else 's'} ({human_bytes(done.freed)}) from {done.root}"
            )
        else:
            st.console.info(f"no caches older than {max_age} days in {done.root}")
        if done.failed:
            raise typer.Exit(1)
        return
    listing = list_caches(root, max_age, sizes=not no_size)
    if st.json:
        st.console.json(listing.to_json())
        return
    import time

    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("Repo ID", "Last used", "Old", *(() if no_size else ("Size",))):
        table.add_column(col)
    now = time.time()
    for c in listing.caches:
        days = int(max(0.0, now - c.last_used) // 86400)
        row = [c.repo_id[:10], f"{days} day{'' if days == 1 else 's'} ago", "yes" if c.old else ""]
        if not no_size:
            row.append(human_bytes(c.size or 0))
        table.add_row(*row)
    if listing.caches:
        st.console.table(table)
    n = len(listing.caches)
    st.console.info(f"{n} cache{'' if n == 1 else 's'} in {listing.root}")
