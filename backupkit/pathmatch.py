"""A minimal matcher for restic's path patterns (``find`` and ``rewrite``).

restic's ``filter.Match`` semantics, which ``restic find`` and ``--exclude`` use: a
pattern's components must match a run of consecutive components of the path, starting
anywhere (``etc/ssh``) or at the root (``/etc/ssh``); the run need not reach the end,
so a pattern that matches a directory matches everything below it. ``*``, ``?``,
``[a-z]``/``[^a-z]`` and ``\\`` work inside one component; ``**`` as a whole component
matches any number of components. ``restic find '/etc'`` lists /etc and all below it;
``restic find '*.conf'`` every name ending in .conf; ``restic find '/*.conf'`` only such
names directly under /.

This is the subset find and rewrite need while ``backupkit/filters.py`` (the full
implementation with ``!`` negation and pattern files) is not on main; both follow the
same rules, so one can replace the other.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass

from backupkit.errors import BadArgument


def _component(part: str, original: str) -> str:
    out, i, n = [], 0, len(part)
    while i < n:
        c = part[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\":
            if i + 1 == n:
                raise BadArgument(f"invalid pattern {original!r}: trailing backslash")
            i += 1
            out.append(re.escape(part[i]))
        elif c == "[":
            j = i + 1
            neg = j < n and part[j] in "^!"
            if neg:
                j += 1
            body = []
            first = True
            while j < n and (part[j] != "]" or first):
                if part[j] == "\\" and j + 1 < n:
                    j += 1
                body.append(re.escape(part[j]) if part[j] not in "-" else "-")
                first = False
                j += 1
            if j >= n or not body:
                raise BadArgument(f"invalid pattern {original!r}: unclosed or empty [ ]")
            out.append("[" + ("^/" if neg else "") + "".join(body) + "]")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class PathPattern:
    text: str
    anchored: bool
    parts: tuple[str, ...]
    regex: re.Pattern

    @property
    def literal_dir(self) -> str | None:
        """For an anchored pattern, the deepest directory every match lies in or is
        (``/etc/ssh/*.conf`` -> ``/etc/ssh``, ``/etc/ssh`` -> ``/etc/ssh``), else None."""
        if not self.anchored:
            return None
        lit = []
        for p in self.parts:
            if p == "**" or any(ch in p for ch in "*?[\\"):
                break
            lit.append(p)
        return "/" + "/".join(lit)


def parse_pattern(text: str, ignore_case: bool = False) -> PathPattern:
    if not text:
        raise BadArgument("empty pattern")
    t = text.lower() if ignore_case else text
    anchored = t.startswith("/")
    cleaned = posixpath.normpath(t).strip("/")
    parts = tuple(p for p in cleaned.split("/") if p) if cleaned not in ("", ".") else ()
    pieces = []
    for p in parts:
        pieces.append(None if p == "**" else _component(p, text))
    body = ""
    for k, piece in enumerate(pieces):
        if piece is None:
            body += "(?:/[^/]+)*" if k else "(?:[^/]+(?:/[^/]+)*)?"
            continue
        body += ("/" if k else "") + piece
    if anchored:
        rx = "^/" + body + r"(?=/|$)" if parts else "^/"
    else:
        rx = r"(?:^|/)" + body + r"(?=/|$)"
    flags = re.IGNORECASE if ignore_case else 0
    return PathPattern(text, anchored, parts, re.compile(rx, flags | re.DOTALL))


def read_pattern_file(path: str, option: str = "--exclude-file") -> list[str]:
    """One pattern a line; surrounding white space dropped, blank lines and ``#``
    comments skipped (restic's format, without its ``$VAR`` expansion)."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "surrogateescape")
    except OSError as e:
        raise BadArgument(f"cannot read {option} {path}: {e.strerror}") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


class PathPatterns:
    """Any of several patterns (OR)."""

    def __init__(self, patterns: Iterable[str], ignore_case: bool = False) -> None:
        self.patterns = tuple(parse_pattern(p, ignore_case) for p in patterns)
        self.ignore_case = ignore_case

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def match(self, path: bytes | str) -> bool:
        s = path.decode("utf-8", "surrogateescape") if isinstance(path, bytes) else path
        return any(p.regex.search(s) for p in self.patterns)

    def start_dirs(self) -> list[bytes] | None:
        """Directories a walk can start from and still see every match (the fewest, none
        below another), or None when some pattern can match anywhere."""
        if self.ignore_case:
            return None  # trie keys hash the exact bytes
        dirs = []
        for p in self.patterns:
            d = p.literal_dir
            if d is None:
                return None
            dirs.append(d.encode("utf-8", "surrogateescape"))
        dirs.sort()
        out: list[bytes] = []
        for d in dirs:
            if not any(d == o or d.startswith(o.rstrip(b"/") + b"/") for o in out):
                out.append(d)
        return out
