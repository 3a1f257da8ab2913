#!/usr/bin/env python3
"""Produce tests/fixtures/exclude_golden.tsv (and restore_golden.tsv) by running restic.

Builds a small tree at a fixed place (ROOT), backs it up with restic once per case
(one set of --exclude / --iexclude patterns, or one --exclude-file / --iexclude-file),
lists each snapshot and records, for every path of the tree, whether restic left it
out. The tests read the table; they do not need restic. Run it again only to add cases:

    apt-get install -y restic      # the table was made with restic 0.14.0
    python3 scripts/gen_exclude_golden.py

Table columns (tab-separated, one row per case and path):
    option     exclude | iexclude | exclude-file | iexclude-file
    patterns   JSON list: the patterns given (for the *-file options: the file's lines)
    path       path below ROOT (a directory ends in "/")
    excluded   1 when restic's snapshot does not hold the path, else 0
"{root}" in a pattern stands for ROOT; the file options run with the environment in ENV.

restore_golden.tsv has the same columns for ``restic restore --include/--exclude/
--iinclude/--iexclude`` of one full backup of the tree: excluded = 1 when the restore
did not create the path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = "/tmp/bkgolden/tree"
ENV = {"BKG_NAME": "node_modules", "BKG_EXT": "log", "BKG_ROOT": ROOT}
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
OUT = os.path.join(FIXTURES, "exclude_golden.tsv")
RESTORE_OUT = os.path.join(FIXTURES, "restore_golden.tsv")

#: the tree: files (directories are implied by them)
FILES = [
    "a.txt",
    "A.TXT",
    "b.md",
    "README.md",
    "price$1.txt",
    "docs/guide.md",
    "docs/img/logo.png",
    "edge/cachedir/data.bin",
    "edge/cachedir/sub/x",
    "edge/keep.txt",
    "edge/other/cachedir/y",
    "edge/cachedirx/z",
    "src/main.py",
    "src/lib/util.py",
    "src/lib/__pycache__/util.cpython-311.pyc",
    "src/node_modules/pkg/index.js",
    "build/out.o",
    "build/keep.o",
    "logs/app.log",
    "logs/old/app.log.1",
    "Photos/IMG_01.JPG",
    "photos2/img_02.jpg",
    ".hidden/config",
    ".env",
    "weird/[abc].txt",
    "weird/b.txt",
    "weird/star*name",
    "weird/q?x",
    "space dir/file one.txt",
    "foo/bar/baz/qux",
    "x/foo/y/bar/z",
    "tilde/~/f",
]

#: (option, patterns); the patterns are given in this order
CASES: list[tuple[str, list[str]]] = [
    ("exclude", ["edge/cachedir"]),
    ("exclude", ["cachedir"]),
    ("exclude", ["edge/cachedir/"]),
    ("exclude", ["{root}/edge"]),
    ("exclude", ["{root}/edge/cachedir"]),
    ("exclude", ["/edge"]),
    ("exclude", ["*.log"]),
    ("exclude", ["*.log*"]),
    ("exclude", ["logs/*"]),
    ("exclude", ["logs/**"]),
    ("exclude", ["*.o", "!keep.o"]),
    ("exclude", ["!keep.o", "*.o"]),
    ("exclude", ["src/**/*.pyc"]),
    ("exclude", ["**/__pycache__"]),
    ("exclude", ["foo/**/qux"]),
    ("exclude", ["x/**/z"]),
    ("exclude", ["**/bar/**"]),
    ("exclude", ["foo/*/baz"]),
    ("exclude", ["bar/baz"]),
    ("exclude", ["y/bar"]),
    ("exclude", ["*/old"]),
    ("exclude", ["docs/*.md"]),
    ("exclude", ["docs/./img"]),
    ("exclude", ["docs/../src"]),
    ("exclude", ["*.txt"]),
    ("exclude", ["?.txt"]),
    ("exclude", ["weird/\\[abc\\].txt"]),
    ("exclude", ["weird/[ab]*.txt"]),
    ("exclude", ["weird/[^a-b]*"]),
    ("exclude", ["weird/q\\?x"]),
    ("exclude", ["weird/star\\*name"]),
    ("exclude", ["*.jpg"]),
    ("exclude", [".*"]),
    ("exclude", ["space dir"]),
    ("exclude", ["{root}/*", "!{root}/src"]),
    ("exclude", ["{root}/src/*", "!{root}/src/lib"]),
    ("exclude", ["edge", "!keep.txt"]),
    ("exclude", ["!src"]),
    ("exclude", ["{root}/**/cachedir"]),
    ("exclude", ["README.MD"]),
    ("exclude", ["~"]),
    ("iexclude", ["*.jpg"]),
    ("iexclude", ["photos"]),
    ("iexclude", ["README.MD"]),
    ("iexclude", ["a.txt"]),
    ("iexclude", ["EDGE/CacheDir"]),
    ("iexclude", ["{root}/PHOTOS*"]),
    (
        "exclude-file",
        [
            "# comment line",
            "",
            "   *.o   ",
            "$BKG_NAME",
            "*.${BKG_EXT}",
            "price$$1.txt",
            "  # indented comment",
            "!keep.o",
        ],
    ),
    ("exclude-file", ["$BKG_ROOT/docs", "$UNSET_BKG_VAR/b.md", "~"]),
    ("exclude-file", ["\ufeffedge/cachedir", "weird/*.txt"]),
    ("iexclude-file", ["# case-insensitive file", "PHOTOS", "*.PY"]),
]


#: (option, patterns) for restic restore
RESTORE_CASES: list[tuple[str, list[str]]] = [
    ("include", ["*.py"]),
    ("include", ["edge/cachedir"]),
    ("include", ["{root}/docs"]),
    ("include", ["{root}/docs/*.md"]),
    ("include", ["{root}/src/**/*.pyc"]),
    ("include", ["**/bar/**"]),
    ("include", ["foo/*/baz"]),
    ("include", ["*.txt", "!keep.txt"]),
    ("include", ["{root}/x/**/z"]),
    ("include", ["README.md", "{root}/logs"]),
    ("include", ["/edge"]),
    ("iinclude", ["*.JPG"]),
    ("iinclude", ["{root}/PHOTOS"]),
    ("exclude", ["*.py"]),
    ("exclude", ["edge/cachedir"]),
    ("exclude", ["{root}/*", "!{root}/src"]),
    ("exclude", ["*.o", "!keep.o"]),
    ("exclude", ["**/__pycache__", "node_modules"]),
    ("iexclude", ["*.JPG", "README.MD"]),
]


def restore_rows(repo: str, work: str, paths: list[str]) -> list[tuple[str, str, str, str]]:
    out = restic(repo, "backup", "--json", "--force", ROOT)
    snap = [json.loads(line) for line in out.splitlines() if '"summary"' in line][-1]["snapshot_id"]
    rows = []
    for option, patterns in RESTORE_CASES:
        target = os.path.join(work, "restored")
        shutil.rmtree(target, ignore_errors=True)
        args = ["restore", snap, "--target", target]
        for p in patterns:
            args += [f"--{option}", p.replace("{root}", ROOT)]
        restic(repo, *args)
        base = os.path.join(target, ROOT.lstrip("/"))
        made = set()
        for dirpath, dirs, files in os.walk(base):
            rel = os.path.relpath(dirpath, base)
            made.update(os.path.normpath(os.path.join(rel, d)) + "/" for d in dirs)
            made.update(os.path.normpath(os.path.join(rel, f)) for f in files)
        for rel in paths:
            rows.append((option, json.dumps(patterns, ensure_ascii=False), rel, "0" if rel in made else "1"))
    return rows


def write_table(path: str, version: str, rows: list[tuple[str, str, str, str]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"# produced by scripts/gen_exclude_golden.py with {version}; root {ROOT}; env {json.dumps(ENV)}\n")
        f.write("option\tpatterns\tpath\texcluded\n")
        for row in rows:
            f.write("\t".join(row) + "\n")


def build_tree() -> list[str]:
    shutil.rmtree(os.path.dirname(ROOT), ignore_errors=True)
    for rel in FILES:
        p = os.path.join(ROOT, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(rel + "\n")
    paths = []
    for dirpath, dirs, files in os.walk(ROOT):
        rel = os.path.relpath(dirpath, ROOT)
        if rel != ".":
            paths.append(rel + "/")
        paths.extend(os.path.normpath(os.path.join(rel, f)) for f in files)
    return sorted(paths)


def restic(repo: str, *args: str, env: dict[str, str] | None = None) -> str:
    e = dict(os.environ, RESTIC_REPOSITORY=repo, RESTIC_PASSWORD="golden", **(env or {}))
    r = subprocess.run(["restic", *args], env=e, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"restic {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return r.stdout


def main() -> None:
    version = subprocess.run(["restic", "version"], capture_output=True, text=True, check=True).stdout.strip()
    paths = build_tree()
    work = tempfile.mkdtemp(prefix="bkgolden-")
    repo = os.path.join(work, "repo")
    restic(repo, "init")
    rows = []
    for option, patterns in CASES:
        args = ["backup", "--json", "--force"]
        real = [p.replace("{root}", ROOT) for p in patterns]
        if option.endswith("-file"):
            pfile = os.path.join(work, "patterns.txt")
            with open(pfile, "w", encoding="utf-8") as f:
                f.write("\n".join(real) + "\n")
            args += [f"--{option}", pfile]
        else:
            for p in real:
                args += [f"--{option}", p]
        out = restic(repo, *args, ROOT, env=ENV)
        summary = [json.loads(line) for line in out.splitlines() if '"summary"' in line][-1]
        listing = restic(repo, "ls", "--json", summary["snapshot_id"])
        kept = set()
        for line in listing.splitlines():
            node = json.loads(line)
            if node.get("struct_type") != "node":
                continue
            full = node["path"]
            if full.startswith(ROOT + "/"):
                kept.add(full[len(ROOT) + 1 :] + ("/" if node["type"] == "dir" else ""))
        for rel in paths:
            rows.append((option, json.dumps(patterns, ensure_ascii=False), rel, "0" if rel in kept else "1"))
    restore = restore_rows(repo, work, paths)
    shutil.rmtree(work)
    shutil.rmtree(os.path.dirname(ROOT), ignore_errors=True)
    write_table(OUT, version, rows)
    write_table(RESTORE_OUT, version, restore)
    print(f"{len(CASES)} cases, {len(rows)} rows -> {os.path.normpath(OUT)}")
    print(f"{len(RESTORE_CASES)} cases, {len(restore)} rows -> {os.path.normpath(RESTORE_OUT)}")


if __name__ == "__main__":
    main()
