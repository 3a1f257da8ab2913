"""Tests for backupkit.chunker: the format (golden vectors), C == Python, streaming.

The golden values below were computed once from ``_reference.py`` and are part of the
repository format: if a change makes them fail, it changed how every existing repository
deduplicates. Do not "update" them; make a new format version instead.
"""

from __future__ import annotations

import hashlib
import mmap
import random
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backupkit.chunker import (
    C_AVAILABLE,
    DEFAULT_AVG,
    DEFAULT_MAX,
    DEFAULT_MIN,
    Chunker,
    ChunkSizes,
    _reference,
    gear_table,
    gear_table_bytes,
)

KEY = bytes(range(32))
KIB = 1024
MIB = 1024 * KIB
IMPLS = ["c", "python"]
MASK64 = (1 << 64) - 1


def cuts_digest(cuts: Sequence[int]) -> str:
    return hashlib.sha256(",".join(map(str, cuts)).encode()).hexdigest()


def golden_data(seed: int, size: int) -> bytes:
    """Random bytes with a run of zeros and a block repeated three times.

    ``random.Random(seed).randbytes`` is stable across Python versions (it is
    ``getrandbits`` on the Mersenne Twister); the sha256 of each data set is pinned in
    GOLDEN too, so a change there is reported as such and not as a chunker change.
    """
    rng = random.Random(seed)
    eighth = size // 8
    block = rng.randbytes(eighth // 2)
    parts = [
        rng.randbytes(3 * eighth),
        bytes(eighth),
        block,
        rng.randbytes(eighth),
        block,
        block,
    ]
    head = b"".join(parts)
    return head + rng.randbytes(size - len(head))


# ---------------------------------------------------------------------------------------
# Golden vectors: (seed, size, min, avg, max) -> (sha256 of data, chunks, sha256 of cuts)
# ---------------------------------------------------------------------------------------
GEAR_TABLE_SHA256 = "17d8163d5d3ca4dc19cb2d2f0350e0c76263e41beafe5dabb0e359ae310b08de"
GEAR_0 = 0x6af6ab5107c9ee90
GEAR_255 = 0x28edba92b7378fd5

GOLDEN: dict[tuple[int, int, int, int, int], tuple[str, int, str]] = {
    (1, 1 * MIB, 64, 256, 1024): (
        "d97f393953dfd6e1ac463114f4e01a03ed6556be1b72112bcdcdd9b518a8ae25",
        3257,
        "53e13b54129775f1904a40fdfbe12ed637621193b73c000ceb026b24beaa18d5",
    ),
    (2, 1 * MIB, 256, 1024, 8192): (
        "3e1c11861c8baf53f1abc382b14cbcb331a15eb765f48ab3ddfec03bdf513e09",
        806,
        "908bb432c27d78d99d6f2a3de484113c6016b7ab4ba4d8abc1569d1c7ea7d0ec",
    ),
    (3, 1 * MIB, 2048, 8192, 65536): (
        "60a64837b88ac07d3de157b1607fbc85ca12f2410a76596425309f7a9825dada",
        101,
        "97265ad8e27c7a2e558bcdcccad6b2cc6e494c238c415aa82be8d02ce0bbd9ea",
    ),
    (4, 256 * KIB, 100, 128, 300): (
        "09736a2385fcc9fc2074e802177ea54684996fcc3180ead432c6307023f487cc",
        1560,
        "c5b9bb122f900a7849c6685065291069fb20295bc2a4f5b452b76593e5f13893",
    ),
    (5, 512 * KIB, 1000, 4096, 5000): (
        "1471cf45d1c1754844d57179f512ad56bd8ee2c2449b1d86c3910ee9783bb2c3",
        119,
        "6dfeee8dcb303bc0f3a41c6c6d4d9dd1e8c949d47a448a5f3573ff9fc81bb912",
    ),
    (6, 6 * MIB, 524288, 1048576, 8388608): (
        "6b1e6784bfc96a4b8756694643aa247483eeed99c16ef666c7bbbdd3baf0e40f",
        5,
        "7e9c912d726b936a2d065ae7ae2737562fef4d16726c74d54ebe0874dac0cf7e",
    ),
}


@pytest.fixture(scope="module")
def golden_inputs() -> dict[tuple[int, int], bytes]:
    return {(seed, size): golden_data(seed, size) for seed, size, *_ in GOLDEN}


def test_gear_table_is_pinned() -> None:
    table = gear_table(KEY)
    assert len(table) == 256
    assert all(0 <= g <= MASK64 for g in table)
    assert table[0] == GEAR_0
    assert table[255] == GEAR_255
    raw = gear_table_bytes(KEY)
    assert len(raw) == 2048
    assert hashlib.sha256(raw).hexdigest() == GEAR_TABLE_SHA256
    assert raw[:8] == GEAR_0.to_bytes(8, "little")


def test_gear_table_follows_the_formula() -> None:
    import hmac

    key = bytes(range(100, 132))
    table = gear_table(key)
    for i in (0, 1, 17, 255):
        mac = hmac.new(key, b"bk-gear-v1" + bytes([i]), "sha256").digest()
        assert table[i] == int.from_bytes(mac[:8], "little")


def test_golden_data_is_pinned(golden_inputs: dict[tuple[int, int], bytes]) -> None:
    for (seed, size, *_), (data_sha, *_) in GOLDEN.items():
        digest = hashlib.sha256(golden_inputs[seed, size]).hexdigest()
        assert digest == data_sha, "the test data generator drifted"


@pytest.mark.parametrize("impl", IMPLS)
def test_golden_vectors(impl: str, golden_inputs: dict[tuple[int, int], bytes]) -> None:
    """Both paths (python = the reference itself) produce the pinned cut points."""
    for (seed, size, lo, avg, hi), (_, n_chunks, digest) in GOLDEN.items():
        data = golden_inputs[seed, size]
        chunker = Chunker(KEY, lo, avg, hi, impl=impl)
        cuts = chunker.cut_all(data, True)
        assert (len(cuts), cuts_digest(cuts)) == (n_chunks, digest), (lo, avg, hi)
        assert sum(cuts) == len(data)
        assert all(lo < c <= hi for c in cuts[:-1])
        if impl == "c":  # the reference is too slow to run twice; hypothesis covers it
            partial = chunker.cut_all(data, False)
            assert partial == cuts[: len(partial)]
            assert len(data) - sum(partial) < hi


def test_c_extension_is_built() -> None:
    assert C_AVAILABLE, (
        "backupkit.chunker._cdc is not built; run `python setup.py build_ext --inplace` "
        "(pip install builds it)"
    )
    assert Chunker(KEY).impl == "c"


# ---------------------------------------------------------------------------------------
# The specification, checked by hand on crafted tables (independent of _reference)
# ---------------------------------------------------------------------------------------
FindCut = Callable[[Sequence[int], bytes, ChunkSizes, bool], int]


def _c_find_cut(table: Sequence[int], data: bytes, sizes: ChunkSizes, eof: bool) -> int:
    from backupkit.chunker import _cdc

    raw = b"".join(g.to_bytes(8, "little") for g in table)
    return int(_cdc.find_cut(raw, data, sizes, eof))


@pytest.fixture(params=IMPLS)
def find_cut(request: pytest.FixtureRequest) -> FindCut:
    if request.param == "c":
        if not C_AVAILABLE:
            pytest.fail("C extension not built")
        return _c_find_cut
    return _reference.find_cut


# Crafted tables: gear[0] = 2**63, so in a run of zero bytes h stays 2**63 (in every
# mask) and never cuts; h = (2**63 << 1) + gear[v] = gear[v] right after a zero byte, so
# a byte v placed after zeros sets h to exactly gear[v].
LO, AVG, HI = 64, 256, 1024  # bits = 8: mask_s = top 10 bits, mask_l = top 6 bits
SIZES = ChunkSizes(LO, AVG, HI)
BITS = 8


def crafted_table(entries: dict[int, int]) -> list[int]:
    table = [1 << 63] * 256
    for value, gear in entries.items():
        table[value] = gear
    return table


def zeros_then(pos: int, value: int, size: int | None = None) -> bytes:
    """Zero bytes with ``value`` at ``pos``; by default ``pos`` is the last byte."""
    data = bytearray(pos + 1 if size is None else size)
    data[pos] = value
    return bytes(data)


def test_spec_short_data(find_cut: FindCut) -> None:
    table = crafted_table({})
    for n in (0, 1, LO - 1, LO):
        assert find_cut(table, bytes(n), SIZES, False) == 0
        assert find_cut(table, bytes(n), SIZES, True) == n
    assert find_cut(table, bytes(LO + 1), SIZES, False) == 0
    assert find_cut(table, bytes(LO + 1), SIZES, True) == LO + 1
    # no cut in zeros: max_size decides even without eof, shorter data waits
    assert find_cut(table, bytes(HI - 1), SIZES, False) == 0
    assert find_cut(table, bytes(HI - 1), SIZES, True) == HI - 1
    assert find_cut(table, bytes(HI), SIZES, False) == HI
    assert find_cut(table, bytes(HI + 5000), SIZES, False) == HI
    assert find_cut(table, bytes(HI + 5000), SIZES, True) == HI


def test_spec_zero_hash_cuts_anywhere_in_range(find_cut: FindCut) -> None:
    table = crafted_table({1: 0})  # byte 1 after zeros makes h == 0: both masks cut
    for pos in (LO, LO + 1, AVG - 1, AVG, HI - 1):
        assert find_cut(table, zeros_then(pos, 1, 3000), SIZES, False) == pos + 1
    # bytes before min_size are not hashed at all, bytes from max_size on not looked at
    assert find_cut(table, zeros_then(LO - 1, 1, 3000), SIZES, False) == HI
    assert find_cut(table, zeros_then(HI, 1, 3000), SIZES, False) == HI


def test_spec_mask_widths_and_normalization(find_cut: FindCut) -> None:
    # mask_s is bits 63..64-(BITS+2) = 63..54, mask_l is bits 63..64-(BITS-2) = 63..58.
    # The tested byte is the last one, so the answer is pos + 1 (cut) or 0 (need more).
    s_low, l_low = 64 - (BITS + 2), 64 - (BITS - 2)
    cases = {
        s_low - 1: (True, True),  # outside both masks: cuts everywhere
        s_low: (False, True),  # in mask_s only: cuts from avg_size on
        l_low - 1: (False, True),
        l_low: (False, False),  # in both masks: never cuts
        63: (False, False),
    }
    for bit, (cuts_before_avg, cuts_from_avg) in cases.items():
        table = crafted_table({2: 1 << bit})
        for pos in (LO, LO + 1, AVG - 1):  # offsets min_size .. avg_size - 1: mask_s
            want = pos + 1 if cuts_before_avg else 0
            assert find_cut(table, zeros_then(pos, 2), SIZES, False) == want, bit
        for pos in (AVG, AVG + 1, HI - 2):  # offsets avg_size .. max_size - 1: mask_l
            want = pos + 1 if cuts_from_avg else 0
            assert find_cut(table, zeros_then(pos, 2), SIZES, False) == want, bit


def test_spec_hash_update(find_cut: FindCut) -> None:
    # h = ((h << 1) + gear[b]) mod 2**64, traced by hand: 3 -> 2**59, 6 -> 2**59 * 2 +
    # 2**60 = 2**61 (an add, not a xor, which would give 0 and cut), then bytes 5
    # (gear 0) shift it to 2**62, 2**63 and out of the word: h == 0 cuts there.
    table = crafted_table({3: 1 << 59, 6: 1 << 60, 5: 0})
    for p in (LO + 10, AVG + 10):
        data = bytearray(3000)
        data[p : p + 5] = bytes([3, 6, 5, 5, 5])
        assert find_cut(table, bytes(data), SIZES, False) == p + 5


# ---------------------------------------------------------------------------------------
# C == Python on random inputs
# ---------------------------------------------------------------------------------------
small_params = st.sampled_from(
    [(64, 128, 129), (64, 128, 300), (64, 256, 1024), (100, 128, 200), (200, 512, 2048)]
)
payloads = st.one_of(
    st.binary(max_size=6000),
    st.lists(st.sampled_from([b"\0", b"\1", b"ab"]), max_size=3000).map(b"".join),
    st.tuples(st.binary(min_size=1, max_size=300), st.integers(1, 20)).map(
        lambda t: t[0] * t[1]
    ),
)


@pytest.mark.skipif(not C_AVAILABLE, reason="C extension not built (see test_c_extension_is_built)")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=st.binary(min_size=32, max_size=32),
    params=small_params,
    data=payloads,
    eof=st.booleans(),
)
def test_c_matches_python(key: bytes, params: tuple[int, int, int], data: bytes, eof: bool) -> None:
    c = Chunker(key, *params, impl="c")
    py = Chunker(key, *params, impl="python")
    assert c.find_cut(data, eof) == py.find_cut(data, eof)
    cuts = c.cut_all(data, eof)
    assert cuts == py.cut_all(data, eof)
    lo, _, hi = params
    if eof:
        assert sum(cuts) == len(data)
    else:
        assert len(data) - sum(cuts) < hi
    assert all(lo < x <= hi for x in cuts[:-1])


