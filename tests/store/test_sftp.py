"""The sftp: store on OpenSSH's sshd (a child process on loopback; tests/conftest_backends.py)."""

from __future__ import annotations

import uuid

import pytest

from backupkit.errors import BadArgument, StorePermissionError
from backupkit.store import open_store
from backupkit.store.sftp import SftpObjectStore, parse_location
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
