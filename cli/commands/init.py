"""bk init"""

from __future__ import annotations

from typing import Optional

import typer

from backupkit_cli.commands.fromrepo import from_password_command_option, from_password_file_option, from_repo_option, source_state
from backupkit.limits import COMPRESSION_MAX, PACK_SIZE_MAX, PACK_SIZE_MIN
from backupkit_cli.context import State, kdf_params


def command(
    ctx: typer.Context,
    pack_size: str = typer.Option("16", "--pack-size", metavar="SIZE", help="Target pack size: a plain number is MiB (as restic), or a size such as 32M or 1.5GiB."),
    compression: int = typer.Option(3, "--compression", help=f"zstd level (0 = off, up to {COMPRESSION_MAX})."),
    copy_chunker_params: bool = typer.Option(False, "--copy-chunker-params", help="Use the chunker of --from-repo (bk copy then moves blobs without re-chunking)."),
    from_repo: Optional[str] = from_repo_option(),
    from_password_file: Optional[str] = from_password_file_option(),
    from_password_command: Optional[str] = from_password_command_option(),
) -> None:
    from backupkit.errors import BadArgument
    from backupkit.repo.repository import MiB, Repository
    from backupkit.units import parse_size

    st: State = ctx.obj
    text = pack_size.strip()
    size = int(text) * MiB if text.lstrip("-").isdigit() else parse_size(text, "--pack-size")
    # Validated before anything is written (a bad level once left a key file behind).
    # Packs below the minimum would let the store learn chunk sizes from pack sizes.
    if not PACK_SIZE_MIN <= size <= PACK_SIZE_MAX:
        raise BadArgument(f"--pack-size {pack_size}: use {PACK_SIZE_MIN // MiB} to {PACK_SIZE_MAX // MiB} MiB")
    if not 0 <= compression <= COMPRESSION_MAX:
        raise BadArgument(f"--compression {compression}: use 0 (off) to {COMPRESSION_MAX}")
    chunker_kw: dict = {}
    if copy_chunker_params:
        source = source_state(st, from_repo, from_password_file, from_password_command).open_repo()
        c = source.config
        chunker_kw = {"chunker": (c.chunker_min, c.chunker_avg, c.chunker_max), "chunker_key": source.keys.chunker_key}
        source.close()
    elif from_repo:
        raise BadArgument("--from-repo is only used with --copy-chunker-params")
    store = st.open_store()
    pw = st.check_new_password(st.password(confirm=True, create_default=True))
    repo = Repository.init(
        store, pw, kdf=kdf_params(), pack_size=size, compression_level=compression, cache_root=st.cache_root(),
        **chunker_kw,
    )
    st.remember_key(repo)
    if st.json:
        st.console.json({"repository": st.repo_url(), "id": repo.config.repo_id, "key": repo.key_id})
    else:
        st.console.success(f"created repository {repo.config.repo_id[:10]} at {st.repo_url()}")
        st.console.info("keep the password safe: without it the data cannot be restored")