@pytest.mark.skipif(not C_AVAILABLE, reason="C extension not built")
def test_c_accepts_any_contiguous_buffer() -> None:
    chunker = Chunker(KEY, 64, 256, 1024, impl="c")
    data = golden_data(7, 64 * 1024)
    want = chunker.cut_all(data, True)
    assert chunker.cut_all(bytearray(data), True) == want
    assert chunker.cut_all(memoryview(data), True) == want
    assert chunker.cut_all(memoryview(b"xyz" + data)[3:], True) == want
    assert chunker.cut_all(memoryview(data).cast("I"), True) == want
    with mmap.mmap(-1, len(data)) as m:
        m.write(data)
        assert chunker.cut_all(m, True) == want
        assert chunker.find_cut(m, False) == want[0]
    with pytest.raises((BufferError, TypeError, ValueError)):
        chunker.cut_all(memoryview(data)[::2], True)
    with pytest.raises(TypeError):
        chunker.cut_all("text", True)  # type: ignore[arg-type]


@pytest.mark.skipif(not C_AVAILABLE, reason="C extension not built")
def test_c_checks_its_arguments() -> None:
    from backupkit.chunker import _cdc

    table = gear_table_bytes(KEY)
    assert _cdc.find_cut(table, bytes(100), (64, 128, 256), eof=True) == 100
    for bad_table in (table[:-1], table + b"\0", b""):
        with pytest.raises(ValueError, match="2048"):
            _cdc.find_cut(bad_table, b"abc", ChunkSizes(64, 128, 256), True)
    for lo, avg, hi in BAD_PARAMS:
        with pytest.raises(ValueError):
            _cdc.cut_all(table, b"abc", ChunkSizes(lo, avg, hi), True)
    with pytest.raises(TypeError):
        _cdc.find_cut(table, b"abc", ChunkSizes(64, 128, 256))  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _cdc.find_cut(table, b"abc", (64, 128), True)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------------------
