"""Items of issues 9 and 10 through the ``bk`` command line only, where the other tests
of an item drive the engine: so that ``tests/hostile/prove_old_main.py`` can run the same
test against an older ``bk`` (the repositories are made or forged through the engine, the
commands under test are the real executable's)."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess

import tarfile
import time
from pathlib import Path

import msgpack
import pytest

from backupkit.crypto import T_DATA_BLOB
from backupkit.entry import Keyer, parent_of
from backupkit.repo.repository import Repository
from backupkit.snapshot import save_snapshot
from backupkit.store.local import LocalObjectStore
from backupkit.tree import make_hamt
from tests.hostile.run import problem, run_limited
from tests.support.kit import PASSWORD, cli_env, make_test_repo, run_bk, write_file

T = 1_500_000_000_000_000_000


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, r.stderr
    return r


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    make_test_repo(tmp_path / "repo").close()
    return cli_env(tmp_path / "repo", tmp_path / "cache")


def engine(tmp_path: Path) -> Repository:
    return Repository.open(LocalObjectStore(tmp_path / "repo", fsync=False), PASSWORD, cache_root=False)


def forged_snapshot(repo: Repository, rows) -> str:
    """A snapshot of raw wire entries (dicts of wire keys, any values); a row
    (path, entry, key suffix) stores the path under a forged key so a path can repeat."""
    keyer = Keyer(repo.sealer.keyed_hash)
    out = []
    for row in rows:
        path, e = row[0], row[1]
        key = keyer.key(path) if len(row) == 2 else keyer.dir_prefix(parent_of(path)) + row[2]
        out.append((key, path, msgpack.packb(dict(sorted(e.items())))))
    root = make_hamt(repo).build(out)
    repo.flush()
    sid = save_snapshot(repo, {
        "v": 1, "root": root, "time": time.time_ns(), "host": "h", "user": "u", "paths": [b"/"],
        "source": {"type": "local", "account": "u", "path": ""}, "tags": [], "meta": {}, "parent": None,
        "generator": "test", "summary": {},
    })
    repo.close()
    return sid


def d(**over) -> dict:
    return {"t": "d", "m": 0o755, "mt": T, **over}


def f(blob: bytes, data: bytes, **over) -> dict:
    return {"t": "f", "m": 0o644, "mt": T, "s": len(data), "c": [blob], **over}


# -- issue 10 ---------------------------------------------------------------------------------

def test_a_5000_deep_trie_chain_is_one_line(env, tmp_path):
    """10.5: a 5,000-deep chain of branch nodes hit RecursionError ('internal error')."""
    from tests.hostile.corpus import s_tree, Ctx
    import random

    repo = engine(tmp_path)
    s_tree("5000-deep chain")(Ctx(tmp_path / "repo", repo, random.Random(0)))
    for cmd in (["ls", "latest"], ["restore", "latest", "--target", tmp_path / "out"]):
        r = run_limited(*cmd, env=env)
        assert r.returncode == 1 and problem(r) is None, r.stderr[-400:]


def test_malformed_entries_are_named_and_the_rest_restored(env, tmp_path):
    """10.6: a malformed entry is a finding naming its path; the rest is restored and the
    exit code is 1 (once 'internal error' ended the whole restore)."""
    repo = engine(tmp_path)
    bid = repo.add_blob(T_DATA_BLOB, b"good")[0]
    bad = {
        b"/bad/huge-mode": f(bid, b"good", m=1 << 40),
        b"/bad/link-without-target": {"t": "l", "m": 0o777, "mt": T},
        b"/bad/string-blob": f(bid, b"good", c=["not an id"]),
        b"/bad/string-nlink": f(bid, b"good", n="two"),
    }
    forged_snapshot(repo, [(b"/", d()), (b"/bad", d()), *bad.items(), (b"/good", f(bid, b"good"))])
    out = tmp_path / "out"
    r = run_limited("restore", "latest", "--target", out, env=env)
    assert r.returncode == 1 and problem(r) is None, r.stderr[-600:]
    assert (out / "good").read_bytes() == b"good"
    for path in bad:
        assert path.decode() in r.stderr, (path, r.stderr[-600:])


def test_a_reused_name_cannot_write_outside_through_tar(env, tmp_path):
    """10.7: /a a file (two names), /a again a symlink to outside, /b a hard link to /a:
    extracting bk's tar with Python's tarfile wrote through the link, outside."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x").write_bytes(b"keep")
    repo = engine(tmp_path)
    bid = repo.add_blob(T_DATA_BLOB, b"first")[0]
    a = f(bid, b"first", n=2, dv=1, i=7)
    forged_snapshot(repo, [
        (b"/", d()), (b"/a", a),
        (b"/a", {"t": "l", "m": 0o777, "mt": T, "l": os.fsencode(outside / "x")}, b"\xff" * 8),
        (b"/b", a),
    ])
    r = run_limited("restore", "latest", "--format", "tar", env=env)
    assert problem(r) is None, r.stderr[-400:]
    dest = tmp_path / "extracted"
    with tarfile.open(fileobj=io.BytesIO(r.stdout), mode="r:") as tf:
        names = tf.getnames()
        try:
            tf.extractall(dest, filter="fully_trusted")  # what tar(1) or a script does
        except (OSError, tarfile.TarError):
            pass
    assert (outside / "x").read_bytes() == b"keep", "wrote outside the extraction directory"
    assert names.count("a") == 1, names


