"""Which primitives hold the GIL, and for what share of their time: measured with py-spy.

Usage: python -m benchmarks.gil_probe [--seconds 2] [--rate 100]

Runs each primitive in a loop on one thread for ``--seconds`` under
``py-spy record --gil`` (py-spy samples only the thread holding the GIL), then counts the
samples that fall on each primitive's line. A primitive that releases the GIL for its
work gets almost no samples; one that holds it gets about ``seconds * rate``. The answer
does not depend on free cores or on the machine's load (a preempted holder still holds).
Needs py-spy (``pip install py-spy``) and root or ptrace rights.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

MiB = 1 << 20

# input sizes: a large file's average chunk, and a tiny file of the 200k set
SIZES = {"1 MiB": MiB, "485 B": 485}


def _cases(size: int):
    import hashlib
    import random

    import msgpack
    import zstandard
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from backupkit.chunker import Chunker
    from backupkit.crypto import T_DATA_BLOB, MasterKeys, Sealer
    from backupkit.repo.pack import blob_ids, encode_payload, seal_payloads

    rnd = random.Random(5)
    frags = [rnd.randbytes(64) for _ in range(32)]
    data = b"".join(frags[rnd.randrange(32)] if rnd.random() < 0.6 else rnd.randbytes(64) for _ in range(size // 64 + 1))[:size]
    keys = MasterKeys.generate()
    sealer = Sealer(keys)
    aes = AESGCM(keys.enc_key)
    ct = aes.encrypt(b"n" * 12, data, b"")
    cctx, dctx = zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor()  # reused, as bk does
    z = cctx.compress(data)
    chunker = Chunker(keys.chunker_key)
    payload = encode_payload(data, 3)
    entry = {"t": "f", "m": 0o644, "u": 1000, "g": 1000, "s": size, "mt": 1_700_000_000_000_000_000, "i": 12345}
    path = os.path.join(tempfile.gettempdir(), f"bk-gil-probe-{os.getpid()}")
    with open(path, "wb") as f:
        f.write(data)
    return path, [
        ("chunker cut_all (C)", lambda: chunker.cut_all(data, True)),
        ("hashlib.sha256", lambda: hashlib.sha256(data).digest()),
        ("Sealer.blob_id (HMAC-SHA256)", lambda: sealer.blob_id(data)),
        ("zstd level 3 compress", lambda: cctx.compress(data)),
        ("zstd decompress", lambda: dctx.decompress(z)),
        ("AESGCM.encrypt", lambda: aes.encrypt(b"n" * 12, data, b"")),
        ("AESGCM.decrypt", lambda: aes.decrypt(b"n" * 12, ct, b"")),
        ("Sealer.seal (key derivation + AESGCM + envelope)", lambda: sealer.seal(T_DATA_BLOB, b"i" * 32, payload)),
        ("encode_payload + Sealer.seal (the Python path)", lambda: sealer.seal(T_DATA_BLOB, b"i" * 32, encode_payload(data, 3))),
        ("seal_payloads (C: zstd + key + AES-GCM)", lambda: seal_payloads(sealer, T_DATA_BLOB, [(b"i" * 32, data)], 3)),
        ("blob_ids (C) of one blob", lambda: blob_ids(sealer, [data])),
        ("msgpack.packb of an entry map", lambda: msgpack.packb(entry)),
        ("os.lstat", lambda: os.lstat(path)),
        ("open + read + close (warm)", lambda: _read(path)),
        ("bytes(bytearray) copy (control: holds)", lambda: bytes(bytearray(data))),
    ]


def _read(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 1 << 21)
    finally:
        os.close(fd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rate", type=int, default=100)
    args = ap.parse_args()
    pyspy = os.path.join(os.path.dirname(sys.executable), "py-spy")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    print("| primitive | input | calls | GIL-held samples | share of its time holding the GIL |")
    print("|---|---|---:|---:|---:|")
    for label, size in SIZES.items():
        path, cases = _cases(size)
        os.unlink(path)
        for i, (name, _fn) in enumerate(cases):
            with tempfile.TemporaryDirectory() as tmp:
                raw = os.path.join(tmp, "raw.txt")
                cmd = [pyspy, "record", "--gil", "-r", str(args.rate), "-f", "raw", "-o", raw, "--"]
                cmd += [sys.executable, "-c", _ONE.format(size=size, index=i, seconds=args.seconds)]
                res = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=_ROOT)
                calls, secs = next(ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")).split()[1:]
                held = 0
                with open(raw) as f:
                    for line in f:
                        stack, n = line.rstrip("\n").rsplit(" ", 1)
                        if _IN_CASE.search(stack):  # inside the case's lambda (or _read)
                            held += int(n)
                share = held / (float(secs) * args.rate)
                print(f"| {name} | {label} | {calls} | {held} | {min(share, 1.0):.0%} |", flush=True)


_IN_CASE = re.compile(r"(<lambda>|_read) \([^;]*gil_probe\.py:\d+\)")
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ONE = """
import time, os, sys
sys.path.insert(0, {root!r})
from benchmarks.gil_probe import _cases
path, cases = _cases({size})
fn = cases[{index}][1]
n = 0
start = time.perf_counter()
while time.perf_counter() - start < {seconds}:
    fn()
    n += 1
os.unlink(path)
print("RESULT", n, time.perf_counter() - start)
""".replace("{root!r}", repr(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


if __name__ == "__main__":
    main()
