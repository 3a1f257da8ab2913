"""The sftp: store on OpenSSH's sshd (a child process on loopback; tests/conftest_backends.py)."""

from __future__ import annotations

import uuid

import pytest

from backupkit.errors import BadArgument, StorePermissionError
from backupkit.store import open_store
from backupkit.store.sftp import SftpObjectStore
from backupkit.store.sftp_url import parse_location
from tests.support.store_contract import StoreContract


class TestSftpStore(StoreContract):
    @pytest.fixture
    def store(self, ssh_server, tmp_path):
        store = ssh_server.store(tmp_path / "repo", fsync=False)
        yield store
        store.close()


@pytest.mark.parametrize(
    "location,expected",
    [
        ("alice@host:/srv/repo", {"user": "alice", "host": "host", "path": "/srv/repo"}),
        ("alias:/srv/repo", {"host": "alias", "path": "/srv/repo"}),
        ("host:relative/repo", {"host": "host", "path": "relative/repo"}),
        ("//alice@host:2222/srv/repo", {"user": "alice", "host": "host", "port": 2222, "path": "/srv/repo"}),
        ("//host/srv/repo", {"host": "host", "path": "/srv/repo"}),
    ],
)
def test_locations(location, expected):
    assert parse_location(location) == expected


@pytest.mark.parametrize("location", ["host", "host:", ":path", "//host", "//host/"])
def test_bad_locations(location):
    with pytest.raises(BadArgument):
        parse_location(location)


def test_unknown_host_key_is_refused_unless_accepted(ssh_server, tmp_path):
    known = tmp_path / "known_hosts"
    store = SftpObjectStore("bktest", str(tmp_path / "r"), **ssh_server.options(known_hosts=str(known)))
    with pytest.raises(StorePermissionError, match="not in known_hosts.*accept-new-host-key"):
        store.put("keys/k", b"x")
    store = open_store(f"sftp:bktest:{tmp_path / 'r'}", **ssh_server.options(known_hosts=str(known), accept_new_host_key=True))
    store.put("keys/k", b"x")
    store.close()
    assert ssh_server.host_key_line.split()[1] in known.read_text(), "the accepted key was not remembered"
    store = SftpObjectStore("bktest", str(tmp_path / "r"), **ssh_server.options(known_hosts=str(known)))
    assert store.get("keys/k") == b"x"  # now known: no option needed
    store.close()


def test_changed_host_key_is_refused(ssh_server, tmp_path):
    known = tmp_path / "known_hosts"
    other = "AAAAC3NzaC1lZDI1NTE5AAAAIB8xwkYh3Gm0PQlmUHfJY4Wv3eJqJ1aWq0h1OF2I7b9m"
    known.write_text(f"[127.0.0.1]:{ssh_server.port} ssh-ed25519 {other}\n")
    store = SftpObjectStore("bktest", str(tmp_path / "r"), **ssh_server.options(known_hosts=str(known), accept_new_host_key=True))
    with pytest.raises(StorePermissionError, match="CHANGED"):
        store.get("config")


def test_wrong_key_is_a_permission_error(ssh_server, tmp_path):
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")], check=True)
    config = tmp_path / "config"
    config.write_text(ssh_server.ssh_config.read_text().replace(str(ssh_server.home / ".ssh" / "id_test"), str(tmp_path / "stranger")))
    store = SftpObjectStore("bktest", str(tmp_path / "r"), **ssh_server.options(ssh_config=str(config)))
    with pytest.raises(StorePermissionError, match="authentication failed"):
        store.get("config")


def test_url_form_with_port(ssh_server, tmp_path):
    url = f"sftp://{ssh_server.user}@127.0.0.1:{ssh_server.port}{tmp_path / 'r'}"
    opts = ssh_server.options()
    opts["ssh_config"] = str(tmp_path / "none")  # no alias: everything from the URL
    store = open_store(url, identity_file=str(ssh_server.home / ".ssh" / "id_test"), **opts)
    store.put("data/ab/ab" + uuid.uuid4().hex, b"pack")
    assert [i.size for i in store.list("data/")] == [4]
    store.close()


def test_parallel_uploads_use_several_connections(ssh_server, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    store = ssh_server.store(tmp_path / "r", connections=3, fsync=False)
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda i: store.put(f"data/00/00{i:04x}", b"x" * 100_000), range(30)))
    assert store._pool.opened == 3
    assert len(list(store.list("data/"))) == 30
    store.close()


# -- range reads keep the pack open (one open per pack and session) ----------------------------


def _server_open_files(under) -> list[str]:
    """Files under ``under`` that some process (sshd's sftp side) holds open, from /proc."""
    import os

    prefix = str(under) + "/"
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith(prefix):
                found.append(target)
    return found


