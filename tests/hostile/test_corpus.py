"""Every read command against every hostile repository of the corpus, in a subprocess
under a 1 GiB address-space limit and a timeout: success, or one clean line and a
documented exit code; never a traceback, never a write outside the restore target.

The default suite runs a sample (each shape with one command, rotating through the
commands); ``-m slow`` runs every (shape, command) pair.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.kit import cli_env
from tests.hostile.corpus import SHAPES, make, make_base
from tests.hostile.run import problem, run_limited

COMMANDS = {
    "snapshots": ["snapshots"],
    "ls": ["ls", "latest"],
    "diff": ["diff", "{first}", "latest"],
    "restore": ["restore", "latest", "--target", "{work}/out"],
    "zip": ["restore", "latest", "--format", "zip"],
    "tar": ["restore", "latest", "--format", "tar"],
    "check": ["check"],
    "check --read-data": ["check", "--read-data"],
    "prune --dry-run": ["prune", "--dry-run"],
    "stats": ["stats"],
    "find": ["find", "*"],
    "list blobs": ["list", "blobs"],
    "snapshots --group-by --latest": ["snapshots", "--group-by", "host,paths,tags", "--latest", "1"],
}
SHAPE_NAMES = list(SHAPES)
COMMAND_NAMES = list(COMMANDS)
#: Default sample (~45 bk runs, ~60 s): every other shape, each with one command,
#: rotating through the commands.
SAMPLE = [(s, COMMAND_NAMES[(i // 2) % len(COMMAND_NAMES)]) for i, s in enumerate(SHAPE_NAMES) if i % 2 == 0]
ALL = [(s, c) for s in SHAPE_NAMES for c in COMMAND_NAMES if (s, c) not in SAMPLE]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_base(tmp_path_factory.mktemp("corpus-base"))


def listing(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        if Path(dirpath) == skip or skip in Path(dirpath).parents:
            continue
        for f in files:
            p = Path(dirpath) / f
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def run_case(base: Path, tmp_path: Path, shape: str, command: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "outside-sentinel").write_bytes(b"keep")
    repo = make(shape, base, tmp_path / "repo", seed=len(shape))
    env = cli_env(repo, tmp_path / "cache")
    first = sorted(p.name for p in (base / "snapshots").iterdir())[0]
    args = [a.format(work=work, first=first[:8]) for a in COMMANDS[command]]
    before = listing(work, work / "out")
    r = run_limited(*args, env=env, cwd=work)
    why = problem(r)
    assert why is None, f"{shape} / {command}: {why}"
    assert listing(work, work / "out") == before, f"{shape} / {command}: wrote outside the target"
    assert not Path("/tmp/bk-escaped-cache").exists()
    assert not Path("/tmp/bk-corpus-outside").exists(), f"{shape} / {command}: wrote through a forged symlink"
    assert not (tmp_path / "outside").exists() and not (tmp_path / "x").exists()
    if command in ("zip", "tar") and r.returncode == 0:
        check_archive(command, r.stdout)


def check_archive(kind: str, data: bytes) -> None:
    """Every member name of a streamed archive is relative and free of ``..``."""
    import io
    import tarfile
    import zipfile

    if kind == "zip":
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    else:
        names = tarfile.open(fileobj=io.BytesIO(data)).getnames()
    for n in names:
        assert not n.startswith("/") and ".." not in n.split("/"), n
    assert len(names) == len(set(names)), f"a name twice in the archive: {sorted(names)}"


@pytest.mark.parametrize("shape, command", SAMPLE, ids=[f"{s} / {c}" for s, c in SAMPLE])
def test_sample(base, tmp_path, shape, command):
    run_case(base, tmp_path, shape, command)


@pytest.mark.slow
@pytest.mark.parametrize("shape, command", ALL, ids=[f"{s} / {c}" for s, c in ALL])
def test_every_pair(base, tmp_path, shape, command):
    run_case(base, tmp_path, shape, command)


@pytest.mark.parametrize("command", ["stats", "find", "ls", "check"])
def test_a_chain_deeper_than_any_trie_is_a_clean_error_for_every_walker(base, tmp_path, command):
    """A node whose child is not deeper than itself, 5000 times over: each command that
    walks the trie checks every child against its parent (stats and find recursed
    without that check until 12-03: Python's recursion limit, an internal error)."""
    run_case(base, tmp_path, "tree: 5000-deep chain", command)


@pytest.mark.parametrize("mode", ["restore-size", "files-by-contents", "raw-data"])
def test_every_stats_mode_refuses_a_chain_deeper_than_any_trie(base, tmp_path, mode):
    """The chain is damage (check says so): no stats mode counts it as a tree.
    files-by-contents walked it without checking children until 12-03 and exited 0."""
    repo = make("tree: 5000-deep chain", base, tmp_path / "repo")
    r = run_limited("stats", "--mode", mode, env=cli_env(repo, tmp_path / "cache"))
    assert r.returncode != 0 and problem(r) is None, r.stderr
    assert "does not fit its parent" in r.stderr, r.stderr


def test_repair_snapshots_counts_a_chain_deeper_than_any_trie_as_lost(base, tmp_path):
    """repair snapshots checks children as check does: the chain is an unreadable node
    (it walked all of it and kept its entries until 12-03), and check is clean after."""
    repo = make("tree: 5000-deep chain", base, tmp_path / "repo")
    env = cli_env(repo, tmp_path / "cache")
    r = run_limited("repair", "snapshots", "--forget", env=env)
    assert r.returncode == 0 and problem(r) is None, r.stderr
    assert "1 unreadable tree node(s)" in r.stdout.decode() + r.stderr  # stdout is bytes (archives)
    after = run_limited("check", env=env)
    assert after.returncode == 0, after.stderr


#: shapes that keep check from opening the repository or taking its lock, by design: the
#: config and key files are what opens it (repair config / key remove say so), and an
#: unreadable lock blocks until it is stale or removed
_CHECK_CANNOT_START = ("config", "keys", "lock", "bomb lock")
#: how such a command ends instead (one clean line, which ``problem`` checks): a fatal
#: error, a lock it cannot take, or a key file that does not open
_CANNOT_START_EXITS = (1, 11, 12)


@pytest.mark.parametrize("shape", SHAPE_NAMES)
def test_check_reports_every_other_shape_and_never_stops_halfway(base, tmp_path, shape):
    """Whatever is damaged inside an opened repository is findings and a summary line
    ("checked ..."), with --read-data: check never stops at the first problem (it did on
    a malformed entry and on an oversized pack until 12-03)."""
    repo = make(shape, base, tmp_path / "repo", seed=len(shape))
    env = cli_env(repo, tmp_path / "cache")
    r = run_limited("check", "--read-data", env=env)
    assert problem(r) is None, f"{shape}: {problem(r)}"
    summary = [ln for ln in r.stderr.splitlines() + r.stdout.decode().splitlines() if "checked " in ln]
    if shape.startswith(_CHECK_CANNOT_START):
        assert summary or r.returncode in _CANNOT_START_EXITS, r.stderr  # one clean error (problem() above)
    else:
        assert summary, f"{shape}: check stopped without its summary: {r.stderr.strip()[-300:]}"


@pytest.mark.parametrize("shape", SHAPE_NAMES)
def test_restore_restores_what_it_can_of_every_shape_and_says_how_much(base, tmp_path, shape):
    """A restore into a directory over any damage inside an opened repository ends with
    its summary ("restored N files, ...": what it could) and names what it could not;
    it never stops at the first problem. Shapes that keep the repository from opening
    (as for check), and one whose every snapshot is unreadable ("no snapshot found"),
    give one clean error instead."""
    repo = make(shape, base, tmp_path / "repo", seed=len(shape))
    env = cli_env(repo, tmp_path / "cache")
    r = run_limited("restore", "latest", "--target", tmp_path / "out", env=env, cwd=tmp_path)
    assert problem(r) is None, f"{shape}: {problem(r)}"
    summary = [ln for ln in r.stderr.splitlines() + r.stdout.decode().splitlines() if ln.startswith("restored ")]
    if shape.startswith(_CHECK_CANNOT_START) or shape == "snapshots swapped":
        assert summary or r.returncode in _CANNOT_START_EXITS, r.stderr
    else:
        assert summary, f"{shape}: restore stopped without its summary: {r.stderr.strip()[-300:]}"
        assert r.returncode == 0 or "restore incomplete" in r.stderr, r.stderr


def test_the_corpus_covers_every_command_and_object_kind():
    assert {c for _s, c in SAMPLE} == set(COMMANDS)
    text = " ".join(SHAPES)
    for kind in ("config", "key", "index", "snapshot", "catalog", "data pack", "meta pack", "lock", "node", "content", "header", "entry"):
        assert kind in text, kind
    _ = subprocess  # the runs themselves are in tests.hostile.run
