"""restic's path patterns: which paths a backup leaves out and a restore puts back.

A pattern is matched against a path's components (the absolute path as the walk sees
it, or the path inside the snapshot on restore), as restic's ``internal/filter`` does:

- ``foo/bar`` (no leading ``/``) matches wherever those components appear one after the
  other: ``/home/u/foo/bar`` and ``/srv/foo/bar/baz`` both match. ``/foo/bar`` (leading
  ``/``) matches only from the root.
- ``*`` any run of characters inside one component, ``?`` one character, ``[a-z]`` and
  ``[^a-z]`` a class, ``\\`` escapes; ``**`` as a whole component: any number of
  components (also none). The pattern is cleaned first: ``a/./b`` is ``a/b``, a trailing
  ``/`` is dropped (it does not restrict the pattern to directories).
- ``!pattern`` re-includes what an earlier pattern of the same list matched; later
  patterns win. A directory that is left out is not entered, so ``!`` cannot bring back
  files below it.
- Case-insensitive lists (``--iexclude``) compare lower-cased patterns and paths.

Pattern files (``--exclude-file``) are read by ``pattern_files.py``.

Each pattern becomes one regular expression over the path string, and consecutive
patterns of the same sign are joined into one alternation, so a path costs one
``re.search`` per run of patterns (one in all for lists without ``!``).
``tests/fixtures/exclude_golden.tsv``, produced by restic itself, pins the behaviour.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from backupkit.errors import BadArgument
from backupkit.pattern_files import read_pattern_file

if TYPE_CHECKING:
    from backupkit.objects.entry import Entry

# -- one pattern -> one regular expression ---------------------------------------------------

_ANY = "[^/]*"
_END = r"(?=/|\Z)"
_REL = "/(?=[^/])"  # where a relative pattern's first component may start


def _class_char(part: str, i: int, pattern: str) -> tuple[str, int]:
    """One (possibly escaped) character of a ``[...]`` class, as Go's getEsc reads it."""
    if i >= len(part) or part[i] in "-]":
        raise BadArgument(f"invalid pattern {pattern!r}: malformed character class")
    if part[i] == "\\":
        i += 1
        if i >= len(part):
            raise BadArgument(f"invalid pattern {pattern!r}: malformed character class")
    return part[i], i + 1


def _component_regex(part: str, pattern: str) -> str:
    """Regex for one component of a Go ``filepath.Match`` pattern (never matches ``/``)."""
    out: list[str] = []
    i, n = 0, len(part)
    while i < n:
        c = part[i]
        if c == "*":
            while i < n and part[i] == "*":
                i += 1
            out.append(_ANY)
            continue
        if c == "?":
            out.append("[^/]")
        elif c == "\\":
            i += 1
            if i >= n:
                raise BadArgument(f"invalid pattern {pattern!r}: ends in an escape")
            out.append(re.escape(part[i]))
        elif c == "[":
            i += 1
            negated = i < n and part[i] == "^"
            if negated:
                i += 1
            ranges: list[str] = []
            first = True
            while True:
                if i < n and part[i] == "]" and not first:
                    i += 1
                    break
                lo, i = _class_char(part, i, pattern)
                hi = lo
                if i < n and part[i] == "-":
                    hi, i = _class_char(part, i + 1, pattern)
                if lo <= hi:  # Go accepts an empty range; it matches nothing
                    ranges.append(re.escape(lo) + ("-" + re.escape(hi) if hi != lo else ""))
                first = False
                if i >= n:
                    raise BadArgument(f"invalid pattern {pattern!r}: unclosed character class")
            body = "".join(ranges)
            if negated:
                out.append(f"[^/{body}]")
            else:
                out.append(f"(?!/)[{body}]" if body else "(?!)")
            continue
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _clean(pattern: str) -> str:
    """Go's filepath.Clean: no empty, ``.`` or resolvable ``..`` components."""
    if pattern.startswith("//"):
        pattern = "/" + pattern.lstrip("/")
    return posixpath.normpath(pattern) if pattern else "."


@lru_cache(maxsize=4096)
def _compiled(regex: str) -> re.Pattern[str]:
    return re.compile(regex)


def _regex_for(anchored: bool, parts: Sequence[str], original: str) -> str:
    """One regex for a cleaned pattern: it finds the pattern's components as consecutive
    components of a path (from the root when anchored); ``""`` in ``parts`` is ``**``."""
    if not anchored:
        if not any(parts):
            return _REL if parts else "(?!)"  # "**" alone: any path but the root
        while parts[0] == "":
            parts = parts[1:]  # "**/x" finds what "x" finds: it matches at any depth anyway
    pieces = ["^"] if anchored else []
    for k, p in enumerate(parts):
        if p == "":
            pieces.append("(?:/[^/]*)*")
        elif k == 0 and not anchored:
            # the first component of a relative pattern starts after any "/" but never
            # matches the empty name after the root's "/"
            pieces.append(_REL + _component_regex(p, original))
        else:
            pieces.append("/" + _component_regex(p, original))
    pieces.append(_END)
    return "".join(pieces)