def _eventually(predicate, timeout: float = 5.0) -> bool:
    """Poll (the server handles a close we did not wait for in its own time)."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _pack(i: int, size: int = 300_000) -> tuple[str, bytes]:
    return f"data/{i:02x}/{i:02x}{uuid.uuid4().hex}", bytes([i % 251]) * 7 + uuid.uuid4().bytes * (size // 16)


def test_range_reads_of_a_pack_open_it_once(ssh_server, tmp_path):
    store = ssh_server.store(tmp_path / "r", connections=1, fsync=False)
    name, data = _pack(1, 3_000_000)
    store.put(name, data)
    for off in range(0, len(data) - 100_000, 150_000):
        assert store.get_range(name, off, 100_000) == data[off : off + 100_000]
    assert store.get_range(name, len(data) - 5, 5) == data[-5:]
    stats = store.stats()
    assert stats["file_opens"] == 1
    assert stats["GET_RANGE"] == 21
    assert len(_server_open_files(tmp_path / "r")) == 1
    store.close()
    assert _eventually(lambda: not _server_open_files(tmp_path / "r"))


def test_cached_handles_are_bounded_and_closed_on_eviction(ssh_server, tmp_path):
    from backupkit.store.sftp_handles import HANDLES_PER_SESSION

    store = ssh_server.store(tmp_path / "r", connections=1, fsync=False)
    packs = [_pack(i, 40_000) for i in range(HANDLES_PER_SESSION + 4)]
    for name, data in packs:
        store.put(name, data)
    for _ in range(2):
        for name, data in packs[:HANDLES_PER_SESSION]:
            assert store.get_range(name, 10, 100) == data[10:110]
    assert store.stats()["file_opens"] == HANDLES_PER_SESSION  # the second round hit the cache
    for name, data in packs[HANDLES_PER_SESSION:]:
        assert store.get_range(name, 0, 10) == data[:10]
    assert store.stats()["file_opens"] == HANDLES_PER_SESSION + 4
    assert _eventually(lambda: len(_server_open_files(tmp_path / "r")) == HANDLES_PER_SESSION)
    store.close()


def test_a_deleted_pack_is_not_found_not_read_from_its_cached_handle(ssh_server, tmp_path):
    from backupkit.errors import ObjectNotFound

    store = ssh_server.store(tmp_path / "r", connections=2, fsync=False)
    name, data = _pack(2)
    store.put(name, data)
    assert store.get_range(name, 0, 50) == data[:50]
    store.delete(name)
    with pytest.raises(ObjectNotFound):
        store.get_range(name, 0, 50)
    assert _eventually(lambda: not _server_open_files(tmp_path / "r"))
    store.close()


def test_a_replaced_object_is_read_anew(ssh_server, tmp_path):
    store = ssh_server.store(tmp_path / "r", connections=1, fsync=False)
    name = "index/" + uuid.uuid4().hex
    store.put(name, b"a" * 1000)
    assert store.get_range(name, 100, 10) == b"a" * 10
    store.put(name, b"b" * 2000)
    assert store.get_range(name, 1500, 10) == b"b" * 10
    assert store.put_if_absent(name, b"c" * 10) is False
    store.delete(name)
    assert store.put_if_absent(name, b"d" * 30) is True
    assert store.get_range(name, 20, 10) == b"d" * 10
    assert store.stats()["file_opens"] == 3
    store.close()


def test_a_range_past_the_end_keeps_the_handle(ssh_server, tmp_path):
    from backupkit.errors import StoreError

    store = ssh_server.store(tmp_path / "r", connections=1, fsync=False)
    name, data = _pack(3, 1000)
    store.put(name, data)
    with pytest.raises(StoreError, match="past the end"):
        store.get_range(name, len(data) - 10, 11)
    assert store.get_range(name, len(data) - 10, 10) == data[-10:]
    assert store.get_range(name, len(data), 0) == b""
    assert store.stats()["file_opens"] == 1
    store.close()


def test_a_cached_handle_expires(ssh_server, tmp_path, monkeypatch):
    """Another client's delete is seen once the handle's time is up (HANDLE_TTL)."""
    from backupkit.errors import ObjectNotFound
    from backupkit.store import sftp_handles

    store = ssh_server.store(tmp_path / "r", connections=1, fsync=False)
    name, data = _pack(4, 1000)
    store.put(name, data)
    assert store.get_range(name, 0, 10) == data[:10]
    (tmp_path / "r" / name).unlink()  # another client
    assert store.get_range(name, 10, 10) == data[10:20]  # the same bytes: packs never change
    monkeypatch.setattr(sftp_handles, "HANDLE_TTL", 0.0)
    with pytest.raises(ObjectNotFound):
        store.get_range(name, 10, 10)
    store.close()


def test_reads_ask_for_what_the_server_allows(ssh_server, tmp_path):
    """OpenSSH tells its max-read-length (limits@openssh.com): reads ask for 255 KiB, not
    paramiko's 32 KiB; a range of many such reads, unaligned, comes back whole."""
    store = ssh_server.store(tmp_path / "r", connections=1, fsync=False)
    name, data = _pack(5, 3_000_000)
    store.put(name, data)
    assert store.get_range(name, 12_345, 2_900_000) == data[12_345:2_912_345]
    assert store.get(name) == data
    session = store._pool.checkout()
    assert session.read_size == 255 * 1024
    store._pool.give_back(session)
    store.close()


