"""Issues 10.9, 10.12 and 8.10: empty passwords, init's options, cat's arguments."""

from __future__ import annotations

import pytest

from tests.support.kit import cli_env, run_bk

USAGE = 2


def one_error(r, code: int, *words: str) -> None:
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == code and len(lines) == 1 and lines[0].startswith("error: "), (r.returncode, r.stderr)
    for w in words:
        assert w in lines[0]


def empty_sources(tmp_path) -> dict[str, dict[str, str]]:
    (tmp_path / "empty").write_bytes(b"\n")
    return {
        "BK_PASSWORD empty": {"BK_PASSWORD": ""},
        "empty password file": {"BK_PASSWORD_FILE": str(tmp_path / "empty")},
        "password command printing nothing": {"BK_PASSWORD_COMMAND": "echo $UNSET_VARIABLE_OF_A_SCRIPT"},
    }


@pytest.mark.parametrize("source", ["BK_PASSWORD empty", "empty password file", "password command printing nothing"])
def test_init_refuses_an_empty_password(tmp_path, source):
    env = {k: v for k, v in cli_env(tmp_path / "repo", tmp_path / "cache").items() if k != "BK_PASSWORD"}
    env.update(empty_sources(tmp_path)[source])
    one_error(run_bk("init", env=env), 1, "empty password", "--insecure-no-password")
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").rglob("*"))
    r = run_bk("--insecure-no-password", "init", env=env)
    assert r.returncode == 0, r.stderr
    assert run_bk("snapshots", env=env).returncode == 0  # opening with it is allowed


def test_insecure_no_password_without_any_source(tmp_path):
    env = {k: v for k, v in cli_env(tmp_path / "repo", tmp_path / "cache").items() if k != "BK_PASSWORD"}
    assert run_bk("--insecure-no-password", "init", env=env).returncode == 0
    assert run_bk("--insecure-no-password", "snapshots", env=env).returncode == 0


@pytest.mark.parametrize("command", ["add", "passwd"])
def test_key_add_and_passwd_refuse_an_empty_password(tmp_path, command):
    env = cli_env(tmp_path / "repo", tmp_path / "cache")
    assert run_bk("init", env=env).returncode == 0
    (tmp_path / "empty").write_bytes(b"")
    one_error(run_bk("key", command, "--new-password-file", tmp_path / "empty", env=env), 1, "empty password")
    keys = sorted(p.name for p in (tmp_path / "repo" / "keys").iterdir())
    assert len(keys) == 1
    r = run_bk("--insecure-no-password", "key", command, "--new-password-file", tmp_path / "empty", env=env)
    assert r.returncode == 0, r.stderr
    assert run_bk("snapshots", env={**env, "BK_PASSWORD": ""}).returncode == 0


@pytest.mark.parametrize(
    "args, words",
    [
        (["--compression", "30"], ["--compression 30"]),
        (["--compression", "-1"], ["--compression -1"]),
        (["--pack-size", "0"], ["--pack-size 0"]),
        (["--pack-size", "-5"], ["--pack-size -5"]),
        (["--pack-size", "3"], ["--pack-size 3"]),
        (["--pack-size", "1000"], ["--pack-size 1000"]),
    ],
)
def test_init_validates_its_options_before_writing(tmp_path, args, words):
    env = cli_env(tmp_path / "repo", tmp_path / "cache")
    one_error(run_bk("init", *args, env=env), USAGE, *words)
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").rglob("*"))


def test_init_accepts_the_bounds(tmp_path):
    for i, args in enumerate((["--pack-size", "4", "--compression", "0"], ["--pack-size", "128", "--compression", "22"])):
        env = cli_env(tmp_path / f"repo{i}", tmp_path / "cache")
        assert run_bk("init", *args, env=env).returncode == 0


def test_engine_init_validates_before_writing():
    from backupkit.errors import BadArgument
    from tests.support.kit import INSECURE_TEST_KDF
    from backupkit.repo.repository import Repository
    from backupkit.store.memory import MemoryObjectStore

    for kw in ({"compression_level": 30}, {"pack_size": 0}, {"pack_size": 1 << 40}):
        store = MemoryObjectStore()
        with pytest.raises(BadArgument):
            Repository.init(store, b"pw", kdf=INSECURE_TEST_KDF, cache_root=False, **kw)
        assert list(store.list()) == []


@pytest.mark.parametrize(
    "args", [["index", "zz"], ["key", "../config"], ["blob", "xyz"], ["node", "12"], ["frobnicate"], ["index"]]
)
def test_cat_with_a_bad_id_is_a_usage_error(tmp_path, args):
    env = cli_env(tmp_path / "repo", tmp_path / "cache")
    assert run_bk("init", env=env).returncode == 0
    one_error(run_bk("cat", *args, env=env), USAGE)


def test_cat_of_a_missing_or_damaged_key(tmp_path):
    env = cli_env(tmp_path / "repo", tmp_path / "cache")
    assert run_bk("init", env=env).returncode == 0
    one_error(run_bk("cat", "key", "ab" * 32, env=env), 1)
    (tmp_path / "repo" / "keys" / ("cd" * 32)).write_bytes(b"{not json")
    one_error(run_bk("cat", "key", "cd" * 32, env=env), 1, "damaged key file")
