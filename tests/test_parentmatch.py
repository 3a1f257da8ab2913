"""backupkit._parentmatch: the C check that a file is unchanged since the parent snapshot.

It may only say "unchanged" (give the content list) where the Python path (``wire``,
``inline_content``, ``file_unchanged``) says so too, with the same list; where it says
None, Python decides. These tests hold it to that on real entries, on every field
changed one at a time, on encodings Python's writer never makes, and on random damage."""

from __future__ import annotations

import os
import random
import struct

import msgpack
import pytest

from backupkit.managers.backup_parent import _owner, content_matcher, file_unchanged, inline_content, wire
from backupkit.objects.entry import entry_from_stat

Matcher = pytest.importorskip("backupkit._parentmatch").Matcher

BLOB = bytes(range(32))


def py_verdict(raw: bytes, st: os.stat_result):
    """What the Python path decides: the content list (unchanged), None, or "unreadable"."""
    try:
        m = wire(b"/x", raw)
    except Exception:  # noqa: BLE001 - _ParentUnreadable: the parent's entry is damaged
        return "unreadable"
    c = inline_content(m)
    return c if c is not None and file_unchanged(m, st) else None


def agree(match, raw: bytes, st: os.stat_result) -> object:
    """C's verdict, checked against Python's: a match is Python's match."""
    got = match(raw, st)
    if got is not None:
        want = py_verdict(raw, st)
        assert want == got and type(want) is list, (raw, got, want)
    return got


@pytest.fixture
def file_st(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"x" * 1234)
    return os.lstat(p)


def encoded(st: os.stat_result, **changes) -> bytes:
    m = entry_from_stat(st, content=[BLOB, 7, BLOB[::-1]]).to_wire()
    for k, v in changes.items():
        if v is None:
            m.pop(k, None)
        else:
            m[k] = v
    return msgpack.packb(m)


def pack_pairs(pairs: list[tuple[object, object]]) -> bytes:
    """A msgpack map from (key, value) pairs as given (repeats and order kept)."""
    out = bytearray(b"\xde" + struct.pack(">H", len(pairs)))
    for k, v in pairs:
        out += msgpack.packb(k) + msgpack.packb(v)
    return bytes(out)


def test_an_unchanged_file_matches_with_its_content_list(file_st):
    match = content_matcher()
    assert match is not None
    raw = encoded(file_st)
    assert agree(match, raw, file_st) == [BLOB, 7, BLOB[::-1]]
    # the keys in another order and map16 / wider integer encodings: same values, same verdict
    m = msgpack.unpackb(raw)
    pairs = sorted(m.items(), reverse=True)
    assert agree(match, pack_pairs(pairs), file_st) == [BLOB, 7, BLOB[::-1]]
    wide = bytearray(b"\x8d")
    for k, v in m.items():
        wide += msgpack.packb(k)
        wide += (b"\xd3" + struct.pack(">q", v)) if type(v) is int else msgpack.packb(v)
    assert agree(match, bytes(wide), file_st) == [BLOB, 7, BLOB[::-1]]


@pytest.mark.parametrize("key", ["mt", "ct", "i", "s", "m", "dv", "n", "u", "g"])
def test_each_number_that_differs_is_no_match(file_st, key):
    match = content_matcher()
    m = msgpack.unpackb(encoded(file_st))
    for v in (m[key] + 1, m[key] - 1, -1, 1 << 63, (1 << 64) - 1, float(m[key]), str(m[key]), None):
        raw = encoded(file_st, **{key: v})
        if v is None:
            assert match(raw, file_st) is None  # a key missing
        else:
            assert agree(match, raw, file_st) is None or v == m[key]


@pytest.mark.parametrize("key,value", [
    ("t", "d"), ("t", b"f"), ("t", "ff"), ("un", "someone-else"), ("gn", "others"), ("un", b"root"),
    ("c", "not a list"), ("c", [BLOB, -1]), ("c", [BLOB, "str"]), ("c", [[BLOB]]), ("c", None),
])
def test_other_values_are_no_match(file_st, key, value):
    match = content_matcher()
    assert agree(match, encoded(file_st, **{key: value}), file_st) is None


@pytest.mark.parametrize("extra", [{"x": {"user.a": b"1"}}, {"l": b"target"}, {"cb": [BLOB]}, {"rd": 5}, {"zz": 1}])
def test_a_key_beyond_a_plain_files_is_left_to_python(file_st, extra):
    match = content_matcher()
    m = msgpack.unpackb(encoded(file_st))
    m.update(extra)
    assert match(msgpack.packb(m), file_st) is None


