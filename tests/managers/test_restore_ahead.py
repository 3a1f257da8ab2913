"""Directories made ahead of a restore's walking thread (``managers/restore_ahead.py``),
and ``mkdir_at`` opening what is already there."""

from __future__ import annotations

import errno
import os
import threading

import pytest

from backupkit.managers.restore_ahead import DirsAhead
from backupkit.managers.restore_files import mkdir_at
from backupkit.objects.entry import Entry

D, F = Entry(type="d", mode=0o755), Entry(type="f", mode=0o644, size=0)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rel(path: bytes) -> bytes:
    return path[1:]


def _ahead(root, entries):
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    return fd, DirsAhead(iter(entries), fd, _rel)


def test_the_entries_come_in_order_and_their_directories_exist_when_they_do(tmp_path):
    entries = [(b"/", D)]  # depth first, as the snapshot walk
    for i in range(300):
        entries += [(b"/d%03d" % i, D), (b"/d%03d/f" % i, F), (b"/d%03d/s" % i, D), (b"/d%03d/s/deep" % i, D)]
    entries.append((b"/z", F))
    before = _fds()
    fd, ahead = _ahead(tmp_path, entries)
    seen = []
    for path, e in ahead:
        if e.is_dir and path != b"/":
            assert (tmp_path / path.decode()[1:]).is_dir(), path  # made before it is handed on
        seen.append((path, e))
    ahead.close()
    os.close(fd)
    assert seen == entries
    assert not (tmp_path / "d000/f").exists() and not (tmp_path / "z").exists()  # files are not its job
    assert _fds() == before


def test_unsafe_paths_and_directories_whose_parent_was_not_made_are_left_alone(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    os.symlink("/", tmp_path / "link")
    entries = [(b"/a/../b", D), (b"/file", D), (b"/file/x", D), (b"/link", D), (b"/link/tmp2", D), (b"/ok", D)]
    fd, ahead = _ahead(tmp_path, entries)
    assert list(ahead) == entries
    ahead.close()
    os.close(fd)
    assert sorted(os.listdir(tmp_path)) == ["file", "link", "ok"]
    assert not os.path.exists("/tmp2") or os.path.getmtime("/tmp2") < os.path.getmtime(tmp_path / "ok")


def test_an_error_of_the_walk_is_raised_after_the_entries_before_it(tmp_path):
    def entries():
        yield b"/a", D
        yield b"/a/b", D
        raise RuntimeError("tree node damaged")

    fd, ahead = _ahead(tmp_path, entries())
    got = []
    with pytest.raises(RuntimeError, match="damaged"):
        for item in ahead:
            got.append(item[0])
    ahead.close()
    os.close(fd)
    assert got == [b"/a", b"/a/b"] and (tmp_path / "a/b").is_dir()


def test_close_stops_a_walk_the_restore_left_early(tmp_path):
    stop = threading.Event()

    def entries():
        i = 0
        while not stop.is_set():
            i += 1
            yield b"/d%d" % (i % 50), D

    before = _fds()
    fd, ahead = _ahead(tmp_path, entries())
    it = iter(ahead)
    for _ in range(10):
        next(it)
    ahead.close()  # the thread is blocked handing over a full queue: it must still end
    stop.set()
    os.close(fd)
    assert _fds() == before


def test_mkdir_at_opens_an_existing_directory_and_refuses_what_is_in_the_way(tmp_path):
    pfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        made = mkdir_at(pfd, b"new")
        (tmp_path / "new" / "x").write_bytes(b"kept")
        again = mkdir_at(pfd, b"new")
        assert os.path.samestat(os.fstat(made), os.fstat(again)) and (tmp_path / "new" / "x").read_bytes() == b"kept"
        os.close(made)
        os.close(again)
        (tmp_path / "file").write_bytes(b"")
        os.symlink(tmp_path / "new", tmp_path / "link")
        for name in (b"file", b"link"):  # a symlink: ELOOP, or ENOTDIR as Linux says with O_DIRECTORY
            with pytest.raises(OSError) as info:
                mkdir_at(pfd, name)
            assert info.value.errno in (errno.ENOTDIR, errno.ELOOP) and "in the way" in str(info.value)
        assert (tmp_path / "link").is_symlink() and (tmp_path / "file").is_file()
    finally:
        os.close(pfd)
