"""The backup's trie changes, kept out of memory until the trie is updated.

A backup makes one change (key, path, encoded entry or None) per new or changed path:
at a million files, as Python tuples, several hundred MiB. ``ChangeLog`` packs each
change into a record and keeps the records in sixteen groups by the first nibble of the
key (the trie's root routes on it), each a buffer that spills to an unlinked temporary
file (``tempfile``, so ``TMPDIR``) past ``spill_at`` bytes. ``Hamt.update_by_slot`` then
reads the groups back one at a time: the update holds a sixteenth of the changes.

Record: key (16 bytes), path length and value length (u32 each; ``NONE`` for a
deletion), then the path and the value.
"""

from __future__ import annotations

import struct
import tempfile
from typing import IO

from backupkit.hamt import KEY_LEN, Change

_HEAD = struct.Struct(f"<{KEY_LEN}sII")
NONE = 0xFFFFFFFF


class ChangeLog:
    """Changes appended from one thread (the walk), read back by slot; ``close()`` ends it."""

    def __init__(self, spill_at: int = 1 << 20) -> None:
        self._spill_at = spill_at
        self._bufs = [bytearray() for _ in range(16)]
        self._files: list[IO[bytes] | None] = [None] * 16
        #: changes added so far
        self.count = 0

    def add(self, key: bytes, path: bytes, value: bytes | None) -> None:
        s = key[0] >> 4
        buf = self._bufs[s]
        if value is None:
            buf += _HEAD.pack(key, len(path), NONE)
            buf += path
        else:
            buf += _HEAD.pack(key, len(path), len(value))
            buf += path
            buf += value
        self.count += 1
        if len(buf) >= self._spill_at:
            f = self._files[s]
            if f is None:
                f = self._files[s] = tempfile.TemporaryFile(prefix="bk-backup-changes-")
            f.write(buf)
            self._bufs[s] = bytearray()

    def slot(self, s: int) -> list[Change]:
        """The changes of slot ``s`` in the order added (its buffer and file are freed)."""
        f = self._files[s]
        data = self._bufs[s]
        if f is not None:
            f.write(data)
            f.seek(0)
            data = f.read()
            f.close()
            self._files[s] = None
        self._bufs[s] = bytearray()
        out: list[Change] = []
        pos, end = 0, len(data)
        unpack = _HEAD.unpack_from
        size = _HEAD.size
        while pos < end:
            key, plen, vlen = unpack(data, pos)
            pos += size
            path = bytes(data[pos : pos + plen])
            pos += plen
            if vlen == NONE:
                out.append((key, path, None))
            else:
                out.append((key, path, bytes(data[pos : pos + vlen])))
                pos += vlen
        return out

    def close(self) -> None:
        for f in self._files:
            if f is not None:
                f.close()
        self._files = [None] * 16
        self._bufs = [bytearray() for _ in range(16)]


__all__ = ["ChangeLog"]
