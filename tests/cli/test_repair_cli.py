"""bk repair index|packs|snapshots through the real executable, driven by what bk check
prints: damage a pack and an index object, follow check's steps, end clean."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest


def bk(env, *args):
    from tests.support.kit import bk_executable

    return subprocess.run([bk_executable(), *args], env=env, capture_output=True, text=True, timeout=120)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def env(tmp_path):
    e = {k: v for k, v in os.environ.items() if not k.startswith("BK_")}
    e.update(
        BK_PASSWORD="cli-pw",
        BK_CACHE_DIR=str(tmp_path / "cache"),
        BK_REPOSITORY=str(tmp_path / "repo"),
    )
    return e


@pytest.fixture
def two(env, tmp_path):
    from backupkit.managers.backup import BackupManager, BackupOptions
    from tests.support.kit import INSECURE_TEST_KDF
    from backupkit.repo.repository import Repository
    from backupkit.store.local import LocalObjectStore

    src = tmp_path / "src"
    src.mkdir()
    repo = Repository.init(
        LocalObjectStore(tmp_path / "repo", fsync=False), b"cli-pw", kdf=INSECURE_TEST_KDF, cache_root=False,
        pack_size=128 * 1024, chunker=(16 * 1024, 32 * 1024, 64 * 1024),
    )
    (src / "a.bin").write_bytes(os.urandom(300_000))
    (src / "b.txt").write_text("hello")
    for i in range(2):
        when = datetime(2026, 3, i + 1, 8, tzinfo=timezone.utc)
        BackupManager(repo).run(BackupOptions(paths=(str(src),), time=when, host="h"))
    snaps = [s for s in (tmp_path / "repo" / "snapshots").iterdir()]
    repo.close()
    return src, snaps


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x55
    path.write_bytes(bytes(data))


def _follow(env, steps: list[str], src: Path) -> list[str]:
    done = []
    for step in steps:
        argv = step.split()[1:]
        if argv[0] == "backup":
            argv = [a for a in argv if not a.startswith("<") and a not in ("the", "same", "paths", "as", "before>")]
            argv.append(str(src))
        r = bk(env, *argv)
        assert r.returncode == 0, (step, r.stdout, r.stderr)
        done.append(" ".join(argv))
    return done


def test_check_names_the_steps_and_following_them_ends_clean(env, tmp_path, two):
    src, _snaps = two
    repo = tmp_path / "repo"
    data_pack = max((p for p in (repo / "data").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    _flip(data_pack, 100)
    index = sorted(p for p in (repo / "index").iterdir())[0]
    _flip(index, 50)

    r = bk(env, "check", "--read-data")
    assert r.returncode == 1
    assert "to repair, run in this order" in r.stderr
    r = bk(env, "--json", "check", "--read-data")
    doc = json.loads(r.stdout)
    steps = doc["next"]
    assert steps[0] == "bk repair index"

    # dry runs change nothing
    before = sorted(str(p) for p in repo.rglob("*") if "locks" not in p.parts)
    r = bk(env, "repair", "packs", "-n", data_pack.name)
    assert r.returncode == 1 and "run bk repair index first" in r.stderr
    for argv in (["repair", "index", "-n"], ["repair", "index", "-n", "--read-all-packs"]):
        r = bk(env, *argv)
        assert r.returncode == 0, (argv, r.stderr)
        assert "dry run" in r.stderr
    assert sorted(str(p) for p in repo.rglob("*") if "locks" not in p.parts) == before

    r = bk(env, "--json", "repair", "index")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert index.name in {n.split("/")[1] for n in res["plan"]["damaged_index"]}
    r = bk(env, "repair", "packs", "-n", data_pack.name[:12])
    assert r.returncode == 0 and "dry run" in r.stderr and "1 lost" in r.stderr, r.stderr
    _follow(env, steps[1:], src)
    # the damaged blob shows once the index names its pack again (when the damaged index
    # object was the one naming it): a second round of check's steps
    r = bk(env, "--json", "check", "--read-data")
    if r.returncode != 0:
        steps = json.loads(r.stdout)["next"]
        assert steps[0] == f"bk repair packs {data_pack.name}", steps
        _follow(env, steps, src)

    r = bk(env, "check", "--read-data")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    r = bk(env, "restore", "latest", "--target", str(out))
    assert r.returncode == 0, r.stderr
    assert files(out / src.relative_to("/")) == files(src)


def test_repair_packs_usage_errors_exit_2(env, two):
    r = bk(env, "repair", "packs", "xyz")
    assert r.returncode == 2 and "invalid pack id" in r.stderr
    r = bk(env, "repair", "packs")
    assert r.returncode == 2


def test_repair_snapshots_on_a_clean_repository(env, two):
    r = bk(env, "repair", "snapshots")
    assert r.returncode == 0 and "nothing to repair" in r.stderr


def test_a_damaged_index_object_is_a_warning_not_a_failure(env, tmp_path, two):
    """restore of a snapshot whose blobs another index object names: warned, then done."""
    src, _snaps = two
    repo = tmp_path / "repo"
    newest = max((p for p in (repo / "index").iterdir()), key=lambda p: p.stat().st_mtime)
    _flip(newest, 50)
    out = tmp_path / "out"
    r = bk(env, "--no-cache", "restore", "latest", "--target", str(out))
    assert "cannot be read" in r.stderr and "bk repair index" in r.stderr, r.stderr
    r = bk(env, "--no-cache", "repair", "index")
    assert r.returncode == 0, r.stderr
    r = bk(env, "--no-cache", "restore", "latest", "--target", str(tmp_path / "out2"))
    assert r.returncode == 0 and "cannot be read" not in r.stderr, r.stderr
    assert files(tmp_path / "out2" / src.relative_to("/")) == files(src)


# -- bk repair config -----------------------------------------------------------------------------

def _config_of(tmp_path):
    from backupkit.repo.repository import Repository
    from backupkit.store.local import LocalObjectStore

    repo = Repository.open(LocalObjectStore(tmp_path / "repo", fsync=False), b"cli-pw", cache_root=False)
    repo.close()
    return repo.config


def _one_line(r) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_a_damaged_config_is_named_and_repair_config_writes_back_the_cached_copy(env, tmp_path, two):
    config = tmp_path / "repo" / "config"
    original = config.read_bytes()
    assert bk(env, "snapshots").returncode == 0  # this machine's cache now holds the config
    _flip(config, len(original) // 2)

    r = bk(env, "--no-cache", "snapshots")
    assert r.returncode == 1
    assert "config: authentication failed" in _one_line(r) and "run bk repair config" in r.stderr
    r = bk(env, "--json", "check")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc["next"] == ["bk repair config"], doc["next"]

    r = bk(env, "repair", "config", "-n")
    assert r.returncode == 0 and "dry run" in r.stderr and "the local cache holds a copy" in r.stderr, r.stderr
    assert config.read_bytes() != original
    r = bk(env, "repair", "config")
    assert r.returncode == 0 and "wrote the config" in r.stderr, r.stderr
    assert config.read_bytes() == original
    assert bk(env, "--no-cache", "check", "--read-data").returncode == 0
    r = bk(env, "repair", "config")
    assert r.returncode == 0 and "nothing to repair" in r.stderr


def test_repair_config_rebuilds_from_the_data_and_refuses_to_invent_an_id(env, tmp_path, two):
    import shutil

    src, _snaps = two
    was = _config_of(tmp_path)
    assert bk(env, "check").returncode == 0  # fills this machine's caches
    (tmp_path / "repo" / "config").unlink()

    r = bk(env, "snapshots")  # the cached config stands in
    assert r.returncode == 0
    r = bk(env, "--no-cache", "snapshots")
    assert r.returncode == 1 and "config: missing" in _one_line(r) and "bk repair config" in r.stderr
    r = bk(env, "init")  # never a new repository over one that lost its config
    assert r.returncode == 1 and "bk repair config" in _one_line(r)
    assert not (tmp_path / "repo" / "config").exists()

    # the cached copy gone, the repository's cache left: rebuilt, with the same id
    shutil.rmtree(tmp_path / "cache" / "locations")
    r = bk(env, "--json", "repair", "config")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)["plan"]
    assert plan["source"] == "rebuilt" and plan["config"]["repo_id"] == was.repo_id
    now = _config_of(tmp_path)
    assert (now.repo_id, now.chunker_min, now.chunker_avg) == (was.repo_id, was.chunker_min, was.chunker_avg)
    assert now.chunker_max >= 64 * 1024
    assert bk(env, "--no-cache", "check", "--read-data").returncode == 0

    # no cache at all: the id cannot be recovered; refused unless --new-id
    (tmp_path / "repo" / "config").unlink()
    shutil.rmtree(tmp_path / "cache")
    r = bk(env, "repair", "config")
    assert r.returncode == 1 and "repository id cannot be recovered" in _one_line(r) and "--new-id" in r.stderr
    assert not (tmp_path / "repo" / "config").exists()
    r = bk(env, "repair", "config", "--new-id")
    assert r.returncode == 0 and "wrote the config" in r.stderr, r.stderr
    assert _config_of(tmp_path).chunker_avg == was.chunker_avg
    assert bk(env, "check", "--read-data").returncode == 0
    r = bk(env, "backup", str(src))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    assert bk(env, "restore", "latest", "--target", str(out)).returncode == 0
    assert files(out / src.relative_to("/")) == files(src)
