"""A restored file ends with the snapshot's mode whichever way it was created: with
that mode at once (no chmod when it is complete: a plain mode, no xattrs, nothing the
umask or a default ACL would take away) or as 0600 and chmodded when complete (every
other file, and every file the restore leaves alone or only refreshes)."""

from __future__ import annotations

import errno
import json
import os
import stat
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from backupkit.managers.restore import RestoreManager, RestoreOptions
from tests.managers.lifecycle_util import backup, init_repo, local_store, open_repo, random_bytes, tree_bytes
from tests.support.kit import reachable_tmpdir, unprivileged_prefix

KiB = 1024
ROOT = Path(__file__).resolve().parents[2]

#: file name -> mode, for a spread of modes (set-id and sticky bits need root to set)
MODES = {
    "644": 0o644, "600": 0o600, "444": 0o444, "755": 0o755, "700": 0o700, "555": 0o555, "400": 0o400,
    "000": 0o000, "640": 0o640, "604": 0o604, "664": 0o664, "666": 0o666, "4755": 0o4755, "2755": 0o2755,
    "1644": 0o1644,
}
ACL_DEFAULT = "system.posix_acl_default"


def _umask() -> int | None:
    """This process's umask, read without changing it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return None


_UMASK = _umask()
needs_plain_umask = pytest.mark.skipif(
    _UMASK is None or _UMASK & 0o755 != 0, reason="needs a umask that leaves 0755 whole (read from /proc/self/status)"
)


def _source(src: Path) -> None:
    """A file per mode in MODES (sizes from empty to several blobs), a file with an
    xattr, and two names of one 0640 file."""
    src.mkdir(parents=True)
    for i, (name, mode) in enumerate(MODES.items()):
        p = src / name
        p.write_bytes(random_bytes((i * 37 * KiB) % (300 * KiB), i))
        os.chmod(p, mode)
    (src / "x644").write_bytes(b"with an xattr")
    os.chmod(src / "x644", 0o644)
    os.setxattr(src / "x644", "user.note", b"kept")
    (src / "hl1").write_bytes(b"linked" * 1000)
    os.chmod(src / "hl1", 0o640)
    os.link(src / "hl1", src / "hl2")


def _want(name: str, owners: bool) -> int:
    mode = {"x644": 0o644, "hl1": 0o640, "hl2": 0o640}.get(name) or MODES[name]
    return mode if owners else mode & ~(stat.S_ISUID | stat.S_ISGID)


def _modes(root: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.lstat().st_mode) for p in root.iterdir() if p.is_file()}


def _restore(store, snap, src: Path, out: Path, **kw):
    res = RestoreManager(open_repo(store)).restore(snap, RestoreOptions(path=str(src), target=str(out), connections=2, **kw))
    assert not res.errors, res.errors
    return res


def _file_chmods(monkeypatch) -> list[str]:
    """Record the path of every regular file chmodded (by descriptor or by name)."""
    names: list[str] = []
    real = os.chmod

    def spy(target, mode, *a, **kw):
        if isinstance(target, int):
            if stat.S_ISREG(os.fstat(target).st_mode):
                names.append(os.readlink(f"/proc/self/fd/{target}"))
        elif stat.S_ISREG(os.stat(target, dir_fd=kw.get("dir_fd"), follow_symlinks=False).st_mode):
            names.append(os.fsdecode(target))
        return real(target, mode, *a, **kw)

    monkeypatch.setattr(os, "chmod", spy)
    return names


def _acl(*entries: tuple[int, int]) -> bytes:
    """A POSIX ACL as the kernel's xattr holds it: (tag, permissions) entries."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, 0xFFFFFFFF) for tag, perm in entries)


#: user::rwx group::--- other::--- : a file created 0644 below it gets 0600
_PRIVATE_DEFAULT = _acl((0x01, 7), (0x04, 0), (0x20, 0))


def _set_default_acl(d: Path) -> None:
    try:
        os.setxattr(d, ACL_DEFAULT, _PRIVATE_DEFAULT)
    except OSError as err:
        if err.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
            pytest.skip("no POSIX ACLs on this file system")
        raise


@pytest.mark.skipif(os.geteuid() != 0, reason="set-id and sticky bits on the source files need root")
@pytest.mark.parametrize("owners", [True, False])
def test_every_file_ends_with_the_snapshots_mode(tmp_path, owners):
    src = tmp_path / "src"
    _source(src)
    store = local_store(tmp_path / "repo")
    snap = backup(init_repo(store), src)
    want = {name: _want(name, owners) for name in _modes(src)}

    fresh = tmp_path / "fresh"  # every file under its real name, in a target the restore makes
    _restore(store, snap, src, fresh, owners=owners)
    assert _modes(fresh) == want
    assert tree_bytes(fresh) == tree_bytes(src)

    there = tmp_path / "there"  # something there: each file looked at, created in place
    there.mkdir()
    (there / "other").write_bytes(b"not the snapshot's")
    other = _modes(there)
    _restore(store, snap, src, there, owners=owners)
    assert _modes(there) == {**want, **other}

    for p in fresh.iterdir():  # each file replaced through a temporary name
        p.unlink()
        p.write_bytes(b"old")
        p.chmod(0o600)
    _restore(store, snap, src, fresh, owners=owners, overwrite="always")
    assert _modes(fresh) == want
    assert tree_bytes(fresh) == tree_bytes(src)

    for p in fresh.iterdir():  # as in the snapshot but for the mode: only the mode is set
        p.chmod(0o600)
    res = _restore(store, snap, src, fresh, owners=owners)
    assert res.unchanged == len(want) and _modes(fresh) == want


