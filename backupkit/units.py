"""The one parser for sizes a user types: ``50M``, ``2G``, ``1.5GiB``, ``4096``.

Every unit is binary, as in restic (``k`` = 1024): ``b``/``B`` bytes; ``k``, ``m``,
``g``, ``t``, ``p`` with or without ``b``/``ib`` (``50M``, ``50MB``, ``50MiB`` are all
50 * 1024**2), any case, a space between number and unit allowed. A fraction is rounded
down to whole bytes. Anything else, and negative sizes, are BadArgument (exit 2).
"""

from __future__ import annotations

import re

from backupkit.errors import BadArgument

_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgtp])(?:i?b)?|b)?", re.IGNORECASE)


def parse_size(text: str, option: str = "size") -> int:
    """Bytes in ``text``; ``option`` names the option in the error message."""
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise BadArgument(f"invalid {option} {text!r}: use a size such as 4096, 50M, 2G or 1.5GiB")
    unit = (m.group(2) or "").lower()
    num = m.group(1)
    if "." in num:
        whole, _, frac = num.partition(".")
        scale = 1024 ** _POWERS[unit]
        return int(whole or "0") * scale + (int(frac) * scale // 10 ** len(frac) if frac else 0)
    return int(num) * 1024 ** _POWERS[unit]


def is_size(text: str) -> bool:
    """Whether ``text`` reads as a size (to tell ``50M`` from other forms of an option)."""
    return _SIZE.fullmatch(text.strip()) is not None


__all__ = ["is_size", "parse_size"]
