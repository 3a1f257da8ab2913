"""The mounted file system's engine, without FUSE: layout, attributes, listings that read
only their directory, random-access reads that fetch only the blobs they overlap, errors."""

from __future__ import annotations

import errno
import os
import random
import stat
from pathlib import Path

import pytest

from backupkit.mount.files import OpenFile
from backupkit.mount.fs import MountFS
from backupkit.mount.layout import build_layout, time_name
from backupkit.objects.reader import ContentReader
from backupkit.repo.pack import pack_name
from backupkit.snapshot import Snapshot, list_snapshots
from tests.managers.lifecycle_util import backup, day, init_repo, local_store, open_repo, random_bytes, write_files


def _snap(i: int, t: int, host: str = "h", tags: tuple[str, ...] = ()) -> Snapshot:
    return Snapshot(id=f"{i:064x}", root=b"", time_ns=t, host=host, user="u", paths=(b"/x",), tags=tags)


def test_layout_names_snapshots_by_time_id_host_and_tag_with_latest_links():
    a = _snap(1, 1_700_000_000_000_000_000, "h1", ("daily",))
    b = _snap(2, 1_700_000_000_400_000_000, "h1", ("a/b", "", "daily"))  # same second as a
    c = _snap(3, 1_700_000_100_000_000_000, "h2", ("..",))
    lay = build_layout([c, b, a])  # any order: placed by (time, id)
    top = lay.root.children
    snaps = top["snapshots"].children
    ta = time_name(a)
    assert set(snaps) == {ta, ta + "-1", time_name(c), "latest"}
    assert snaps[ta].snap is a and snaps[ta + "-1"].snap is b
    assert snaps["latest"].target == time_name(c)
    assert len(top["ids"].children) == 3 and top["ids"].children["00000000"].snap in (a, b, c)
    assert set(top["hosts"].children) == {"h1", "h2"}
    assert top["hosts"].children["h1"].children["latest"].target == ta + "-1"
    assert set(top["tags"].children) == {"daily", "a_b", "_", "__"}
    assert top["tags"].children["daily"].children["latest"].target == ta + "-1"
    assert lay.newest_ns == c.time_ns


def test_time_names_are_rfc3339_to_the_second():
    name = time_name(_snap(1, 1_700_000_000_999_999_999))
    assert len(name) in (20, 25) and name[10] == "T" and ":" in name
    assert name.endswith("Z") or name[-6] in "+-"


@pytest.fixture()
def mounted(tmp_path: Path):
    """A repository with two snapshots of a small tree, and a MountFS over it."""
    src = tmp_path / "src"
    big = random_bytes(3 * 1024 * 1024 + 777, 1)  # ~100 chunks of 16-128 KiB
    write_files(src, {"big.bin": big, "dir/a.txt": b"alpha\n", "dir/sub/b.txt": b"beta\n"})
    os.link(src / "dir/a.txt", src / "dir/a-link")
    os.symlink("dir/a.txt", src / "link")
    os.setxattr(src / "dir/a.txt", "user.note", b"\x00binary\xff")
    os.chmod(src / "dir/sub/b.txt", 0o640)
    store = local_store(tmp_path / "repo")
    repo = init_repo(store)
    s1 = backup(repo, src, day(1), tags=("first",))
    write_files(src, {"dir/new.txt": b"new\n"})
    s2 = backup(repo, src, day(2))
    repo.close()
    repo = open_repo(store)
    reader = ContentReader(repo, connections=2)
    fs = MountFS(repo, lambda: list_snapshots(repo), reader)
    yield fs, src, big, (s1, s2)
    fs.close()
    reader.close()
    repo.close()


def _p(snap: Snapshot, src: Path, rel: str = "") -> str:
    return f"/snapshots/{time_name(snap)}{src}" + (f"/{rel}" if rel else "")


def test_meta_directories_and_latest(mounted):
    fs, src, _big, (s1, s2) = mounted
    assert [n for n, _a in fs.readdir("/")] == ["hosts", "ids", "snapshots", "tags"]
    assert {n for n, _a in fs.readdir("/snapshots")} == {time_name(s1), time_name(s2), "latest"}
    assert fs.readlink("/snapshots/latest") == time_name(s2)
    assert stat.S_ISLNK(fs.getattr("/snapshots/latest")["st_mode"])
    assert {n for n, _a in fs.readdir("/tags/first")} == {time_name(s1), "latest"}
    assert {n for n, _a in fs.readdir("/ids")} == {s1.short_id, s2.short_id}
    assert stat.S_ISDIR(fs.getattr(f"/ids/{s1.short_id}")["st_mode"])
    with pytest.raises(OSError) as e:
        fs.getattr("/snapshots/nope")
    assert e.value.errno == errno.ENOENT


