"""PackBuilder.finish: every blob where its entry says, the header readable, Padmé size."""

from __future__ import annotations

import os

from backupkit.crypto import T_DATA_BLOB, MasterKeys, Sealer, padme
from backupkit.repo.pack import KIND_DATA, PackBuilder, read_pack_header


def test_finish_places_every_blob_at_its_entry_and_empties_the_builder():
    sealer = Sealer(MasterKeys.generate())
    b = PackBuilder(KIND_DATA)
    # sizes around the 1 MiB where bytes.join stops holding the GIL; one memoryview
    # (prune's repack hands over slices of a downloaded pack)
    blobs = {os.urandom(32): os.urandom(n) for n in (1, 100, 70_000, (1 << 20) - 1, 3 << 20)}
    view_id = os.urandom(32)
    view_src = os.urandom(5000)
    for blob_id, data in blobs.items():
        b.add(T_DATA_BLOB, blob_id, data, len(data) + 7)
    b.add(T_DATA_BLOB, view_id, memoryview(view_src)[1000:3000], 2000)
    blobs[view_id] = view_src[1000:3000]

    pack_id, data, entries = b.finish(sealer)

    assert len(b) == 0 and b.size == 0
    assert {e.blob_id for e in entries} == set(blobs)
    for e in entries:
        assert bytes(data[e.offset : e.offset + e.length]) == blobs[e.blob_id]
    assert {(e.blob_id, e.offset, e.length, e.raw_length) for e in read_pack_header(sealer, pack_id, data, len(data))} == {
        (e.blob_id, e.offset, e.length, e.raw_length) for e in entries
    }
    # blobs are packed back to back from offset 0, then padding to a Padmé size
    assert sorted(e.offset for e in entries)[0] == 0
    assert len(data) == padme(len(data))
    assert len(data) >= sum(len(v) for v in blobs.values())
