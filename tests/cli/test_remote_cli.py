"""``bk`` end to end on the remote backends: sftp: (an ~/.ssh/config alias on a loopback
sshd), rclone: (rclone started by bk), and faults of a REST server: killed mid-backup,
out of disk space.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.kit import bk_executable, cli_env, diff_trees, record_tree, run_bk


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, f"{r.args[1:]} exited {r.returncode}: {r.stderr}"
    assert "Traceback" not in r.stderr
    return r


def make_tree(root: Path, big: int = 0) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n" * 1000)
    (root / "sub" / "b.bin").write_bytes(os.urandom(200_000))
    if big:
        (root / "big.bin").write_bytes(os.urandom(big))
    return root


def round_trip(env: dict[str, str], src: Path, out: Path) -> None:
    ok(run_bk("init", env=env))
    r = ok(run_bk("-v", "backup", src, env=env))
    assert "store:" in r.stderr and "requests" in r.stderr, "-v printed no request statistics"
    ok(run_bk("check", "--read-data", env=env))
    ok(run_bk("restore", "latest", "--target", out, env=env))
    assert diff_trees(record_tree(src), record_tree(out / src.relative_to("/"))) == []


def test_sftp_alias_from_ssh_config(tmp_path, ssh_server):
    """``sftp:bktest:/path`` with HostName, Port, User, IdentityFile and
    UserKnownHostsFile from ``~/.ssh/config`` (HOME points at the test's)."""
    env = dict(cli_env(f"sftp:bktest:{tmp_path / 'remote' / 'repo'}", tmp_path / "cache"), HOME=str(ssh_server.home))
    round_trip(env, make_tree(tmp_path / "src"), tmp_path / "out")
    assert (tmp_path / "remote" / "repo" / "config").is_file()


def test_sftp_unknown_host_needs_the_option(tmp_path, ssh_server):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    config = ssh_server.ssh_config.read_text().replace(str(ssh_server.known_hosts), str(home / ".ssh" / "known_hosts"))
    (home / ".ssh" / "config").write_text(config)
    env = dict(cli_env(f"sftp:bktest:{tmp_path / 'repo'}", tmp_path / "cache"), HOME=str(home))
    r = run_bk("init", env=env)
    assert r.returncode == 1 and "not in known_hosts" in r.stderr and "Traceback" not in r.stderr
    ok(run_bk("-o", "sftp.accept-new-host-key=true", "init", env=env))
    ok(run_bk("snapshots", env=env))  # remembered: no option needed any more


def test_rclone_local_remote(tmp_path):
    import shutil

    if shutil.which("rclone") is None:
        pytest.skip("rclone is not installed (scripts/setup.sh --test installs it): rclone: NOT tested")
    env = cli_env(f"rclone:{tmp_path / 'remote'}", tmp_path / "cache")
    round_trip(env, make_tree(tmp_path / "src"), tmp_path / "out")
    r = run_bk("-o", "rclone.nonsense=1", "snapshots", env=env)
    assert r.returncode == 2 and "unknown option rclone.nonsense" in r.stderr


# -- faults of a REST server ------------------------------------------------------------------


def test_server_killed_mid_backup(tmp_path, start_bk_server):
    data = tmp_path / "data"
    server = start_bk_server(data, "--no-auth")
    src = make_tree(tmp_path / "src", big=40 * 1024 * 1024)  # several packs: the kill lands mid-backup
    env = dict(cli_env(server.url("r"), tmp_path / "cache"))
    ok(run_bk("init", env=env))
    argv = [bk_executable(), "-o", "rest.retries=2", "backup", str(src)]
    backup = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not list((data / "r" / "data").glob("??/*")):  # the first pack has landed
        assert backup.poll() is None, backup.communicate()
        assert time.monotonic() < deadline, "no pack was uploaded"
        time.sleep(0.02)
    server.stop(signal.SIGKILL)
    _, err = backup.communicate(timeout=120)
    assert backup.returncode != 0, "the backup succeeded although its server died"
    assert b"Traceback" not in err and b"connection failed" in err, err
    assert not list((data / "r" / "snapshots").iterdir())

    again = start_bk_server(data, "--no-auth")
    env["BK_REPOSITORY"] = again.url("r")
    ok(run_bk("backup", src, env=env))
    ok(run_bk("check", "--read-data", env=env))
    assert len(json.loads(ok(run_bk("--json", "snapshots", env=env)).stdout)) == 1


def test_server_disk_full(tmp_path, start_bk_server):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root: the full-disk test is NOT run")
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}): the full-disk test is NOT run")
    try:
        server = start_bk_server(mnt / "data", "--no-auth")
        env = dict(cli_env(server.url("r"), tmp_path / "cache"))
        ok(run_bk("init", env=env))
        src = make_tree(tmp_path / "src", big=12 * 1024 * 1024)
        r = run_bk("backup", src, env=env)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert "no space left" in r.stderr
        assert not list((mnt / "data" / "r" / "snapshots").iterdir()), "a snapshot was published"
        assert not [p for p in (mnt / "data" / "r").rglob(".tmp-*")], "temp files were left behind"
        (src / "big.bin").unlink()
        ok(run_bk("backup", src, env=env))  # with room again, backups work
        ok(run_bk("check", env=env))
        server.stop()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
