"""Fuzzing every decoder of repository objects with hypothesis: whatever the bytes, the
only exceptions allowed are the typed ones of ``backupkit.errors``.

Inputs mix random bytes, msgpack of random nested values, near-valid documents with
fields replaced, and mutations (flips, truncations, insertions) of valid encodings. Each
authenticated object is sealed with real keys, so the decoder behind the envelope runs.
The default suite runs FAST examples per decoder; ``-m slow`` runs SLOW more.
Run with ``--hypothesis-show-statistics`` to see the counts ("N passing, 0 failing, and M
invalid test cases" per decoder).
"""

from __future__ import annotations

import json
import os
import struct
import time

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backupkit.crypto import T_CATALOG, T_CONFIG, T_INDEX, T_LOCK, T_META_BLOB, T_PACK_HEADER, T_SNAPSHOT, MasterKeys, Sealer
from backupkit.objects.content import content_list
from backupkit.objects.entry import decode_entry
from backupkit.errors import BackupkitError, BlobNotFound
from backupkit.hamt import Hamt
from backupkit.repo.index_codec import decode_index
from backupkit.repo.keys import key_info, make_key_file, open_key_file
from backupkit.repo.pack import decode_payload, read_pack_header
from backupkit.repo.config import RepoConfig
from backupkit.catalog import load_catalog
from backupkit.snapshot import Snapshot, load_snapshot
from backupkit.store.base import ObjectInfo
from tests.support.kit import INSECURE_TEST_KDF, make_test_repo

FAST = 2000
#: ``-m slow``: this many cases per decoder (``BK_FUZZ_SLOW_EXAMPLES`` overrides it for a
#: run that must fit a time budget: generation costs ~10-50 ms a case).
SLOW = int(os.environ.get("BK_FUZZ_SLOW_EXAMPLES", "25000"))
KEYS = MasterKeys.generate()
SEALER = Sealer(KEYS)

# -- strategies ------------------------------------------------------------------------------
leaves = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=True)
    | st.binary(max_size=40) | st.text(max_size=12) | st.sampled_from([0, 1, -1, 2**32, b"\x00" * 32, b"\x00" * 16])
)
values = st.recursive(
    leaves,
    lambda ch: st.lists(ch, max_size=4) | st.dictionaries(st.text(max_size=4) | st.binary(max_size=4) | st.integers(0, 9), ch, max_size=4),
    max_leaves=10,
)
id32 = st.binary(min_size=32, max_size=32)
ints = st.integers(-(2**63), 2**64 - 1) | st.integers(-5, 5000)


def packed(strategy) -> st.SearchStrategy[bytes]:
    return strategy.map(lambda v: msgpack.packb(v, use_bin_type=True))


@st.composite
def mutated(draw, valid: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(valid))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=9))
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 8))]
    return bytes(data)


