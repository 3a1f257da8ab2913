"""Restore of forged snapshots (issue 10.7, 10.8): the target directory keeps its own
metadata, and a name that appears twice goes out once."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import time

import msgpack

from backupkit.crypto import T_DATA_BLOB
from backupkit.entry import Keyer, parent_of
from backupkit.managers.restore import RestoreManager, RestoreOptions
from backupkit.snapshot import save_snapshot
from backupkit.tree import make_hamt
from tests.managers.lifecycle_util import init_repo, local_store, open_repo

T = 1_500_000_000_000_000_000


def _snapshot(repo, rows):
    """A snapshot of raw wire entries; a row (path, entry, key suffix) stores the path
    under a forged key, so that a path can appear twice."""
    keyer = Keyer(repo.sealer.keyed_hash)
    out = []
    for row in rows:
        path, e = row[0], row[1]
        key = keyer.key(path) if len(row) == 2 else keyer.dir_prefix(parent_of(path)) + row[2]
        out.append((key, path, msgpack.packb(dict(sorted(e.items())))))
    root = make_hamt(repo).build(out)
    repo.flush()
    return save_snapshot(repo, {
        "v": 1, "root": root, "time": time.time_ns(), "host": "h", "user": "u", "paths": [b"/"],
        "source": {"type": "local", "account": "u", "path": ""}, "tags": [], "meta": {}, "parent": None,
        "generator": "test", "summary": {},
    })


def test_the_snapshot_root_is_applied_to_the_target_only_when_restore_made_it(tmp_path):
    repo = init_repo(local_store(tmp_path / "repo"))
    bid = repo.add_blob(T_DATA_BLOB, b"x")[0]
    snap = _snapshot(repo, [
        (b"/", {"t": "d", "m": 0o1777, "u": 4321, "g": 4321, "mt": T}),
        (b"/f", {"t": "f", "m": 0o644, "mt": T, "s": 1, "c": [bid]}),
    ])
    repo = open_repo(repo.store)
    existing = tmp_path / "home"
    existing.mkdir(mode=0o700)
    before = os.lstat(existing)
    res = RestoreManager(repo).restore(snap, RestoreOptions(target=str(existing)))
    assert not res.errors and (existing / "f").read_bytes() == b"x"
    after = os.lstat(existing)
    assert (stat.S_IMODE(after.st_mode), after.st_uid) == (0o700, before.st_uid)
    assert after.st_mtime_ns != T  # changed by the restore's writes, not set from the snapshot

    fresh = tmp_path / "fresh"
    res = RestoreManager(repo).restore(snap, RestoreOptions(target=str(fresh), owners=True))
    st = os.lstat(fresh)
    assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (0o1777, T)
    if os.geteuid() == 0:
        assert st.st_uid == 4321


def test_a_name_reused_in_the_snapshot_goes_out_once(tmp_path):
    """Forged: /a a file with two names, /a again a symlink to outside, /b the second
    name of /a. A tar holding both /a would let an extractor write /b through the link."""
    outside = tmp_path / "outside"
    outside.mkdir()
    repo = init_repo(local_store(tmp_path / "repo"))
    bid = repo.add_blob(T_DATA_BLOB, b"first")[0]
    f = {"t": "f", "m": 0o644, "mt": T, "s": 5, "c": [bid], "n": 2, "dv": 1, "i": 7}
    snap = _snapshot(repo, [
        (b"/", {"t": "d", "m": 0o755, "mt": T}),
        (b"/a", f),
        (b"/a", {"t": "l", "m": 0o777, "mt": T, "l": os.fsencode(outside / "x")}, b"\xff" * 8),
        (b"/b", f),
    ])
    repo = open_repo(repo.store)
    for fmt in ("tar", "zip"):
        buf = io.BytesIO()
        res = RestoreManager(repo).restore(snap, RestoreOptions(format=fmt, output=buf))
        assert [p for p, _m in res.errors] == ["/a"] and "twice" in res.errors[0][1]
        if fmt == "tar":
            members = list(tarfile.open(fileobj=io.BytesIO(buf.getvalue()), mode="r:"))
            assert [(m.name, m.type) for m in members] == [("a", tarfile.REGTYPE), ("b", tarfile.LNKTYPE)]
            assert members[1].linkname == "a"
    target = tmp_path / "target"
    res = RestoreManager(repo).restore(snap, RestoreOptions(target=str(target)))
    assert [p for p, _m in res.errors] == ["/a"]
    assert not (target / "a").is_symlink() and (target / "b").read_bytes() == b"first"
    assert os.listdir(outside) == []


def test_safe_path_is_the_part_by_part_rule():
    """``safe_path`` (every restored entry's path) by substring tests gives what the rule
    part by part gives: absolute, no NUL, no empty, "." or ".." part."""
    import itertools
    import random

    from backupkit.managers.restore_files import safe_path

    def rule(path: bytes) -> bool:
        if not path.startswith(b"/") or b"\x00" in path:
            return False
        if path == b"/":
            return True
        return all(p and p not in (b".", b"..") for p in path[1:].split(b"/"))

    alphabet = [b"/", b".", b"a", b"\x00", b".."]
    for n in range(1, 7):
        for parts in itertools.product(alphabet, repeat=n):
            path = b"".join(parts)
            assert safe_path(path) == rule(path), path
    rnd = random.Random(2)
    for _ in range(5000):
        path = bytes(rnd.choice(b"/.a\x00b") for _ in range(rnd.randrange(1, 20)))
        assert safe_path(path) == rule(path), path