@dataclass(frozen=True)
class Pattern:
    """One parsed pattern: the regex matches a path (or a path's leading components)."""

    original: str
    negated: bool
    anchored: bool
    parts: tuple[str, ...]  # component patterns after cleaning; "" stands for "**"
    regex: str

    @property
    def exact_only(self) -> bool:
        """Two or more ``**``: restic's expansion bounds make such patterns need paths
        with at least as many components as the pattern has parts, which one regex
        cannot say; they are matched by expanding ``**`` as restic does."""
        return self.parts.count("") >= 2

    def match(self, path: str) -> bool:
        if path != "/" and not self.exact_only:
            return _compiled(self.regex).search(path) is not None
        return _expand_match(self.anchored, self.parts, path, path.count("/") + (path != "/"), self.original)


def _expand_match(anchored: bool, parts: tuple[str, ...], path: str, n: int, original: str) -> bool:
    """restic's match(): the first ``**`` becomes 0, 1, ... ``*`` components, as long as
    the pattern (counting the root marker) stays within ``n`` path components + 1."""
    if "" not in parts:
        if path == "/":
            return anchored and not parts
        if not anchored and not parts:
            return False
        return _compiled(_regex_for(anchored, parts, original)).search(path) is not None
    pos = parts.index("")
    for i in range(0, n + 1 - (len(parts) + anchored) + 1):
        if _expand_match(anchored, parts[:pos] + ("*",) * i + parts[pos + 1 :], path, n, original):
            return True
    return False


def parse_pattern(text: str) -> Pattern:
    original = text
    negated = text.startswith("!")
    if negated:
        text = text[1:]
    cleaned = _clean(text)
    anchored = cleaned.startswith("/")
    raw = cleaned.split("/")
    if anchored:
        raw = raw[1:]
    parts = tuple("" if p in ("", "**") else p for p in raw)
    return Pattern(original, negated, anchored, parts, _regex_for(anchored, parts, original))


class PatternList:
    """restic's ``filter.List``: does a path match, ``!`` patterns undoing earlier ones."""

    def __init__(self, patterns: Iterable[str], ignore_case: bool = False) -> None:
        self.ignore_case = ignore_case
        texts = [p.lower() if ignore_case else p for p in patterns if p]
        self.patterns = [parse_pattern(p) for p in texts]
        # runs of consecutive patterns of the same sign, each asked with at most two
        # regexes: anchored patterns joined and tried at the start only, relative ones
        # joined behind their common "/" (the regex engine then jumps from "/" to "/");
        # the few with several "**" are asked one by one
        runs: list[tuple[bool, list[str], list[str], list[Pattern]]] = []
        for p in self.patterns:
            if not runs or runs[-1][0] != p.negated:
                runs.append((p.negated, [], [], []))
            if p.exact_only:
                runs[-1][3].append(p)
            elif p.anchored:
                runs[-1][1].append(p.regex[1:])
            else:
                runs[-1][2].append(p.regex[len(_REL) :] if p.regex.startswith(_REL) else "(?!)")
        if runs and runs[0][0]:
            runs.pop(0)  # leading "!" patterns can undo nothing
        self._runs = [
            (
                neg,
                re.compile("(?:" + "|".join(anch) + ")") if anch else None,
                re.compile(_REL + "(?:" + "|".join(rel) + ")") if rel else None,
                tuple(slow),
            )
            for neg, anch, rel, slow in runs
        ]

    def __bool__(self) -> bool:
        return bool(self._runs)

    def _prep(self, path: str) -> str:
        return path.lower() if self.ignore_case else path

    def matches(self, path: str) -> bool:
        """Whether the absolute ``path`` matches (after the ``!`` patterns had their say)."""
        path = self._prep(path)
        if path == "/":
            return self._one_by_one(path)
        matched = False
        for negated, anchored, relative, slow in self._runs:
            if matched is negated:  # only a positive run can set it, only a negative clear it
                if (
                    (anchored is not None and anchored.match(path) is not None)
                    or (relative is not None and relative.search(path) is not None)
                    or any(p.match(path) for p in slow)
                ):
                    matched = not negated
        return matched

    def _one_by_one(self, path: str) -> bool:
        matched = False
        for p in self.patterns:
            m = p.match(path)
            matched = (matched and not m) if p.negated else (matched or m)
        return matched

    def matches_with_child(self, path: str) -> tuple[bool, bool]:
        """(path matches, a path below it may match): restic's ``ListWithChild``."""
        path = self._prep(path)
        comps = [c for c in path.split("/") if c]
        matched = child = False
        for p in self.patterns:
            m = p.match(path)
            if p.negated:
                matched = matched and not m
                child = child and not m
            else:
                matched = matched or m
                child = child or _child_may_match(p, comps)
        return matched, child


