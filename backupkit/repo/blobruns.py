"""Runs: blobs of one pack that lie close together, to be read with one range request.

The grouping prune's repack (``managers/prune_repack.py``), the restore's pack plan
(``objects/packplan.py``) and check's range reads (``packverify.pack_spans``) share. A
module of its own, importing nothing of the repository, so that ``packverify`` (which
the repository imports) can use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from operator import itemgetter
from typing import TypeVar

R = TypeVar("R", bound=tuple)


def runs(blobs: Iterable[R], gap: int, span: int) -> Iterator[tuple[int, int, list[R]]]:
    """(start, end, members) of each run of ``blobs`` (tuples whose first two items are
    offset and length in one pack; sorted by offset here): each within ``gap`` bytes of
    the previous, the run spanning at most ``span`` (a single larger blob is a run alone).
    Prune's repack and the restore's pack plan read a run with one range request."""
    run: list[R] = []
    start = end = 0
    for b in sorted(blobs, key=itemgetter(0)):
        off, length = b[0], b[1]
        if run and off - end <= gap and off + length - start <= span:
            run.append(b)
            end = max(end, off + length)
            continue
        if run:
            yield start, end, run
        run, start, end = [b], off, off + length
    if run:
        yield start, end, run
