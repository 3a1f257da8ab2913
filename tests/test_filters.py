"""restic's exclude/include patterns (backupkit.filters), pinned by a table restic made.

``tests/fixtures/exclude_golden.tsv`` was produced once by ``scripts/gen_exclude_golden.py``
running restic 0.14 over a small tree: for each case (patterns given to --exclude,
--iexclude, --exclude-file or --iexclude-file) and each path of the tree, whether restic's
snapshot left the path out. The matcher must agree row by row, and so must a real backup
of the same tree. ``restore_golden.tsv`` does the same for ``restic restore --include/
--exclude/--iinclude/--iexclude``: which paths the restore created.
"""

from __future__ import annotations

import json
import os
import random
from collections import OrderedDict
from pathlib import Path

import pytest

from backupkit.errors import BadArgument
from backupkit.excluder import Excluder
from backupkit.objects.entry import Entry
from backupkit.filters import PatternList, RestoreSelection, select_entries
from backupkit.pattern_files import expand_env, read_pattern_file
from backupkit.managers.backup import BackupManager, BackupOptions
from backupkit.managers.restore import RestoreManager, RestoreOptions
from tests.support.kit import make_test_repo, write_file
from backupkit.tree import SnapshotTree

GOLDEN = Path(__file__).parent / "fixtures" / "exclude_golden.tsv"
RESTORE_GOLDEN = Path(__file__).parent / "fixtures" / "restore_golden.tsv"
GOLDEN_ROOT = "/tmp/bkgolden/tree"


