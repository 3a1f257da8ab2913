"""LocalObjectStore beyond the contract: atomic writes, temp files, error mapping."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from backupkit.errors import ObjectNotFound, StoreError, StorePermissionError
from backupkit.store import local as local_module
from backupkit.store.local import LocalObjectStore
from tests.support.kit import unprivileged_prefix


@pytest.fixture
def store(tmp_path):
    (tmp_path / "repo").mkdir()
    return LocalObjectStore(tmp_path / "repo")


def _files(root):
    return sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files
    )


def test_layout_is_files_under_root(store):
    store.put("data/ab/ab12", b"pack")
    assert _files(store.root) == ["data/ab/ab12"]
    with open(os.path.join(store.root, "data", "ab", "ab12"), "rb") as f:
        assert f.read() == b"pack"


def test_creates_root_on_first_write(tmp_path):
    store = LocalObjectStore(tmp_path / "new" / "repo")
    store.put("config", b"c")
    assert store.get("config") == b"c"


def test_list_on_missing_root_fails_instead_of_looking_empty(tmp_path):
    store = LocalObjectStore(tmp_path / "absent")
    with pytest.raises(StoreError):
        list(store.list())


def test_temp_files_are_never_listed(store):
    store.put("locks/a", b"x")
    # A crash between write and rename leaves a temp file behind.
    with open(os.path.join(store.root, "locks", ".tmp-crashed"), "wb") as f:
        f.write(b"half")
    assert [i.name for i in store.list()] == ["locks/a"]
    assert [i.name for i in store.list("locks/")] == ["locks/a"]


def test_no_temp_file_survives_a_write(store):
    store.put("a", b"1")
    store.put("a", b"2")
    assert store.put_if_absent("b", b"3") is True
    assert store.put_if_absent("b", b"4") is False
    assert _files(store.root) == ["a", "b"]


def test_failed_rename_keeps_old_object_and_no_temp(store, monkeypatch):
    store.put("index/i", b"old")

    def broken_replace(src, dst):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(local_module.os, "replace", broken_replace)
    with pytest.raises(StoreError, match="writing index/i"):
        store.put("index/i", b"new")
    monkeypatch.undo()
    assert store.get("index/i") == b"old"
    assert _files(store.root) == ["index/i"]


def test_write_fsyncs_file_and_directory(store, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append(os.path.isdir(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(local_module.os, "fsync", recording_fsync)
    store.put("snapshots/s", b"x")
    assert False in synced and True in synced  # the file, then its directory
    synced.clear()
    store.put_if_absent("locks/l", b"x")
    assert False in synced and True in synced


def test_put_over_directory_is_an_error(store):
    store.put("data/00/x", b"x")
    with pytest.raises(StoreError):
        store.put("data/00", b"clobber")


def test_stat_mtime_is_the_files(store):
    store.put("locks/l", b"x")
    os.utime(os.path.join(store.root, "locks", "l"), (1_000_000_000, 1_000_000_000))
    assert store.stat("locks/l").mtime == 1_000_000_000
    assert next(iter(store.list("locks/"))).mtime == 1_000_000_000


def test_foreign_files_are_ignored(store):
    store.put("keys/k", b"x")
    with open(os.path.join(store.root, "keys", "not valid!"), "wb") as f:
        f.write(b"junk")
    os.symlink("/etc/passwd", os.path.join(store.root, "keys", "link"))
    assert [i.name for i in store.list("keys/")] == ["keys/k"]


@pytest.mark.parametrize(
    "code, error, words",
    [
        (errno.ENOENT, ObjectNotFound, "not found"),
        (errno.EACCES, StorePermissionError, "permission denied"),
        (errno.EROFS, StorePermissionError, "permission denied"),
        (errno.ENOSPC, StoreError, "no space left"),
        (errno.EDQUOT, StoreError, "no space left"),
        (errno.EIO, StoreError, "writing x"),
    ],
)
def test_oserror_mapping(code, error, words):
    err = local_module._store_error(OSError(code, os.strerror(code)), "writing x")
    assert type(err) is error
    assert words in str(err)


def test_disk_full_cleans_up(store, monkeypatch):
    def full(fd, *_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(local_module.os, "fsync", full)
    with pytest.raises(StoreError, match="no space left"):
        store.put("data/aa/aa", b"x" * 100)
    monkeypatch.undo()
    assert _files(store.root) == []


_PERMISSION_PROBE = """
import sys
from backupkit.errors import StorePermissionError
from backupkit.store.local import LocalObjectStore
store = LocalObjectStore(sys.argv[1])
for what, call in (("list", lambda: list(store.list("keys/"))), ("get", lambda: store.get("keys/k"))):
    try:
        call()
    except StorePermissionError as e:
        print(what, "StorePermissionError", e)
    else:
        print(what, "no error")
"""


def test_permission_denied_is_store_permission_error(tmp_path):
    # root reads any file, so the probe runs without root's DAC capabilities (or as nobody)
    prefix, who = unprivileged_prefix()
    base = Path(tempfile.mkdtemp(prefix="bk-perm-", dir="/tmp"))  # reachable by nobody
    try:
        base.chmod(0o755)
        store = LocalObjectStore(base / "repo")
        store.put("keys/k", b"x")
        os.chmod(base / "repo", 0o755)
        os.chmod(base / "repo" / "keys", 0)
        r = subprocess.run(
            [*prefix, sys.executable, "-c", _PERMISSION_PROBE, str(base / "repo")],
            capture_output=True, text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )
        assert r.returncode == 0, f"as {who}: {r.stderr}"
        lines = r.stdout.splitlines()
        assert [ln.split()[:2] for ln in lines] == [["list", "StorePermissionError"], ["get", "StorePermissionError"]], (who, r.stdout)
    finally:
        os.chmod(base / "repo" / "keys", 0o700)
        shutil.rmtree(base, ignore_errors=True)


def test_stats_count_calls_and_bytes(store):
    store.put("a", b"12345")
    store.get("a")
    store.get_range("a", 1, 2)
    list(store.list())
    store.stat("a")
    store.delete("a")
    stats = store.stats()
    assert {k: stats[k] for k in ("PUT", "GET", "GET_RANGE", "LIST", "HEAD", "DELETE")} == dict.fromkeys(
        ("PUT", "GET", "GET_RANGE", "LIST", "HEAD", "DELETE"), 1
    )
    assert stats["bytes_up"] == 5 and stats["bytes_down"] == 7


def test_a_bounded_get_allocates_what_the_file_holds_not_the_bound(store):
    """A get with a size limit read ``limit + 1`` bytes in one call, which allocates the
    limit up front: 512 MiB per index object read, so `bk check --read-data` on a repository
    of a few MB ran out of a 1 GiB address space (the hostile corpus found it). A bound of
    1 TiB must cost nothing."""
    from backupkit.errors import ObjectTooLarge

    store.put("index/" + "ab" * 32, b"small")
    assert store.get("index/" + "ab" * 32, max_size=1 << 40) == b"small"
    with pytest.raises(ObjectTooLarge):
        store.get("index/" + "ab" * 32, max_size=4)


def test_a_bounded_read_follows_a_file_that_grew_after_its_fstat(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"0123456789")
    with open(p, "rb") as f:
        assert local_module._read_at_most(f, 3, 100) == b"0123456789"  # grew from 3 to 10
    with open(p, "rb") as f:
        assert local_module._read_at_most(f, 3, 6) == b"012345"  # at most the limit
    with open(p, "rb") as f:
        assert local_module._read_at_most(f, 10, 100) == b"0123456789"