class ShortReader:
    """read(n) returning random short reads, recording requests and bytes handed out."""

    def __init__(self, data: bytes, seed: int, max_piece: int | None = None) -> None:
        self.data = data
        self.pos = 0
        self.rng = random.Random(seed)
        self.max_piece = max_piece
        self.requests: list[int] = []

    def read(self, n: int) -> bytes:
        self.requests.append(n)
        limit = min(n, self.max_piece or n)
        k = self.rng.randint(1, max(1, limit))
        piece = self.data[self.pos : self.pos + k]
        self.pos += len(piece)
        return piece

    def readinto(self, view: memoryview) -> int:
        piece = self.read(len(view))
        view[: len(piece)] = piece
        return len(piece)


def check_stream(chunker: Chunker, data: bytes, reader: ShortReader, into: bool = False) -> None:
    hi = chunker.sizes.max_size
    chunks = []
    handed_out = 0
    stream = chunker.chunks(readinto=reader.readinto) if into else chunker.chunks(reader.read)
    for chunk in stream:
        assert isinstance(chunk, memoryview) and chunk.readonly
        handed_out += len(chunk)
        # what has been read but not yet yielded is our buffer
        assert reader.pos - handed_out <= 3 * hi
        chunks.append(chunk)
    # all views stay valid after iteration, and nothing was read twice or skipped
    assert b"".join(chunks) == data
    assert [len(c) for c in chunks] == chunker.cut_all(data, True)
    assert all(chunker.sizes.min_size < len(c) <= hi for c in chunks[:-1])
    if not into:  # read(n) asks for whole steps; readinto fills what is left of a buffer
        assert all(n >= hi for n in reader.requests)


