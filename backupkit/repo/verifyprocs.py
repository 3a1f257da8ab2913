"""Verifying processes for ``check --read-data``: ``packverify.verify_pack`` on other cores.

Why processes: a pack of small blobs costs a Python loop per blob (open the envelope,
decompress, re-hash), and much of it holds the GIL (the per-object key, the AEAD's
setup, the call overhead): ``check --read-data`` of `/usr` used 1.5 cores of two on
threads alone. A verifying process (role ``verify`` of ``procmain``, ``procs.py``) gets
the pack's bytes as a frame's raw part and the index's entries for it, runs
``verify_pack`` under its own GIL, and answers only the problems found. The check gives
a pack to a process that is idle and verifies it on its own thread otherwise, so both
cores work with one process on two cores. A process that breaks leaves its packs, and
those after them, to the check's threads.
"""

from __future__ import annotations

from concurrent.futures import Future

from backupkit.crypto import MasterKeys
from backupkit.procs import BrokenWorker, WorkerPool
from backupkit.repo.packverify import PackEntries


class VerifyProcesses:
    """``n`` verifying processes for one check."""

    def __init__(self, n: int, keys: MasterKeys) -> None:
        self._pool = WorkerPool("verify", n, [keys.enc_key, keys.id_key, keys.chunker_key])

    @property
    def pids(self) -> list[int]:
        return self._pool.pids

    def submit(
        self, pack_id: bytes, kind: str, size: int, data: bytes, entries: PackEntries, idle_only: bool = False
    ) -> Future | None:
        """``verify_pack`` of this pack handed to the least busy process (once this
        returns, the process has ``data``: the caller may drop it); ``idle_only``: None
        unless a process has nothing to do. BrokenWorker when no process is left."""
        rows = [[bid, off, ln, raw] for bid, (off, ln, raw) in entries.items()]
        return self._pool.submit([pack_id, kind, size, rows], data, idle_only)

    @staticmethod
    def answer(fut: Future, entries: PackEntries) -> tuple[str | None, dict[bytes, str]]:
        """The (header problem, {blob id: problem}) of a submitted pack, once the process
        answers. BrokenWorker if it broke or answered nonsense."""
        got = fut.result()
        try:
            header_problem, bad_rows = got
            bad = {bid: msg for bid, msg in bad_rows}
            if not (header_problem is None or type(header_problem) is str) or not all(
                bid in entries and type(msg) is str for bid, msg in bad.items()
            ):
                raise ValueError
        except (ValueError, TypeError):
            raise BrokenWorker("a verifying process answered nonsense") from None
        return header_problem, bad

    def verify_pack(
        self, pack_id: bytes, kind: str, size: int, data: bytes, entries: PackEntries
    ) -> tuple[str | None, dict[bytes, str]]:
        """``verify_pack`` done by the least busy process (the calling thread waits)."""
        fut = self.submit(pack_id, kind, size, data, entries)
        assert fut is not None
        return self.answer(fut, entries)

    def close(self, cancel: bool = False) -> None:
        self._pool.close(cancel)


__all__ = ["VerifyProcesses"]