def load_golden(table: Path = GOLDEN) -> tuple[dict, "OrderedDict[tuple[str, str], dict[str, bool]]"]:
    """(environment the table was made with, {(option, patterns json): {path: excluded}})."""
    env: dict = {}
    cases: OrderedDict[tuple[str, str], dict[str, bool]] = OrderedDict()
    with open(table, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("#"):
                env = json.loads(line.split("; env ", 1)[1])
                continue
            option, patterns, path, excluded = line.split("\t")
            if option == "option":
                continue
            cases.setdefault((option, patterns), {})[path] = excluded == "1"
    return env, cases


GOLDEN_ENV, GOLDEN_CASES = load_golden()
_, RESTORE_CASES = load_golden(RESTORE_GOLDEN)


def golden_options(option: str, patterns: list[str], root: str, tmp: Path) -> dict:
    """BackupOptions fields for one golden case with ``{root}`` replaced."""
    real = [p.replace("{root}", root) for p in patterns]
    if option.endswith("-file"):
        f = tmp / f"patterns-{random.getrandbits(32)}.txt"
        f.write_text("\n".join(real) + "\n", encoding="utf-8")
        return {option.replace("-", "_") + "s": (str(f),)}
    return {option + "s": tuple(real)}


def golden_env(root: str) -> dict[str, str]:
    return {k: v.replace(GOLDEN_ROOT, root) for k, v in GOLDEN_ENV.items()}


def build_golden_tree(root: Path, paths) -> None:
    for rel in paths:
        if rel.endswith("/"):
            (root / rel).mkdir(parents=True, exist_ok=True)
        else:
            write_file(root / rel, rel.encode() + b"\n")


def test_the_table_is_big_enough():
    assert len(GOLDEN_CASES) >= 40
    rows = sum(len(v) for v in GOLDEN_CASES.values())
    excluded = sum(sum(v.values()) for v in GOLDEN_CASES.values())
    assert rows >= 40 and 0 < excluded < rows
    # the headline case of issue 8.4: a relative pattern with a slash matches at any depth
    edge = GOLDEN_CASES[("exclude", '["edge/cachedir"]')]
    assert edge["edge/cachedir/"] and edge["edge/cachedir/sub/x"] and not edge["edge/keep.txt"]


@pytest.mark.parametrize("case", list(GOLDEN_CASES), ids=lambda c: f"{c[0]}:{c[1]}")
def test_matcher_agrees_with_restic(case, tmp_path, monkeypatch):
    option, patterns = case
    for k, v in GOLDEN_ENV.items():
        monkeypatch.setenv(k, v)
    opts = BackupOptions(**golden_options(option, json.loads(patterns), GOLDEN_ROOT, tmp_path))
    ex = Excluder(opts)
    wrong = []
    for rel, want in GOLDEN_CASES[case].items():
        comps = rel.rstrip("/").split("/")
        # restic never enters an excluded directory: a path is out when it or a
        # directory above it (up to the backup's root) matches
        chain = [GOLDEN_ROOT] + [GOLDEN_ROOT + "/" + "/".join(comps[:k]) for k in range(1, len(comps) + 1)]
        got = any(any(pl.matches(p) for pl in ex.patterns) for p in chain)
        if got != want:
            wrong.append((rel, want))
    assert wrong == []


def _snapshot_rel_paths(repo, snap, root: str) -> set[str]:
    out = set()
    under = os.fsencode(root)
    for p, e in SnapshotTree(repo, snap.root).walk(under):
        if p != under:
            out.add(os.fsdecode(p[len(under) + 1 :]) + ("/" if e.is_dir else ""))
    return out


def test_backup_agrees_with_restic(tmp_path, monkeypatch):
    """Every golden case through the backup engine over the same tree."""
    root = tmp_path / "tree"
    all_paths = next(iter(GOLDEN_CASES.values())).keys()
    build_golden_tree(root, all_paths)
    for k, v in golden_env(str(root)).items():
        monkeypatch.setenv(k, v)
    repo = make_test_repo()
    wrong = []
    for (option, patterns), want in GOLDEN_CASES.items():
        kw = golden_options(option, json.loads(patterns), str(root), tmp_path)
        res = BackupManager(repo).run(BackupOptions(paths=(str(root),), force=True, scan_totals=False, **kw))
        kept = _snapshot_rel_paths(repo, res.snapshot, str(root))
        expected = {p for p, out in want.items() if not out}
        if kept != expected:
            wrong.append((option, patterns, sorted(kept ^ expected)))
    assert wrong == []


def test_restore_agrees_with_restic(tmp_path):
    """restic restore --include/--exclude/--iinclude/--iexclude cases through the engine."""
    root = tmp_path / "tree"
    build_golden_tree(root, next(iter(RESTORE_CASES.values())).keys())
    repo = make_test_repo()
    snap = BackupManager(repo).run(BackupOptions(paths=(str(root),), scan_totals=False)).snapshot
    assert len(RESTORE_CASES) >= 15
    wrong = []
    for n, ((option, patterns), want) in enumerate(RESTORE_CASES.items()):
        real = [p.replace("{root}", str(root)) for p in json.loads(patterns)]
        select = RestoreSelection.build(**{option + "s": real})
        target = tmp_path / f"out{n}"
        res = RestoreManager(repo).restore(snap, RestoreOptions(target=str(target), select=select))
        assert res.errors == ()
        base = target / str(root).lstrip("/")
        made = {
            os.path.relpath(os.path.join(d, x), base) + ("/" if x in dirs else "")
            for d, dirs, files in os.walk(base)
            for x in (*dirs, *files)
        }
        expected = {p for p, out in want.items() if not out}
        if made != expected:
            wrong.append((option, patterns, sorted(made ^ expected)))
    assert wrong == []


# -- pattern details ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern, path, expected",
    [
        ("edge/cachedir", "/home/u/edge/cachedir", True),
        ("edge/cachedir", "/home/u/edge/cachedir/deep/file", True),  # restic: any window of components
        ("edge/cachedir", "/home/u/xedge/cachedir", False),
        ("/home/u", "/home/u/file", True),
        ("/u", "/home/u", False),
        ("*", "/", False),
        ("**", "/", False),
        ("**", "/a", True),
        ("/", "/", True),
        ("/**", "/x/y", True),
        ("*/foo", "/foo", False),  # "*" never matches the root
        ("a/**/b", "/x/a/b", True),
        ("a/**/b", "/x/a/1/2/3/b/c", True),
        ("a/**/b", "/x/ab", False),
        ("[!x]", "/!", True),  # Go classes negate with ^, not !
        ("[^x]", "/y", True),
        ("[^x]", "/x", False),
        ("[z-a]", "/q", False),  # an empty range is valid and matches nothing
        ("a\\*b", "/a*b", True),
        ("a\\*b", "/axb", False),
        ("f?o", "/d/f\udcffo", True),  # undecodable bytes count as one character each
        ("new\nline", "/d/new\nline", True),
        ("x", "/d/x\n", False),
    ],
)
def test_pattern_semantics(pattern, path, expected):
    assert PatternList([pattern]).matches(path) is expected


@pytest.mark.parametrize("bad", ["[", "a/[b", "[]", "[^]", "x\\", "[a-]", "[-a]", "[]a]"])
def test_malformed_patterns_are_bad_arguments(bad):
    with pytest.raises(BadArgument, match="invalid pattern"):
        PatternList([bad])


def test_ignore_case_lowercases_both_sides():
    pl = PatternList(["/Data/*.JPG"], ignore_case=True)
    assert pl.matches("/data/x.jpg") and pl.matches("/DATA/Y.Jpg") and not pl.matches("/other/x.jpg")


