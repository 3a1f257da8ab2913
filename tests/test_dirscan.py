"""backupkit.dirscan: the C directory scan against its Python reference, and the thread
that warms the cache ahead of the backup walk."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backupkit import dirscan
from tests.support.kit import reachable_tmpdir, unprivileged_prefix

pytestmark = pytest.mark.skipif(not dirscan.C_AVAILABLE, reason="the C extension _dirscan is not built")

#: every field os.lstat fills on Linux
FIELDS = [f for f in dir(os.stat_result) if f.startswith("st_")]


def odd_tree(root: Path) -> None:
    """Names whose order differs between byte order and a naive path order (``a-b`` and
    ``a.b`` sort before ``a/...`` as paths but after ``a`` as names), odd bytes, and every
    kind of entry lstat reports."""
    for d in (b"a", b"a-b", b"a.b", b"a/x", b"a/x/deep", b"a0", b"B", b"empty", b"\xff\xfe-not-utf8", b"sp ace "):
        os.makedirs(os.path.join(os.fsencode(root), d), exist_ok=True)
    for f, data in ((b"a/file", b"x"), (b"a-b/f", b"yy"), (b"\xff\xfe-not-utf8/f\xe9", b"z" * 5000), (b"top", b"")):
        with open(os.path.join(os.fsencode(root), f), "wb") as fh:
            fh.write(data)
    os.link(root / "top", root / "top-hardlink")
    os.symlink("nowhere", root / "dangling")
    os.symlink("a", root / "link-to-dir")
    os.mkfifo(root / "fifo")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(root / "sock"))
    s.close()
    if os.geteuid() == 0:
        os.mknod(root / "chardev", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    os.utime(root / "top", ns=(1, -1_500_000_000))  # a time before 1970, with nanoseconds
    os.chmod(root / "a/file", 0o4755)


def same_stat(a: os.stat_result, b: os.stat_result) -> None:
    for f in FIELDS:
        assert getattr(a, f) == getattr(b, f), f
        assert type(getattr(a, f)) is type(getattr(b, f)), f
    assert tuple(a) == tuple(b)
    assert type(a) is os.stat_result


def walk_both(root: bytes) -> int:
    """Compare ``scan`` (C) and ``scan_py`` on every directory below ``root``."""
    n = 0
    stack = [root]
    while stack:
        d = stack.pop()
        names, stats = dirscan.scan(os, d)
        stats = list(stats)
        ref_names, ref_stats = dirscan.scan_py(os, d)
        assert names == ref_names == sorted(os.listdir(d))
        assert len(stats) == len(names)
        for name, st, ref in zip(names, stats, ref_stats):
            n += 1
            if isinstance(ref, OSError):
                assert isinstance(st, OSError) and (st.errno, st.strerror) == (ref.errno, ref.strerror)
                continue
            same_stat(st, ref)
            if stat.S_ISDIR(st.st_mode):
                stack.append(os.path.join(d, name))
    return n


def test_scan_equals_the_python_reference_on_every_kind_of_entry(tmp_path):
    odd_tree(tmp_path)
    assert walk_both(os.fsencode(tmp_path)) >= 20


def test_scan_equals_the_python_reference_on_a_system_tree():
    # a real tree with many entries (sizes, owners, times, devices of its own); bounded
    n = walk_both(os.fsencode(os.path.dirname(os.__file__)))
    assert n > 100


def test_a_directory_of_thousands_of_entries(tmp_path):
    # its listing is a block of its own (mapped, not from malloc's arena): same results
    for i in range(2500):
        (tmp_path / f"entry-{i:05}-{'x' * (i % 40)}").write_bytes(b"")
    ra = dirscan.read_ahead(os, os.fsencode(tmp_path), 100_000, 60.0)
    try:
        wait_for(lambda: ra.counts()[0] == 1)
        names, stats = dirscan.scan(os, os.fsencode(tmp_path), ra)
        assert ra.counts()[2] == 1  # taken from the read-ahead
    finally:
        ra.close()
    assert walk_both(os.fsencode(tmp_path)) == 2500
    ref_names, ref_stats = dirscan.scan_py(os, os.fsencode(tmp_path))
    assert names == ref_names
    for st, ref in zip(stats, ref_stats, strict=True):
        same_stat(st, ref)


def test_scan_of_the_root_directory_names_no_double_slash():
    names, stats = dirscan.scan(os, b"/")
    assert names == sorted(os.listdir(b"/"))
    for name, st in zip(names, stats):
        if not isinstance(st, OSError):
            same_stat(st, os.lstat(b"/" + name))


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_a_directory_that_cannot_be_read_raises_as_listdir_does(tmp_path, kind):
    p = tmp_path / "x"
    if kind == "file":
        p.write_bytes(b"not a directory")
    with pytest.raises(OSError) as ref:
        os.listdir(p)
    with pytest.raises(OSError) as got:
        dirscan.scan(os, os.fsencode(p))
    assert (got.value.errno, got.value.strerror, got.value.filename) == (ref.value.errno, ref.value.strerror, os.fsencode(p))


def test_a_stand_in_fs_goes_through_its_own_calls(tmp_path):
    (tmp_path / "b").write_bytes(b"1")
    (tmp_path / "a").mkdir()
    calls = []

    class Spy:
        def __getattr__(self, name):
            return getattr(os, name)

        def lstat(self, p):
            calls.append(p)
            if p.endswith(b"/b"):
                raise PermissionError(13, "Permission denied", p)
            return os.lstat(p)

    names, stats = dirscan.scan(Spy(), os.fsencode(tmp_path))
    assert names == [b"a", b"b"] and calls == [os.fsencode(tmp_path / n) for n in ("a", "b")]
    stats = list(stats)
    assert stat.S_ISDIR(stats[0].st_mode) and isinstance(stats[1], PermissionError)


_PROBE = """
import json, os, sys
from backupkit import dirscan
d = os.fsencode(sys.argv[1])
out = {}
for label, (names, stats) in (("c", dirscan.scan(os, d)), ("py", dirscan.scan_py(os, d))):
    out[label] = [[n.decode(), [s.errno, s.strerror] if isinstance(s, OSError) else s.st_size] for n, s in zip(names, stats)]
