"""Entry: the typed entry encodes to exactly the bytes of the wire format and refuses
malformed entries with a FormatError that names the path."""

from __future__ import annotations

import os

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backupkit.errors import FormatError
from backupkit.objects.entry import TYPE_NAMES, Entry, entry_from_stat

u64 = st.integers(0, 2**64 - 1)
blob_id = st.binary(min_size=32, max_size=32)
WIRE = {
    "m": st.integers(0, 0o7777),
    "u": st.integers(0, 2**32 - 1),
    "g": st.integers(0, 2**32 - 1),
    "un": st.text(max_size=8),
    "gn": st.text(max_size=8),
    "s": st.integers(0, 2**63 - 1),
    "mt": st.integers(-(2**63), 2**63 - 1),
    "ct": st.integers(-(2**63), 2**63 - 1),
    "i": u64,
    "dv": u64,
    "n": u64,
    "rd": u64,
    "l": st.binary(max_size=20),
    "x": st.dictionaries(st.binary(max_size=8), st.binary(max_size=8), max_size=3),
    "c": st.lists(st.one_of(blob_id, st.integers(0, 2**63 - 1)), max_size=5),
    "cb": st.lists(blob_id, max_size=3),
}


@st.composite
def wire_entries(draw) -> bytes:
    keys = draw(st.sets(st.sampled_from(sorted(WIRE))))
    m = {"t": draw(st.sampled_from(sorted(TYPE_NAMES)))}
    keys |= {"f": {"s"}, "l": {"l"}, "c": {"rd"}, "b": {"rd"}}.get(m["t"], set())
    if {"c", "cb"} <= keys:
        keys.discard(draw(st.sampled_from(["c", "cb"])))
    for k in keys:
        m[k] = draw(WIRE[k])
    return msgpack.packb({k: m[k] for k in sorted(m)})


@settings(max_examples=300, deadline=None)
@given(wire_entries())
def test_encode_of_decode_is_the_wire_bytes(raw):
    e = Entry.decode(raw, b"/p")
    assert e.encode() == raw
    assert Entry.decode(e.encode()) == e


def test_entry_from_stat_round_trips(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"x")
    e = entry_from_stat(os.lstat(p))
    assert e.type == "f" and e.size == 1 and e.content is None
    assert Entry.decode(e.encode()) == e
    wire = msgpack.unpackb(e.encode())
    assert list(wire) == sorted(wire) and "c" not in wire and "rd" not in wire


def test_absent_fields_stay_absent():
    raw = msgpack.packb({"m": 0o644, "t": "d"})
    e = Entry.decode(raw)
    assert (e.type, e.mode, e.uid, e.content) == ("d", 0o644, None, None)
    assert e.encode() == raw


BAD = [
    ({"t": "q"}, "'t'"),
    ({"m": 0o644}, "no type"),
    ({"t": "f", "m": 0o7777 + 1}, "'m'"),
    ({"t": "f", "m": 2**63}, "'m'"),
    ({"t": "f", "m": "rw"}, "'m'"),
    ({"t": "f", "m": True}, "'m'"),
    ({"t": "f", "s": -1}, "'s'"),
    ({"t": "f", "u": 2**40}, "'u'"),
    ({"t": "f", "un": b"root"}, "'un'"),
    ({"t": "f", "c": ["not a blob id"]}, "'c'"),
    ({"t": "f", "c": [b"short"]}, "'c'"),
    ({"t": "f", "c": [-5]}, "'c'"),
    ({"t": "f", "c": {"a": 1}}, "'c'"),
    ({"t": "f", "cb": [7]}, "'cb'"),
    ({"t": "f", "cb": ["ab" * 16]}, "'cb'"),
    ({"t": "l", "l": "target as str"}, "'l'"),
    ({"t": "f", "x": {"name": b"v"}}, "'x'"),
    ({"t": "f", "x": [1, 2]}, "'x'"),
    ({"t": "f", "s": 1, "zz": 1}, "unknown field"),
    ({"t": "l", "m": 0o777}, "without field 'l'"),
    ({"t": "f", "m": 0o644}, "without field 's'"),
    ({"t": "c", "m": 0o644}, "without field 'rd'"),
    ({"t": "f", "s": 0, "c": [], "cb": []}, "both 'c' and 'cb'"),
    ({"t": "f", "s": 1, "n": "2"}, "'n'"),
]


@pytest.mark.parametrize("wire,what", BAD)
def test_malformed_entries_are_format_errors_naming_the_path(wire, what):
    with pytest.raises(FormatError) as ei:
        Entry.decode(msgpack.packb(wire), b"/home/u/\xffbad")
    msg = str(ei.value)
    assert msg.startswith("/home/u/\\xffbad: malformed file entry") and what in msg


@pytest.mark.parametrize("raw", [b"", b"\xc1", msgpack.packb([1, 2]), msgpack.packb("t"), msgpack.packb({1: 2})])
def test_garbage_is_a_format_error(raw):
    with pytest.raises(FormatError, match="/x: malformed file entry"):
        Entry.decode(raw, b"/x")


def test_every_entry_of_the_format_fixture_reencodes_to_its_bytes(tmp_path):
    """The golden: every stored entry of the v1 fixture decodes and encodes back to the
    same bytes (so unchanged subtrees keep their ids)."""
    import json
    import shutil

    from backupkit.repo.repository import Repository
    from backupkit.snapshot import list_snapshots
    from backupkit.store.local import LocalObjectStore
    from backupkit.tree import SnapshotTree

    fixture = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "format_v1")
    with open(os.path.join(fixture, "manifest.json")) as f:
        password = json.load(f)["password"].encode()
    shutil.copytree(os.path.join(fixture, "repo"), tmp_path / "repo")
    repo = Repository.open(LocalObjectStore(str(tmp_path / "repo"), fsync=False), password, cache_root=False)
    n = 0
    for snap in list_snapshots(repo):
        tree = SnapshotTree(repo, snap.root)
        for _k, path, raw in tree.hamt.items(tree.root):
            assert Entry.decode(raw, path).encode() == bytes(raw), path
            n += 1
    repo.close()
    assert n > 30
