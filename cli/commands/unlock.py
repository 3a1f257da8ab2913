"""bk unlock"""

from __future__ import annotations

import typer

from backupkit_cli.context import State
from backupkit_cli.fmt import count


def command(
    ctx: typer.Context,
    remove_all: bool = typer.Option(
        False, "--remove-all", help="Remove every lock, also live ones (their holders then fail at their next refresh)."
    ),
) -> None:
    """Remove stale locks: unrefreshed for a TTL of store time, or held by a dead process here.

    Takes no lock itself. Staleness is judged by the store's clock (a probe object's
    modification time), so a client whose clock is off judges like everyone else.
    """
    from backupkit.repo.lock import human_age

    st: State = ctx.obj
    repo = st.open_repo()
    try:
        mgr = st.lock_manager(repo)
        if remove_all:
            names = mgr.remove_all()
            if st.json:
                st.console.json({"removed": [{"name": n} for n in names]})
            else:
                st.console.success(f"removed {count(len(names), 'lock')}")
            return
        removed = mgr.remove_stale()
        if st.json:
            st.console.json({"removed": [dict(li.to_json(), reason=why) for li, why in removed]})
            return
        for li, why in removed:
            st.console.info(f"removed stale lock of {li.holder()}: {why}")
        st.console.success(f"removed {count(len(removed), 'stale lock')}")
        if st.verbose:
            now_ref, left = mgr.list_locks()
            for li in left:
                kind = "exclusive" if li.exclusive else "shared"
                st.console.info(f"kept {kind} lock of {li.holder()}, held for {human_age(now_ref - li.since)}")
    finally:
        repo.close()
