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


def tree_of(out) -> set[str]:
    got = set()
    for dirpath, dirs, files in os.walk(out):
        got.update(os.path.relpath(os.path.join(dirpath, n), out) + "/" for n in dirs)
        got.update(os.path.relpath(os.path.join(dirpath, n), out) for n in files)
    return got


@pytest.mark.parametrize(
    "args, expected",
    [
        # restic's SNAPSHOT:FOLDER makes the folder the root the patterns see
        (("--include", "/lib"), {"lib/", "lib/util.py"}),
        (("--include", "/main.py"), {"main.py"}),
        (("--include", "lib"), {"lib/", "lib/util.py"}),
        (("--include", "*.py"), {"main.py", "lib/", "lib/util.py"}),
        (("--exclude", "/lib"), {"main.py"}),
        (("--exclude", "/main.py"), {"lib/", "lib/util.py"}),
        (("--include", "{src}/src/lib"), set()),  # a full snapshot path is not below the folder
    ],
)
def test_restore_of_a_folder_matches_patterns_below_it(world, tmp_path, args, expected):
    _base, src, env = world
    args = [a.replace("{src}", os.fspath(src)) for a in args]
    out = tmp_path / "out"
    ok(run_bk("restore", f"latest:{src}/src", "--target", out, *args, env=env))
    assert tree_of(out) == expected
    r = ok(run_bk("restore", f"latest:{src}/src", "--format", "zip", *args, env=env))
    assert {n for n in zipfile.ZipFile(io.BytesIO(r.stdout)).namelist()} == expected


def test_archive_of_a_folder_holds_paths_relative_to_it(world):
    import tarfile

    _base, src, env = world
    r = ok(run_bk("restore", f"latest:{src}/docs", "--format", "zip", env=env))
    assert sorted(zipfile.ZipFile(io.BytesIO(r.stdout)).namelist()) == ["a.txt", "b.md", "img/", "img/logo.PNG"]
    assert zipfile.ZipFile(io.BytesIO(r.stdout)).read("img/logo.PNG") == b"docs/img/logo.PNG"
    r = ok(run_bk("restore", f"latest:{src}/docs", "--format", "tar", env=env))
    assert sorted(m.name for m in tarfile.open(fileobj=io.BytesIO(r.stdout))) == ["a.txt", "b.md", "img", "img/logo.PNG"]
    r = ok(run_bk("restore", f"latest:{src}/docs/a.txt", "--format", "zip", env=env))
    assert zipfile.ZipFile(io.BytesIO(r.stdout)).namelist() == ["a.txt"]
    # the whole snapshot keeps its full paths
    r = ok(run_bk("restore", "latest", "--format", "zip", env=env))
    assert os.fspath(src).lstrip("/") + "/docs/a.txt" in zipfile.ZipFile(io.BytesIO(r.stdout)).namelist()
