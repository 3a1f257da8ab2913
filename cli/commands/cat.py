"""bk cat config|index ID|snapshot ID|blob ID|key ID|catalog|node ID|lock ID|pack ID|tree SNAP[:PATH]"""

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
    kind: str = typer.Argument(..., help="config, index, snapshot, blob, key, catalog, node, lock, pack or tree"),
    obj_id: Optional[str] = typer.Argument(None, help="Object id (hex; a unique prefix for snapshot); for tree SNAP[:PATH] (a directory, default /)."),
) -> None:
    import json
    import re
    import sys

    import msgpack

    from backupkit.crypto import T_CATALOG, T_INDEX
    from backupkit.errors import BadArgument, FormatError
    from backupkit_cli.select import select_snapshot

    st: State = ctx.obj
    if kind == "masterkey":
        raise BadArgument(
            "bk cat masterkey is not offered: the master keys are never written unwrapped "
            "(docs/security.md); keep a copy of a key file (bk key list, keys/ID) and its password instead"
        )
    if kind not in ("config", "catalog", "index", "snapshot", "blob", "node", "key", "lock", "pack", "tree"):
        raise BadArgument(f"unknown object kind {kind!r}")

    def need_id() -> str:
        if not obj_id:
            raise BadArgument(f"bk cat {kind} needs " + ("a snapshot: SNAP[:PATH]" if kind == "tree" else "an id"))
        if kind == "tree":
            return obj_id  # a snapshot ref and a path: kept as given
        if kind != "snapshot" and not re.fullmatch(r"[0-9a-fA-F]{64}", obj_id):
            raise BadArgument(f"bk cat {kind}: {obj_id!r} is not an id (64 hex digits)")
        return obj_id.lower()

    if kind not in ("config", "catalog"):
        need_id()  # a malformed id is a usage error before the repository is opened
    repo = st.open_repo()

    def unpack(data: bytes, what: str):
        try:
            return msgpack.unpackb(data, strict_map_key=False)
        except (ValueError, TypeError, RecursionError) as e:
            raise FormatError(f"{what} is malformed: {e}") from None

    if kind == "config":
        doc = repo.config.__dict__
    elif kind == "catalog":
        doc = unpack(repo.get_object(T_CATALOG, "catalog", b"catalog"), "catalog")
    elif kind == "index":
        i = need_id()
        doc = unpack(repo.get_object(T_INDEX, f"index/{i}", bytes.fromhex(i)), f"index/{i}")
    elif kind == "snapshot":
        doc = select_snapshot(st, repo, need_id()).to_json()
    elif kind == "tree":  # restic's cat tree SNAP:PATH: a directory's entries
        from backupkit.managers.ls import LsManager

        ref, _, path = need_id().partition(":")
        doc = {"nodes": [n.to_json() for n in LsManager(repo).tree(select_snapshot(st, repo, ref), path or "/")]}
    elif kind in ("blob", "node"):
        data = repo.read_blob(bytes.fromhex(need_id()))
        if kind == "blob":
            sys.stdout.buffer.write(data)
            return
        doc = unpack(data, f"node {obj_id}")
    elif kind == "key":
        i = need_id()
        from backupkit.limits import KEY_FILE_MAX

        try:
            doc = json.loads(repo.store.get(f"keys/{i}", max_size=KEY_FILE_MAX))
        except (ValueError, RecursionError) as e:
            raise FormatError(f"damaged key file {i}: {e}") from None
    elif kind == "lock":  # who holds it, as `bk unlock` judges it (restic's cat lock)
        from backupkit.errors import ObjectNotFound

        li = st.lock_manager(repo).read_info(repo.store.stat(f"locks/{need_id()}"))
        if li is None:
            raise ObjectNotFound(f"lock {obj_id} is gone")
        doc = dict(li.to_json(), holder=li.holder(), document=li.doc)
    elif kind == "pack":  # the stored bytes, sealed (restic's cat pack)
        from backupkit import limits
        from backupkit.errors import ObjectNotFound
        from backupkit.repo.pack import KIND_DATA, KIND_META, pack_name

        pid = bytes.fromhex(need_id())
        for pack_kind in (KIND_DATA, KIND_META):
            try:
                data = repo.read_raw(pack_name(pack_kind, pid), max_size=limits.PACK_MAX)
                break
            except ObjectNotFound:
                continue
        else:
            raise ObjectNotFound(f"no pack {obj_id} in the store")
        sys.stdout.buffer.write(data)
        return
    else:
        raise BadArgument(f"unknown object kind {kind!r}")
    st.console.json(_jsonable(doc))
