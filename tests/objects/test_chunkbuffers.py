"""The chunker's read buffers are reused only once every chunk cut from them is stored."""

from __future__ import annotations

import os
import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from backupkit.objects.chunkbuffers import ChunkBuffers
from backupkit.objects.writer import ContentWriter
from backupkit.tuning import Tuning
from tests.support.kit import make_test_repo


def _done() -> Future:
    f: Future = Future()
    f.set_result(b"id")
    return f


def test_never_the_last_given_and_a_done_one_is_reused() -> None:
    bufs = ChunkBuffers(2)
    a = bufs.take(4096)
    bufs.track(_done())
    b = bufs.take(4096)
    assert b is not a  # a holds the tail the chunker copies from
    bufs.track(_done())
    assert bufs.take(4096) is a  # all of a's chunks are stored
    assert bufs.take(4096) is b
    assert len(bufs.take(8192)) >= 8192


def test_a_busy_buffer_is_waited_for() -> None:
    bufs = ChunkBuffers(2)
    a = bufs.take(4096)
    busy: Future = Future()
    bufs.track(busy)
    bufs.take(4096)
    threading.Timer(0.2, busy.set_result, (b"id",)).start()
    t0 = time.monotonic()
    assert bufs.take(4096) is a
    assert time.monotonic() - t0 >= 0.15
    assert busy.done()


def test_a_third_buffer_rather_than_waiting() -> None:
    bufs = ChunkBuffers(3)
    a = bufs.take(4096)
    bufs.track(Future())  # never done
    b = bufs.take(4096)
    c = bufs.take(4096)
    assert len({id(a), id(b), id(c)}) == 3
    assert bufs.take(4096) is b  # b has no chunk in use; a has


def test_fewer_than_two_is_refused() -> None:
    with pytest.raises(ValueError):
        ChunkBuffers(1)


@pytest.mark.parametrize("window", [1, 4, 5, 64])
def test_files_read_through_reused_buffers_store_what_the_files_hold(tmp_path, monkeypatch, window) -> None:
    """Small chunker sizes make each file span many buffer refills; a sealing pool that
    stalls at random keeps chunks of old buffers in flight while the reader refills: a
    buffer refilled too early would change a chunk between its id and its seal, and the
    blob would fail verification (or hold the wrong bytes). ``window``: chunks in flight
    before the reader waits for half of them (a content list out of order or short
    would not give the file back)."""
    repo = make_test_repo(chunker=(1024, 4096, 16384))
    rnd = random.Random(7)
    files = []
    for i in range(6):
        p = tmp_path / f"f{i}"
        p.write_bytes(rnd.randbytes(rnd.randrange(200_000, 600_000)) + bytes(30_000))
        files.append(p)
    writer = ContentWriter(repo, Tuning(chunks_in_flight=window, chunk_buffers_per_reader=2))
    real = writer.store_chunk
    stall = random.Random(3)
    lock = threading.Lock()

    def slow_store(chunk):
        with lock:
            pause = stall.random() < 0.2
        if pause:
            time.sleep(0.003)
        return real(chunk)

    monkeypatch.setattr(writer, "store_chunk", slow_store)
    try:
        with ThreadPoolExecutor(max_workers=2) as readers:
            got = list(readers.map(lambda p: writer.read_file(os.fsencode(p), os.lstat(p)), files))
    finally:
        writer.close()
    repo.flush()
    for p, content in zip(files, got):
        data = b"".join(repo.read_blob(bid) for bid in content.items)
        assert data == p.read_bytes()
