"""BackgroundWriter: an archive's output written on a thread of its own, in order, bounded,
and with the writer thread's failure raised on the caller's thread."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading

import pytest

from backupkit.outpipe import BackgroundWriter


def test_bytes_come_out_in_order_small_writes_gathered_and_views_copied():
    out = io.BytesIO()
    w = BackgroundWriter(out, queued_max=64, gather=16)
    want = bytearray()
    buf = bytearray(b"x" * 40)
    for i in range(200):
        piece = bytes([i % 251]) * (i % 37)
        w.write(piece)
        want += piece
        if i % 50 == 0:
            w.write(memoryview(buf))  # a view of a buffer the caller reuses at once
            want += buf
            buf[:] = b"y" * 40
    w.close()
    assert out.getvalue() == bytes(want)


def test_a_write_waits_while_the_queue_is_full():
    release = threading.Event()
    written = []

    class Slow(io.RawIOBase):
        def writable(self):
            return True

        def write(self, b):
            release.wait(10)
            written.append(bytes(b))
            return len(b)

    w = BackgroundWriter(Slow(), queued_max=100, gather=1)
    w.write(b"a" * 100)  # taken by the writer thread, which then waits
    w.write(b"b" * 100)  # queued: the queue is full
    done = threading.Event()

    def third():
        w.write(b"c" * 100)
        done.set()

    t = threading.Thread(target=third)
    t.start()
    assert not done.wait(0.3)  # bounded: the third waits for room
    release.set()
    t.join(10)
    assert done.is_set()
    w.close()
    assert b"".join(written) == b"a" * 100 + b"b" * 100 + b"c" * 100


def test_a_failed_write_is_raised_again_on_the_callers_thread():
    class Full(io.RawIOBase):
        def writable(self):
            return True

        def write(self, b):
            raise OSError(28, "No space left on device")

    w = BackgroundWriter(Full(), gather=1)
    with pytest.raises(OSError, match="No space left") as info:
        for _ in range(1000):
            w.write(b"z" * 4096)
        w.flush()
    assert info.value.errno == 28
    with pytest.raises(OSError, match="No space left"):
        w.close()


def _backed_up(tmp_path, files: int, size: int) -> tuple[list[str], object]:
    """A repository holding one backup of ``files`` random files of ``size`` bytes: (the
    ``bk`` command line that opens it, the backed-up directory)."""
    repo, pw, src = tmp_path / "repo", tmp_path / "pw", tmp_path / "src"
    pw.write_text("pw\n")
    src.mkdir()
    for i in range(files):
        (src / f"f{i}").write_bytes(os.urandom(size))
    bk = [sys.executable, "-m", "backupkit_cli", "--repo", str(repo), "--password-file", str(pw)]
    subprocess.run(bk + ["init", "--quiet"], check=True)
    subprocess.run(bk + ["backup", str(src), "--quiet"], check=True)
    return bk, src


def test_a_zip_restore_into_a_closed_pipe_ends_quietly(tmp_path):
    """``bk restore latest --format zip | head -c 100``: the pipe closes under the writer
    thread; bk ends with exit code 1 and says nothing (as ``head`` users expect)."""
    bk, _src = _backed_up(tmp_path, files=40, size=200_000)
    p = subprocess.Popen(bk + ["restore", "latest", "--format", "zip"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None
    head = p.stdout.read(100)
    p.stdout.close()
    err = p.stderr.read().decode() if p.stderr else ""
    rc = p.wait(60)
    assert head[:2] == b"PK"
    assert err == ""  # no traceback, and no summary of a restore that did not finish
    assert rc == 1  # exit_codes.FATAL, as for any command whose output pipe closed


def test_a_zip_whose_output_failed_writes_nothing_more_when_collected(monkeypatch):
    """The ZipFile of an archive whose output failed is left unfinished: its clean-up
    when collected must not write (a closed pipe would print a traceback there)."""
    import gc

    from backupkit.archive import open_archive
    from backupkit.objects.entry import Entry

    class Closed(io.RawIOBase):
        def writable(self):
            return True

        def write(self, b):
            raise BrokenPipeError(32, "Broken pipe")

    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with pytest.raises(BrokenPipeError):
        with open_archive("zip", Closed()) as w:  # type: ignore[arg-type]
            for i in range(100):
                w.add(b"f%d" % i, Entry(type="f", size=300_000, mode=0o644), iter([bytes(300_000)]))
    del w
    gc.collect()
    assert unraisable == []


def test_output_with_a_descriptor_is_written_through_it_after_its_buffer(tmp_path):
    """A file (or standard output): what its buffer held comes first, then the archive,
    written to the descriptor by the thread (no lock of the buffer held while a write
    is stuck)."""
    path = tmp_path / "out"
    with open(path, "wb") as f:
        f.write(b"head:")  # still in the BufferedWriter's buffer
        w = BackgroundWriter(f, gather=8)
        w.write(b"ab")
        w.write(b"x" * 100)
        w.close()
    assert path.read_bytes() == b"head:ab" + b"x" * 100


@pytest.mark.parametrize("what", ["zip", "dump"])
def test_an_interrupted_stream_into_a_stalled_pipe_exits(tmp_path, what):
    """``bk restore latest --format zip | stalled_reader`` (or ``bk dump`` of a file),
    then SIGINT to bk: the writer thread is stuck on the full pipe; bk still ends (exit
    code 130) within seconds, without a fatal error from Python's exit flushing a locked
    stdout. (Before session 14 the ZIP restore hung until a second signal: its small
    header writes sat in stdout's buffer, which Python's exit flushed into the full
    pipe; a dump writes large parts past that buffer.)"""
    import signal
    import time

    bk, src = _backed_up(tmp_path, files=20, size=500_000)
    r, wfd = os.pipe()  # nobody reads ``r``: the pipe fills (64 KiB) and bk's writes stall
    args = ["restore", "latest", "--format", "zip"] if what == "zip" else ["dump", "latest", str(src / "f3")]
    p = subprocess.Popen(bk + args, stdout=wfd, stderr=subprocess.PIPE)
    os.close(wfd)
    try:
        time.sleep(3)  # well past the start: the archive is being written into the full pipe
        assert p.poll() is None
        p.send_signal(signal.SIGINT)
        rc = p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
        os.close(r)
    err = p.stderr.read().decode() if p.stderr else ""
    assert rc == 130, err
    assert "Fatal Python error" not in err and "Traceback" not in err
