"""bk mount on a real FUSE mount: files as in the source (bytes, modes, owners, times,
links, hardlinks, xattrs), tar and find over the tree, random access, --allow-other,
unmounting by SIGINT and SIGTERM (exit 0), and mount points that cannot be used.

Needs /dev/fuse and fusermount3 (``scripts/setup.sh --test`` installs fuse3). Without
them these tests fail, saying so; they skip only when the kernel has no FUSE at all.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.kit import (
    bk_executable,
    cli_env,
    diff_trees,
    make_every_kind_tree,
    record_tree,
    run_bk,
    unprivileged_prefix,
    write_file,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="compares owners and setuid bits with the source: run as root")


def _require_fuse() -> None:
    try:
        with open("/proc/filesystems") as f:
            kernel_has_fuse = any(line.split()[-1] == "fuse" for line in f if line.strip())
    except OSError:
        kernel_has_fuse = True
    if not kernel_has_fuse and not os.path.exists("/dev/fuse"):
        pytest.skip("THIS KERNEL HAS NO FUSE: bk mount cannot be tested here")
    if not os.path.exists("/dev/fuse"):
        pytest.fail("/dev/fuse is missing: bk mount cannot be tested (load the fuse module)")
    if shutil.which("fusermount3") is None:
        pytest.fail("fusermount3 is missing: run scripts/setup.sh --test (installs fuse3)")


def _mounted(mp: Path) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == str(mp) for line in f)


class Mount:
    """A ``bk mount`` process serving ``mp``."""

    def __init__(self, env: dict[str, str], mp: Path, *args: str) -> None:
        self.mp = mp
        self.proc = subprocess.Popen(
            [bk_executable(), "mount", str(mp), *args], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while not (_mounted(mp) and (mp / "snapshots").is_dir()):
            if self.proc.poll() is not None:
                raise AssertionError(f"bk mount exited {self.proc.returncode}: {self.proc.stderr.read().decode()}")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("bk mount did not mount within 60 s")
            time.sleep(0.05)

    def stop(self, sig: int | None = signal.SIGINT) -> tuple[int, str]:
        """End it by ``sig``, or (None) by unmounting; (exit code, stderr)."""
        if self.proc.poll() is None:
            if sig is None:
                subprocess.run(["fusermount3", "-u", str(self.mp)], check=True, timeout=30)
            else:
                self.proc.send_signal(sig)
        try:
            self.stdout, err = self.proc.communicate(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            if _mounted(self.mp):
                subprocess.run(["fusermount3", "-u", "-z", str(self.mp)], check=False)
        return self.proc.returncode, err.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def repo_with_two_snapshots(tmp_path_factory):
    """(env, source, records of the source at each snapshot, snapshot ids)."""
    _require_fuse()
    base = tmp_path_factory.mktemp("mount")
    src = base / "src"
    tree = make_every_kind_tree(src)
    env = cli_env(base / "repo", base / "cache")
    r = run_bk("init", env=env)
    assert r.returncode == 0, r.stderr
    r = run_bk("backup", "--tag", "first", src, env=env)
    assert r.returncode == 0, r.stderr
    first = record_tree(src)
    write_file(src / "added.txt", b"only in the second snapshot\n")
    os.utime(src / "added.txt", ns=(1_700_000_000_111_111_111, 1_700_000_000_111_111_111))
    time.sleep(1.1)  # the second snapshot gets its own time name
    r = run_bk("backup", src, env=env)
    assert r.returncode == 0, r.stderr
    second = record_tree(src)
    ids = [s["id"][:8] for s in json.loads(run_bk("--json", "snapshots", env=env).stdout)]
    return env, src, tree, (first, second), ids


@pytest.fixture(scope="module")
def mount(repo_with_two_snapshots, tmp_path_factory):
    env = repo_with_two_snapshots[0]
    mp = tmp_path_factory.mktemp("mp")
    m = Mount(env, mp)
    yield m
    code, err = m.stop()
    assert code == 0, err


def _in(mount: Mount, view: str, src: Path) -> Path:
    return mount.mp / view / str(src).lstrip("/")


def test_every_file_matches_the_source_in_both_snapshots(mount, repo_with_two_snapshots):
    _env, src, _tree, (first, second), ids = repo_with_two_snapshots
    assert sorted(os.listdir(mount.mp)) == ["hosts", "ids", "snapshots", "tags"]
    assert sorted(os.listdir(mount.mp / "ids")) == sorted(ids)
    names = sorted(n for n in os.listdir(mount.mp / "snapshots") if n != "latest")
    assert len(names) == 2
    assert os.readlink(mount.mp / "snapshots" / "latest") == names[1]
    assert sorted(os.listdir(mount.mp / "tags" / "first")) == [names[0], "latest"]
    assert diff_trees(first, record_tree(_in(mount, f"snapshots/{names[0]}", src))) == []
    assert diff_trees(second, record_tree(_in(mount, "snapshots/latest", src))) == []
    assert diff_trees(first, record_tree(_in(mount, f"ids/{ids[0]}", src))) == []
    host = os.listdir(mount.mp / "hosts")[0]
    assert diff_trees(second, record_tree(_in(mount, f"hosts/{host}/latest", src))) == []


def test_hardlinks_share_an_inode_and_count_their_names(mount, repo_with_two_snapshots):
    _env, src, tree, _recs, _ids = repo_with_two_snapshots
    root = _in(mount, "snapshots/latest", src)
    stats = [os.lstat(root / os.fsdecode(p)) for p in tree.hardlinks]
    assert len({s.st_ino for s in stats}) == 1
    assert [s.st_nlink for s in stats] == [3, 3, 3]


def test_xattrs_are_listed_and_read(mount, repo_with_two_snapshots):
    _env, src, _tree, _recs, _ids = repo_with_two_snapshots
    p = _in(mount, "snapshots/latest", src) / "small.txt"
    assert sorted(os.listxattr(p)) == sorted(os.listxattr(src / "small.txt"))
    assert os.getxattr(p, "user.binary") == bytes(range(256))
    with pytest.raises(OSError):
        os.getxattr(p, "user.absent")


def test_random_access_into_a_multi_chunk_file(mount, repo_with_two_snapshots):
    _env, src, tree, _recs, _ids = repo_with_two_snapshots
    want = (src / os.fsdecode(tree.big)).read_bytes()
    assert len(want) > 8 * 1024 * 1024
    rnd = random.Random(5)
    with open(_in(mount, "snapshots/latest", src) / os.fsdecode(tree.big), "rb", buffering=0) as f:
        mid = len(want) // 2
        f.seek(mid - 12345)
        assert f.read(3 * 1024 * 1024) == want[mid - 12345 : mid - 12345 + 3 * 1024 * 1024]
        for _ in range(50):
            off = rnd.randrange(0, len(want))
            f.seek(off)
            n = rnd.choice([1, 4096, 200_000, 2_000_000])
            assert f.read(n) == want[off : off + n], off
        f.seek(len(want) + 10)
        assert f.read(10) == b""


def test_tar_and_find_over_the_mounted_tree(mount, repo_with_two_snapshots):
    _env, src, _tree, _recs, _ids = repo_with_two_snapshots
    snap_src = _in(mount, "snapshots/latest", src)
    tar = subprocess.run(["tar", "cf", "-", "-C", str(snap_src), "."], capture_output=True, timeout=120)
    assert tar.returncode == 0, tar.stderr.decode()
    # tar holds every regular file's bytes (the 32 MiB sparse file among them)
    size = sum((src / p).stat().st_size for p in ("big.bin", "sparse.img"))
    assert len(tar.stdout) > size
    whole = subprocess.run(["tar", "cf", "-", "-C", str(mount.mp), "snapshots"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)
    assert whole.returncode == 0, whole.stderr.decode()
    found = subprocess.run(["find", str(snap_src)], capture_output=True, timeout=60)
    source = subprocess.run(["find", str(src)], capture_output=True, timeout=60)
    assert found.returncode == 0 and source.returncode == 0, found.stderr.decode()
    assert found.stdout.count(b"\n") == source.stdout.count(b"\n") > 60


def test_the_mount_is_read_only(mount, repo_with_two_snapshots):
    _env, src, _tree, _recs, _ids = repo_with_two_snapshots
    root = _in(mount, "snapshots/latest", src)
    with pytest.raises(OSError):
        (root / "small.txt").write_bytes(b"x")
    with pytest.raises(OSError):
        (root / "created").write_bytes(b"x")
    with pytest.raises(OSError):
        os.mkdir(mount.mp / "snapshots" / "new")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, None], ids=["SIGINT", "SIGTERM", "fusermount3-u"])
def test_ctrl_c_sigterm_or_unmount_end_it_with_exit_0(repo_with_two_snapshots, tmp_path: Path, sig):
    env = repo_with_two_snapshots[0]
    mp = tmp_path / "mp"
    mp.mkdir()
    locks = Path(env["BK_REPOSITORY"]) / "locks"
    before = set(os.listdir(locks))
    m = Mount(env, mp)
    assert os.listdir(mp / "snapshots")
    assert len(set(os.listdir(locks)) - before) == 1  # it holds a lock while it serves
    code, err = m.stop(sig)
    assert code == 0, err
    assert not _mounted(mp) and not os.path.ismount(mp)
    assert os.listdir(mp) == []
    assert "Traceback" not in err and "unmounted" in err
    assert set(os.listdir(locks)) == before  # and releases it


def test_no_lock_mounts_without_a_lock(repo_with_two_snapshots, tmp_path: Path):
    env, src, _tree, _recs, _ids = repo_with_two_snapshots
    locks = Path(env["BK_REPOSITORY"]) / "locks"
    before = set(os.listdir(locks))
    mp = tmp_path / "mp"
    mp.mkdir()
    m = Mount(env, mp, "--no-lock", "--json")
    try:
        assert (_in(m, "snapshots/latest", src) / "small.txt").read_bytes() == (src / "small.txt").read_bytes()
        assert set(os.listdir(locks)) == before
    finally:
        code, err = m.stop()
    assert code == 0, err
    summary = json.loads(m.stdout)
    assert summary["snapshots"] == 2 and summary["files_opened"] == 1 and summary["errors"] == 0


def test_allow_other_lets_another_user_read(repo_with_two_snapshots, tmp_path: Path):
    env, src, _tree, _recs, _ids = repo_with_two_snapshots
    prefix, who = unprivileged_prefix()
    if who != "nobody":
        pytest.skip(f"needs a user other than root to read as (have {who})")
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="bk-mount-test-"))  # pytest's tmp_path is below a 0700 directory
    top.chmod(0o755)
    # the source is below pytest's 0700 directory, and the snapshot keeps that mode (the
    # kernel checks modes: default_permissions), so list what everyone may list
    ls = lambda mp: subprocess.run([*prefix, "ls", str(mp / "snapshots")], capture_output=True, timeout=30)  # noqa: E731
    for allow, mp in ((False, top / "a"), (True, top / "b")):
        mp.mkdir()
        mp.chmod(0o755)
        m = Mount(env, mp, *(["--allow-other"] if allow else []))
        try:
            r = ls(mp)
        finally:
            code, err = m.stop()
        assert code == 0, err
        if allow:
            assert r.returncode == 0 and b"latest" in r.stdout, r.stderr
        else:
            assert r.returncode != 0 and "Permission denied" in r.stderr.decode()
    shutil.rmtree(top)


def test_unusable_mount_points_are_refused_with_exit_1(mount, repo_with_two_snapshots, tmp_path: Path):
    env = repo_with_two_snapshots[0]
    afile = tmp_path / "file"
    afile.write_bytes(b"x")
    notempty = tmp_path / "full"
    notempty.mkdir()
    (notempty / "x").write_bytes(b"x")
    cases = {
        afile: "is not a directory",
        tmp_path / "missing": "does not exist",
        mount.mp: "is busy",
        notempty: "is not empty",
    }
    for mp, msg in cases.items():
        r = run_bk("mount", mp, env=env, timeout=60)
        assert r.returncode == 1, (mp, r.returncode, r.stderr)
        assert msg in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert _mounted(mount.mp)  # the busy one is still served