def test_attributes_match_the_source(mounted):
    fs, src, _big, (_s1, s2) = mounted
    for rel in ("big.bin", "dir", "dir/a.txt", "dir/sub/b.txt", "link"):
        st = os.lstat(src / rel)
        a = fs.getattr(_p(s2, src, rel))
        assert a["st_mode"] == st.st_mode, rel
        assert a["st_mtime"] == st.st_mtime_ns, rel
        assert (a["st_uid"], a["st_gid"]) == (st.st_uid, st.st_gid)
        if not stat.S_ISDIR(st.st_mode):
            assert a["st_size"] == st.st_size, rel
    assert fs.readlink(_p(s2, src, "link")) == "dir/a.txt"
    one, two = fs.getattr(_p(s2, src, "dir/a.txt")), fs.getattr(_p(s2, src, "dir/a-link"))
    assert one["st_nlink"] == two["st_nlink"] == 2 and one["st_ino"] == two["st_ino"]
    assert fs.getattr(_p(s2, src, "big.bin"))["st_ino"] != one["st_ino"]
    assert fs.listxattr(_p(s2, src, "dir/a.txt")) == ["user.note"]
    assert fs.getxattr(_p(s2, src, "dir/a.txt"), "user.note") == b"\x00binary\xff"
    with pytest.raises(OSError) as e:
        fs.getxattr(_p(s2, src, "dir/a.txt"), "user.other")
    assert e.value.errno == errno.ENODATA
    # the two snapshots differ where the source changed
    assert "new.txt" in {n for n, _a in fs.readdir(_p(s2, src, "dir"))}
    assert "new.txt" not in {n for n, _a in fs.readdir(f"/tags/first/{time_name(_s1)}{src}/dir")}


def test_reads_at_any_offset_return_the_source_bytes(mounted):
    fs, src, big, (_s1, s2) = mounted
    fh = fs.open(_p(s2, src, "big.bin"), os.O_RDONLY)
    rnd = random.Random(3)
    for _ in range(200):
        off = rnd.randrange(0, len(big) + 100)
        n = rnd.choice([1, 100, 4096, 131072, 400_000])
        assert fs.read("", n, off, fh) == big[off : off + n], (off, n)
    fs.release(fh)
    with pytest.raises(OSError) as e:
        fs.open(_p(s2, src, "big.bin"), os.O_WRONLY)
    assert e.value.errno == errno.EROFS


class CountingReader(ContentReader):
    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.blob_reads: list[bytes] = []

    def read_blob(self, bid: bytes) -> bytes:
        self.blob_reads.append(bid)
        return super().read_blob(bid)


def test_sequential_reads_fetch_each_blob_once_and_a_seek_only_what_it_overlaps(mounted):
    fs, src, big, (_s1, s2) = mounted
    reader = CountingReader(fs.repo, connections=2)
    try:
        entry = fs._entry(s2, str(src / "big.bin").encode())  # noqa: SLF001 - the entry under test
        f = OpenFile(reader, entry, fs._pool)  # noqa: SLF001
        nblobs = len(f._items)  # noqa: SLF001
        assert nblobs > 10
        out = bytearray()
        while len(out) < len(big):
            out += f.read(len(out), 131072)
        assert out == big
        assert len(reader.blob_reads) == nblobs and len(set(reader.blob_reads)) == nblobs
        f.close()
        reader.blob_reads.clear()
        g = OpenFile(reader, entry)  # no pool: no read-ahead
        mid = len(big) // 2
        assert g.read(mid, 1000) == big[mid : mid + 1000]
        assert len(reader.blob_reads) <= 2
    finally:
        reader.close()