def test_repeats_trailing_bytes_and_truncation_are_no_match(file_st):
    match = content_matcher()
    raw = encoded(file_st)
    m = msgpack.unpackb(raw)
    pairs = list(m.items())
    assert match(pack_pairs(pairs + [("s", m["s"])]), file_st) is None  # 14 keys, one twice
    assert match(pack_pairs(pairs[:-1] + [pairs[0]]), file_st) is None  # 13 keys, one twice
    assert py_verdict(raw + b"\x00", file_st) == "unreadable"
    assert match(raw + b"\x00", file_st) is None
    for n in range(len(raw)):
        assert match(raw[:n], file_st) is None


def test_random_damage_never_makes_a_match_python_would_not(file_st):
    match = content_matcher()
    rnd = random.Random(1234)
    base = encoded(file_st)
    matches = 0
    for _ in range(4000):
        raw = bytearray(base)
        for _ in range(rnd.randint(1, 3)):
            op = rnd.random()
            i = rnd.randrange(len(raw))
            if op < 0.6:
                raw[i] = rnd.randrange(256)
            elif op < 0.8:
                del raw[i]
            else:
                raw.insert(i, rnd.randrange(256))
        if agree(match, bytes(raw), file_st) is not None:
            matches += 1
    # damage inside a blob id still matches (the index check then refuses the id)
    assert matches > 0


def test_the_owner_names_are_asked_once_per_owner_in_a_row(file_st):
    calls = []

    def owner(uid, gid):
        calls.append((uid, gid))
        return _owner(uid, gid)

    match = Matcher(owner)
    raw = encoded(file_st)
    for _ in range(5):
        assert match(raw, file_st) is not None
    assert calls == [(file_st.st_uid, file_st.st_gid)]
    renamed = Matcher(lambda uid, gid: (uid, gid, "not-the-name", "nor-this"))
    assert renamed(raw, file_st) is None


def test_only_an_os_stat_result_is_taken(file_st):
    match = content_matcher()
    with pytest.raises(TypeError):
        match(encoded(file_st), tuple(file_st))


def test_a_directorys_files_matched_at_once_are_the_ones_matched_one_by_one(tmp_path):
    """``Matcher.directory``: every regular file of a listing against the parent's
    entries at once, from the lstat in C memory; each verdict is the one ``Matcher()``
    gives that file with its os.lstat (and so Python's), the matched names leave
    ``olds``, and every other entry is left for the walk by its place."""
    from backupkit import _dirscan, dirscan
    from tests.test_dirscan import odd_tree

    root = tmp_path / "t"
    odd_tree(root)
    for i in range(40):
        (root / f"g{i:02}").write_bytes(b"y" * i)
    os.utime(root / "g01", ns=(0, -1_500_000_000))  # before 1970
    rnd = random.Random(5)
    listing = _dirscan.read(os.fsencode(root))
    names = _dirscan.names(listing)
    olds: dict = {}
    for name in names:
        st = os.lstat(os.fsencode(root) + b"/" + name)
        how = rnd.randrange(8)
        if how == 0:
            continue  # the parent did not have it
        elif how == 1:
            olds[name] = encoded(st, mt=st.st_mtime_ns + 1)
        elif how == 2:
            olds[name] = encoded(st, un="someone else")
        elif how == 3:
            olds[name] = "not bytes"
        else:
            olds[name] = encoded(st)  # unchanged (when it is a regular file)
    before = dict(olds)
    match = content_matcher()
    pre = os.fsencode(root) + b"/"
    matched, rest, nxt = match.directory(listing, olds, pre)
    assert nxt is None
    one_by_one = {}
    for i, name in enumerate(names):
        st = os.lstat(pre + name)
        raw = before.get(name)
        one_by_one[i] = agree(match, raw, st) if type(raw) is bytes else None
    want = {i for i, c in one_by_one.items() if c is not None}
    assert {m[4] for m in matched} == want and len(want) > 10
    assert sorted(rest) == rest and set(rest) == set(range(len(names))) - want
    for path, size, content, raw, i in matched:
        assert path == pre + names[i] and size == os.lstat(path).st_size
        assert content == one_by_one[i] and raw is before[names[i]] and names[i] not in olds
    assert set(olds) == set(before) - {names[i] for i in want}
    # what the walk's loop gets: the other entries, names and lstats as os.lstat gives them
    got_names, got_stats = dirscan.entries(listing, rest)
    got_stats = list(got_stats)
    assert got_names == [names[i] for i in rest]
    for name, st in zip(got_names, got_stats):
        assert st == os.lstat(pre + name)
    # nothing in olds: nothing matched, everything left to the loop
    assert match.directory(listing, {}, pre) == ([], list(range(len(names))), None)
    # a window at a time: the same files and places, in order
    olds = dict(before)
    windows, places, at = [], [], 0
    while at is not None:
        got, more, at = match.directory(listing, olds, pre, at, 3)
        assert len(got) <= 3
        windows += got
        places += more
    assert [m[4] for m in windows] == [m[4] for m in matched] and places == rest