def test_expand_env_follows_go_os_expand():
    env = {"A": "1", "LONG_NAME": "two", "*": "star"}.get
    cases = {
        "$A/x": "1/x",
        "${A}x": "1x",
        "$LONG_NAME.x": "two.x",
        "$$": "$",
        "a$$b": "a$b",
        "end$": "end$",
        "$UNSET/x": "/x",
        "${}x": "x",
        "${A": "A",
        "$*": "star",
        "$ x": "$ x",
        "~/x": "~/x",
    }
    for text, want in cases.items():
        assert expand_env(text, lambda k, d="": env(k, d)) == want, text


def test_pattern_file_format(tmp_path, monkeypatch):
    monkeypatch.setenv("BK_T_DIR", "cache")
    f = tmp_path / "p.txt"
    f.write_bytes(b"\xef\xbb\xbf# comment\r\n\r\n  *.o  \r\n\t$BK_T_DIR/x\n  # also a comment\n!keep\n")
    assert read_pattern_file(str(f)) == ["*.o", "cache/x", "!keep"]
    (tmp_path / "u16.txt").write_bytes("a\nb\n".encode("utf-16"))
    assert read_pattern_file(str(tmp_path / "u16.txt")) == ["a", "b"]
    with pytest.raises(BadArgument, match="--exclude-file .*missing"):
        read_pattern_file(str(tmp_path / "missing"))


# -- restore selection (restic's ListWithChild) ----------------------------------------------


def test_restore_include_descends_only_where_a_match_can_be():
    sel = RestoreSelection.build(includes=["/home/u/docs/*.txt"])
    assert sel.select("/home", True) == (False, True)
    assert sel.select("/home/u/docs", True) == (False, True)
    assert sel.select("/home/u/docs/a.txt", False) == (True, False)
    assert sel.select("/home/other", True) == (False, False)
    assert sel.select("/srv", True) == (False, False)
    rel = RestoreSelection.build(includes=["*.txt"])
    assert rel.select("/anything", True) == (False, True)  # relative: any depth may match
    deep = RestoreSelection.build(includes=["/a/**/z"])
    assert deep.select("/a/b/c", True) == (False, True) and deep.select("/b", True) == (False, False)
    ci = RestoreSelection.build(iincludes=["/HOME/U"])
    assert ci.select("/home/u", True) == (True, True)


def test_restore_exclude_and_conflicts():
    sel = RestoreSelection.build(excludes=["*.log", "/tmp"])
    assert sel.select("/a/x.log", False) == (False, False)
    assert sel.select("/tmp", True) == (False, False)
    assert sel.select("/a", True) == (True, True)
    assert RestoreSelection.build() is None
    with pytest.raises(BadArgument, match="exclude each other"):
        RestoreSelection.build(includes=["a"], excludes=["b"])


# -- per-directory ignore files and the other backup rules -----------------------------------


def test_ignorefile_gitignore_rules(tmp_path):
    src = tmp_path / "src"
    for rel in ("a.o", "keep.o", "sub/b.o", "sub/c.o", "sub/deeper/d.o", "build/x", "sub/build/y", "notes.txt"):
        write_file(src / rel, b"x")
    (src / ".bkignore").write_text("*.o\n!keep.o\n/build/\n")
    (src / "sub" / ".bkignore").write_text("!c.o\nbuild\n")
    repo = make_test_repo()
    res = BackupManager(repo).run(BackupOptions(paths=(str(src),), exclude_ignorefiles=(".bkignore",), scan_totals=False))
    got = _snapshot_rel_paths(repo, res.snapshot, str(src))
    assert got == {".bkignore", "keep.o", "notes.txt", "sub/", "sub/.bkignore", "sub/c.o", "sub/deeper/"}
    with pytest.raises(BadArgument, match="file name"):
        Excluder(BackupOptions(exclude_ignorefiles=("a/b",)))


def test_if_present_keeps_the_directory_and_its_tag(tmp_path):
    src = tmp_path / "src"
    write_file(src / "tagged/.nobackup", b"")
    write_file(src / "tagged/data", b"x")
    write_file(src / "other/.nobackup", b"wrong header")
    write_file(src / "other/data", b"x")
    repo = make_test_repo()
    res = BackupManager(repo).run(
        BackupOptions(paths=(str(src),), exclude_if_present=(".nobackup",), scan_totals=False)
    )
    assert _snapshot_rel_paths(repo, res.snapshot, str(src)) == {"tagged/", "tagged/.nobackup", "other/", "other/.nobackup"}
    res = BackupManager(repo).run(
        BackupOptions(paths=(str(src),), exclude_if_present=(".nobackup:wrong",), scan_totals=False)
    )
    assert _snapshot_rel_paths(repo, res.snapshot, str(src)) == {
        "tagged/", "tagged/.nobackup", "tagged/data", "other/", "other/.nobackup",
    }


