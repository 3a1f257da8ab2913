"""``--ignore-inode`` and ``--ignore-ctime`` (restic's): a file whose size and mtime match
the parent's keeps its content when only its inode number or its ctime changed, as on
FUSE and network mounts whose inode numbers do not last; its metadata is taken fresh."""

from __future__ import annotations

import os
import shutil

from backupkit.managers.backup import BackupManager, BackupOptions
from backupkit.tree import SnapshotTree
from tests.support.kit import make_test_repo, write_file


def _backup(repo, src, **flags):
    return BackupManager(repo).run(BackupOptions(paths=(str(src),), **flags))


def _entry(repo, snap, path):
    return SnapshotTree(repo, snap.root).get(os.fsencode(path))


def _recopied(path):
    """The file replaced by a copy of itself with the same mtime: a new inode and ctime."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.copy2(path, tmp)
    os.replace(tmp, path)


def test_a_new_inode_with_the_same_mtime_is_read_again_unless_both_are_ignored(tmp_path):
    src = tmp_path / "src"
    f = src / "big.bin"
    write_file(f, os.urandom(300_000))
    write_file(src / "other.txt", b"other\n")
    repo = make_test_repo()
    _backup(repo, src)
    ino = f.stat().st_ino
    _recopied(f)
    assert f.stat().st_ino != ino
    plain = _backup(repo, src)
    assert plain.files_read == 1 and plain.bytes_read == 300_000  # restic's default too
    _recopied(f)
    only_inode = _backup(repo, src, ignore_inode=True)
    assert only_inode.files_read == 1  # the ctime changed as well
    _recopied(f)
    both = _backup(repo, src, ignore_inode=True, ignore_ctime=True)
    assert both.files_read == 0 and both.bytes_read == 0 and both.files_unchanged == 2
    e = _entry(repo, both.snapshot, f)
    assert e.inode == f.stat().st_ino and e.ctime == f.stat().st_ctime_ns  # metadata fresh
    assert e.content == _entry(repo, plain.snapshot, f).content


def test_a_changed_ctime_alone_keeps_the_content_and_records_the_new_mode(tmp_path):
    src = tmp_path / "src"
    f = src / "data.bin"
    write_file(f, os.urandom(100_000))
    repo = make_test_repo()
    first = _backup(repo, src)
    os.chmod(f, 0o600)  # ctime and mode change; inode, mtime and size do not
    res = _backup(repo, src, ignore_ctime=True)
    assert res.files_read == 0 and res.bytes_read == 0
    e = _entry(repo, res.snapshot, f)
    assert e.mode & 0o777 == 0o600 and e.content == _entry(repo, first.snapshot, f).content
    os.chmod(f, 0o640)
    assert _backup(repo, src).files_read == 1  # without the option: read again, as before