# -- SFTP requests as sftp-server logs them ------------------------------------------------------


@pytest.fixture(scope="module")
def logging_ssh_server(tmp_path_factory):
    """sshd whose sftp-server logs every request (as benchmarks/netbench.py runs it)."""
    import os

    from tests.conftest_backends import start_sshd

    exe = "/usr/lib/openssh/sftp-server"
    if not os.access(exe, os.X_OK):
        pytest.skip(f"{exe} is not installed: the request-count tests NOT run")
    root = tmp_path_factory.mktemp("sshd-log")
    log = root / "sftp-server.log"
    log.touch()
    server = start_sshd(root / "sshd", sftp_subsystem=f"{exe} -e -l DEBUG1 2>>{log}")
    server.sftp_log = log
    try:
        yield server
    finally:
        server.stop()


def _requests_since(server, offset: int) -> dict[str, int]:
    """SFTP requests by kind that sftp-server logged after byte ``offset`` of its log."""
    import re
    import time
    from collections import Counter

    time.sleep(0.3)  # sftp-server writes its log as it goes; let it catch up
    with open(server.sftp_log, "rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", "replace")
    kinds: Counter[str] = Counter()
    for line in text.splitlines():
        # request lines: "open ..." (INFO) or "debug1: request 7: fstat ..." (DEBUG1)
        body = re.sub(r"^debug\d: request \d+: ", "", line)
        if not body.startswith(("debug", "sent ")):
            kinds[body.split(" ", 1)[0]] += 1
    return dict(kinds)


def test_requests_of_writes_and_range_reads(logging_ssh_server, tmp_path):
    server = logging_ssh_server
    store = server.store(tmp_path / "r", connections=1, fsync=True)
    store.put("config", b"c")  # the repository folder exists from here on
    at = server.sftp_log.stat().st_size
    store.put("keys/" + "a" * 64, b"k")  # a new folder: one mkdir, no walk from /
    store.put("keys/" + "b" * 64, b"k")  # an existing folder: no mkdir, no stat
    kinds = _requests_since(server, at)
    assert kinds.get("mkdir") == 1 and "stat" not in kinds, kinds
    assert kinds.get("open") == 3 and kinds.get("close") == 2 and kinds.get("posix-rename") == 2, kinds

    name, data = _pack(6, 2_000_000)
    store.put(name, data)
    at = server.sftp_log.stat().st_size
    for off in range(0, 1_900_000, 100_000):
        assert store.get_range(name, off, 100_000) == data[off : off + 100_000]
    kinds = _requests_since(server, at)
    # 19 ranges of one pack: one open and fstat (and the limits question), no close yet;
    # 100 KB per range is one read each at 255 KiB a request.
    assert (kinds.get("open"), kinds.get("fstat"), kinds.get("close", 0)) == (1, 1, 0), kinds
    assert kinds.get("read") == 19, kinds
    store.close()


def test_remove_abandoned_sweeps_old_temp_files_only(ssh_server, tmp_path):
    """Temp files a dead writer left, in any folder, go once older than the bound; fresh
    ones (a writer may be active) and objects stay, and the listing never shows either."""
    import os

    root = tmp_path / "repo"
    store = ssh_server.store(root, fsync=False)
    store.put("data/ab/pack", b"p")
    store.put("config", b"c")
    old = [root / ".tmp-dead1", root / "data" / "ab" / ".tmp-dead2"]
    fresh = root / "data" / ".tmp-alive"
    for p in [*old, fresh]:
        p.write_bytes(b"partial")
    for p in old:
        os.utime(p, (1_000_000_000, 1_000_000_000))
    assert sorted(i.name for i in store.list()) == ["config", "data/ab/pack"]
    assert store.remove_abandoned(3600) == 2
    assert not any(p.exists() for p in old)
    assert fresh.exists()
    assert store.get("data/ab/pack") == b"p"
    assert store.remove_abandoned(3600) == 0
    store.close()
