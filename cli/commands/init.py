"""bk init"""

from __future__ import annotations

import typer

from backupkit_cli.context import State, kdf_params


def command(
    ctx: typer.Context,
    pack_size: str = typer.Option("16", "--pack-size", metavar="SIZE", help="Target pack size: a plain number is MiB (as restic), or a size such as 32M or 1.5GiB."),
    compression: int = typer.Option(3, "--compression", help="zstd level (0 = off)."),
) -> None:
    from backupkit.errors import BadArgument
    from backupkit.repo.repository import MiB, Repository
    from backupkit.units import parse_size

    st: State = ctx.obj
    text = pack_size.strip()
    size = int(text) * MiB if text.isdigit() else parse_size(text, "--pack-size")
    if size < MiB:
        raise BadArgument(f"invalid --pack-size {pack_size!r}: at least 1 MiB")
    store = st.open_store()
    pw = st.password(confirm=True, create_default=True)
    repo = Repository.init(
        store, pw, kdf=kdf_params(), pack_size=size, compression_level=compression, cache_root=st.cache_root()
    )
    if st.json:
        st.console.json({"repository": st.repo_url(), "id": repo.config.repo_id, "key": repo.key_id})
    else:
        st.console.success(f"created repository {repo.config.repo_id[:10]} at {st.repo_url()}")
        st.console.info("keep the password safe: without it the data cannot be restored")