def test_an_existing_target_keeps_its_mode(env, tmp_path):
    """10.8: the snapshot's / entry (here 1777, owner 4321) was applied to --target."""
    repo = engine(tmp_path)
    bid = repo.add_blob(T_DATA_BLOB, b"x")[0]
    forged_snapshot(repo, [(b"/", d(m=0o1777, u=4321, g=4321)), (b"/f", f(bid, b"x"))])
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    before = os.lstat(home)
    ok(run_bk("restore", "latest", "--target", home, env=env))
    after = os.lstat(home)
    assert (home / "f").read_bytes() == b"x"
    assert (stat.S_IMODE(after.st_mode), after.st_uid) == (0o700, before.st_uid)


# -- issue 9 ----------------------------------------------------------------------------------

def test_a_backup_after_a_lost_data_pack_is_restorable(env, tmp_path):
    """9.3: after a data pack is lost, the next backup of the unchanged source exited 0
    referencing the lost blobs: its snapshot could not be restored."""
    src = tmp_path / "src"
    for i in range(6):
        write_file(src / f"f{i}", os.urandom(300_000))
    ok(run_bk("backup", src, env=env))
    packs = sorted((tmp_path / "repo" / "data").rglob("*"))
    victim = next(p for p in packs if p.is_file())
    victim.unlink()
    ok(run_bk("backup", src, env=env))
    out = tmp_path / "out"
    ok(run_bk("restore", "latest", "--target", out, env=env))
    for i in range(6):
        restored = next(out.rglob(f"f{i}"))
        assert restored.read_bytes() == (src / f"f{i}").read_bytes()


def test_check_finds_a_damaged_key_file_the_cache_hides(env, tmp_path):
    """9.5: the store's only key file is damaged, the cache still holds a good copy:
    check passed, and a new machine got 'wrong password'."""
    import base64

    src = tmp_path / "src"
    write_file(src / "a", b"a")
    ok(run_bk("backup", src, env=env))  # caches config and key file
    (key,) = (tmp_path / "repo" / "keys").iterdir()
    doc = json.loads(key.read_bytes())
    wrapped = bytearray(base64.b64decode(doc["data"]))
    wrapped[20] ^= 1
    doc["data"] = base64.b64encode(bytes(wrapped)).decode()
    key.write_text(json.dumps(doc))
    r = run_bk("check", env=env)
    assert r.returncode == 1 and "damaged key file" in r.stderr, r.stderr


def test_check_finds_a_deleted_snapshot_object(env, tmp_path):
    """9.6: a snapshot object deleted from the store (still in the catalog): check
    exited 0 and the next command dropped the snapshot silently."""
    src = tmp_path / "src"
    write_file(src / "a", b"a")
    ok(run_bk("backup", src, env=env))
    write_file(src / "b", b"b")
    ok(run_bk("backup", src, env=env))
    victim = sorted((tmp_path / "repo" / "snapshots").iterdir())[0]
    victim.unlink()
    r = run_bk("check", env=env)
    assert r.returncode == 1 and victim.name[:8] in r.stderr, r.stderr


SHRINK = '''
import os
_open = os.open
def _shrinking_open(path, flags, *a, **k):
    name = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else ""
    if name.endswith(".shrinks") and not flags & (os.O_WRONLY | os.O_RDWR):
        size = os.stat(name).st_size
        if size > 1000:
            os.truncate(name, size // 2)
    return _open(path, flags, *a, **k)
os.open = _shrinking_open
'''


