"""``bk restore`` into a tree that is already there, through the real ``bk``:
``--overwrite always|if-changed|if-newer|never``, ``--delete`` (and its dry run), the
totals of the progress lines, ``REF:PATH`` into the target, and as root ``--no-owner``,
``--numeric-owner``, ``--no-special`` and the setuid policy."""

from __future__ import annotations

import json
import os
import stat

import pytest

from tests.support.kit import cli_env, ok, run_bk, write_file

T0 = 1_600_000_000 * 10**9  # the snapshot's mtime of every file
HOUR = 3600 * 10**9



def summary(r) -> dict:
    return json.loads(r.stdout.splitlines()[-1])


def statuses(r) -> list[dict]:
    docs = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    return [d for d in docs if d.get("message_type") == "status"]


def _touch(path, ns: int) -> None:
    os.utime(path, ns=(ns, ns), follow_symlinks=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("restore-options")
    src = base / "src"
    for rel, data in {
        "same.txt": b"same content\n",
        "samesize.txt": b"snapshot data\n",
        "changed.txt": b"the snapshot's version\n",
        "newer.txt": b"the snapshot's newer.txt\n",
        "sub/deep.txt": b"deep\n",
        "sub/inner/leaf.txt": b"leaf\n",
    }.items():
        write_file(src / rel, data)
        _touch(src / rel, T0)
    env = cli_env(base / "repo", base / "cache")
    ok(run_bk("init", env=env))
    ok(run_bk("backup", src, env=env))
    return base, src, env


def _prepared_target(world, tmp_path):
    """A target restored from the snapshot, then changed: the cases of every mode."""
    _base, src, env = world
    out = tmp_path / "out"
    ok(run_bk("restore", f"latest:{src}", "--target", out, env=env))
    (out / "samesize.txt").write_bytes(b"SNAPSHOT DATA\n")  # same size, mtime put back
    _touch(out / "samesize.txt", T0)
    (out / "changed.txt").write_bytes(b"older local version\n")  # older than the snapshot
    _touch(out / "changed.txt", T0 - HOUR)
    (out / "newer.txt").write_bytes(b"edited locally after the backup\n")
    _touch(out / "newer.txt", T0 + HOUR)
    (out / "extra.txt").write_bytes(b"not in the snapshot\n")
    inodes = {n: os.stat(out / n).st_ino for n in ("same.txt", "samesize.txt", "changed.txt", "newer.txt", "sub/deep.txt")}
    return out, inodes


SNAP = {
    "same.txt": b"same content\n",
    "samesize.txt": b"snapshot data\n",
    "changed.txt": b"the snapshot's version\n",
    "newer.txt": b"the snapshot's newer.txt\n",
}
LOCAL = {
    "same.txt": b"same content\n",
    "samesize.txt": b"SNAPSHOT DATA\n",
    "changed.txt": b"older local version\n",
    "newer.txt": b"edited locally after the backup\n",
}


@pytest.mark.parametrize(
    "mode, rewritten, unchanged, skipped",
    [
        # always reads and hashes: only same.txt (and the untouched sub/) are unchanged
        ("always", {"samesize.txt", "changed.txt", "newer.txt"}, 3, 0),
        # if-changed trusts size and mtime: samesize.txt passes for unchanged
        ("if-changed", {"changed.txt", "newer.txt"}, 4, 0),
        (None, {"changed.txt", "newer.txt"}, 4, 0),  # the default is if-changed
        # if-newer: only what the snapshot has newer (changed.txt is older locally)
        ("if-newer", {"changed.txt"}, 0, 5),
        ("never", set(), 0, 6),
    ],
)
def test_overwrite_modes(world, tmp_path, mode, rewritten, unchanged, skipped):
    _base, src, env = world
    out, inodes = _prepared_target(world, tmp_path)
    args = ["--overwrite", mode] if mode else []
    r = ok(run_bk("--json", "restore", f"latest:{src}", "--target", out, *args, env=env))
    doc = summary(r)
    for name in SNAP:
        want = SNAP[name] if name in rewritten else LOCAL[name]
        assert (out / name).read_bytes() == want, f"{mode}: {name}"
        # a file not rewritten keeps its inode: restore writes a new file and renames it
        assert (os.stat(out / name).st_ino == inodes[name]) == (name not in rewritten), f"{mode}: {name}"
    assert os.stat(out / "sub/deep.txt").st_ino == inodes["sub/deep.txt"]
    assert (out / "extra.txt").exists(), "without --delete nothing is removed"
    assert doc["files"] == len(rewritten) and doc["unchanged"] == unchanged and doc["skipped"] == skipped, doc
    assert doc["files_skipped"] == unchanged + skipped and doc["files_deleted"] == 0
    if mode in ("always", "if-changed", None):
        for name in rewritten:
            assert os.stat(out / name).st_mtime_ns == T0
    if mode == "if-newer":
        assert os.stat(out / "newer.txt").st_mtime_ns == T0 + HOUR


def test_verify_checks_files_taken_as_unchanged(world, tmp_path):
    """if-changed trusts size and mtime; --verify reads them, and names the one that
    only looks unchanged."""
    _base, src, env = world
    out, _inodes = _prepared_target(world, tmp_path)
    r = run_bk("restore", f"latest:{src}", "--target", out, "--verify", env=env)
    assert r.returncode == 1 and "samesize.txt" in r.stderr and "verification failed" in r.stderr, r.stderr
    assert "same.txt:" not in r.stderr
    r = ok(run_bk("restore", f"latest:{src}", "--target", out, "--verify", "--overwrite", "always", env=env))
    assert (out / "samesize.txt").read_bytes() == SNAP["samesize.txt"]


def test_a_second_restore_rewrites_nothing(world, tmp_path):
    _base, src, env = world
    out = tmp_path / "out"
    ok(run_bk("restore", "latest", "--target", out, env=env))
    before = {p: os.stat(p).st_ino for p in out.rglob("*") if p.is_file()}
    r = ok(run_bk("--json", "restore", "latest", "--target", out, env=env))
    doc = summary(r)
    assert doc["files"] == 0 and doc["unchanged"] == 6 and doc["bytes_restored"] == 0, doc
    assert {p: os.stat(p).st_ino for p in out.rglob("*") if p.is_file()} == before
    r = ok(run_bk("restore", "latest", "--target", out, env=env))
    assert "6 unchanged" in r.stderr, r.stderr


def test_invalid_overwrite_mode_is_a_usage_error(world, tmp_path):
    _base, _src, env = world
    r = run_bk("restore", "latest", "--target", tmp_path / "x", "--overwrite", "sometimes", env=env)
    assert r.returncode == 2 and "always, if-changed, if-newer, never" in r.stderr, r.stderr
    assert not (tmp_path / "x").exists()


def test_delete_removes_extras_and_never_follows_a_symlink(world, tmp_path):
    _base, src, env = world
    out, _inodes = _prepared_target(world, tmp_path)
    outside = tmp_path / "outside"
    write_file(outside / "keep-me", b"outside the target\n")
    write_file(out / "extradir/x/y.txt", b"y\n")
    write_file(out / "sub/stray.txt", b"stray\n")
    os.symlink(outside, out / "escape")  # a symlink to a directory outside the target
    os.symlink(outside, out / "sub/inner/escape2")
    extras = {"extra.txt", "extradir", "escape", "sub/stray.txt", "sub/inner/escape2"}

    # the dry run lists what it would delete, and deletes nothing
    r = ok(run_bk("restore", f"latest:{src}", "--target", out, "--delete", "--dry-run", env=env))
    listed = {line.split("would delete ", 1)[1].strip() for line in r.stderr.splitlines() if "would delete " in line}
    assert listed == {str(out / p) for p in extras | {"extradir/x", "extradir/x/y.txt"}}, r.stderr
    assert all(os.path.lexists(out / p) for p in extras)

    r = ok(run_bk("--json", "restore", f"latest:{src}", "--target", out, "--delete", env=env))
    assert summary(r)["files_deleted"] == 7, summary(r)
    assert not any(os.path.lexists(out / p) for p in extras)
    assert (outside / "keep-me").read_bytes() == b"outside the target\n", "followed a symlink out of the target"
    assert sorted(p.name for p in outside.iterdir()) == ["keep-me"]
    got = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert got == ["changed.txt", "newer.txt", "same.txt", "samesize.txt", "sub", "sub/deep.txt", "sub/inner", "sub/inner/leaf.txt"]


def test_delete_with_a_symlink_where_the_snapshot_has_a_directory(world, tmp_path):
    """``sub`` is a symlink out of the target: it is refused, and nothing beyond it is
    deleted (or written)."""
    _base, src, env = world
    out = tmp_path / "out"
    outside = tmp_path / "outside"
    write_file(outside / "keep-me", b"outside\n")
    out.mkdir()
    os.symlink(outside, out / "sub")
    r = run_bk("restore", f"latest:{src}", "--target", out, "--delete", env=env)
    assert r.returncode == 1 and "in the way" in r.stderr, r.stderr
    assert sorted(p.name for p in outside.iterdir()) == ["keep-me"]
    assert os.path.islink(out / "sub")


@pytest.mark.parametrize("mode", ["if-changed", "always"])
def test_a_file_where_the_snapshot_has_a_directory_is_kept_and_reported(world, tmp_path, mode):
    """As restic 0.14 (``mkdir ...: not a directory``, exit 1): the file stays, the
    directory and what is below it are reported, the rest is restored. (restic 0.17
    replaces it; bk does not remove a user's file to make room, docs/restic.md.)"""
    _base, src, env = world
    out = tmp_path / "out"
    write_file(out / "sub", b"mine\n")
    r = run_bk("restore", f"latest:{src}", "--target", out, "--overwrite", mode, env=env)
    assert r.returncode == 1 and "in the way" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert (out / "sub").read_bytes() == b"mine\n"
    assert (out / "same.txt").read_bytes() == b"same content\n"


def test_delete_in_a_restored_folder_only(world, tmp_path):
    """``latest:/src/sub --delete``: the target is compared with that folder; with
    --include only what the patterns select is deleted."""
    _base, src, env = world
    out = tmp_path / "out"
    write_file(out / "stray.txt", b"x\n")
    write_file(out / "stray.log", b"x\n")
    ok(run_bk("restore", f"latest:{src}/sub", "--target", out, "--delete", "--include", "*.txt", env=env))
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["deep.txt", "inner", "inner/leaf.txt", "stray.log"]


def test_delete_needs_a_target(world):
    _base, _src, env = world
    r = run_bk("restore", "latest", "--delete", "--format", "tar", env=env)
    assert r.returncode == 2 and "--delete" in r.stderr


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """Enough files that a restore lasts several status intervals at 60 a second."""
    base = tmp_path_factory.mktemp("restore-many")
    src = base / "src"
    for i in range(400):
        write_file(src / ("a" if i % 2 else "b") / f"f{i:03}", os.urandom(8192))
    env = {**cli_env(base / "repo", base / "cache"), "BK_PROGRESS_FPS": "60"}
    ok(run_bk("init", env=env))
    ok(run_bk("backup", src, env=env))
    return base, src, env


@pytest.mark.parametrize("ref", ["latest", "latest:{src}/a"])
def test_json_status_lines_know_the_totals(many, tmp_path, ref):
    """The whole snapshot: totals from its summary; a folder: counted while restoring."""
    _base, src, env = many
    ref = ref.replace("{src}", str(src))
    r = ok(run_bk("--json", "restore", ref, "--target", tmp_path / "out", env=env))
    files = 400 if ref == "latest" else 200
    st = statuses(r)
    assert st, r.stdout
    assert (st[-1]["total_files"], st[-1]["total_bytes"]) == (files, files * 8192), st[-1]
    assert all(0.0 <= s["percent_done"] <= 1.0 for s in st)
    assert st[-1]["percent_done"] == 1.0, st[-1]  # the last status line: where the run ended
    doc = summary(r)
    assert doc["total_bytes"] == files * 8192 and doc["files"] == files


def test_ref_path_restores_the_folder_contents_into_the_target(world, tmp_path):
    _base, src, env = world
    ok(run_bk("restore", f"latest:{src}/sub", "--target", tmp_path / "a", env=env))
    assert sorted(str(p.relative_to(tmp_path / "a")) for p in (tmp_path / "a").rglob("*")) == ["deep.txt", "inner", "inner/leaf.txt"]
    ok(run_bk("restore", f"latest:{src}/sub/deep.txt", "--target", tmp_path / "b", env=env))
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["deep.txt"]


# -- as root ---------------------------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="owners, device nodes and setuid files need root")


@pytest.fixture(scope="module")
def root_world(tmp_path_factory):
    base = tmp_path_factory.mktemp("restore-root")
    src = base / "src"
    write_file(src / "owned", b"owned by 1234\n")
    os.chown(src / "owned", 1234, 1235)
    write_file(src / "suid", b"#!/bin/sh\n")
    os.chmod(src / "suid", 0o4755)
    write_file(src / "sgid", b"#!/bin/sh\n")
    os.chmod(src / "sgid", 0o2755)
    os.mkfifo(src / "fifo")
    os.mknod(src / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    env = cli_env(base / "repo", base / "cache")
    ok(run_bk("init", env=env))
    ok(run_bk("backup", src, env=env))
    return base, src, env


@needs_root
def test_root_restores_owners_devices_and_setuid_by_default(root_world, tmp_path):
    _base, src, env = root_world
    out = tmp_path / "out"
    ok(run_bk("restore", f"latest:{src}", "--target", out, env=env))
    st = os.stat(out / "owned")
    assert (st.st_uid, st.st_gid) == (1234, 1235)
    assert stat.S_IMODE(os.stat(out / "suid").st_mode) == 0o4755
    assert stat.S_IMODE(os.stat(out / "sgid").st_mode) == 0o2755
    assert stat.S_ISFIFO(os.lstat(out / "fifo").st_mode)
    dev = os.lstat(out / "null")
    assert stat.S_ISCHR(dev.st_mode) and dev.st_rdev == os.makedev(1, 3)


@needs_root
def test_no_owner_gives_files_to_the_user_and_drops_setuid(root_world, tmp_path):
    _base, src, env = root_world
    out = tmp_path / "out"
    ok(run_bk("restore", f"latest:{src}", "--target", out, "--no-owner", env=env))
    st = os.stat(out / "owned")
    assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())
    assert stat.S_IMODE(os.stat(out / "suid").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(out / "sgid").st_mode) == 0o755


@needs_root
def test_no_setuid_keeps_owners_and_drops_the_bits(root_world, tmp_path):
    _base, src, env = root_world
    out = tmp_path / "out"
    ok(run_bk("restore", f"latest:{src}", "--target", out, "--no-setuid", env=env))
    assert os.stat(out / "owned").st_uid == 1234
    assert stat.S_IMODE(os.stat(out / "suid").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(out / "sgid").st_mode) == 0o755


@needs_root
def test_no_special_skips_devices_and_fifos(root_world, tmp_path):
    _base, src, env = root_world
    out = tmp_path / "out"
    r = ok(run_bk("--json", "restore", f"latest:{src}", "--target", out, "--no-special", env=env))
    assert sorted(p.name for p in out.iterdir()) == ["owned", "sgid", "suid"]
    assert summary(r)["skipped"] == 2
    # --dry-run --no-special says the same and writes nothing
    r = ok(run_bk("--json", "restore", f"latest:{src}", "--target", tmp_path / "dry", "--no-special", "--dry-run", env=env))
    assert summary(r)["skipped"] == 2 and not (tmp_path / "dry").exists()


@needs_root
def test_owners_by_id_unless_by_name(tmp_path):
    """An entry recorded as user ``nobody`` with uid 1234: by default (as restic, and
    GNU tar's --numeric-owner) the id wins, with owner_by_name (--ownership-by-name)
    this machine's nobody."""
    from backupkit.managers.restore import RestoreManager, RestoreOptions
    from tests.support.kit import make_test_repo
    from tests.test_roundtrip import _dir, _file, _hostile_snapshot

    import pwd

    nobody = pwd.getpwnam("nobody").pw_uid
    repo = make_test_repo()
    snap = _hostile_snapshot(repo, [(b"/", _dir()), (b"/f", _file(repo, b"x", u=1234, un="nobody"))])
    RestoreManager(repo).restore(snap, RestoreOptions(target=str(tmp_path / "names"), owner_by_name=True))
    assert os.stat(tmp_path / "names" / "f").st_uid == nobody
    RestoreManager(repo).restore(snap, RestoreOptions(target=str(tmp_path / "ids")))
    assert os.stat(tmp_path / "ids" / "f").st_uid == 1234


def test_owner_flags_exclude_each_other(world, tmp_path):
    _base, _src, env = world
    r = run_bk("restore", "latest", "--target", tmp_path / "x", "--numeric-owner", "--ownership-by-name", env=env)
    assert r.returncode == 2 and "exclude each other" in r.stderr, r.stderr


@needs_root
def test_every_kind_restored_twice_is_left_alone_and_identical(tmp_path):
    """Hard links, symlinks, a fifo, sparse and setuid files: a second restore into the
    same target rewrites nothing and the tree still matches the source."""
    from tests.support.kit import diff_trees, make_every_kind_tree, record_tree

    every = make_every_kind_tree(tmp_path / "src", big_size=300_000, sparse_size=1 << 20)
    env = cli_env(tmp_path / "repo", tmp_path / "cache")
    ok(run_bk("init", env=env))
    ok(run_bk("backup", os.fsdecode(every.root), env=env))
    out = tmp_path / "out"
    ref = b"latest:" + every.root
    ok(run_bk("restore", ref, "--target", out, env=env))
    inodes = {p: os.lstat(p).st_ino for p in out.rglob("*")}
    r = ok(run_bk("--json", "restore", ref, "--target", out, env=env))
    doc = summary(r)
    assert doc["files"] == 0 and doc["bytes_restored"] == 0 and doc["others"] == 1, doc  # the socket: never recreated
    assert {p: os.lstat(p).st_ino for p in out.rglob("*")} == inodes
    assert diff_trees(record_tree(every.root, skip=[every.socket]), record_tree(os.fsencode(out))) == []


def test_include_and_exclude_xattr_choose_what_a_restore_sets(tmp_path):
    """restic's --include-xattr / --exclude-xattr: name patterns; the TAR stream too."""
    import io
    import tarfile

    src = tmp_path / "src"
    f = src / "f.txt"
    write_file(f, b"with attributes\n")
    try:
        os.setxattr(f, b"user.keep", b"1")
        os.setxattr(f, b"user.drop", b"2")
    except OSError as e:  # a file system without user xattrs cannot show this
        pytest.fail(f"this test needs user xattrs on {tmp_path}: {e}")
    env = cli_env(tmp_path / "repo", tmp_path / "cache")
    ok(run_bk("init", env=env))
    ok(run_bk("backup", src, env=env))

    def restored_names(*args) -> set[bytes]:
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        ok(run_bk("restore", "latest", "--target", out, *args, env=env))
        return {n.encode() for n in os.listxattr(out / str(f).lstrip("/")) if n.startswith("user.")}

    assert restored_names() == {b"user.keep", b"user.drop"}
    assert restored_names("--exclude-xattr", "user.drop") == {b"user.keep"}
    assert restored_names("--include-xattr", "user.k*") == {b"user.keep"}
    assert restored_names("--include-xattr", "user.*", "--exclude-xattr", "*.keep") == {b"user.drop"}
    tar = ok(run_bk("restore", "latest", "--format", "tar", "--exclude-xattr", "user.keep", env=env)).stdout
    member = next(m for m in tarfile.open(fileobj=io.BytesIO(tar)).getmembers() if m.name.endswith("f.txt"))
    keys = {k for k in member.pax_headers if k.startswith("SCHILY.xattr.user.")}
    assert keys == {"SCHILY.xattr.user.drop"}
