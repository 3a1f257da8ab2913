"""restic's exclude options through the real ``bk`` (subprocess, real files).

The golden cases (made by restic itself, see tests/test_filters.py) that a restic user
is most likely to type, each backed up by ``bk backup`` and listed by ``bk ls``; then the
options the table does not cover: --exclude-ignorefile and malformed patterns.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.support.kit import cli_env, run_bk, write_file
from tests.test_filters import GOLDEN_CASES, build_golden_tree, golden_env

CLI_CASES = [
    ("exclude", '["edge/cachedir"]'),
    ("exclude", '["{root}/edge"]'),
    ("exclude", '["*.o", "!keep.o"]'),
    ("exclude", '["**/__pycache__"]'),
    ("iexclude", '["*.jpg"]'),
    ("exclude-file", next(p for o, p in GOLDEN_CASES if o == "exclude-file")),
    ("iexclude-file", next(p for o, p in GOLDEN_CASES if o == "iexclude-file")),
]


def ok(r):
    assert r.returncode == 0, f"{r.args[1:]} exited {r.returncode}: {r.stderr}"
    assert "Traceback" not in r.stderr
    return r


def listed(env: dict, root) -> set[str]:
    entries = json.loads(ok(run_bk("--json", "ls", "-R", "latest", root, env=env)).stdout)["entries"]
    out = set()
    for e in entries:
        if e["path"] != os.fspath(root):
            out.add(os.path.relpath(e["path"], root) + ("/" if e["type"] == "dir" else ""))
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("filters-cli")
    root = base / "tree"
    build_golden_tree(root, next(iter(GOLDEN_CASES.values())).keys())
    env = cli_env(base / "repo", base / "cache")
    env.update(golden_env(str(root)))
    ok(run_bk("init", env=env))
    return base, root, env


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: f"{c[0]}:{c[1]}")
def test_bk_backup_excludes_as_restic(world, case):
    base, root, env = world
    option, patterns = case
    args = []
    real = [p.replace("{root}", str(root)) for p in json.loads(patterns)]
    if option.endswith("-file"):
        f = base / f"{option}.txt"
        f.write_text("\n".join(real) + "\n", encoding="utf-8")
        args = [f"--{option}", f]
    else:
        for p in real:
            args += [f"--{option}", p]
    ok(run_bk("backup", "--force", *args, root, env=env))
    expected = {p for p, out in GOLDEN_CASES[case].items() if not out}
    assert listed(env, root) == expected


def test_exclude_ignorefile(world):
    base, _root, env = world
    src = base / "ign"
    for rel in ("app.log", "keep.log", "sub/x.tmp", "sub/y.txt", "node_modules/pkg/i.js", "deep/node_modules/z"):
        write_file(src / rel, b"x")
    (src / ".bkignore").write_text("*.log\n!keep.log\nnode_modules/\n")
    (src / "sub" / ".gitignore").write_text("*.tmp\n")
    ok(run_bk("backup", "--exclude-ignorefile", ".bkignore", "--exclude-ignorefile", ".gitignore", src, env=env))
    assert listed(env, src) == {".bkignore", "keep.log", "sub/", "sub/.gitignore", "sub/y.txt", "deep/"}


@pytest.mark.parametrize(
    "args, message",
    [
        (("--exclude", "a/[b"), "invalid pattern"),
        (("--iexclude", "x\\"), "invalid pattern"),
        (("--exclude-file", "/nonexistent/patterns"), "--exclude-file"),
        (("--exclude-ignorefile", "a/b"), "file name"),
        (("--exclude-if-present", ":hdr"), "no file name"),
    ],
)
def test_malformed_exclude_options_exit_2(world, args, message):
    base, root, env = world
    r = run_bk("backup", *args, root, env=env)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


def test_help_shows_restic_semantics(world):
    _base, _root, env = world
    r = ok(run_bk("backup", "--help", env=env))
    out = r.stdout.decode()
    for opt in ("--exclude", "--iexclude", "--exclude-file", "--iexclude-file", "--exclude-ignorefile"):
        assert opt in out
    assert "any depth" in out
