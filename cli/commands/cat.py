"""bk cat config|index ID|snapshot ID|blob ID|key ID|catalog"""

from __future__ import annotations

from typing import Optional

import typer

from backupkit_cli.context import State


def _jsonable(x):
    if isinstance(x, bytes):
        return x.hex()
    if isinstance(x, dict):
        return {(k.hex() if isinstance(k, bytes) else str(k)): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def command(
    ctx: typer.Context,
    kind: str = typer.Argument(..., help="config, index, snapshot, blob, key, catalog or node"),
    obj_id: Optional[str] = typer.Argument(None, help="Object id (hex; a unique prefix for snapshot)."),
) -> None:
    import json
    import sys

    import msgpack

    from backupkit.crypto import T_CATALOG, T_INDEX
    from backupkit.errors import BadArgument
    from backupkit_cli.select import select_snapshot

    st: State = ctx.obj
    repo = st.open_repo()

    def need_id() -> str:
        if not obj_id:
            raise BadArgument(f"bk cat {kind} needs an id")
        return obj_id

    if kind == "config":
        doc = repo.config.__dict__
    elif kind == "catalog":
        doc = msgpack.unpackb(repo.get_object(T_CATALOG, "catalog", b"catalog"))
    elif kind == "index":
        i = need_id()
        doc = msgpack.unpackb(repo.get_object(T_INDEX, f"index/{i}", bytes.fromhex(i)))
    elif kind == "snapshot":
        doc = select_snapshot(st, repo, need_id()).to_json()
    elif kind in ("blob", "node"):
        data = repo.read_blob(bytes.fromhex(need_id()))
        if kind == "blob":
            sys.stdout.buffer.write(data)
            return
        doc = msgpack.unpackb(data)
    elif kind == "key":
        i = need_id()
        doc = json.loads(repo.store.get(f"keys/{i}"))
    else:
        raise BadArgument(f"unknown object kind {kind!r}")
    st.console.json(_jsonable(doc))