print(json.dumps(out))
"""


def test_entries_whose_lstat_fails_come_back_as_the_same_oserror():
    # a directory one may list but not search: every lstat of an entry fails with EACCES
    prefix, who = unprivileged_prefix()
    with reachable_tmpdir("bk-dirscan-") as base:  # reachable by nobody
        d = base / "listable"
        d.mkdir()
        (d / "one").write_bytes(b"1")
        (d / "two").write_bytes(b"22")
        d.chmod(0o744)  # r for others, no x
        r = subprocess.run(
            [*prefix, sys.executable, "-c", _PROBE, str(d)],
            capture_output=True, text=True, timeout=60, cwd=str(Path(__file__).resolve().parents[1]),
        )
        assert r.returncode == 0, f"as {who}: {r.stderr}"
        out = json.loads(r.stdout)
        assert out["c"] == out["py"]
        if who == "nobody":
            assert [e[1][0] for e in out["c"]] == [13, 13]


# -- warming ahead of the walk ------------------------------------------------------------

def tree_of_dirs(root: Path, fan: int = 4, depth: int = 3, files: int = 3) -> list[bytes]:
    """A tree; returns its directories in the walk's order (depth first, names sorted)."""
    order: list[bytes] = []

    def make(p: Path, level: int) -> None:
        p.mkdir(exist_ok=True)
        for i in range(files):
            (p / f"f{i}").write_bytes(b"x")
        if level < depth:
            for name in ("a", "a-b", "a.b", "b")[:fan]:
                make(p / name, level + 1)

    make(root, 0)

    def walk(p: bytes) -> None:
        order.append(p)
        for n in sorted(os.listdir(p)):
            c = p + b"/" + n
            if stat.S_ISDIR(os.lstat(c).st_mode):
                walk(c)

    walk(os.fsencode(root))
    return order