def test_a_file_that_shrinks_after_lstat_is_stored_as_read(env, tmp_path):
    """9.7: a file truncated between lstat and reading was stored at its old size with a
    zero tail. Here a sitecustomize module in bk's process halves *.shrinks files as
    they are opened for reading, after the backup's lstat."""
    src = tmp_path / "src"
    data = os.urandom(100_000)
    write_file(src / "f.shrinks", data)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SHRINK)
    r = run_bk("backup", src, env={**env, "PYTHONPATH": str(hook)})
    assert r.returncode in (0, 3), r.stderr
    out = tmp_path / "out"
    ok(run_bk("restore", "latest", "--target", out, env=env))
    restored = next(out.rglob("f.shrinks")).read_bytes()
    assert restored == data[:50_000], f"stored {len(restored)} bytes, {restored[50_000:].count(0)} invented zeros"


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_a_full_cache_leaks_no_temporary_files(env, tmp_path, small_disk):
    """9.9: a cache on a full file system leaked a .tmp-* file per failed write (~664 a
    run) and warned for none; now at most one warning and no leftovers. 3,000 files make
    the metadata (index, trie nodes) larger than the room left in the cache."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3000):
        (src / f"file-with-a-longish-name-{i:05d}").write_text(str(i))
    ok(run_bk("backup", src, env=env))
    (small_disk / "filler").write_bytes(bytes(40_000))
    env = {**env, "BK_CACHE_DIR": str(small_disk)}
    r = ok(run_bk("backup", src, env=env))
    leaked = [p for p in small_disk.rglob("*") if p.name.startswith(".tmp")]
    assert leaked == [], f"{len(leaked)} temporary files left in the cache"
    assert r.stderr.count("cannot write to the cache") <= 1, r.stderr


def test_unlock_removes_an_unreadable_lock(env, tmp_path):
    """9.10: the message for an unreadable lock recommended 'bk unlock', which removes
    nothing while the lock is fresh; running the commands the message names now removes it."""
    import re

    lock = tmp_path / "repo" / "locks" / ("cd" * 32)
    lock.parent.mkdir(exist_ok=True)
    lock.write_bytes(os.urandom(200))
    r = run_bk("prune", env=env)
    assert r.returncode == 11, r.stderr
    advice = re.findall(r"'bk (unlock[^']*)'", r.stderr)
    assert advice, r.stderr
    for cmd in advice:
        ok(run_bk(*cmd.split(), env=env))
    assert not lock.exists(), f"{advice} (named by: {r.stderr.strip()}) left the lock"


def test_prune_removes_the_packs_of_a_killed_first_backup(env, tmp_path):
    """9.10: packs but no index object and no snapshot (a first backup killed before its
    index): prune refused ('no index objects but N packs'); now it removes them."""
    src = tmp_path / "src"
    for i in range(4):
        write_file(src / f"f{i}", os.urandom(200_000))
    ok(run_bk("backup", src, env=env))
    repo = tmp_path / "repo"
    for sub in ("index", "snapshots"):
        shutil.rmtree(repo / sub)
        (repo / sub).mkdir()
    (repo / "catalog").unlink(missing_ok=True)
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
    ok(run_bk("prune", env=env))
    assert [p for p in (repo / "data").rglob("*") if p.is_file()] == []





ESCAPE = "esc\x1b]0;pwned\x07name"


def test_ls_and_diff_print_terminal_escapes_escaped(env, tmp_path):
    """10.10: a name holding ESC ] 0 ; ... BEL (retitles a terminal) was printed raw by
    ls and diff."""
    src = tmp_path / "src"
    write_file(src / ESCAPE, b"x\n")
    ok(run_bk("backup", src, env=env))
    write_file(src / ESCAPE, b"changed\n")
    ok(run_bk("backup", src, env=env))
    first, second = sorted((tmp_path / "repo" / "snapshots").iterdir(), key=lambda p: p.stat().st_mtime_ns)
    for args in (["ls", "-R", "latest"], ["diff", first.name[:8], second.name[:8]]):
        out = ok(run_bk(*args, env=env)).stdout.decode()
        assert "\x1b" not in out and "\x07" not in out, (args, out)
        assert "esc\\x1b]0;pwned\\x07name" in out, (args, out)


def test_snapshots_on_a_read_only_repository_with_a_stale_catalog(env, tmp_path):
    """9.4: snapshots on a read-only copy whose catalog is stale failed: it had to
    rewrite the catalog."""
    src = tmp_path / "src"
    write_file(src / "a", b"a")
    ok(run_bk("backup", src, env=env))
    write_file(src / "b", b"b")
    ok(run_bk("backup", src, env=env))
    (tmp_path / "repo" / "catalog").unlink()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "--bind", "-o", "ro", str(tmp_path / "repo"), str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"a read-only bind mount needs root with CAP_SYS_ADMIN: {r.stderr.strip()}")
    try:
        out = ok(run_bk("snapshots", env={**env, "BK_REPOSITORY": str(mnt)})).stdout.decode()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
    for p in (tmp_path / "repo" / "snapshots").iterdir():
        assert p.name[:8] in out, out


def test_restore_onto_a_full_disk_stops_with_one_message(env, tmp_path, small_disk):
    """9.10: restore onto a full disk went on with one warning per file (24,785); now it
    stops at the first ENOSPC with one message."""
    src = tmp_path / "src"
    for i in range(30):
        write_file(src / f"f{i:02d}", os.urandom(40_000))
    ok(run_bk("backup", src, env=env))
    (small_disk / "filler").write_bytes(bytes(40_000))
    r = run_bk("restore", "latest", "--target", small_disk / "out", env=env)
    assert r.returncode == 1, r.stderr
    assert r.stderr.count("No space left on device") == 1, r.stderr
