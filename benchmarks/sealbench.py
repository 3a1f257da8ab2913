"""Sealing and opening blobs: the C paths against the Python reference, on one thread.

    python -m benchmarks.sealbench [--small 20000] [--large 200] [--opens 3000]

Times, with the process's wall clock and the same data for both paths:

- the ids and the sealing of ``--small`` blobs of 1.2 KB in one batch (``pack.blob_ids``
  and ``pack.seal_payloads``, as ``add_blobs`` and the sealing processes call them);
- ``--large`` blobs of 1 MiB (half random, half compressible) sealed one per call (as
  ``add_blob`` does for a file's chunks);
- one trie-sized blob (2, 20 and 100 KB) opened per call, ``--opens`` times: the
  Python path (``packverify.verify_blob``, what ``read_blob`` uses) against one-item
  calls of the C span opener (``_blobopen.open_blobs``).

Wall time on one thread says what each path costs, not what it holds: whether a path
keeps the GIL is ``benchmarks.gil_probe``'s question.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from backupkit.crypto import T_DATA_BLOB, T_META_BLOB, MasterKeys, Sealer  # noqa: E402
from backupkit.limits import BLOB_MAX  # noqa: E402
from backupkit.repo import packverify  # noqa: E402
from backupkit.repo.pack import blob_ids, encode_payload, seal_payloads  # noqa: E402


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def rows(small: int, large: int, opens: int) -> list[tuple[str, float, float, str]]:
    """(what, C time, Python time, unit) per case; exits where the C extensions or their
    libraries are missing (nothing to compare)."""
    if not (packverify.C_AVAILABLE and packverify._blobopen is not None):
        raise SystemExit("the C extensions are not built here: nothing to compare")
    sealer = Sealer(MasterKeys.generate())
    rnd = random.Random(7)
    out: list[tuple[str, float, float, str]] = []

    datas = [rnd.randbytes(200) + b"a" * 1000 for _ in range(small)]
    out.append((f"blob ids of {small} blobs of 1.2 KB, one batch",
                _timed(lambda: blob_ids(sealer, datas)), _timed(lambda: blob_ids(sealer, datas, native=False)), "s"))
    items = list(zip(blob_ids(sealer, datas), datas))
    out.append((f"sealing {small} blobs of 1.2 KB, one batch",
                _timed(lambda: seal_payloads(sealer, T_DATA_BLOB, items, 3)),
                _timed(lambda: seal_payloads(sealer, T_DATA_BLOB, items, 3, native=False)), "s"))

    big = [rnd.randbytes(1 << 20) if i % 2 else b"abc" * ((1 << 20) // 3) for i in range(large)]
    bid = bytes(32)

    def seal_each(native: bool) -> None:
        for b in big:
            seal_payloads(sealer, T_DATA_BLOB, [(bid, b)], 3, native=native)

    out.append((f"sealing {large} blobs of 1 MiB, one per call",
                _timed(lambda: seal_each(True)), _timed(lambda: seal_each(False)), "s"))

    keys = sealer.keys
    for size in (2000, 20_000, 100_000):
        data = b"".join(rnd.randbytes(16) + b"entry-name-%d" % i for i in range(size // 30))[:size]
        oid = sealer.blob_id(data)
        env = sealer.seal(T_META_BLOB, oid, encode_payload(data, 3))
        one = [(0, len(env), oid, len(data))]

        def c_open() -> None:
            for _ in range(opens):
                packverify._blobopen.open_blobs(keys.enc_key, keys.id_key, T_META_BLOB, env, one, True, BLOB_MAX)

        def py_open() -> None:
            for _ in range(opens):
                packverify.verify_blob(sealer, oid, T_META_BLOB, env, "blob", len(data))

        out.append((f"opening one blob of {size // 1000} KB per call",
                    _timed(c_open) / opens * 1e6, _timed(py_open) / opens * 1e6, "us"))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", type=int, default=20_000)
    ap.add_argument("--large", type=int, default=200)
    ap.add_argument("--opens", type=int, default=3000)
    a = ap.parse_args(argv)
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print("| case | C | Python | unit |")
    print("|---|---:|---:|---|")
    for what, c, py, unit in rows(a.small, a.large, a.opens):
        fmt = ".3f" if unit == "s" else ".1f"
        print(f"| {what} | {c:{fmt}} | {py:{fmt}} | {unit} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
