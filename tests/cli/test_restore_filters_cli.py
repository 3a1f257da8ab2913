"""``bk restore --include/--exclude/--iinclude/--iexclude`` (and the -file forms) through
the real ``bk``: restic's patterns, matched against the paths in the snapshot."""

from __future__ import annotations

import io
import json
import os
import zipfile

import pytest

from tests.support.kit import cli_env, ok, run_bk, write_file

FILES = ("docs/a.txt", "docs/b.md", "docs/img/logo.PNG", "src/main.py", "src/lib/util.py", "logs/app.log", "README")



def restored(out, src) -> set[str]:
    base = os.path.join(out, os.fspath(src).lstrip("/"))
    got = set()
    for dirpath, dirs, files in os.walk(base):
        for n in dirs:
            got.add(os.path.relpath(os.path.join(dirpath, n), base) + "/")
        for n in files:
            got.add(os.path.relpath(os.path.join(dirpath, n), base))
    return got


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("restore-filters")
    src = base / "tree"  # no component of the path above the tree may look like a pattern's
    for rel in FILES:
        write_file(src / rel, rel.encode())
    env = cli_env(base / "repo", base / "cache")
    ok(run_bk("init", env=env))
    ok(run_bk("backup", src, env=env))
    return base, src, env


@pytest.mark.parametrize(
    "args, expected",
    [
        (("--include", "*.py"), {"src/", "src/main.py", "src/lib/", "src/lib/util.py"}),
        (("--include", "docs/img"), {"docs/", "docs/img/", "docs/img/logo.PNG"}),
        (("--include", "{src}/docs/*.txt", "--include", "README"), {"docs/", "docs/a.txt", "README"}),
        (("--exclude", "docs", "--exclude", "*.log"), {"src/", "src/main.py", "src/lib/", "src/lib/util.py", "logs/", "README"}),
        (("--iinclude", "*.png"), {"docs/", "docs/img/", "docs/img/logo.PNG"}),
        (("--iexclude", "SRC", "--iexclude", "DOCS", "--iexclude", "LOGS"), {"README"}),
        (("--include", "src/**", "--include", "!util.py"), {"src/", "src/main.py", "src/lib/"}),
    ],
)
def test_restore_selects_like_restic(world, tmp_path, args, expected):
    _base, src, env = world
    args = [a.replace("{src}", os.fspath(src)) for a in args]
    out = tmp_path / "out"
    ok(run_bk("restore", "latest", "--target", out, *args, env=env))
    assert restored(out, src) == expected


def test_restore_pattern_files_and_archives(world, tmp_path):
    base, src, env = world
    inc = tmp_path / "inc"
    inc.write_text("# what to bring back\n*.md\n$BK_T_WHAT\n")
    env2 = dict(env, BK_T_WHAT="README")
    out = tmp_path / "out"
    ok(run_bk("restore", "latest", "--target", out, "--include-file", inc, env=env2))
    assert restored(out, src) == {"docs/", "docs/b.md", "README"}
    exc = tmp_path / "exc"
    exc.write_text("DOCS\nsrc\n")
    r = ok(run_bk("restore", "latest", "--format", "zip", "--iexclude-file", exc, env=env))
    names = {n.rstrip("/") for n in zipfile.ZipFile(io.BytesIO(r.stdout)).namelist()}
    prefix = os.fspath(src).lstrip("/") + "/"
    assert {n[len(prefix):] for n in names if n.startswith(prefix)} == {"logs", "logs/app.log", "README"}
    out2 = tmp_path / "out2"
    (tmp_path / "exc2").write_text("docs\n*.log\n")
    (tmp_path / "inc2").write_text("*.PY\n")
    ok(run_bk("restore", "latest", "--target", out2, "--exclude-file", tmp_path / "exc2", env=env))
    assert restored(out2, src) == {"src/", "src/main.py", "src/lib/", "src/lib/util.py", "logs/", "README"}
    out3 = tmp_path / "out3"
    ok(run_bk("restore", "latest", "--target", out3, "--iinclude-file", tmp_path / "inc2", env=env))
    assert restored(out3, src) == {"src/", "src/main.py", "src/lib/", "src/lib/util.py"}
    r = ok(run_bk("--json", "restore", "latest", "--target", tmp_path / "dry", "--dry-run", "--include", "*.py", env=env))
    assert json.loads(r.stdout)["files"] == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (("--include", "a", "--exclude", "b"), "exclude each other"),
        (("--iinclude", "a", "--iexclude", "b"), "exclude each other"),
        (("--include", "[x"), "invalid pattern"),
        (("--exclude-file", "/nonexistent/list"), "--exclude-file"),
    ],
)
def test_restore_bad_patterns_exit_2(world, tmp_path, args, message):
    _base, _src, env = world
    r = run_bk("restore", "latest", "--target", tmp_path / "out", *args, env=env)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()