def test_matching_a_directory_leaks_no_references(tmp_path):
    """``Matcher.directory`` holds each parent entry while it asks for the owner's names
    and hands it to its result: after the results are dropped, every entry has the
    references it had (matched, not matched, and left alone)."""
    import sys

    from backupkit import _dirscan

    for i in range(20):
        (tmp_path / f"f{i}").write_bytes(b"z" * i)
    listing = _dirscan.read(os.fsencode(tmp_path))
    pre = os.fsencode(tmp_path) + b"/"
    raws = {}
    for i, name in enumerate(_dirscan.names(listing)):
        st = os.lstat(pre + name)
        raws[name] = encoded(st) if i % 3 else encoded(st, s=st.st_size + 1)
    before = {n: sys.getrefcount(r) for n, r in raws.items()}
    match = content_matcher()
    for _ in range(200):
        got, rest, _nxt = match.directory(listing, dict(raws), pre)
    assert len(got) == 13 and len(rest) == 7
    del got, rest
    assert {n: sys.getrefcount(r) for n, r in raws.items()} == before


def test_entry_blobs_accepts_only_entries_entry_decode_accepts(tmp_path):
    """``entry_blobs`` (reachability's check of an entry in C) gives an entry's two blob
    lists only where ``Entry.decode`` accepts it and has those lists; every other entry
    is None, for Python to decide. Real entries of every type, each field changed to a
    value of another kind or range, keys added, removed or repeated, and random damage."""
    from backupkit._parentmatch import entry_blobs
    from backupkit.errors import FormatError
    from backupkit.objects.entry import Entry
    from tests.test_dirscan import odd_tree

    def python(raw: bytes):
        try:
            e = Entry.decode(raw, b"/x")
        except FormatError:
            return "refused"
        return (list(e.content) if e.content is not None else None,
                list(e.content_blobs) if e.content_blobs is not None else None)

    def check(raw: bytes) -> bool:
        got = entry_blobs(raw)
        if got is not None:
            assert python(raw) == got, raw
        return got is not None

    odd_tree(tmp_path / "t")
    maps = []
    for d, ds, fs in os.walk(tmp_path / "t"):
        for n in ds + fs:
            st = os.lstat(os.path.join(d, n))
            m = entry_from_stat(st).to_wire()
            if m["t"] == "f":
                m["c"] = [BLOB, 5, BLOB[::-1]]
            if m["t"] == "l":
                m["l"] = b"target"
            maps.append(m)
    long_list = next(dict(m) for m in maps if m["t"] == "f")  # a file whose list is in a content blob
    long_list.pop("c")
    long_list["cb"] = [BLOB]
    maps.append(long_list)
    accepted = 0
    for m in maps:
        assert check(msgpack.packb(m)) or m.get("x") or not str(m.get("un", "")).isascii()
        accepted += 1
    bad_values = [None, True, -1, -(1 << 63), 1 << 63, (1 << 64) - 1, "s", b"b", [BLOB], [1 << 63], [b"short"], {b"k": b"v"}, 1.5, "ü"]
    rnd = random.Random(8)
    made = taken = 0
    for m in maps:
        for key in list(m) + ["rd", "l", "x", "c", "cb", "zz"]:
            for v in bad_values:
                mm = dict(m)
                mm[key] = v
                made += 1
                taken += check(msgpack.packb(mm))
            mm = dict(m)
            mm.pop(key, None)
            taken += check(msgpack.packb(mm))
        raw = msgpack.packb(m)
        taken += check(raw + b"\x00") is True  # trailing data: never taken
        first = next(iter(m))
        taken += check(pack_pairs([(first, m[first])] + list(m.items())))  # a key twice
        for _ in range(150):
            b = bytearray(raw)
            for _j in range(rnd.randrange(1, 3)):
                b[rnd.randrange(len(b))] = rnd.randrange(256)
            taken += check(bytes(b))
    assert made > 1000 and taken > 100  # some changed values are still valid, and taken


def test_entry_blobs_holds_each_numbers_range_as_entry_does(file_st):
    """Each integer field at and just past the bounds ``objects/entry.py`` gives it
    (``_FIELDS``): the C table must take no value Python refuses, so a bound changed in
    Python and not in C fails here."""
    from backupkit._parentmatch import entry_blobs
    from backupkit.errors import FormatError
    from backupkit.objects import entry as entry_mod

    base = entry_from_stat(file_st, content=[BLOB]).to_wire()
    tried = 0
    for key, (_attr, kind, lo, hi) in entry_mod._FIELDS.items():
        if kind is not int:
            continue
        for v in (lo - 1, lo, hi - 1, hi):
            if not -(1 << 63) <= v < (1 << 64):
                continue  # msgpack cannot hold it
            raw = msgpack.packb({**base, key: v})
            try:
                e = entry_mod.Entry.decode(raw, b"/x")
                want = (list(e.content), None)
            except FormatError:
                want = None
            assert entry_blobs(raw) == want, (key, v)
            tried += 1
    assert tried >= 34  # every int field, its bounds msgpack can hold
