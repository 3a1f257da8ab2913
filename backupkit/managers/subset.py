"""``--read-data-subset``: which packs a partial ``check --read-data`` reads."""

from __future__ import annotations

import random
import re

from backupkit.errors import BadArgument
from backupkit.repo.index import PackInfo
from backupkit.units import is_size, parse_size


def parse_subset(spec: str) -> tuple[str, float, int]:
    """``"n/t"`` -> ("group", n, t); ``"x%"`` -> ("percent", x, 0); ``"50M"`` -> ("size", bytes, 0)."""
    s = spec.strip()
    m = re.fullmatch(r"(\d+)/(\d+)", s)
    if m:
        n, t = int(m.group(1)), int(m.group(2))
        if t < 1 or not 1 <= n <= t:
            raise BadArgument(f"invalid --read-data-subset {spec!r}: need 1 <= n <= t")
        return "group", n, t
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*%", s)
    if m:
        x = float(m.group(1))
        if not 0 < x <= 100:
            raise BadArgument(f"invalid --read-data-subset {spec!r}: the percentage must be in (0, 100]")
        return "percent", x, 0
    if is_size(s):
        size = parse_size(s, "--read-data-subset")
        if size <= 0:
            raise BadArgument(f"invalid --read-data-subset {spec!r}: the size must be more than 0")
        return "size", size, 0
    raise BadArgument(f"invalid --read-data-subset {spec!r}: use n/t (e.g. 1/5), x% (e.g. 10%) or a size (e.g. 50M)")


def select_packs(packs: list[PackInfo], spec: str | None, seed: int | None = None) -> list[PackInfo]:
    """The packs ``--read-data-subset`` selects (all when ``spec`` is None).

    ``n/t`` splits packs into t groups by their id, so running 1/t .. t/t on t days
    reads every pack once; ``x%`` picks that share at random (at least one pack); a
    size picks random packs while their total stays within it (at least one pack).
    """
    if spec is None:
        return list(packs)
    how, a, t = parse_subset(spec)
    if how == "group":
        return [p for p in packs if int.from_bytes(p.id[:4], "big") % t == int(a) - 1]
    ordered = sorted(packs, key=lambda p: p.id)
    rnd = random.Random(seed) if seed is not None else random.SystemRandom()
    if how == "size":
        rnd.shuffle(ordered)
        chosen, total = [], 0
        for p in ordered:
            if chosen and total + p.size > a:
                continue
            chosen.append(p)
            total += p.size
        return chosen
    k = min(len(packs), max(1, round(len(packs) * a / 100))) if packs else 0
    return rnd.sample(ordered, k)
