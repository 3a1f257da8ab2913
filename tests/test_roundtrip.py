"""Round trips on real files through the engine: back up, restore, compare bytes and metadata.

The tree of ``make_every_kind_tree`` holds every file kind the brief names; it is backed
up once per module and restored to a directory, as ZIP, TAR and tar.zst, and by
``--path``. Further tests cover incremental backups (what is read, what changes),
excludes, --one-file-system, --dry-run, files changing while read, and restore safety
against hostile snapshots. The CLI round trip lives in ``tests/cli/test_cli_roundtrip.py``.

Runs as root (owners, setuid bits, tmpfs mounts).
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import msgpack
import pytest
import zstandard

from backupkit.entry import Keyer, parent_of
from backupkit.errors import UsageError
from backupkit.managers.backup import BackupManager, BackupOptions, BackupResult
from backupkit.managers.ls import LsManager
from backupkit.managers.restore import RestoreManager, RestoreOptions
from backupkit.repo.repository import Repository
from backupkit.snapshot import Snapshot, save_snapshot
from backupkit.tree import SnapshotTree, make_hamt
from tests.support.kit import (
    EveryKindTree,
    diff_trees,
    hardlink_groups,
    make_every_kind_tree,
    make_test_repo,
    record_tree,
    store_listing,
    write_file,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="round trips check owners and setuid bits: run as root")


# -- helpers -----------------------------------------------------------------------------

class OsSpy:
    """Stands in for the ``os`` module of a backup (``BackupManager(fs=...)``).

    Records every path passed to ``os.open``; ``on_open`` / ``on_read`` hooks let a test
    act at the exact moment the engine opens or reads a file.
    """

    def __init__(self) -> None:
        self.opened: list[bytes] = []
        self.on_open = None
        self.on_read = None
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(os, name)

    def open(self, path, flags, *args, **kw):
        with self._lock:
            self.opened.append(os.fsencode(path))
        if self.on_open is not None:
            self.on_open(os.fsencode(path))
        return os.open(path, flags, *args, **kw)

    def read(self, fd, n):
        if self.on_read is not None:
            self.on_read(fd)
        return os.read(fd, n)

    def readv(self, fd, buffers):
        if self.on_read is not None:
            self.on_read(fd)
        return os.readv(fd, buffers)


def run_backup(repo: Repository, *paths, fs=os, **kw) -> BackupResult:
    """Back up ``paths``; ``fs`` stands in for the ``os`` module (an OsSpy)."""
    return BackupManager(repo, fs=fs).run(BackupOptions(paths=tuple(str(p) for p in paths), **kw))


def restored(target: Path, src: bytes | Path) -> bytes:
    """Where a source path lands inside a restore target (restore keeps full paths)."""
    return os.path.join(os.fsencode(target), os.fsencode(src).lstrip(b"/"))


def snapshot_paths(repo: Repository, snap: Snapshot, under: bytes) -> set[bytes]:
    """Paths in the snapshot below ``under``, relative to it (``b"."`` for itself)."""
    out = set()
    for p, _e in SnapshotTree(repo, snap.root).walk(under):
        out.add(b"." if p == under else p[len(under) + 1 :])
    return out


# -- the every-kind tree, backed up once per module ---------------------------------------

@pytest.fixture(scope="module")
def every(tmp_path_factory) -> EveryKindTree:
    return make_every_kind_tree(tmp_path_factory.mktemp("every") / "src")


@pytest.fixture(scope="module")
def first(every):
    """(repo, spy, result) of the first backup of the every-kind tree."""
    repo = make_test_repo()
    spy = OsSpy()
    res = run_backup(repo, os.fsdecode(every.root), fs=spy)
    assert res.snapshot is not None
    return repo, spy, res


def test_first_backup_reads_files_once_and_never_opens_fifo_or_socket(every, first):
    _repo, spy, res = first
    assert res.errors == () and res.changed_during_read == ()
    opened = [os.path.relpath(p, every.root) for p in spy.opened]
    assert every.fifo not in opened and every.socket not in opened
    names = [*every.regular, *every.hardlinks[1:]]  # each name of a hardlinked file is a file
    assert sorted(opened) == sorted(names), "every regular file is opened exactly once, nothing else"
    assert res.files_new == len(names)
    # holes are not read: the sparse file contributes only its data blocks
    assert res.bytes_read < sum(os.lstat(every.path(p)).st_size for p in every.regular) - 30 * 2**20


def test_snapshot_holds_every_kind(every, first):
    repo, _spy, res = first
    tree = SnapshotTree(repo, res.snapshot.root)
    src = every.root
    kinds = {rel: tree.require(os.path.join(src, rel)).type for rel in (every.fifo, every.socket, b"links/dangling", b"emptydir")}
    assert kinds == {every.fifo: "p", every.socket: "s", b"links/dangling": "l", b"emptydir": "d"}
    e = tree.require(os.path.join(src, every.sparse))
    items = tree.content(e)
    assert sum(i for i in items if isinstance(i, int)) > 30 * 2**20, "holes are recorded as holes"
    # the snapshot holds exactly the paths on disk
    assert snapshot_paths(repo, res.snapshot, src) == set(record_tree(src)) | {every.socket}
    ls = {e.path: e for e in LsManager(repo).ls(res.snapshot, os.fsdecode(os.path.join(src, b"links")))}
    assert ls[os.fsdecode(os.path.join(src, b"links/absolute"))].link_target == os.fsdecode(os.path.join(src, b"small.txt"))


def test_repository_stays_small(every, first):
    repo, _spy, _res = first
    stored = sum(store_listing(repo.store).values())
    apparent = sum(os.lstat(every.path(p)).st_size for p in every.regular)
    big = os.lstat(every.path(every.big)).st_size
    assert apparent > big + 30 * 2**20
    assert stored < big + 512 * 1024, f"{stored} bytes stored for {big} bytes of random data"


def test_restore_to_directory_is_exact(every, first, tmp_path):
    repo, _spy, res = first
    out = tmp_path / "out"
    r = RestoreManager(repo).restore(res.snapshot, RestoreOptions(target=str(out), verify=True))
    assert r.errors == () and r.verify_failures == ()
    dst = restored(out, every.root)
    want, got = record_tree(every.root), record_tree(dst)
    assert diff_trees(want, got) == []
    assert hardlink_groups(got) == {frozenset(every.hardlinks)}
    # sparse: same apparent size, a few blocks on disk, data where it was
    st = os.lstat(os.path.join(dst, every.sparse))
    assert st.st_size == os.lstat(every.path(every.sparse)).st_size
    assert st.st_blocks * 512 <= 256 * 1024, f"restored sparse file uses {st.st_blocks * 512} bytes"
    with open(os.path.join(dst, every.sparse), "rb") as f:
        for off, data in every.sparse_data:
            f.seek(off)
            assert f.read(len(data)) == data
    # the ancestors of the source are restored as directories with their modes
    for anc in (b"/tmp",):
        assert stat.S_IMODE(os.lstat(restored(out, anc)).st_mode) == stat.S_IMODE(os.lstat(anc).st_mode)


def test_large_sparse_file(tmp_path, monkeypatch):
    """8 GiB apparent, 12 KiB of data: holes are neither read, stored, written nor (by
    --verify) read back; a byte written into a hole is still caught by --verify."""
    src = tmp_path / "src"
    src.mkdir()
    size = 8 * 2**30
    data = {0: b"A" * 4096, 3 * 2**30: b"B" * 4096, size - 4096: b"C" * 4096}
    fd = os.open(src / "disk.img", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, size)
        for off, d in data.items():
            os.pwrite(fd, d, off)
    finally:
        os.close(fd)
    repo = make_test_repo()
    res = run_backup(repo, src)
    assert res.bytes_read <= 64 * 1024 and res.errors == ()
    assert sum(store_listing(repo.store).values()) < 64 * 1024
    out = tmp_path / "out"
    r = RestoreManager(repo).restore(res.snapshot, RestoreOptions(target=str(out), verify=True))
    assert r.errors == () and r.verify_failures == ()
    p = restored(out, src / "disk.img")
    st = os.lstat(p)
    assert st.st_size == size and st.st_blocks * 512 <= 256 * 1024
    with open(p, "rb") as f:
        for off, d in data.items():
            f.seek(off)
            assert f.read(len(d)) == d
        f.seek(2**30)
        assert f.read(4096) == bytes(4096)
    verify = RestoreManager._verify

    def scribble_then_verify(self, run, pfd, name, path, e):
        fd = os.open(name, os.O_WRONLY, dir_fd=pfd)
        os.pwrite(fd, b"x", 5 * 2**30 + 7)
        os.close(fd)
        return verify(self, run, pfd, name, path, e)

    monkeypatch.setattr(RestoreManager, "_verify", scribble_then_verify)
    r = RestoreManager(repo).restore(res.snapshot, RestoreOptions(target=str(tmp_path / "out2"), verify=True))
    assert r.verify_failures == (os.fsdecode(os.fsencode(src / "disk.img")),)


def test_restore_again_over_the_same_target(every, first, tmp_path):
    """A second restore into a populated target replaces files and keeps it exact."""
    repo, _spy, res = first
    out = tmp_path / "out"
    RestoreManager(repo).restore(res.snapshot, RestoreOptions(target=str(out)))
    dst = restored(out, every.root)
    with open(os.path.join(dst, b"small.txt"), "wb") as f:
        f.write(b"scribbled over")
    r = RestoreManager(repo).restore(res.snapshot, RestoreOptions(target=str(out)))
    assert r.errors == ()
    assert diff_trees(record_tree(every.root), record_tree(dst)) == []


# -- archives ------------------------------------------------------------------------------

def _zip_entries(data: bytes) -> dict[bytes, tuple[int, bytes | None]]:
    """raw name -> (st_mode from external_attr, content; None for directories)."""
    out = {}
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        for zi in zf.infolist():
            raw = zi.filename.encode("utf-8" if zi.flag_bits & 0x800 else "cp437")
            mode = zi.external_attr >> 16
            out[raw.rstrip(b"/")] = (mode, None if zi.is_dir() else zf.read(zi))
    return out


def _expect_from_disk(root: bytes, prefix: bytes):
    """(name in archive -> (type, mode, content or link target)) for every path under root."""
    out = {}
    for rel, r in record_tree(root).items():
        name = prefix if rel == b"." else prefix + b"/" + rel
        p = root if rel == b"." else os.path.join(root, rel)
        if r.type == "f":
            with open(p, "rb") as f:
                body = f.read()
        else:
            body = r.link
        out[name] = (r.type, r.mode, body)
    return out


def check_zip(data: bytes, every: EveryKindTree) -> None:
    prefix = every.root.lstrip(b"/")
    got = _zip_entries(data)
    want = {n: v for n, v in _expect_from_disk(every.root, prefix).items() if v[0] in ("f", "d", "l")}
    assert {n for n in got if n == prefix or n.startswith(prefix + b"/")} == set(want)
    for name, (t, mode, body) in want.items():
        zmode, zbody = got[name]
        assert stat.S_IMODE(zmode) == mode or t == "l", name
        if t == "f":
            assert stat.S_ISREG(zmode) and zbody == body, name
        elif t == "l":
            assert stat.S_ISLNK(zmode) and zbody == body, name
        else:
            assert stat.S_ISDIR(zmode), name
    # ancestors are there as directories
    assert b"tmp" in got and stat.S_ISDIR(got[b"tmp"][0])


def check_tar(data: bytes, every: EveryKindTree, compressed: bool) -> None:
    if compressed:
        data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    prefix = every.root.lstrip(b"/")
    disk = record_tree(every.root)
    want = _expect_from_disk(every.root, prefix)
    got: dict[bytes, tuple[tarfile.TarInfo, bytes | None]] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:", encoding="utf-8", errors="surrogateescape") as tf:
        for ti in tf:
            body = tf.extractfile(ti).read() if ti.isreg() else None
            got[os.fsencode(ti.name)] = (ti, body)
    assert {n for n in got if n == prefix or n.startswith(prefix + b"/")} == set(want)
    links = {prefix + b"/" + p for p in every.hardlinks}
    regs = [n for n in links if got[n][0].isreg()]
    assert len(regs) == 1, "one hardlink group member carries the data, the others are LNKTYPE"
    for name, (t, mode, body) in want.items():
        ti, tbody = got[name]
        rel = b"." if name == prefix else name[len(prefix) + 1 :]
        r = disk[rel]
        assert (ti.uid, ti.gid) == (r.uid, r.gid), name
        assert abs(ti.mtime - r.mtime_ns / 1e9) < 1e-5 if r.mtime_ns else True, name
        assert ti.mode == mode or t == "l", name
        if name in links and name not in regs:
            assert ti.type == tarfile.LNKTYPE and os.fsencode(ti.linkname) == regs[0], name
        elif t == "f":
            assert ti.isreg() and tbody == body, name
        elif t == "l":
            assert ti.issym() and os.fsencode(ti.linkname) == body, name
        elif t == "d":
            assert ti.isdir(), name
        elif t == "p":
            assert ti.isfifo(), name
    x = got[prefix + b"/small.txt"][0].pax_headers
    assert os.fsencode(x["SCHILY.xattr.user.comment"]) == b"a comment"
    assert x["SCHILY.xattr.user.binary"].encode("utf-8", "surrogateescape") == bytes(range(256))


@pytest.mark.parametrize("fmt", ["zip", "tar", "tar.zst"])
def test_restore_as_archive(every, first, fmt):
    repo, _spy, res = first
    buf = io.BytesIO()
    r = RestoreManager(repo).restore(res.snapshot, RestoreOptions(format=fmt, output=buf))
    assert r.errors == ()
    if fmt == "zip":
        check_zip(buf.getvalue(), every)
    else:
        check_tar(buf.getvalue(), every, compressed=fmt == "tar.zst")


# -- --path --------------------------------------------------------------------------------

def test_restore_subtree_and_single_file(every, first, tmp_path):
    repo, _spy, res = first
    sub = os.path.join(every.root, b"dir")
    out = tmp_path / "sub"
    # the folder's contents go straight into the target (as restic's snap:path)
    r = RestoreManager(repo).restore(res.snapshot, RestoreOptions(path=os.fsdecode(sub), target=str(out)))
    assert r.errors == ()
    assert diff_trees(record_tree(sub), record_tree(os.fsencode(out))) == []
    # keep_path: bk's old layout, the folder at its full path below the target
    out = tmp_path / "kept"
    r = RestoreManager(repo).restore(res.snapshot, RestoreOptions(path=os.fsdecode(sub), target=str(out), keep_path=True))
    assert r.errors == ()
    assert diff_trees(record_tree(sub), record_tree(restored(out, sub))) == []
    assert sorted(os.listdir(restored(out, every.root))) == [b"dir"], "only the subtree and its ancestors"

    one = os.path.join(every.root, every.big)
    out = tmp_path / "one"
    r = RestoreManager(repo).restore(res.snapshot, RestoreOptions(path=os.fsdecode(one), target=str(out)))
    assert r.errors == () and r.files == 1
    assert os.listdir(out) == [os.fsdecode(every.big)]
    with open(one, "rb") as a, open(os.path.join(os.fsencode(out), every.big), "rb") as b:
        assert a.read() == b.read()
    assert os.lstat(os.path.join(os.fsencode(out), every.big)).st_mtime_ns == os.lstat(one).st_mtime_ns

    buf = io.BytesIO()
    RestoreManager(repo).restore(res.snapshot, RestoreOptions(path=os.fsdecode(sub), format="zip", output=buf))
    # a folder's archive: its contents, named relative to it (as restic's dump of SNAP:FOLDER)
    assert set(_zip_entries(buf.getvalue())) == {p for p in record_tree(sub) if p != b"."}
    buf = io.BytesIO()
    RestoreManager(repo).restore(res.snapshot, RestoreOptions(path=os.fsdecode(sub), format="zip", output=buf, keep_path=True))
    names = set(_zip_entries(buf.getvalue()))
    prefix = every.root.lstrip(b"/")
    assert {n for n in names if n.startswith(prefix + b"/")} == {prefix + b"/dir" + (b"/" + p if p != b"." else b"") for p in record_tree(sub)}


# -- incremental backups -------------------------------------------------------------------

def _only_ancestor_changes(repo: Repository, a: Snapshot, b: Snapshot, src: bytes) -> list[bytes]:
    """Assert two snapshots of ``src`` differ at most in ancestors of ``src``; return those.

    The ancestors of a source (``/``, ``/tmp``, ...) are part of the snapshot; other
    processes on this machine may touch them between two backups, which changes the
    root id legitimately. Anything else differing is a failure.
    """
    changed = []
    for _k, path, va, vb in make_hamt(repo).diff(a.root, b.root):
        assert src.startswith(path.rstrip(b"/") + b"/") and va is not None and vb is not None, (
            f"{path!r} differs between two backups of an unchanged tree"
        )
        changed.append(path)
    return changed


def test_unchanged_backup_reads_nothing_and_keeps_the_root(every, first, monkeypatch):
    repo, _spy, res1 = first
    spy = OsSpy()
    res2 = run_backup(repo, os.fsdecode(every.root), fs=spy)
    assert res2.files_read == 0 and res2.bytes_read == 0 and res2.errors == ()
    assert res2.files_unchanged == len(every.regular) + len(every.hardlinks) - 1 and res2.files_new == res2.files_changed == 0
    regular_opened = [p for p in spy.opened if stat.S_ISREG(os.lstat(p).st_mode)]
    assert regular_opened == []
    assert res2.parent == res1.snapshot.id
    changed = _only_ancestor_changes(repo, res1.snapshot, res2.snapshot, every.root)
    if not changed:
        assert res2.snapshot.root == res1.snapshot.root and res2.blobs_added == 0 and res2.bytes_added == 0
    else:  # only the trie nodes on the way to the changed ancestors are new
        assert res2.blobs_added <= 4 * len(changed)


def _small_tree(root: Path) -> None:
    for rel, data in {
        "keep.txt": b"unchanged\n",
        "modify.txt": b"before\n",
        "delete.txt": b"going away\n",
        "gone/inner.txt": b"whole directory goes\n",
        "gone/deeper/x": b"x\n",
        "stay/y": b"y\n",
    }.items():
        write_file(root / rel, data)


def test_modified_deleted_and_new_files(tmp_path):
    src = tmp_path / "src"
    _small_tree(src)
    repo = make_test_repo()
    r1 = run_backup(repo, src)
    assert r1.files_read == 6
    (src / "modify.txt").write_bytes(b"after, and longer\n")
    (src / "delete.txt").unlink()
    for p in ("gone/deeper/x", "gone/inner.txt"):
        (src / p).unlink()
    (src / "gone/deeper").rmdir()
    (src / "gone").rmdir()
    write_file(src / "stay/new.txt", b"brand new\n")
    spy = OsSpy()
    r2 = run_backup(repo, src, fs=spy)
    assert r2.errors == ()
    assert sorted(os.path.relpath(p, os.fsencode(src)) for p in spy.opened) == [b"modify.txt", b"stay/new.txt"]
    assert (r2.files_read, r2.files_changed, r2.files_new, r2.files_unchanged) == (2, 1, 1, 2)
    base = os.fsencode(src)
    assert snapshot_paths(repo, r2.snapshot, base) == {b".", b"keep.txt", b"modify.txt", b"stay", b"stay/y", b"stay/new.txt"}
    out = tmp_path / "out"
    RestoreManager(repo).restore(r2.snapshot, RestoreOptions(target=str(out)))
    assert diff_trees(record_tree(src), record_tree(restored(out, src))) == []
    # the first snapshot is untouched
    assert b"gone/deeper/x" in snapshot_paths(repo, r1.snapshot, base)


def _orphans(repo: Repository, snap: Snapshot) -> list[bytes]:
    """Entries whose parent is missing from the snapshot or is not a directory."""
    entries = dict(SnapshotTree(repo, snap.root).all_entries())
    return sorted(p for p in entries if p != b"/" and (entries.get(parent_of(p)) is None or not entries[parent_of(p)].is_dir))


def test_directory_replaced_by_file_or_symlink_leaves_no_orphans(tmp_path):
    src = tmp_path / "src"
    write_file(src / "was-dir/child", b"c")
    write_file(src / "was-dir/sub/grandchild", b"g")
    write_file(src / "was-dir2/child", b"c")
    write_file(src / "stays", b"s")
    repo = make_test_repo()
    r1 = run_backup(repo, src)
    assert _orphans(repo, r1.snapshot) == []
    for d in ("was-dir", "was-dir2"):
        for p in sorted((src / d).rglob("*"), key=lambda p: -len(p.parts)):
            p.rmdir() if p.is_dir() else p.unlink()
        (src / d).rmdir()
    write_file(src / "was-dir", b"now a file")
    os.symlink("stays", src / "was-dir2")
    r2 = run_backup(repo, src)
    assert _orphans(repo, r2.snapshot) == [], "entries of the old directory are left in the snapshot"
    tree = SnapshotTree(repo, r2.snapshot.root)
    assert tree.require(os.fsencode(src / "was-dir")).type == "f"
    assert tree.require(os.fsencode(src / "was-dir2")).type == "l"
    # and back: a file that becomes a directory again
    (src / "was-dir").unlink()
    write_file(src / "was-dir/new", b"n")
    r3 = run_backup(repo, src)
    assert _orphans(repo, r3.snapshot) == []
    assert snapshot_paths(repo, r3.snapshot, os.fsencode(src)) == {b".", b"stays", b"was-dir", b"was-dir/new", b"was-dir2"}


def test_single_file_source(tmp_path):
    f = tmp_path / "only.txt"
    write_file(f, b"just me")
    repo = make_test_repo()
    res = run_backup(repo, f)
    out = tmp_path / "out"
    RestoreManager(repo).restore(res.snapshot, RestoreOptions(target=str(out)))
    assert Path(os.fsdecode(restored(out, f))).read_bytes() == b"just me"
    assert os.lstat(restored(out, f)).st_mtime_ns == os.lstat(f).st_mtime_ns


def test_path_longer_than_path_max_is_reported(tmp_path):
    """Paths the kernel refuses (> PATH_MAX) are reported; the rest is backed up."""
    src = tmp_path / "src"
    write_file(src / "shallow", b"fine")
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(20):  # 20 x 250 bytes > 4096
            os.mkdir("D" * 250, dir_fd=fd)
            nfd = os.open("D" * 250, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        leaf = os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.close(leaf)
    finally:
        os.close(fd)
    repo = make_test_repo()
    res = run_backup(repo, src)
    assert res.snapshot is not None and len(res.errors) == 1
    assert "too long" in res.errors[0].message
    assert b"shallow" in snapshot_paths(repo, res.snapshot, os.fsencode(src))


def test_metadata_only_change_is_recorded(tmp_path):
    src = tmp_path / "src"
    _small_tree(src)
    repo = make_test_repo()
    run_backup(repo, src)
    os.chmod(src / "keep.txt", 0o600)  # ctime changes, so it is read again (as restic does)
    r2 = run_backup(repo, src)
    tree = SnapshotTree(repo, r2.snapshot.root)
    assert tree.require(os.fsencode(src / "keep.txt")).mode == 0o600
    assert r2.files_read == 1 and r2.bytes_added < 4096, "same content: no new data blob"


def test_xattr_and_symlink_changes_are_seen_and_unchanged_entries_are_not_asked_again(tmp_path, monkeypatch):
    src = tmp_path / "src"
    _small_tree(src)
    os.setxattr(src / "keep.txt", "user.tag", b"one")
    os.setxattr(src / "stay", "user.dir", b"d1")
    os.symlink("keep.txt", src / "link")
    repo = make_test_repo()
    run_backup(repo, src)

    asked: list[bytes] = []

    class XattrSpy(OsSpy):
        def listxattr(self, path, *a, **kw):
            asked.append(os.fsencode(path))
            return os.listxattr(path, *a, **kw)

        def readlink(self, path, *a, **kw):
            asked.append(os.fsencode(path))
            return os.readlink(path, *a, **kw)

    xspy = XattrSpy()
    r2 = run_backup(repo, src, fs=xspy)
    # same inode, mtime and ctime: xattrs and link targets come from the parent snapshot
    assert asked == [] and r2.files_unchanged == 6
    tree = SnapshotTree(repo, r2.snapshot.root)
    assert tree.require(os.fsencode(src / "keep.txt")).xattrs == ((b"user.tag", b"one"),)
    assert tree.require(os.fsencode(src / "link")).target == b"keep.txt"

    # setting an xattr changes ctime, so the next backup asks again and records it
    os.setxattr(src / "keep.txt", "user.tag", b"two")
    os.removexattr(src / "stay", "user.dir")
    os.unlink(src / "link")
    os.symlink("stay/y", src / "link")
    r3 = run_backup(repo, src, fs=xspy)
    assert sorted(asked) == sorted(os.fsencode(p) for p in (src, src / "keep.txt", src / "stay", src / "link", src / "link"))
    tree = SnapshotTree(repo, r3.snapshot.root)
    assert tree.require(os.fsencode(src / "keep.txt")).xattrs == ((b"user.tag", b"two"),)
    assert tree.require(os.fsencode(src / "stay")).xattrs is None
    assert tree.require(os.fsencode(src / "link")).target == b"stay/y"


# -- excludes --------------------------------------------------------------------------------

def test_excludes(tmp_path):
    src = tmp_path / "src"
    for rel in (
        "a.log", "keep.log", "sub/b.log", "build/out.o", "sub/build/x", "notbuild",
        "Photo.TMP", "sub/other.tmp", "cache/CACHEDIR", "cache/data", "sub/nobk/.nobackup",
        "sub/nobk/file", "secret/key", "docs/readme.md", "docs/draft.md",
    ):
        write_file(src / rel, b"x")
    excl = tmp_path / "excludes.txt"
    excl.write_text("# a comment line\n\nsecret/\n**/docs/draft.md\n")
    repo = make_test_repo()
    res = run_backup(
        repo, src,
        excludes=("*.log", "!keep.log", "build/"),
        iexcludes=("*.tmp",),
        exclude_files=(str(excl),),
        exclude_if_present=(".nobackup", "CACHEDIR"),
    )
    assert res.errors == ()
    got = snapshot_paths(repo, res.snapshot, os.fsencode(src))
    # restic's semantics: a tagged directory keeps itself and its tag file, nothing else
    assert got == {
        b".", b"keep.log", b"notbuild", b"sub", b"docs", b"docs/readme.md",
        b"cache", b"cache/CACHEDIR", b"sub/nobk", b"sub/nobk/.nobackup",
    }

    with pytest.raises(UsageError, match="exclude-file"):
        run_backup(repo, src, exclude_files=(str(tmp_path / "missing.txt"),))


def test_one_file_system(tmp_path):
    src = tmp_path / "src"
    write_file(src / "local/file", b"on the same device")
    mnt = src / "mnt"
    mnt.mkdir()
    repo = make_test_repo()
    same = run_backup(repo, src, one_file_system=True)  # no mount yet: everything
    assert snapshot_paths(repo, same.snapshot, os.fsencode(src)) == {b".", b"local", b"local/file", b"mnt"}
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (needed for --one-file-system): {r.stderr.strip()}")
    try:
        write_file(mnt / "elsewhere/file", b"on another device")
        assert os.lstat(mnt).st_dev != os.lstat(src).st_dev
        crossing = run_backup(repo, src, force=True)
        assert {b"mnt/elsewhere", b"mnt/elsewhere/file"} <= snapshot_paths(repo, crossing.snapshot, os.fsencode(src))
        staying = run_backup(repo, src, one_file_system=True)
        got = snapshot_paths(repo, staying.snapshot, os.fsencode(src))
        assert got == {b".", b"local", b"local/file", b"mnt"}, "the mount point is kept, its content is not"
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


# -- dry run ---------------------------------------------------------------------------------

def test_dry_run_writes_nothing(tmp_path):
    src = tmp_path / "src"
    _small_tree(src)
    cache = tmp_path / "cache"
    repo = make_test_repo(tmp_path / "repo", cache=cache)
    run_backup(repo, src)
    write_file(src / "new.bin", os.urandom(300_000))
    before = store_listing(repo.store)
    cache_before = sorted(p for p in cache.rglob("*"))
    res = run_backup(repo, src, dry_run=True)
    assert res.snapshot is None and res.dry_run and res.files_new == 1
    assert store_listing(repo.store) == before
    assert sorted(p for p in cache.rglob("*")) == cache_before


# -- files that change or turn into fifos while read ------------------------------------------

def test_file_changing_while_read_is_reported(tmp_path, monkeypatch):
    src = tmp_path / "src"
    grows = src / "grows.bin"
    write_file(grows, os.urandom(3 * 2**20))
    write_file(src / "small", b"grows too\n")
    shrinks = src / "shrinks.bin"
    write_file(shrinks, os.urandom(3 * 2**20))
    spy = OsSpy()
    fd_of: dict[int, Path] = {}
    touched = set()
    real_open = spy.open

    def tracking_open(path, flags, *a, **kw):
        fd = real_open(path, flags, *a, **kw)
        fd_of[fd] = Path(os.fsdecode(path))
        return fd

    def on_read(fd):
        p = fd_of.get(fd)
        if p is not None and p not in touched:
            touched.add(p)
            if p == shrinks:  # another writer truncates it while we read
                os.truncate(p, 100_000)
            else:  # another writer appends while we read
                with open(p, "ab") as f:
                    f.write(b"appended")

    spy.open = tracking_open
    spy.on_read = on_read
    repo = make_test_repo()
    res = run_backup(repo, src, fs=spy)
    assert sorted(res.changed_during_read) == sorted([str(grows), str(src / "small"), str(shrinks)])
    assert res.snapshot is not None and res.errors == ()
    tree = SnapshotTree(repo, res.snapshot.root)
    assert tree.require(os.fsencode(grows)).size == 3 * 2**20, "what was there when the read began"
    assert tree.require(os.fsencode(shrinks)).size == 100_000, "what could be read"
    out = tmp_path / "out"
    r = RestoreManager(repo).restore(res.snapshot, RestoreOptions(target=str(out), verify=True))
    assert r.errors == () and r.verify_failures == ()
    assert Path(os.fsdecode(restored(out, shrinks))).read_bytes() == shrinks.read_bytes()
    # the next backup reads them again (their entries keep the pre-read times)
    res2 = run_backup(repo, src)
    assert res2.files_read == 3 and res2.changed_during_read == ()


@pytest.mark.parametrize("sparse", [False, True])
def test_file_truncated_between_lstat_and_read_gets_no_invented_zeros(tmp_path, sparse):
    """9.7: stored with the size read, content as read, and reported as changed."""
    src = tmp_path / "src"
    victim = src / "shrinks.bin"
    data = os.urandom(3 * 2**20)
    write_file(victim, data)
    if sparse:  # a hole in the middle: the read takes the SEEK_DATA path
        with open(victim, "r+b") as f:
            f.truncate(6 * 2**20)
            f.seek(5 * 2**20)
            f.write(b"tail data")
    spy = OsSpy()
    target = os.fsencode(victim)

    def truncate_first(path):
        if path == target and os.lstat(path).st_size > 100_000:
            os.truncate(path, 100_000)

    spy.on_open = truncate_first
    repo = make_test_repo()
    res = run_backup(repo, src, fs=spy)
    assert res.changed_during_read == (str(victim),) and res.errors == ()
    tree = SnapshotTree(repo, res.snapshot.root)
    e = tree.require(target)
    assert e.size == 100_000
    assert sum(i if isinstance(i, int) else repo.index.lookup(i).raw_length for i in tree.content(e)) == 100_000
    out = tmp_path / "out"
    r = RestoreManager(repo).restore(res.snapshot, RestoreOptions(target=str(out), verify=True))
    assert r.errors == () and r.verify_failures == ()
    assert Path(os.fsdecode(restored(out, victim))).read_bytes() == data[:100_000]


def test_file_replaced_by_fifo_before_open_never_hangs(tmp_path, monkeypatch):
    """A regular file swapped for a fifo between lstat and open must not block the backup."""
    src = tmp_path / "src"
    write_file(src / "victim", b"a regular file, for now")
    write_file(src / "bystander", b"x")
    spy = OsSpy()
    victim = os.fsencode(src / "victim")

    def swap(path):
        if path == victim and not stat.S_ISFIFO(os.lstat(path).st_mode):
            os.unlink(path)
            os.mkfifo(path)

    spy.on_open = swap
    repo = make_test_repo()
    box: dict = {}
    t = threading.Thread(target=lambda: box.setdefault("res", run_backup(repo, src, fs=spy)), daemon=True)
    t.start()
    t.join(20)
    if t.is_alive():
        # unblock the stuck open() so the thread can end, then fail
        fd = os.open(victim, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        t.join(5)
        pytest.fail("backup blocked opening a fifo that replaced a regular file")
    res = box["res"]
    assert res.snapshot is not None
    assert [e.path for e in res.errors] == [str(src / "victim")]


# -- restore safety --------------------------------------------------------------------------

def _hostile_snapshot(repo: Repository, entries: list[tuple[bytes, dict]], bad_keys: dict[bytes, bytes] | None = None) -> Snapshot:
    """A snapshot written straight through the HAMT, without the backup's checks.

    ``bad_keys`` gives paths stored under a forged trie key (same directory prefix, other
    suffix), which lets a snapshot hold the same path twice.
    """
    keyer = Keyer(repo.sealer.keyed_hash)
    hamt = make_hamt(repo)
    rows = []
    for path, e in entries:
        key = keyer.key(path)
        if bad_keys and path in bad_keys:
            key = keyer.dir_prefix(parent_of(path)) + bad_keys.pop(path)
        rows.append((key, path, msgpack.packb(dict(sorted(e.items())))))  # raw wire map: may be malformed
    root = hamt.build(rows)
    repo.flush()
    doc = {
        "v": 1, "root": root, "time": time.time_ns(), "host": "evil", "user": "evil", "paths": [b"/"],
        "source": {"type": "local", "account": "evil", "path": ""}, "tags": [], "meta": {}, "parent": None,
        "generator": "test", "summary": {},
    }
    return save_snapshot(repo, doc)


def _dir(**kw) -> dict:
    return {"t": "d", "m": 0o755, "u": 0, "g": 0, "mt": 10**18, "ct": 10**18, **kw}


def _file(repo: Repository, data: bytes, **kw) -> dict:
    bid = repo.add_blob(2, data)[0]
    return {"t": "f", "m": 0o644, "u": 0, "g": 0, "mt": 10**18, "ct": 10**18, "s": len(data), "c": [bid], **kw}


def _link(target: bytes) -> dict:
    return {"t": "l", "m": 0o777, "u": 0, "g": 0, "mt": 10**18, "ct": 10**18, "l": target}


def test_restore_never_writes_outside_the_target(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    sentinel = outside / "sentinel"
    sentinel.write_bytes(b"untouched")
    target = tmp_path / "target"
    repo = make_test_repo()
    pwn = _file(repo, b"PWNED")
    evil = _hostile_snapshot(
        repo,
        [
            (b"/", _dir()),
            (b"/..", _dir()),
            (b"/../escape", pwn),
            (b"/a", _dir()),
            (b"/a/..", _dir()),
            (b"/a/../../escape2", pwn),
            (b"/s", _link(os.fsencode(outside))),  # absolute, to outside the target
            (b"/up", _link(b"../../..")),  # relative, climbing out
            (b"/abs-file-link", _link(os.fsencode(sentinel))),
        ],
    )
    r1 = RestoreManager(repo).restore(evil, RestoreOptions(target=str(target)))
    assert {"/..", "/a/.."} <= {p for p, _m in r1.errors}, r1.errors
    assert os.readlink(target / "s") == str(outside), "symlinks themselves are restored as they are"

    # A later snapshot puts directories and files where the first left symlinks
    # (restic #1445): nothing may be written through them.
    later = _hostile_snapshot(
        repo,
        [
            (b"/", _dir()),
            (b"/s", _dir()),
            (b"/s/sentinel", pwn),
            (b"/s/new-file", pwn),
            (b"/up", _dir()),
            (b"/up/escape3", pwn),
            (b"/abs-file-link", pwn),
        ],
    )
    r2 = RestoreManager(repo).restore(later, RestoreOptions(target=str(target)))
    refused = {p for p, _m in r2.errors}
    assert {"/s", "/up"} <= refused, r2.errors
    assert (target / "abs-file-link").read_bytes() == b"PWNED" and not (target / "abs-file-link").is_symlink()

    # One snapshot naming /s twice (a forged trie key): a symlink to outside and a
    # directory with a file below it.
    dup = _hostile_snapshot(
        repo,
        [(b"/", _dir()), (b"/s", _link(os.fsencode(outside))), (b"/s", _dir()), (b"/s/new-file2", pwn)],
        bad_keys={b"/s": b"\x00" * 8},
    )
    assert len(SnapshotTree(repo, dup.root).children(b"/")) == 2
    target2 = tmp_path / "target2"
    r3 = RestoreManager(repo).restore(dup, RestoreOptions(target=str(target2)))
    assert r3.errors, "one of the two /s entries must be refused"

    for fmt in ("zip", "tar"):
        buf = io.BytesIO()
        r = RestoreManager(repo).restore(evil, RestoreOptions(format=fmt, output=buf))
        assert {"/..", "/a/.."} <= {p for p, _m in r.errors}
        if fmt == "zip":
            names = set(_zip_entries(buf.getvalue()))
        else:
            names = {os.fsencode(ti.name) for ti in tarfile.open(fileobj=io.BytesIO(buf.getvalue()), mode="r:")}
        assert names and not any(b".." in n.split(b"/") for n in names), names

    # nothing escaped: the sentinel is intact and nothing appeared outside the targets
    assert sentinel.read_bytes() == b"untouched"
    assert sorted(os.listdir(outside)) == ["sentinel"]
    assert sorted(os.listdir(tmp_path)) == ["outside", "target", "target2"]
    for root, _dirs, files in os.walk(tmp_path):
        for f in files:
            assert not f.startswith(("escape", "new-file")) or not root.startswith(str(outside)), f"{root}/{f}"


def _tar_members(data: bytes) -> list[tarfile.TarInfo]:
    return list(tarfile.open(fileobj=io.BytesIO(data), mode="r:", encoding="utf-8", errors="surrogateescape"))


def test_archives_never_hold_entries_below_a_symlink(tmp_path):
    """An extractor (GNU tar, unzip) writes a member ``s/x`` through an earlier member
    ``s`` that is a symlink: an archive must not pair them, nor repeat a name."""
    outside = os.fsencode(tmp_path / "outside")
    os.mkdir(outside)
    repo = make_test_repo()
    pwn = _file(repo, b"PWNED")
    dup = _hostile_snapshot(
        repo,
        [(b"/", _dir()), (b"/s", _link(outside)), (b"/s", _dir()), (b"/s/evil", pwn),
         (b"/t", _link(outside)), (b"/t/evil", pwn)],
        bad_keys={b"/s": b"\x00" * 8},
    )
    for path in ("/", "/t/evil"):
        for fmt in ("tar", "zip"):
            buf = io.BytesIO()
            r = RestoreManager(repo).restore(dup, RestoreOptions(path=path, format=fmt, output=buf))
            if fmt == "tar":
                members = [(os.fsencode(ti.name), ti.issym()) for ti in _tar_members(buf.getvalue())]
            else:
                members = [(n, stat.S_ISLNK(m)) for n, (m, _b) in _zip_entries(buf.getvalue()).items()]
                with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
                    raw = [zi.filename.rstrip("/") for zi in zf.infolist()]
                assert len(raw) == len(set(raw)), f"{fmt} {path}: duplicate names {raw}"
            names = [n for n, _l in members]
            assert len(names) == len(set(names)), f"{fmt} {path}: duplicate names {names}"
            links = {n for n, is_link in members if is_link}
            below = [n for n in names if any(n.startswith(link + b"/") for link in links)]
            assert below == [], f"{fmt} --path {path}: {below} below a symlink member"
            # a folder's archive holds its contents alone, named below it: no ancestor, no symlink
            assert r.errors or path != "/", f"{fmt} --path {path}: the refused entries are reported"
        for keep in (False, True):
            target = tmp_path / f"target{path.replace('/', '-')}{keep}"
            r = RestoreManager(repo).restore(dup, RestoreOptions(path=path, target=str(target), keep_path=keep))
            assert os.listdir(outside) == [], f"--path {path} wrote through a symlink"
            # the folder's contents alone (keep False) do not pass the symlinked ancestor
            assert r.errors or (not keep and path != "/"), f"--path {path}: the refused entries are reported"
