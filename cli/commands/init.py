"""bk init"""

from __future__ import annotations

import typer

from backupkit_cli.context import State, kdf_params


def command(
    ctx: typer.Context,
    pack_size: int = typer.Option(16, "--pack-size", help="Target pack size in MiB."),
    compression: int = typer.Option(3, "--compression", help="zstd level (0 = off)."),
) -> None:
    from backupkit.repo.repository import MiB, Repository

    st: State = ctx.obj
    store = st.open_store()
    pw = st.password(confirm=True, create_default=True)
    repo = Repository.init(
        store, pw, kdf=kdf_params(), pack_size=pack_size * MiB, compression_level=compression, cache_root=st.cache_root()
    )
    if st.json:
        st.console.json({"repository": st.repo_url(), "id": repo.config.repo_id, "key": repo.key_id})
    else:
        st.console.success(f"created repository {repo.config.repo_id[:10]} at {st.repo_url()}")
        st.console.info("keep the password safe: without it the data cannot be restored")
