"""DirFds.open_for_meta: directories reopened for their metadata at the end of a restore,
from the components the last one shares (not from the target each time), never through
a symlink, with a bounded number of descriptors kept."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backupkit.managers import restore_dirfds
from backupkit.managers.restore_dirfds import DirFds


def _tree(root: Path, rels: list[str]) -> None:
    for rel in rels:
        (root / rel).mkdir(parents=True, exist_ok=True)


def _counting_opens(monkeypatch) -> list[bytes]:
    opened: list[bytes] = []
    real = os.open

    def counting(path, flags, mode=0o777, *, dir_fd=None):
        if flags & os.O_DIRECTORY:
            opened.append(path)
        return real(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(restore_dirfds.os, "open", counting)
    return opened


def _deepest_first(rels: list[str]) -> list[str]:
    return sorted(rels, key=lambda r: -r.count("/"))


def test_each_directory_is_reached_from_what_the_last_one_shares(tmp_path: Path, monkeypatch) -> None:
    base = "var/tmp/bench/full/data/mixed"
    leaves = [f"{base}/d{i}/e{j}" for i in range(5) for j in range(4)]
    rels = sorted({*leaves, *(f"{base}/d{i}" for i in range(5)), base})
    _tree(tmp_path, rels)
    opened = _counting_opens(monkeypatch)
    fds = DirFds(os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY))
    try:
        for rel in _deepest_first(rels):
            fd, owned = fds.open_for_meta(rel.encode())
            assert not owned
            assert os.fstat(fd).st_ino == (tmp_path / rel).stat().st_ino
    finally:
        fds.close_all()
    # from the target every time: 20 leaves x 8 components + 5 x 7 + 6 = 201 opens (plus
    # the target's own); now the target, the base path's 6 components once, the 25
    # directories below it once each on the way down, and d0-d4 once more for themselves
    # (the chain had moved on to their last child)
    assert len(opened) == 1 + 6 + 25 + 5


def test_a_symlinked_component_is_refused_and_the_next_directory_still_opens(tmp_path: Path) -> None:
    _tree(tmp_path, ["a/b/c", "a/x/y", "elsewhere/c"])
    fds = DirFds(os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY))
    try:
        fd, _ = fds.open_for_meta(b"a/b/c")
        assert os.fstat(fd).st_ino == (tmp_path / "a/b/c").stat().st_ino
        os.rename(tmp_path / "a/x", tmp_path / "a/x-moved")
        os.symlink(tmp_path / "elsewhere", tmp_path / "a/x")
        with pytest.raises(OSError):
            fds.open_for_meta(b"a/x/y")
        fd, _ = fds.open_for_meta(b"a/b")
        assert os.fstat(fd).st_ino == (tmp_path / "a/b").stat().st_ino
    finally:
        fds.close_all()


def test_a_path_deeper_than_the_kept_descriptors_is_handed_over_to_close(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(restore_dirfds, "META_CHAIN", 3)
    deep = "/".join(f"p{i}" for i in range(7))
    _tree(tmp_path, [deep])
    before = len(os.listdir("/proc/self/fd"))
    fds = DirFds(os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY))
    fd, owned = fds.open_for_meta(deep.encode())
    assert owned and os.fstat(fd).st_ino == (tmp_path / deep).stat().st_ino
    os.close(fd)
    assert len(os.listdir("/proc/self/fd")) == before + 1 + 3  # the target's and the three kept
    fd, owned = fds.open_for_meta(b"p0/p1")  # within the kept ones
    assert not owned and os.fstat(fd).st_ino == (tmp_path / "p0/p1").stat().st_ino
    fds.close_all()
    assert len(os.listdir("/proc/self/fd")) == before
