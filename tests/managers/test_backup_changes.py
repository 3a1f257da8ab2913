"""ChangeLog: the backup's trie changes, packed, grouped by the key's first nibble and
spilled to temporary files, read back unchanged and in the order added."""

import os
import random

from backupkit.managers.backup_changes import ChangeLog


def _changes(n, seed=3):
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        key = rnd.randbytes(16)
        path = b"/d%d/" % rnd.randrange(50) + os.urandom(rnd.randrange(0, 40))
        value = None if rnd.random() < 0.2 else rnd.randbytes(rnd.randrange(0, 300))
        out.append((key, path, value))
    return out


def test_slots_give_back_every_change_in_order_after_spilling():
    changes = _changes(5000)
    log = ChangeLog(spill_at=512)  # every group spills many times
    for c in changes:
        log.add(*c)
    assert log.count == len(changes)
    got = []
    for s in range(16):
        group = log.slot(s)
        assert all(k[0] >> 4 == s for k, _p, _v in group)
        assert group == [c for c in changes if c[0][0] >> 4 == s]  # order kept
        got += group
    assert sorted(got, key=repr) == sorted(changes, key=repr)
    log.close()


def test_without_spilling_and_empty_slots():
    log = ChangeLog()
    log.add(b"\x10" * 16, b"/a", b"")
    log.add(b"\x10" * 16, b"/a", None)  # a deletion after an empty value: both kept
    assert log.slot(1) == [(b"\x10" * 16, b"/a", b""), (b"\x10" * 16, b"/a", None)]
    assert log.slot(0) == [] and log.slot(1) == []  # read once
    log.close()