@needs_plain_umask
@pytest.mark.skipif(os.geteuid() != 0, reason="a set-uid file in the source needs root")
def test_a_file_with_a_plain_mode_is_created_with_it_and_not_chmodded(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    for name, mode in {"a": 0o644, "b": 0o644, "c": 0o644, "d": 0o600, "e": 0o755, "f": 0o444, "suid": 0o4755, "gw": 0o664}.items():
        (src / name).write_bytes(name.encode() * 5000)
        os.chmod(src / name, mode)
    (src / "empty").write_bytes(b"")
    (src / "xattr").write_bytes(b"x")
    os.setxattr(src / "xattr", "user.note", b"v")
    store = local_store(tmp_path / "repo")
    snap = backup(init_repo(store), src)
    chmods = _file_chmods(monkeypatch)

    out = tmp_path / "out"
    _restore(store, snap, src, out, owners=True)
    assert _modes(out) == _modes(src)
    assert sorted(Path(p).name for p in chmods) == ["gw", "suid", "xattr"]

    chmods.clear()  # replaced: through temporary names, by the same rule
    for p in out.iterdir():
        p.write_bytes(b"old")
    _restore(store, snap, src, out, owners=True, overwrite="always")
    assert _modes(out) == _modes(src)
    assert len(chmods) == 3 and all(Path(p).name.startswith(".bk-restore-") for p in chmods)

    chmods.clear()  # left as they are: their metadata refreshed, mode included
    res = _restore(store, snap, src, out, owners=True)
    assert res.unchanged == 10 and len(chmods) == 10


@needs_plain_umask
@pytest.mark.parametrize("unknown", ["umask", "file system"])
def test_without_knowing_the_creation_mode_every_file_is_chmodded(tmp_path, monkeypatch, unknown):
    """A umask that cannot be read, or a file system not known to create a file with the
    mode asked for less the umask (here: as if NFS): 0600, and a chmod when complete."""
    import backupkit.managers.restore_mode as restore_mode

    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for name in ("a", "b", "d/c"):
        (src / name).write_bytes(name.encode() * 100)
    store = local_store(tmp_path / "repo")
    snap = backup(init_repo(store), src)
    if unknown == "umask":
        monkeypatch.setattr(restore_mode, "process_umask", lambda: None)
    else:
        monkeypatch.setattr(restore_mode, "_fs_type", lambda fd: 0x6969)
    chmods = _file_chmods(monkeypatch)
    out = tmp_path / "out"
    _restore(store, snap, src, out)
    assert len(chmods) == 3
    assert _modes(out) == _modes(src) and _modes(out / "d") == _modes(src / "d")

    chmods.clear()  # a target that holds something: each directory asked
    (out / "a").unlink()
    (out / "d" / "c").unlink()
    _restore(store, snap, src, out)
    assert sorted(Path(p).name for p in chmods) == ["a", "b", "c"]  # b: left alone, its mode refreshed


def test_the_umask_is_read_from_proc_status(tmp_path):
    from backupkit.managers.restore_mode import process_umask

    status = tmp_path / "status"
    status.write_text("Name:\tbk\nUmask:\t0027\nState:\tR (running)\n")
    assert process_umask(str(status)) == 0o027
    status.write_text("Name:\tbk\nState:\tR (running)\n")  # before Linux 4.7
    assert process_umask(str(status)) is None
    assert process_umask(str(tmp_path / "missing")) is None
    assert process_umask() == _UMASK


_IN_SUBPROCESS = """
    import json, os, stat, sys
    sys.path.insert(0, {root!r})
    from backupkit.managers.restore import RestoreManager, RestoreOptions
    from backupkit.snapshot import load_snapshot
    from tests.managers.lifecycle_util import local_store, open_repo

    chmods = []
    real = os.chmod
    def spy(target, mode, *a, **kw):
        if isinstance(target, int) and stat.S_ISREG(os.fstat(target).st_mode):
            chmods.append(os.path.basename(os.readlink(f"/proc/self/fd/{{target}}")))
        return real(target, mode, *a, **kw)
    os.chmod = spy
    repo = open_repo(local_store({repo!r}))
    res = RestoreManager(repo).restore(load_snapshot(repo, {snap!r}),
                                       RestoreOptions(path={src!r}, target={out!r}, connections=1))
    print(json.dumps({{"errors": res.errors, "chmods": sorted(chmods)}}))
"""


def _restore_in_subprocess(tmp: Path, src: Path, repo: Path, snap, out: Path, umask: int, prefix=()) -> dict:
    script = textwrap.dedent(_IN_SUBPROCESS.format(root=str(ROOT), repo=str(repo), snap=snap.id, src=str(src), out=str(out)))
    p = subprocess.run([*prefix, sys.executable, "-c", script], capture_output=True, cwd=tmp, timeout=120, umask=umask)
    assert p.returncode == 0, p.stderr.decode()
    got = json.loads(p.stdout)
    assert not got["errors"], got["errors"]
    return got


@pytest.mark.parametrize("umask", [0o077, 0o027, 0o000])
def test_modes_are_the_snapshots_whatever_the_umask(tmp_path, umask):
    src = tmp_path / "src"
    src.mkdir()
    modes = {"644": 0o644, "600": 0o600, "755": 0o755, "700": 0o700, "444": 0o444, "640": 0o640, "664": 0o664}
    for name, mode in modes.items():
        (src / name).write_bytes(name.encode() * 3000)
        os.chmod(src / name, mode)
    store = local_store(tmp_path / "repo")
    snap = backup(init_repo(store), src)
    out = tmp_path / "out"
    got = _restore_in_subprocess(tmp_path, src, tmp_path / "repo", snap, out, umask)
    assert _modes(out) == modes
    # the umask would take bits away from these (and 0664 is never created as it is)
    assert got["chmods"] == sorted(n for n, m in modes.items() if m & umask or m & 0o022)


@needs_plain_umask
def test_a_default_acl_on_the_target_keeps_the_chmod(tmp_path, monkeypatch):
    """In a directory with a default ACL the umask does not apply, the ACL does: a file
    created 0644 there is 0600 (user::rwx group::--- other::---); its chmod stays."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "sub").mkdir()
    for name in ("a", "b", "sub/c"):
        (src / name).write_bytes(b"z" * 2000)
        os.chmod(src / name, 0o644)
    store = local_store(tmp_path / "repo")
    snap = backup(init_repo(store), src)
    chmods = _file_chmods(monkeypatch)

    fresh = tmp_path / "fresh"  # given empty, with a default ACL
    fresh.mkdir()
    _set_default_acl(fresh)
    _restore(store, snap, src, fresh)
    assert _modes(fresh) == {"a": 0o644, "b": 0o644} and _modes(fresh / "sub") == {"c": 0o644}
    assert len(chmods) == 3

    chmods.clear()
    there = tmp_path / "there"  # not empty: only its subdirectory has a default ACL
    (there / "sub").mkdir(parents=True)
    (there / "other").write_bytes(b"not the snapshot's")
    _set_default_acl(there / "sub")
    other = _modes(there)
    _restore(store, snap, src, there)
    assert _modes(there) == {"a": 0o644, "b": 0o644, **other} and _modes(there / "sub") == {"c": 0o644}
    assert [Path(p).name for p in chmods] == ["c"]


def test_a_read_only_file_restored_by_an_unprivileged_user(tmp_path):
    """A user other than root creates a 0444 (or 0000) file, fills it through the
    descriptor it was created with (``ftruncate``, ``pwrite``) and sets its times: no
    chmod, the same content and mode."""
    prefix, who = unprivileged_prefix()
    with reachable_tmpdir("bk-restore-mode-") as base:
        src = base / "src"
        src.mkdir()
        files = {"r444": (0o444, random_bytes(300 * KiB, 1)), "r000": (0o000, b"secret"), "r555": (0o555, b""),
                 "r400": (0o400, random_bytes(40 * KiB, 2)), "w644": (0o644, b"plain")}
        for name, (mode, data) in files.items():
            (src / name).write_bytes(data)
            os.chmod(src / name, mode)
        store = local_store(base / "repo")
        snap = backup(init_repo(store), src)
        out = base / "out"
        out.mkdir()
        if who == "nobody":
            subprocess.run(["chown", "-R", "nobody:nogroup", str(base / "repo"), str(out)], check=True)
        got = _restore_in_subprocess(base, src, base / "repo", snap, out, 0o022, prefix)
        assert _modes(out) == {name: mode for name, (mode, _d) in files.items()}
        assert {p.name: p.read_bytes() for p in out.iterdir()} == {name: data for name, (_m, data) in files.items()}
        assert got["chmods"] == []
        if who == "nobody":
            assert {p.lstat().st_uid for p in out.iterdir()} == {out.lstat().st_uid}


def test_all_zero_sees_every_byte():
    """The sparse writer's test for a blob of zeros: bytes and views, below and above the
    1 MiB of zeros it compares with, a nonzero byte anywhere."""
    from backupkit.managers.restore_files import all_zero

    for n in (1, 4096, 100_000, 1 << 20, (1 << 20) + 5):
        z = bytes(n)
        assert all_zero(z) and all_zero(memoryview(z))
        for at in {0, n // 2, n - 1}:
            b = bytearray(z)
            b[at] = 1
            assert not all_zero(bytes(b)) and not all_zero(memoryview(bytes(b)))
