"""Helpers shared by the lifecycle tests (diff, forget, prune, check): cheap local
repositories, generated trees, dated backups, and store listings to compare."""

from __future__ import annotations

import os
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

from backupkit.managers.backup import BackupManager, BackupOptions
from backupkit.repo.repository import Repository
from backupkit.snapshot import Snapshot
from backupkit.store.base import ObjectStore
from backupkit.store.local import LocalObjectStore
from tests.support.kit import INSECURE_TEST_KDF

PASSWORD = b"test password"
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def local_store(path: Path) -> LocalObjectStore:
    return LocalObjectStore(path, fsync=False)


def init_repo(store: ObjectStore, pack_size: int = 256 * 1024) -> Repository:
    """A repository with cheap KDF, small packs and small chunks (many packs, fast)."""
    return Repository.init(
        store, PASSWORD, kdf=INSECURE_TEST_KDF, pack_size=pack_size, chunker=(16 * 1024, 32 * 1024, 128 * 1024), cache_root=False
    )


def open_repo(store: ObjectStore) -> Repository:
    return Repository.open(store, PASSWORD, cache_root=False, connections=2)


def write_files(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def backup(repo: Repository, src: Path, when: datetime | None = None, tags: tuple[str, ...] = (), host: str = "h1") -> Snapshot:
    res = BackupManager(repo).run(BackupOptions(paths=(str(src),), time=when, tags=tags, host=host))
    assert res.snapshot is not None and not res.errors
    return res.snapshot


def day(n: int) -> datetime:
    return T0 + timedelta(days=n)


def listing(store: ObjectStore) -> dict[str, int]:
    """Every object name (locks excluded) with its size."""
    return {o.name: o.size for o in store.list("") if not o.name.startswith("locks/")}


def tree_bytes(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def restored(repo: Repository, snap: Snapshot, src: Path, dest: Path) -> dict[str, bytes]:
    """Restore ``snap`` into ``dest`` and return the bytes of the files under ``src`` there."""
    from backupkit.managers.restore import RestoreManager, RestoreOptions

    res = RestoreManager(repo).restore(snap, RestoreOptions(target=str(dest), connections=2))
    assert not res.errors, res.errors
    return tree_bytes(dest / src.relative_to("/"))


def wire_dir_and_file(repo: Repository) -> tuple[dict, dict]:
    """A directory's and a file's wire dicts for ``forged_snapshot`` (the file's content:
    one stored blob of ``b"intact\\n"``)."""
    from backupkit.crypto import T_DATA_BLOB

    blob = repo.add_blob(T_DATA_BLOB, b"intact\n")[0]
    return {"t": "d", "m": 0o755, "mt": 10**18}, {"t": "f", "m": 0o644, "mt": 10**18, "s": 7, "c": [blob]}


def forged_snapshot(repo: Repository, entries: dict[bytes, dict]) -> Snapshot:
    """A snapshot of ``entries`` (path -> wire dict, written as given, however wrong)."""
    import time

    import msgpack

    from backupkit.entry import Keyer
    from backupkit.snapshot import save_snapshot
    from backupkit.tree import make_hamt

    keyer = Keyer(repo.sealer.keyed_hash)
    root = make_hamt(repo).build((keyer.key(p), p, msgpack.packb(dict(sorted(e.items())))) for p, e in entries.items())
    repo.flush()
    return save_snapshot(repo, {
        "v": 1, "root": root, "time": time.time_ns(), "host": "h", "user": "u", "paths": [b"/"],
        "source": {"type": "local", "account": "u", "path": ""}, "tags": [], "meta": {}, "parent": None,
        "generator": "test", "summary": {},
    })
