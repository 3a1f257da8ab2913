"""Small formatting and parsing helpers for the CLI."""

from __future__ import annotations

from datetime import datetime, timezone


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


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


__all__ = ["human_bytes", "parse_time", "local_time", "mode_string", "timezone"]
