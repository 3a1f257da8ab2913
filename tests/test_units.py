"""backupkit.units.parse_size: the one size parser (binary units, as restic)."""

from __future__ import annotations

import pytest

from backupkit.errors import BadArgument
from backupkit.managers.check import parse_subset
from backupkit.managers.prune import MaxUnused, parse_max_unused
from backupkit.units import parse_size

KiB, MiB, GiB = 1024, 1024**2, 1024**3


@pytest.mark.parametrize(
    "text, n",
    [
        ("4096", 4096), ("0", 0), ("3b", 3), ("3B", 3), ("1k", KiB), ("1K", KiB), ("50M", 50 * MiB),
        ("50m", 50 * MiB), ("50MB", 50 * MiB), ("50MiB", 50 * MiB), ("2G", 2 * GiB), ("1.5GiB", GiB + GiB // 2),
        ("10 MiB", 10 * MiB), (" 7t ", 7 * 1024**4), ("0.5k", 512), (".5K", 512), ("1.", 1), ("1p", 1024**5),
    ],
)
def test_sizes(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["", "M", "-5", "5X", "1.2.3", "5 M B", "1e3", "0x10", "five", "5kk"])
def test_malformed_sizes(text):
    with pytest.raises(BadArgument, match="--opt"):
        parse_size(text, "--opt")


def test_every_size_option_uses_it():
    assert parse_max_unused("1.5M") == MaxUnused(percent=None, bytes=MiB + MiB // 2)
    assert parse_subset("50M") == ("size", 50 * MiB, 0)
    with pytest.raises(BadArgument, match="--read-data-subset"):
        parse_subset("0")