def inputs(structured: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Random bytes, msgpack of random values, near-valid documents, and their mutations."""
    return st.one_of(st.binary(max_size=200), packed(values), structured, mutated(structured))


def typed_only(fn, *args) -> None:
    """Call ``fn``; a BackupkitError is fine, any other exception fails the test."""
    try:
        fn(*args)
    except BackupkitError:
        pass


def fuzz(strategy, *, examples: int):
    """Decorator: a hypothesis test with ``examples`` cases, no deadline, no database."""
    def wrap(fn):
        return settings(
            max_examples=examples, deadline=None, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        )(given(strategy)(fn))
    return wrap


def both(strategy):
    """Make a default test (FAST examples) and a ``slow`` one (SLOW) of one body."""
    def make(body):
        def fast(data):
            body(data)

        def slow(data):
            body(data)

        return fuzz(strategy, examples=FAST)(fast), pytest.mark.slow(fuzz(strategy, examples=SLOW)(slow))
    return make


# -- envelope ----------------------------------------------------------------------------------
def _envelope(data: bytes) -> None:
    typed_only(SEALER.open, T_INDEX, b"\x01" * 32, data)


test_envelope, test_envelope_slow = both(
    inputs(st.binary(max_size=60).map(lambda b: SEALER.seal(T_INDEX, b"\x01" * 32, b)))
)(_envelope)


# -- payload -----------------------------------------------------------------------------------
def _zstd(b: bytes) -> bytes:
    import zstandard

    return b"\x01" + zstandard.ZstdCompressor().compress(b)


def _payload(data: bytes) -> None:
    typed_only(decode_payload, data, "x", 4096)


test_payload, test_payload_slow = both(inputs(st.binary(max_size=5000).map(_zstd)))(_payload)


# -- pack header ---------------------------------------------------------------------------------
header_rows = st.lists(
    st.one_of(st.tuples(st.sampled_from([2, 3, 9]), id32, ints, ints, ints).map(list), values), max_size=5
)


@st.composite
def header_plain(draw) -> bytes:
    body = msgpack.packb([draw(st.one_of(st.just(1), values)), draw(header_rows)])
    n = draw(st.one_of(st.just(len(body)), st.integers(0, 2**32 - 1)))
    return struct.pack("<I", n) + body + bytes(draw(st.integers(0, 64)))


PACK_ID = b"\x02" * 32


def sealed_tail(plain: bytes) -> bytes:
    hdr = SEALER.seal(T_PACK_HEADER, PACK_ID, plain)
    return b"\x00" * 10 + hdr + struct.pack("<I", len(hdr))


def _pack_header(data: bytes) -> None:
    typed_only(read_pack_header, SEALER, PACK_ID, data, len(data))
    # also with the plaintext sealed, so the decoder behind the envelope runs
    typed_only(read_pack_header, SEALER, PACK_ID, sealed_tail(data), len(data) + 200)


test_pack_header, test_pack_header_slow = both(inputs(header_plain()))(_pack_header)


# -- index -------------------------------------------------------------------------------------
blob_row = st.one_of(st.tuples(id32, ints, ints, ints).map(list), values)
pack_row = st.one_of(
    st.tuples(id32, st.sampled_from(["data", "meta", "x"]), ints, st.lists(blob_row, max_size=4)).map(list), values
)
index_doc = st.fixed_dictionaries(
    {"v": st.one_of(st.just(1), values), "packs": st.one_of(st.lists(pack_row, max_size=4), values)},
    optional={"supersedes": st.one_of(st.lists(id32, max_size=3), values)},
)


def _index(data: bytes) -> None:
    typed_only(decode_index, data, "index/x")


test_index, test_index_slow = both(inputs(packed(index_doc)))(_index)


# -- HAMT node ------------------------------------------------------------------------------------
key16 = st.binary(min_size=16, max_size=16)
leaf_node = st.tuples(st.just(0), st.lists(st.tuples(key16, st.binary(max_size=8), st.binary(max_size=8)).map(list), max_size=5)).map(list)
branch_node = st.tuples(
    st.just(1), ints, st.integers(-2, 40), key16,
    st.lists(st.tuples(st.integers(-1, 17), id32, ints).map(list), max_size=5),
).map(list)
node_doc = st.one_of(leaf_node, branch_node, values)


def _node(data: bytes) -> None:
    """The node read as the root, and as the child of a valid branch (context checks)."""
    def load(nid: bytes) -> bytes:
        if nid != b"n" * 32:
            raise BlobNotFound(f"blob {nid.hex()} is not in the index")  # as Repository.read_blob
        return data

    h = Hamt(load, lambda d: b"", cache_size=0)
    typed_only(lambda: list(h.items(b"n" * 32)))
    typed_only(lambda: list(h.walk_nodes(b"n" * 32)))
    typed_only(lambda: h.get(b"n" * 32, b"k" * 16, b"/p"))
    typed_only(lambda: list(h.scan_prefix(b"n" * 32, b"k" * 8)))
    parent = [1, 3, 0, b"\x10" * 16, [[1, b"n" * 32, 3]]]
    typed_only(lambda: h.child(parent, 1, b"n" * 32, 3))


test_hamt_node, test_hamt_node_slow = both(inputs(packed(node_doc)))(_node)


# -- entry ------------------------------------------------------------------------------------------
entry_doc = st.dictionaries(
    st.sampled_from(["t", "m", "u", "g", "un", "gn", "s", "mt", "ct", "i", "dv", "n", "rd", "l", "x", "c", "cb"]),
    st.one_of(st.sampled_from(["f", "d", "l", "p", "s", "c", "b"]), ints, st.binary(max_size=8), st.lists(st.one_of(id32, ints), max_size=3), values),
    max_size=10,
)


def _entry(data: bytes) -> None:
    typed_only(decode_entry, data, b"/p")


def _entry_content(data: bytes) -> None:
    def decode():
        e = decode_entry(data, b"/p")
        content_list(e, lambda bid: msgpack.packb([b"\x00" * 32, 5]))
    typed_only(decode)


test_entry, test_entry_slow = both(inputs(packed(entry_doc)))(_entry)
test_entry_content, test_entry_content_slow = both(inputs(packed(entry_doc)))(_entry_content)


# -- snapshot, catalog, lock, config: through a repository with a memory store ---------------------
REPO = make_test_repo()
snapshot_doc = st.fixed_dictionaries(
    {"v": st.one_of(st.just(1), values), "root": st.one_of(id32, values), "time": st.one_of(ints, values),
     "host": st.one_of(st.text(max_size=5), values), "user": st.one_of(st.text(max_size=5), values),
     "paths": st.one_of(st.lists(st.binary(max_size=8), max_size=3), values)},
    optional={"tags": values, "meta": values, "parent": values, "source": values, "summary": values, "generator": values},
)


def _snapshot(data: bytes) -> None:
    sid = REPO.sealer.blob_id(data)
    REPO.store.put(f"snapshots/{sid.hex()}", REPO.seal_object(T_SNAPSHOT, sid, data))
    typed_only(load_snapshot, REPO, sid.hex())
    REPO.store.delete(f"snapshots/{sid.hex()}")


test_snapshot, test_snapshot_slow = both(inputs(packed(snapshot_doc)))(_snapshot)


catalog_doc = st.fixed_dictionaries(
    {"v": st.one_of(st.just(1), values), "snapshots": st.one_of(st.dictionaries(st.text(max_size=8), st.one_of(snapshot_doc, values), max_size=3), values)}
)


def _catalog(data: bytes) -> None:
    REPO.store.put("catalog", REPO.seal_object(T_CATALOG, b"catalog", data))

    def decode():
        for k, v in (load_catalog(REPO).entries or {}).items():
            typed_only(Snapshot.from_doc, k, v)
    typed_only(decode)


test_catalog, test_catalog_slow = both(inputs(packed(catalog_doc)))(_catalog)


lock_doc = st.dictionaries(
    st.sampled_from(["v", "host", "user", "pid", "pstart", "node", "operation", "exclusive", "since", "created", "probe", "flag"]),
    st.one_of(ints, st.text(max_size=5), st.booleans(), st.floats(), values),
    max_size=8,
).map(lambda d: {**d, "host": d.get("host", "h")})


def _lock(data: bytes) -> None:
    from backupkit.repo.lock import LockManager

    lock_id = os.urandom(32)
    name = f"locks/{lock_id.hex()}"
    REPO.store.put(name, REPO.sealer.seal(T_LOCK, lock_id, b"\x00" + data))
    mgr = LockManager(REPO, host="h", node=None, sleep=lambda s: None)

    def decode():
        li = mgr.read_info(ObjectInfo(name, time.time(), 0))
        if li is not None:
            (li.exclusive, li.probe, li.since, li.holder(), li.to_json(time.time()))
            mgr.stale_reason(li, time.time())
    typed_only(decode)
    REPO.store.delete(name)


test_lock, test_lock_slow = both(inputs(packed(lock_doc)))(_lock)


config_doc = st.fixed_dictionaries(
    {k: st.one_of(ints, values) for k in ("version", "chunker_min", "chunker_avg", "chunker_max", "pack_size", "compression_level")}
    | {"repo_id": st.one_of(st.just("ab" * 32), values), "created": st.one_of(st.floats(), values)}
)


def _config(data: bytes) -> None:
    sealed = SEALER.seal(T_CONFIG, b"config", b"\x00" + data)
    typed_only(lambda: RepoConfig.decode(decode_payload(SEALER.open(T_CONFIG, b"config", sealed), "config", 65536)))


test_config, test_config_slow = both(inputs(packed(config_doc)))(_config)


# -- key file ---------------------------------------------------------------------------------------
GOOD_KEY = make_key_file("ab" * 32, KEYS, b"pw", INSECURE_TEST_KDF)
kdf_doc = st.fixed_dictionaries(
    {"name": st.one_of(st.just("argon2id"), values), "salt": st.one_of(st.just("AAAAAAAAAAAAAAAAAAAAAA=="), values),
     "iterations": st.one_of(st.integers(-2, 20), values), "memory_kib": st.one_of(st.integers(-8, 300_000), values),
     "lanes": st.one_of(st.integers(-2, 20), values)}
)
key_doc = st.fixed_dictionaries(
    {"version": st.one_of(st.just(1), values), "kdf": st.one_of(kdf_doc, values),
     "data": st.one_of(st.binary(max_size=80).map(lambda b: __import__("base64").b64encode(b).decode()), values)},
    optional={"meta": values},
)


def _jsonable(v):
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and v != v:
        return 0.0
    return v


def _key_file(data: bytes) -> None:
    typed_only(open_key_file, "ab" * 32, data, b"pw")
    typed_only(key_info, "ab" * 32, data, SEALER)


test_key_file, test_key_file_slow = both(
    st.one_of(inputs(key_doc.map(lambda d: json.dumps(_jsonable(d)).encode())), mutated(st.just(GOOD_KEY)))
)(_key_file)


def test_the_good_key_file_still_opens():
    assert open_key_file("ab" * 32, GOOD_KEY, b"pw") == KEYS