@pytest.mark.parametrize("into", [False, True], ids=["read", "readinto"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("max_piece", [None, 1000, 37])
def test_chunks_streams_like_cut_all(impl: str, max_piece: int | None, into: bool) -> None:
    chunker = Chunker(KEY, 64, 256, 1024, impl=impl)
    data = golden_data(11, 100_000)
    check_stream(chunker, data, ShortReader(data, seed=3, max_piece=max_piece), into)


@pytest.mark.parametrize("into", [False, True], ids=["read", "readinto"])
@pytest.mark.parametrize("size", [0, 1, 64, 65, 1023, 1024, 1025, 2048, 3071, 3072, 5000])
def test_chunks_edge_sizes(size: int, into: bool) -> None:
    chunker = Chunker(KEY, 64, 256, 1024)
    data = bytes(size)  # zeros: no content cuts, only max_size and eof
    check_stream(chunker, data, ShortReader(data, seed=size), into)
    assert list(Chunker(KEY).chunks(ShortReader(b"", 0).read)) == []
    assert list(Chunker(KEY).chunks(readinto=ShortReader(b"", 0).readinto)) == []


def test_chunks_needs_exactly_one_source() -> None:
    with pytest.raises(TypeError):
        list(Chunker(KEY).chunks())
    with pytest.raises(TypeError):
        list(Chunker(KEY).chunks(ShortReader(b"", 0).read, readinto=ShortReader(b"", 0).readinto))


@settings(max_examples=60, deadline=None)
@given(data=payloads, seed=st.integers(0, 2**32), piece=st.sampled_from([None, 1, 7, 300]), into=st.booleans())
def test_chunks_property(data: bytes, seed: int, piece: int | None, into: bool) -> None:
    chunker = Chunker(KEY, 64, 128, 300)
    check_stream(chunker, data, ShortReader(data, seed, piece), into)


def test_chunks_from_file(tmp_path: Path) -> None:
    data = golden_data(5, 3 * 1024 * 1024)
    path = tmp_path / "f"
    path.write_bytes(data)
    chunker = Chunker(KEY, 2048, 8192, 65536)
    with open(path, "rb") as f:
        lengths = [len(c) for c in chunker.chunks(f.read)]
    assert lengths == chunker.cut_all(data, True)


# ---------------------------------------------------------------------------------------
# Keys, parameters, threads
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", IMPLS)
def test_different_key_gives_different_cuts(impl: str) -> None:
    data = golden_data(1, 256 * 1024)
    a = Chunker(KEY, 256, 1024, 8192, impl=impl).cut_all(data, True)
    b = Chunker(bytes(range(1, 33)), 256, 1024, 8192, impl=impl).cut_all(data, True)
    assert sum(a) == sum(b) == len(data)
    assert a != b
    assert len(set(_positions(a)) & set(_positions(b))) < len(a) // 4


def _positions(cuts: list[int]) -> list[int]:
    out, pos = [], 0
    for c in cuts:
        pos += c
        out.append(pos)
    return out


BAD_PARAMS = [
    (63, 128, 256),  # min below 64
    (0, 128, 256),
    (-64, 128, 256),
    (128, 128, 256),  # min == avg
    (256, 128, 1024),  # min > avg
    (64, 200, 1024),  # avg not a power of two
    (64, 256, 256),  # avg == max
    (64, 256, 100),  # max < avg
]


@pytest.mark.parametrize(("lo", "avg", "hi"), BAD_PARAMS)
def test_invalid_parameters(lo: int, avg: int, hi: int) -> None:
    for impl in ("auto", "python"):
        with pytest.raises(ValueError):
            Chunker(KEY, lo, avg, hi, impl=impl)
    with pytest.raises(ValueError):
        _reference.find_cut(gear_table(KEY), b"abc", ChunkSizes(lo, avg, hi), True)


def test_invalid_key_and_impl() -> None:
    with pytest.raises(ValueError):
        Chunker(KEY[:31])
    with pytest.raises(ValueError):
        Chunker(KEY + b"\0")
    with pytest.raises(TypeError):
        Chunker(KEY.hex())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Chunker(KEY, impl="rust")
    with pytest.raises(TypeError):
        Chunker(KEY, 64.0, 128, 256)  # type: ignore[arg-type]


def test_defaults() -> None:
    chunker = Chunker(KEY)
    assert chunker.sizes == (
        DEFAULT_MIN,
        DEFAULT_AVG,
        DEFAULT_MAX,
    )
    assert (DEFAULT_MIN, DEFAULT_AVG, DEFAULT_MAX) == (512 * 1024, 1024 * 1024, 8 * 1024 * 1024)
    assert Chunker(KEY, impl="python").impl == "python"
    assert "Chunker(" in repr(chunker)


@pytest.mark.parametrize("impl", IMPLS)
def test_shared_between_threads(impl: str) -> None:
    chunker = Chunker(KEY, 64, 256, 1024, impl=impl)
    size = 2 * 1024 * 1024 if impl == "c" else 64 * 1024
    inputs = [golden_data(seed, size) for seed in range(4)]
    want = [chunker.cut_all(d, True) for d in inputs]
    got: list[list[int] | None] = [None] * len(inputs)

    def work(i: int) -> None:
        for _ in range(3):
            got[i] = chunker.cut_all(inputs[i], True)
            assert [len(c) for c in chunker.chunks(ShortReader(inputs[i], i).read)] == want[i]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == want


@pytest.mark.parametrize("gil_free_min", [0, 1 << 16])
def test_chunks_readinto_tails_copied_without_the_gil(monkeypatch, gil_free_min: int) -> None:
    """The undecided tail of each buffer is copied into the next one with ctypes.memmove
    from a threshold on (0: every tail); the chunks are those of cut_all all the same."""
    import backupkit.chunker as chunker_mod

    monkeypatch.setattr(chunker_mod, "GIL_FREE_COPY_MIN", gil_free_min)
    # small parameters: many buffers and tails; then the product's, where tails pass 64 KiB
    chunker = Chunker(KEY, 64, 256, 1024)
    data = golden_data(12, 200_000)
    check_stream(chunker, data, ShortReader(data, seed=4, max_piece=5000), True)
    big = Chunker(KEY, 256 * 1024, 1 << 20, 4 << 20)
    data = golden_data(13, 24 << 20)
    check_stream(big, data, ShortReader(data, seed=5), True)