# -- the regex translation against a direct port of restic's component matcher ----------------


def _ref_split(p: str) -> list[str]:
    parts = p.split("/")
    if parts[0] == "":
        parts[0] = "/"
    return parts


def _ref_parts(pattern: str) -> list[str]:
    import posixpath

    cleaned = posixpath.normpath("/" + pattern.lstrip("/")) if pattern.startswith("/") else posixpath.normpath(pattern)
    return ["" if x == "**" else x for x in _ref_split(cleaned)]


def _ref_match(parts: list[str], strs: list[str]) -> bool:
    import fnmatch

    if "" in parts:
        pos = parts.index("")
        for i in range(0, len(strs) - len(parts) + 2):
            new = parts[:pos] + ["*"] * i + parts[pos + 1 :]
            if _ref_match(new, strs):
                return True
        return False
    if not parts:
        return not strs
    if len(parts) > len(strs):
        return False
    lo, hi = 0, len(strs) - len(parts)
    if parts[0] == "/":
        hi = 0
    elif strs[0] == "/":
        lo = 1
    for off in range(hi, lo - 1, -1):
        if all(fnmatch.fnmatchcase(strs[off + i], parts[i]) if parts[i] != "/" else strs[off + i] == "/" for i in range(len(parts))):
            return True
    return False


def _ref_child(parts: list[str], strs: list[str]) -> bool:
    if parts[0] != "/":
        return True
    if "" in parts and len(strs) >= parts.index(""):
        strs = strs[: parts.index("")]
    return _ref_match(parts[: min(len(strs), len(parts))], strs)


def test_regexes_agree_with_a_port_of_restics_matcher():
    """Random patterns over a small alphabet (*, ?, **, anchors) against random paths.

    fnmatch stands in for Go's filepath.Match: the alphabet avoids classes and escapes,
    where the two differ."""
    rnd = random.Random(8)
    names = ["a", "b", "ab", "ba", "c"]
    comps = names + ["*", "?", "a*", "*b", "**"]
    for _ in range(3000):
        pat = "/".join(rnd.choice(comps) for _ in range(rnd.randint(1, 4)))
        if rnd.random() < 0.3:
            pat = "/" + pat
        path = "/" + "/".join(rnd.choice(names) for _ in range(rnd.randint(0, 5)))
        want = _ref_match(_ref_parts(pat), _ref_split(path) if path != "/" else ["/"])
        assert PatternList([pat]).matches(path) is want, (pat, path)
        child = _ref_child(_ref_parts(pat), _ref_split(path) if path != "/" else ["/"])
        assert PatternList([pat]).matches_with_child(path) == (want, child), (pat, path)


def test_select_entries_brings_the_directories_on_the_way():
    d, f = Entry(type="d"), Entry(type="f", size=0)
    walk = [
        (b"/", d), (b"/a", d), (b"/a/b", d), (b"/a/b/x.py", f), (b"/a/b/y.txt", f), (b"/a/c", d),
        (b"/a/c/z.txt", f), (b"/a/c/deep", d), (b"/a/c/deep/w.py", f), (b"/q", d), (b"/q/r.txt", f),
    ]
    inc = RestoreSelection.build(includes=["*.py"])
    got = [p for p, _e in select_entries(walk, inc)]
    assert got == [b"/", b"/a", b"/a/b", b"/a/b/x.py", b"/a/c", b"/a/c/deep", b"/a/c/deep/w.py"]
    anchored = RestoreSelection.build(includes=["/a/c"])
    assert [p for p, _e in select_entries(walk, anchored)] == [
        b"/", b"/a", b"/a/c", b"/a/c/z.txt", b"/a/c/deep", b"/a/c/deep/w.py",
    ]
    exc = RestoreSelection.build(excludes=["c", "*.txt"])
    assert [p for p, _e in select_entries(walk, exc)] == [b"/", b"/a", b"/a/b", b"/a/b/x.py", b"/q"]


def test_fifos_named_like_tag_or_ignore_files_do_not_block(tmp_path):
    src = tmp_path / "src"
    write_file(src / "a/data", b"x")
    os.mkfifo(src / "a" / ".nobackup")
    os.mkfifo(src / "a" / ".bkignore")
    repo = make_test_repo()
    opts = BackupOptions(
        paths=(str(src),), exclude_if_present=(".nobackup:header",), exclude_ignorefiles=(".bkignore",), scan_totals=False
    )
    res = BackupManager(repo).run(opts)
    assert {"a/", "a/data", "a/.nobackup", "a/.bkignore"} == _snapshot_rel_paths(repo, res.snapshot, str(src))
