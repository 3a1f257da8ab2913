"""bk dump at the manager level: a file's exact bytes, a directory as tar or zip."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile

import pytest

from backupkit.errors import BadArgument, PathNotFound, UsageError
from backupkit.managers.dump import DumpManager, DumpOptions
from tests.managers.lifecycle_util import backup, day, init_repo, local_store, random_bytes, write_files


@pytest.fixture
def repo(tmp_path):
    src = tmp_path / "src"
    files = {"big": random_bytes(700_000, 5), "d/x": b"x" * 10, "d/e/y": b"", "zeros": bytes(300_000) + b"end"}
    write_files(src, files)
    os.symlink("big", src / "link")
    r = init_repo(local_store(tmp_path / "repo"))
    snap = backup(r, src, day(0))
    yield r, src, snap, files
    r.close()


def test_file_bytes_exactly(repo):
    r, src, snap, files = repo
    for name in ("big", "zeros", "d/e/y"):
        out = io.BytesIO()
        res = DumpManager(r).dump(snap, DumpOptions(str(src / name)), out)
        assert out.getvalue() == files[name] and res.kind == "file" and res.bytes == len(files[name])


def test_directory_as_tar_and_zip(repo):
    r, src, snap, files = repo
    out = io.BytesIO()
    res = DumpManager(r).dump(snap, DumpOptions(str(src / "d")), out)
    assert res.kind == "tar" and res.files == 2 and not res.incomplete
    base = str(src / "d").lstrip("/")
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as t:
        names = {m.name for m in t.getmembers()}
        assert {f"{base}/x", f"{base}/e", f"{base}/e/y"} <= names
        assert t.extractfile(f"{base}/x").read() == b"x" * 10
    out = io.BytesIO()
    DumpManager(r).dump(snap, DumpOptions(str(src), archive="zip"), out)
    with zipfile.ZipFile(io.BytesIO(out.getvalue())) as z:
        top = str(src).lstrip("/")
        assert z.read(f"{top}/big") == files["big"] and z.read(f"{top}/d/x") == b"x" * 10


def test_bad_input(repo):
    r, src, snap, _files = repo
    with pytest.raises(PathNotFound):
        DumpManager(r).dump(snap, DumpOptions(str(src / "nope")), io.BytesIO())
    with pytest.raises(BadArgument):
        DumpManager(r).dump(snap, DumpOptions(str(src), archive="rar"), io.BytesIO())
    with pytest.raises(UsageError):
        DumpManager(r).dump(snap, DumpOptions(str(src / "link")), io.BytesIO())