def test_a_listing_reads_only_its_directory(tmp_path: Path):
    src = tmp_path / "src"
    write_files(src, {f"d{d:02d}/f{f:03d}": b"%d %d" % (d, f) for d in range(60) for f in range(60)})
    write_files(src, {"small/one": b"1", "small/two": b"2"})
    store = local_store(tmp_path / "repo")
    repo = init_repo(store)
    snap = backup(repo, src, day(1))
    repo.close()
    repo = open_repo(store)
    with ContentReader(repo, connections=2) as reader:
        fs = MountFS(repo, lambda: list_snapshots(repo), reader)
        base = _p(snap, src)
        assert [n for n, _a in fs.readdir(base + "/small")] == ["one", "two"]
        loads_for_small = fs._hamt.loads  # noqa: SLF001
        total = sum(1 for _ in fs._hamt.walk_nodes(snap.root))  # noqa: SLF001
        assert total >= 15 and loads_for_small < total / 3, (loads_for_small, total)
        # a stat after the listing costs nothing more
        before = fs._hamt.visits  # noqa: SLF001
        fs.getattr(base + "/small/two")
        assert fs._hamt.visits == before  # noqa: SLF001
        fs.close()
    repo.close()


def test_new_snapshots_appear_after_the_refresh_interval(mounted, tmp_path: Path):
    fs, src, _big, (s1, s2) = mounted
    now = [0.0]
    snaps = [s1]
    fs2 = MountFS(fs.repo, lambda: list(snaps), fs.reader, refresh_seconds=60, clock=lambda: now[0])
    assert {n for n, _a in fs2.readdir("/snapshots")} == {time_name(s1), "latest"}
    snaps.append(s2)
    now[0] = 30.0
    assert {n for n, _a in fs2.readdir("/snapshots")} == {time_name(s1), "latest"}
    now[0] = 61.0
    assert {n for n, _a in fs2.readdir("/snapshots")} == {time_name(s1), time_name(s2), "latest"}
    assert fs2.readlink("/snapshots/latest") == time_name(s2)
    # looking up a new snapshot by name refreshes too (no listing needed)
    snaps.remove(s1)
    now[0] = 200.0
    with pytest.raises(OSError):
        fs2.getattr("/ids/nothere")  # refreshes: s1 is gone now
    assert fs2.readlink("/snapshots/latest") == time_name(s2)
    with pytest.raises(OSError):
        fs2.getattr(f"/ids/{s1.short_id}")
    snaps.append(s1)
    with pytest.raises(OSError):
        fs2.getattr(f"/ids/{s1.short_id}")  # not yet due
    now[0] = 300.0
    assert stat.S_ISDIR(fs2.getattr(f"/ids/{s1.short_id}")["st_mode"])
    fs2.close()


def test_a_lost_pack_is_eio_for_that_file_and_reported(mounted):
    fs, src, _big, (_s1, s2) = mounted
    seen = []

    class Rep:
        def on_error(self, path, err):
            seen.append((path, err))

    fs.reporter = Rep()
    e = fs._entry(s2, str(src / "big.bin").encode())  # noqa: SLF001
    small = fs._entry(s2, str(src / "dir/a.txt").encode())  # noqa: SLF001
    keep = fs.repo.index.lookup(bytes(fs.reader.content_list(small)[0])).pack.id
    packs = [fs.repo.index.lookup(bytes(b)).pack for b in fs.reader.content_list(e)]
    lost = next(p for p in packs if p.id != keep)
    fs.repo.store.delete(pack_name(lost.kind, lost.id))
    path = _p(s2, src, "big.bin")
    fh = fs.open(path, os.O_RDONLY)
    with pytest.raises(OSError) as err:
        fs.read(path, 4 << 20, 0, fh)  # the whole file: the lost blob is in it
    assert err.value.errno == errno.EIO
    assert seen and seen[0][0] == path and fs.errors >= 1
    # other files still read
    fh2 = fs.open(_p(s2, src, "dir/a.txt"), os.O_RDONLY)
    try:
        got = fs.read("", 100, 0, fh2)
    except OSError:
        raise AssertionError(seen[-1]) from None
    assert got == b"alpha\n"


def test_only_a_served_mount_ending_with_the_loop_error_counts_as_asked_to_end(tmp_path):
    """libfuse >= 3.13 returns 8 when SIGINT, SIGTERM or SIGHUP ends its loop: that is the
    normal end once the file system was served and unmounted, a failure otherwise."""
    from backupkit.mount.fuse import _ended_by_signal

    assert _ended_by_signal(RuntimeError(8), True, str(tmp_path))
    assert not _ended_by_signal(RuntimeError(8), False, str(tmp_path))  # never served: mount failed
    assert not _ended_by_signal(RuntimeError(4), True, str(tmp_path))  # another failure of fuse_main
    assert not _ended_by_signal(RuntimeError(8), True, "/proc")  # still mounted: not ended
