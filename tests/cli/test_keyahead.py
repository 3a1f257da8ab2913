"""keyahead: what the command line must say for the key to be derived before bk loads,
that the open takes that derivation, and that a wrong guess changes nothing a user sees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from backupkit.repo import kdfahead
from backupkit.repo.keys import KdfParams
from backupkit.repo.repository import Repository
from backupkit.store.local import LocalObjectStore
from backupkit_cli import keyahead
from tests.support.kit import INSECURE_TEST_KDF

PW = b"ahead-pw"


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    Repository.init(LocalObjectStore(root, fsync=False), PW, kdf=INSECURE_TEST_KDF, cache_root=False).close()
    (tmp_path / "pw").write_bytes(PW + b"\n")
    return root


def test_reading_the_command_line():
    read = keyahead.read_command_line
    assert read(["-r", "R", "backup", "x", "--tag", "t"]) == ("backup", {"-r": "R"}, {"--tag"})
    assert read(["snapshots", "--json", "--repo=R", "-p", "P"]) == ("snapshots", {"--repo": "R", "-p": "P"}, {"--json"})
    assert read(["-o", "s3.x=1", "--no-lock", "ls", "latest"]) == ("ls", {"-o": "s3.x=1"}, {"--no-lock"})
    assert read(["-rR", "-pP", "stats"]) == ("stats", {"-r": "R", "-p": "P"}, set())
    assert read(["--", "-r", "R"]) == (None, {}, set())
    assert read(["-r"]) == (None, {}, set())


def test_a_local_repository_and_a_password_file_or_variable(repo, tmp_path):
    env = {}
    assert keyahead.plan(["-r", str(repo), "-p", str(tmp_path / "pw"), "snapshots"], env) == (str(repo), PW)
    assert keyahead.plan(["backup", "/x", "--password-file", str(tmp_path / "pw"), "--repo", f"local:{repo}"], env) == (str(repo), PW)
    assert keyahead.plan(["ls", "latest"], {"BK_REPOSITORY": str(repo), "BK_PASSWORD": "pw"}) == (str(repo), b"pw")
    assert keyahead.plan(["ls"], {"BK_REPOSITORY": str(repo), "BK_PASSWORD_FILE": str(tmp_path / "pw")}) == (str(repo), PW)
    assert keyahead.plan(["ls", "--insecure-no-password"], {"BK_REPOSITORY": str(repo)}) == (str(repo), b"")


def test_the_default_repository_and_its_password_file(tmp_path, monkeypatch):
    from backupkit_cli.context import default_password_file, default_repo

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert keyahead.plan(["snapshots"], {}) is None  # no password file yet: bk would say so
    default_password_file().parent.mkdir(parents=True)
    default_password_file().write_bytes(b"generated\n")
    assert keyahead.plan(["snapshots"], {}) == (default_repo(), b"generated")


@pytest.mark.parametrize(
    "argv, env",
    [
        (["init"], {}),
        (["serve", "--listen", "127.0.0.1:0"], {}),
        (["version"], {}),
        (["snapshots", "--help"], {}),
        (["-h"], {}),
        (["--version"], {}),
        ([], {}),
        (["-r", "s3:bucket/prefix", "snapshots"], {"BK_PASSWORD": "pw"}),
        (["-r", "sftp:host:/path", "snapshots"], {"BK_PASSWORD": "pw"}),
        (["-r", "nosuch:x", "snapshots"], {"BK_PASSWORD": "pw"}),
        (["-r", "file://host/x", "snapshots"], {"BK_PASSWORD": "pw"}),
        (["--repository-file", "F", "snapshots"], {"BK_PASSWORD": "pw"}),
        (["snapshots"], {"BK_REPOSITORY_FILE": "F", "BK_PASSWORD": "pw"}),
        (["-r", "/r", "--password-command", "echo pw", "snapshots"], {}),
        (["-r", "/r", "snapshots"], {"BK_PASSWORD_COMMAND": "echo pw"}),
        (["-r", "/r", "snapshots"], {}),  # bk would prompt
        (["-r", "/r", "-p", "/no/such/file", "snapshots"], {}),
    ],
)
def test_no_guess_where_the_command_line_is_not_plain(argv, env, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "empty"))
    assert keyahead.plan(argv, env) is None


def test_a_password_pipe_is_left_to_the_command(repo, tmp_path):
    """``-p <(pass show backup)``: a pipe can be read once, by the command (were keyahead
    to read it first, the command's own read would wait for a writer forever)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BK_")}
    env["BK_CACHE_DIR"] = str(tmp_path / "cache")
    code = "import sys; sys.argv = ['bk', *sys.argv[1:]]\nfrom backupkit_cli.entry import run\nrun()"
    proc = subprocess.Popen([sys.executable, "-c", code, "-r", str(repo), "-p", str(fifo), "--json", "snapshots"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with open(fifo, "wb") as w:  # one writer, as the shell gives one
            w.write(PW + b"\n")
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0 and json.loads(out) == [], err
    # (after the run above: with the bug, these would block on the pipe)
    assert keyahead.plan(["-r", str(repo), "-p", str(fifo), "snapshots"], {}) is None
    assert keyahead.plan(["-r", str(repo), "snapshots"], {"BK_PASSWORD_FILE": "/dev/stdin"}) is None


def test_the_open_takes_the_derivation_started_ahead(repo, tmp_path):
    before = kdfahead.taken
    assert keyahead.start(["-r", str(repo), "-p", str(tmp_path / "pw"), "snapshots"], {})
    Repository.open(LocalObjectStore(repo), PW, cache_root=False).close()
    assert kdfahead.taken == before + 1


def test_one_key_file_only_and_a_readable_one(repo, tmp_path):
    argv = ["-r", str(repo), "-p", str(tmp_path / "pw"), "snapshots"]
    (name,) = os.listdir(repo / "keys")
    key = repo / "keys" / name
    raw = key.read_bytes()
    for damaged in (b"{", json.dumps({"kdf": {"name": "argon2id", "salt": "!!", "iterations": 1, "memory_kib": 64, "lanes": 1}}).encode(),
                    json.dumps({"kdf": {"name": "argon2id", "salt": "c2FsdHNhbHQ=", "iterations": 99, "memory_kib": 64, "lanes": 1}}).encode()):
        key.write_bytes(damaged)
        assert not keyahead.start(argv, {})
    key.unlink()
    os.mkfifo(key)  # planted in the store: never waited for
    assert not keyahead.start(argv, {})
    key.unlink()
    key.write_bytes(raw)
    (repo / "keys" / ("0" * 64)).write_bytes(raw)
    assert not keyahead.start(argv, {})  # two key files: which one opens is the open's business


def run_entry(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """``bk ARGS`` through the console script's entry, reporting how many derivations the
    open took from keyahead."""
    code = textwrap.dedent(
        """
        import atexit, sys
        from backupkit.repo import kdfahead
        atexit.register(lambda: sys.stderr.write(f"\\ntaken={kdfahead.taken}\\n"))
        sys.argv = ["bk", *sys.argv[1:]]
        from backupkit_cli.entry import run
        run()
        """
    )
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=120)


def test_the_real_command_with_the_strong_kdf(tmp_path):
    """End to end with the default Argon2id (64 MiB, 4 lanes): the right password opens
    through the derivation started ahead; a wrong one is still exit 12 with the same line."""
    root = tmp_path / "repo"
    Repository.init(LocalObjectStore(root, fsync=False), PW, kdf=KdfParams(), cache_root=False).close()
    (tmp_path / "pw").write_bytes(PW)
    (tmp_path / "bad").write_bytes(b"not it")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BK_")}
    env["BK_CACHE_DIR"] = str(tmp_path / "cache")
    r = run_entry(["-r", str(root), "-p", str(tmp_path / "pw"), "--json", "snapshots"], env)
    assert r.returncode == 0 and json.loads(r.stdout) == [], r.stderr
    assert r.stderr.strip().endswith("taken=1"), r.stderr
    r = run_entry(["-r", str(root), "-p", str(tmp_path / "bad"), "snapshots"], env)
    assert r.returncode == 12 and "wrong password" in r.stderr and r.stderr.strip().endswith("taken=1"), r.stderr
    r = run_entry(["-r", str(root), "-p", str(tmp_path / "bad"), "snapshots", "--help"], env)
    assert r.returncode == 0 and r.stderr.strip().endswith("taken=0")


def test_the_valued_global_options_are_the_command_lines():
    """keyahead's list of global options that take a value is main.py's: an option it
    did not know would have its value read as the command."""
    import typer

    from backupkit_cli.main import app

    group = typer.main.get_command(app)  # typer's own click: options known by their kind
    options = [p for p in group.params if p.param_type_name == "option"]
    valued = {o for p in options if not p.is_flag and not p.count for o in p.opts}
    assert len(options) > 10 and keyahead._VALUED == valued


# -- repositories elsewhere: the KDF hint ----------------------------------------------------


def test_the_hint_is_planned_for_a_remote_location_with_the_cache_on(tmp_path):
    env = {"BK_PASSWORD": "pw", "BK_CACHE_DIR": str(tmp_path / "cache")}
    url = "s3:http://127.0.0.1:9/bucket/prefix"
    want = keyahead.hint_file(tmp_path / "cache", url)
    assert keyahead.hint_plan(["-r", url, "snapshots"], env) == (want, b"pw")
    assert keyahead.hint_plan(["snapshots"], dict(env, BK_REPOSITORY=url)) == (want, b"pw")
    assert keyahead.hint_plan(["-r", url, "--cache-dir", str(tmp_path / "c2"), "ls"], env) == (
        keyahead.hint_file(tmp_path / "c2", url), b"pw")
    assert keyahead.hint_plan(["-r", url, "--no-cache", "snapshots"], env) is None
    assert keyahead.hint_plan(["-r", url, "init"], env) is None
    assert keyahead.hint_plan(["-r", url, "--password-command", "echo pw", "snapshots"], {}) is None
    assert keyahead.hint_plan(["-r", str(tmp_path), "snapshots"], env) is None  # local: its key file
    assert keyahead.plan(["-r", url, "snapshots"], env) is None
    # a hint per location as given, apart from the store locations' own directories
    other = keyahead.hint_file(tmp_path / "cache", url + "2")
    assert other != want and os.path.dirname(os.path.dirname(want)) == str(tmp_path / "cache" / "locations")


def test_remember_then_start_from_the_hint(repo, tmp_path):
    cache = tmp_path / "cache"
    url = "sftp:nobody@127.0.0.1:/nowhere"
    argv, env = ["-r", url, "snapshots"], {"BK_PASSWORD": PW.decode(), "BK_CACHE_DIR": str(cache)}
    assert not keyahead.start(argv, env)  # no hint yet
    (name,) = os.listdir(repo / "keys")
    raw = (repo / "keys" / name).read_bytes()
    keyahead.remember(cache, url, raw)
    hint = keyahead.hint_file(cache, url)
    assert json.loads(open(hint, "rb").read()) == json.loads(raw)["kdf"]  # salt and costs, nothing else
    before = kdfahead.taken
    assert keyahead.start(argv, env)
    # the open reads the store's key file and takes the derivation: same salt and costs
    Repository.open(LocalObjectStore(repo), PW, cache_root=False).close()
    assert kdfahead.taken == before + 1
    keyahead.remember(False, url + "x", raw)  # --no-cache: nothing written
    assert not os.path.exists(keyahead.hint_file(cache, url + "x"))
    keyahead.remember(cache, url, b"not json")  # never raises, keeps the hint
    assert os.path.exists(hint)


def test_a_stale_or_planted_hint_changes_nothing_but_time(repo, tmp_path):
    cache = tmp_path / "cache"
    url = "rest:http://127.0.0.1:9/"
    argv, env = ["-r", url, "snapshots"], {"BK_PASSWORD": PW.decode(), "BK_CACHE_DIR": str(cache)}
    (name,) = os.listdir(repo / "keys")
    doc = json.loads((repo / "keys" / name).read_bytes())
    doc["kdf"]["salt"] = "c3RhbGVzYWx0c3RhbGU="  # another key file's salt
    keyahead.remember(cache, url, json.dumps(doc).encode())
    before = kdfahead.taken
    assert keyahead.start(argv, env)
    Repository.open(LocalObjectStore(repo), PW, cache_root=False).close()  # derived anew
    assert kdfahead.taken == before
    hint = keyahead.hint_file(cache, url)
    for planted in (b"{", json.dumps({"name": "argon2id", "salt": "c2FsdHNhbHQ=", "iterations": 10**6,
                                      "memory_kib": 64, "lanes": 1}).encode()):
        with open(hint, "wb") as f:
            f.write(planted)
        assert not keyahead.start(argv, env)
    os.unlink(hint)
    os.mkfifo(hint)  # never waited for
    assert not keyahead.start(argv, env)


def test_a_command_on_s3_leaves_the_hint_and_the_next_one_takes_it(s3_server, tmp_path):
    """End to end on SeaweedFS with the default Argon2id: init leaves the hint, and every
    command after it derives ahead and the open takes it; after the password changes (a
    new key file, new salt), the stale hint costs one derivation and is replaced."""
    from tests.cli.test_s3_cli import s3_env

    env = s3_env(s3_server, f"keyahead-{os.getpid()}-{tmp_path.name}", tmp_path / "cache")
    env["BK_PASSWORD"] = PW.decode()
    init = subprocess.run([sys.executable, "-m", "backupkit_cli", "init"], env=env, capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    hint = keyahead.hint_file(tmp_path / "cache", env["BK_REPOSITORY"])
    assert os.path.isfile(hint)  # init leaves it: the first command takes it already
    r = run_entry(["--json", "snapshots"], env)
    assert r.returncode == 0 and json.loads(r.stdout) == [], r.stderr
    assert r.stderr.strip().endswith("taken=1"), r.stderr
    r = run_entry(["--json", "snapshots"], env)
    assert r.returncode == 0 and r.stderr.strip().endswith("taken=1"), r.stderr
    old = open(hint, "rb").read()
    (tmp_path / "new").write_bytes(b"new-pw")
    p = subprocess.run([sys.executable, "-m", "backupkit_cli", "key", "passwd", "--new-password-file", str(tmp_path / "new")],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    env["BK_PASSWORD"] = "new-pw"
    r = run_entry(["--json", "snapshots"], env)  # the hint's salt is the old key file's
    assert r.returncode == 0 and r.stderr.strip().endswith("taken=0"), r.stderr
    assert open(hint, "rb").read() != old
    r = run_entry(["--json", "snapshots"], env)
    assert r.returncode == 0 and r.stderr.strip().endswith("taken=1"), r.stderr


def test_the_hint_is_read_before_any_backend_loads(repo, tmp_path):
    """The derivation starts before botocore (or paramiko) is imported: that import is
    what it runs beside."""
    cache = tmp_path / "cache"
    url = "s3:http://127.0.0.1:9/bucket/prefix"
    (name,) = os.listdir(repo / "keys")
    keyahead.remember(cache, url, (repo / "keys" / name).read_bytes())
    code = textwrap.dedent(
        f"""
        import sys
        from backupkit_cli import keyahead
        started = keyahead.start(["-r", {url!r}, "snapshots"], {{"BK_PASSWORD": "pw", "BK_CACHE_DIR": {str(cache)!r}}})
        print(started, sorted(m for m in ("botocore", "backupkit.store.s3", "paramiko") if m in sys.modules))
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.split() == ["True", "[]"], r.stdout + r.stderr
