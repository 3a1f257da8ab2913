"""Small formatting and parsing helpers for the CLI."""

from __future__ import annotations

from datetime import datetime, timezone


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


#: Characters that are printed escaped: C0 and C1 controls and DEL (they move the cursor,
#: retitle or clear a terminal), and the bidirectional overrides (they reorder what
#: follows on the line, hiding what a name really says).
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def display_name(name: str | bytes) -> str:
    """A file name, path or location as it may be printed to a terminal.

    Undecodable bytes become ``\\xNN``; control characters become ``\\n``, ``\\t``,
    ``\\r`` or ``\\xNN`` / ``\\uNNNN`` (as ``ls -b`` and restic do); everything else,
    backslashes included, prints as it is. Rich markup and emoji codes are never
    interpreted by the console (``Console`` turns both off), so ``[bold]`` and ``:smile:``
    need no escaping here.
    """
    if isinstance(name, bytes):
        name = name.decode("utf-8", "backslashreplace")
    if name.isprintable():
        return name
    out = []
    for ch in name:
        o = ord(ch)
        if ch in _NAMED:
            out.append(_NAMED[ch])
        elif o < 0x20 or 0x7F <= o < 0xA0:
            out.append(f"\\x{o:02x}")
        elif 0xDC80 <= o <= 0xDCFF:  # a surrogate-escaped undecodable byte
            out.append(f"\\x{o - 0xDC00:02x}")
        elif ch in _BIDI or o in (0x2028, 0x2029):
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)


def count(n: int, word: str, plural: str | None = None) -> str:
    """``1 snapshot``, ``2 snapshots``, ``0 snapshots`` (``plural`` for irregular words)."""
    return f"{n} {word if n == 1 else plural or word + 's'}"


def parse_time(s: str) -> datetime:
    from backupkit.errors import BadArgument

    try:
        t = datetime.fromisoformat(s)
    except ValueError:
        raise BadArgument(f"invalid time {s!r}: use ISO 8601, e.g. 2026-01-31T23:00:00") from None
    if t.tzinfo is None:
        t = t.astimezone()
    return t


def local_time(t: datetime) -> str:
    return t.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def mode_string(type_: str, mode: int) -> str:
    c = {"dir": "d", "symlink": "l", "fifo": "p", "socket": "s", "chardev": "c", "blockdev": "b"}.get(type_, "-")
    bits = ""
    for who in (6, 3, 0):
        m = (mode >> who) & 7
        bits += ("r" if m & 4 else "-") + ("w" if m & 2 else "-") + ("x" if m & 1 else "-")
    return c + bits


__all__ = ["count", "human_bytes", "parse_time", "local_time", "mode_string", "timezone"]