def _child_may_match(p: Pattern, comps: Sequence[str]) -> bool:
    """Whether a path below ``comps`` could match ``p`` (restic's childMatch)."""
    if not p.anchored:
        return True
    parts = p.parts
    if "" in parts:  # only the components before the first "**" must match
        cut = parts.index("")
        comps, parts = comps[:cut], parts[:cut]
    n = min(len(comps), len(parts))
    head = "^" + "".join("/" + _component_regex(x, p.original) for x in parts[:n]) + _END
    return re.search(head, "/" + "/".join(comps)) is not None


def compile_patterns(
    patterns: Sequence[str] = (),
    files: Sequence[str] = (),
    ignore_case: bool = False,
    option: str = "--exclude-file",
) -> PatternList:
    """One list from patterns given inline and pattern files; malformed ones: BadArgument."""
    texts = list(patterns)
    for f in files:
        texts.extend(read_pattern_file(f, option))
    return PatternList(texts, ignore_case=ignore_case)



# -- restore: which entries come back ---------------------------------------------------------


@dataclass(frozen=True)
class RestoreSelection:
    """restic restore's --include/--exclude (also --iinclude/--iexclude and the -file forms).

    Called with (path, entry) it answers (restore this entry, look below it); include and
    exclude patterns exclude each other, as in restic. Restore passes its entries
    through :func:`select_entries` with it.
    """

    includes: tuple[PatternList, ...] = ()
    excludes: tuple[PatternList, ...] = ()

    @classmethod
    def build(
        cls,
        includes: Sequence[str] = (),
        excludes: Sequence[str] = (),
        iincludes: Sequence[str] = (),
        iexcludes: Sequence[str] = (),
        include_files: Sequence[str] = (),
        exclude_files: Sequence[str] = (),
        iinclude_files: Sequence[str] = (),
        iexclude_files: Sequence[str] = (),
    ) -> RestoreSelection | None:
        inc = [
            compile_patterns(includes, include_files, False, "--include-file"),
            compile_patterns(iincludes, iinclude_files, True, "--iinclude-file"),
        ]
        exc = [
            compile_patterns(excludes, exclude_files, False, "--exclude-file"),
            compile_patterns(iexcludes, iexclude_files, True, "--iexclude-file"),
        ]
        inc = [p for p in inc if p.patterns]
        exc = [p for p in exc if p.patterns]
        if inc and exc:
            raise BadArgument("include and exclude patterns exclude each other")
        if not inc and not exc:
            return None
        return cls(tuple(inc), tuple(exc))

    def select(self, path: str, is_dir: bool) -> tuple[bool, bool]:
        if self.excludes:
            keep = not any(pl.matches(path) for pl in self.excludes)
            return keep, keep and is_dir
        matched = child = False
        for pl in self.includes:
            m, c = pl.matches_with_child(path)
            matched, child = matched or m, child or c
        return matched, child and is_dir

    def __call__(self, path: bytes, entry: Entry) -> tuple[bool, bool]:
        return self.select(path.decode("utf-8", "surrogateescape"), entry.is_dir)


def below_folder(
    select: Callable[[bytes, Entry], tuple[bool, bool]], folder: bytes
) -> Callable[[bytes, Entry], tuple[bool, bool]]:
    """``select`` seeing the paths of a restore of ``folder`` as restic's
    ``SNAPSHOT:FOLDER`` does, with the folder as the root: ``FOLDER/a/b`` is matched as
    ``/a/b``, the folder itself as ``/`` (a file restored alone as ``/NAME``). Anchored
    patterns (``/lib``) then start at the folder; relative ones (``*.py``) match as before.
    """
    if folder == b"/":
        return select
    inside = folder.rstrip(b"/") + b"/"

    def sel(path: bytes, e: Entry) -> tuple[bool, bool]:
        if path.startswith(inside):
            return select(path[len(inside) - 1 :], e)
        if path == folder:
            return select(b"/" if e.is_dir else b"/" + posixpath.basename(path), e)
        return select(path, e)  # an ancestor of the folder: restores of a folder never walk them

    return sel


def select_entries(
    entries: Iterable[tuple[bytes, Entry]], select: Callable[[bytes, Entry], tuple[bool, bool]]
) -> Iterator[tuple[bytes, Entry]]:
    """The entries (depth first, parents before children) that ``select`` keeps.

    A directory ``select`` does not keep but looks into is held back and comes out just
    before the first entry below it that is kept (so a restored file always has its
    directories); a directory it does not look into is skipped with all below it.
    """
    pending: list[tuple[bytes, Entry]] = []
    skip: bytes | None = None
    for path, e in entries:
        if skip is not None:
            if path.startswith(skip):
                continue
            skip = None
        while pending and not path.startswith(pending[-1][0].rstrip(b"/") + b"/"):
            pending.pop()
        keep, descend = select(path, e)
        if keep:
            yield from pending
            pending.clear()
            yield path, e
        elif descend:
            pending.append((path, e))
        if e.is_dir and not descend:
            skip = path.rstrip(b"/") + b"/"

__all__ = [
    "Pattern",
    "PatternList",
    "RestoreSelection",
    "below_folder",
    "compile_patterns",
    "parse_pattern",
    "select_entries",
]