def wait_for(cond, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def settled(ra, quiet: float = 0.3, timeout: float = 30.0) -> tuple[int, int, int, int]:
    """``ra.counts()`` once they stop changing (the threads are done or waiting)."""
    end = time.monotonic() + timeout
    last = ra.counts()
    while True:
        time.sleep(quiet)
        now = ra.counts()
        if now == last and now[0] > 0:
            return now
        assert time.monotonic() < end, "timed out"
        last = now


def test_the_read_ahead_reads_in_the_walks_order_and_hands_each_listing_over(tmp_path):
    order = tree_of_dirs(tmp_path / "t")
    ra = dirscan.read_ahead(os, order[0], 1 << 20, 60.0)
    try:
        for i, d in enumerate(order):
            # the thread reads in the walk's order: once it has read i+1 directories,
            # the (i+1)-th is this one, and it is there to take
            wait_for(lambda: ra.counts()[0] >= i + 1)
            names, stats = dirscan.scan(os, d, ra)
            ref_names, ref_stats = dirscan.scan_py(os, d)
            assert names == ref_names
            for st, ref in zip(stats, ref_stats, strict=True):
                same_stat(st, ref)
        read, passed, taken, held = ra.counts()
        assert (read, passed, taken, held) == (len(order), 0, len(order), 0)
    finally:
        ra.close()


@pytest.mark.parametrize("threads", [2, 4])
def test_several_threads_hand_over_every_listing_in_the_walks_order(tmp_path, threads):
    order = tree_of_dirs(tmp_path / "t", fan=4, depth=4)  # 341 directories
    ra = dirscan.read_ahead(os, order[0], 1 << 20, 60.0, -1, threads)
    try:
        wait_for(lambda: ra.counts()[0] == len(order))
        time.sleep(0.05)
        assert ra.counts() == (len(order), 0, 0, sum(1 + len(os.listdir(d)) for d in order))
        for d in order:
            names, stats = dirscan.scan(os, d, ra)
            ref_names, ref_stats = dirscan.scan_py(os, d)
            assert names == ref_names
            for st, ref in zip(stats, ref_stats, strict=True):
                same_stat(st, ref)
        assert ra.counts() == (len(order), 0, len(order), 0)
    finally:
        ra.close()


@pytest.mark.parametrize("threads", [1, 3])
def test_a_walk_racing_the_threads_sees_the_same_listings(tmp_path, threads):
    order = tree_of_dirs(tmp_path / "t", fan=4, depth=4)
    for _ in range(3):
        ra = dirscan.read_ahead(os, order[0], 50, 60.0, -1, threads)
        try:
            for d in order:  # no waiting: some listings come from the threads, some not
                names, stats = dirscan.scan(os, d, ra)
                assert names == sorted(os.listdir(d))
                assert [st.st_ino for st in stats] == [os.lstat(d + b"/" + n).st_ino for n in names]
            wait_for(lambda: ra.counts()[3] == 0)
        finally:
            ra.close()


def test_what_is_read_ahead_is_bounded(tmp_path):
    order = tree_of_dirs(tmp_path / "t")  # 85 directories of 3-7 entries
    ra = dirscan.read_ahead(os, order[0], 20, 60.0)
    try:
        ra.take(order[0])  # the walk is at the root (its listing may or may not be there yet)
        wait_for(lambda: ra.counts()[3] > 20)
        time.sleep(0.2)
        read, _passed, _taken, held = ra.counts()
        # it stops once past the bound: at most one directory beyond it
        assert 20 < held <= 20 + 8 and read < len(order)
        ra.take(order[len(order) // 2])  # the walk moves on: what it passed is dropped
        wait_for(lambda: ra.counts()[0] > read)
    finally:
        ra.close()


def test_directories_the_walk_went_past_are_dropped_or_not_read(tmp_path):
    order = tree_of_dirs(tmp_path / "t")
    ra = dirscan.read_ahead(os, order[0], 10, 60.0)
    try:
        ra.take(order[-1])  # the walk jumped to the end (it excluded the rest)
        # the thread ends: it reads the path down to it (t, b, b/b, b/b/b: their
        # subdirectories are what comes next) and passes over a, a-b and a.b at each of
        # the three levels; it may have read a directory or two before the walk's jump
        # (the bound of 10 entries stops it after that), then what is below them is
        # passed over too
        read, passed, taken, held = settled(ra)
        assert 4 <= read <= 6 and passed >= 9 and read + passed < len(order) // 2
        assert (taken, held) == (0, 0)
    finally:
        ra.close()


def test_a_listing_older_than_max_age_is_read_again(tmp_path):
    order = tree_of_dirs(tmp_path / "t", depth=1)
    ra = dirscan.read_ahead(os, order[0], 1000, 0.05)
    try:
        wait_for(lambda: ra.counts()[0] == len(order))
        time.sleep(0.1)
        (Path(os.fsdecode(order[1])) / "new").write_bytes(b"after the read-ahead")
        names, _stats = dirscan.scan(os, order[1], ra)
        assert b"new" in names  # read again by the walk, not the old listing
        assert ra.counts()[2] == 0
    finally:
        ra.close()


def test_close_stops_the_thread(tmp_path):
    order = tree_of_dirs(tmp_path / "t")
    ra = dirscan.read_ahead(os, order[0], 1, 60.0)
    wait_for(lambda: ra.counts()[0] >= 1)
    ra.close()
    time.sleep(0.05)
    before = ra.counts()[0]
    ra.take(order[-1])  # would free the bound: a stopped thread reads nothing more
    time.sleep(0.1)
    assert ra.counts()[0] == before < len(order)


def test_nothing_is_read_ahead_without_the_os_module_or_with_zero_entries(tmp_path):
    class Spy:
        def __getattr__(self, name):
            return getattr(os, name)

    root = os.fsencode(tmp_path)
    for ra in (dirscan.read_ahead(Spy(), root, 100, 60.0), dirscan.read_ahead(os, root, 0, 60.0)):
        time.sleep(0.05)
        assert ra.take(root) is None
        assert ra.counts() == (0, 0, 0, 0)
        ra.close()


def test_another_device_is_not_entered(tmp_path):
    order = tree_of_dirs(tmp_path / "t", depth=1)
    mnt = tmp_path / "t" / "a-b"  # a directory of the tree becomes another file system
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (needed for the device rule): {r.stderr.strip()}")
    try:
        (mnt / "inside").mkdir()
        dev = os.lstat(tmp_path / "t").st_dev
        got = {}
        for label, d in (("same device", dev), ("any device", -1)):
            ra = dirscan.read_ahead(os, order[0], 1000, 60.0, d)
            try:
                got[label] = settled(ra)[0]
            finally:
                ra.close()
        # t and its four children, without / with the tmpfs's root and its "inside"
        assert got == {"same device": 4, "any device": 6}
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_the_walk_order_is_component_by_component():
    """The read-ahead's order (C ``cmp_walk``): paths compared as their lists of
    components, each as bytes, on names with the bytes around "/" and high bytes."""
    import random

    from backupkit import _dirscan

    rnd = random.Random(2)
    alphabet = [b"a", b"b", b"-", b".", b"0", b"\x01", b"\xff", b"\x2e", b"\x30"]
    paths = {b"/"}
    for _ in range(600):
        parts = [b"".join(rnd.choice(alphabet) for _ in range(rnd.randrange(1, 4))) for _ in range(rnd.randrange(1, 5))]
        paths.add(b"/" + b"/".join(parts))
    paths = list(paths)

    def key(p: bytes) -> list[bytes]:
        return [c for c in p.split(b"/") if c]

    for _ in range(20000):
        a, b = rnd.choice(paths), rnd.choice(paths)
        want = (key(a) > key(b)) - (key(a) < key(b))
        assert _dirscan.walk_cmp(a, b) == want, (a, b)
    assert sorted(paths, key=key)[0] == b"/" and _dirscan.walk_cmp(b"/a/x", b"/a-b") == -1


def test_a_warmer_reads_the_whole_tree_and_keeps_nothing(tmp_path):
    order = tree_of_dirs(tmp_path / "t", fan=4, depth=3)
    (tmp_path / "file").write_bytes(b"x")
    w = dirscan.warm([str(tmp_path / "t"), str(tmp_path / "file"), str(tmp_path / "missing")])
    try:
        (h,) = w._handles  # the directory only: a file or a missing path starts nothing
        read, passed, taken, held = settled(h)
        assert (read, passed, taken, held) == (len(order), 0, 0, 0)  # every directory, nothing held
        assert h.take(order[1]) is None  # a warmer hands nothing over
        assert w.counts() == [(len(order), 0, 0, 0)]
    finally:
        w.close()
    assert w.counts() == []


def test_a_warmer_honours_one_file_system_and_stops_on_close(tmp_path):
    order = tree_of_dirs(tmp_path / "t", depth=1)
    mnt = tmp_path / "t" / "a-b"
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (needed for the device rule): {r.stderr.strip()}")
    try:
        (mnt / "inside").mkdir()
        got = {}
        for xdev in (True, False):
            w = dirscan.warm([os.fsdecode(order[0])], one_file_system=xdev)
            try:
                got[xdev] = settled(w._handles[0])[0]
            finally:
                w.close()
        assert got == {True: 4, False: 6}
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    # closed right after it starts: it stops at its next directory, long before the end
    # of 1,365 (how far it got first is the scheduler's: 45 in a loaded suite run)
    big = tree_of_dirs(tmp_path / "big", fan=4, depth=5, files=0)
    w = dirscan.warm([os.fsdecode(big[0])])
    h = w._handles[0]
    w.close()
    time.sleep(0.3)
    stopped = h.counts()[0]
    time.sleep(0.1)
    assert h.counts()[0] == stopped < len(big) // 2
