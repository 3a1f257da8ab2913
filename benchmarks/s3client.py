"""Making the S3 store's botocore client, with and without botocore's service listing.

    python -m benchmarks.s3client [--rounds 5] [--cold]

Each round runs two fresh Python processes, alternating: one makes the client as the
store does (``s3_boto.make_client``: the session's model loader answers "is there an S3
model" for S3 alone, ``_Services``), the other with that answer left to botocore, which
lists its ~400 model directories first. Each process times botocore's import and the
client apart and counts the directories it lists (no request is sent: the endpoint is
never contacted). ``--cold`` drops the
page cache before every process (root). Session 14: the client 0.131 -> 0.050 s cold,
0.065 -> 0.047 s warm (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from benchmarks.measure import drop_caches

_CHILD = r"""
import json, os, sys, time
listed = [0]
_listdir = os.listdir
def listdir(*a):
    listed[0] += 1
    return _listdir(*a)
os.listdir = listdir
t0 = time.perf_counter()
import botocore.session  # noqa: F401
from backupkit.store import s3_boto
t1 = time.perf_counter()
if sys.argv[1] == "listing":
    s3_boto._answer_services_lazily = lambda session: None
s3_boto.make_client("s3:bench", "http://127.0.0.1:9", lambda *a, **k: None, profile=None, region=None,
                    addressing_style=None, retries=1, retry_mode="standard", connections=8, connect_timeout=1,
                    read_timeout=1, aws_access_key_id="a", aws_secret_access_key="b", aws_session_token=None,
                    verify=None)
print(json.dumps({"import": t1 - t0, "client": time.perf_counter() - t1, "listdirs": listed[0]}))
"""

MODES = ("lazy", "listing")


def one(mode: str, cold: bool) -> dict[str, float]:
    """The import and client seconds of one fresh process (``mode``: one of MODES), and
    the directories it listed."""
    if cold:
        drop_caches()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", _CHILD, mode], env=os.environ | {"PYTHONPATH": root},
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cold", action="store_true", help="drop the page cache before every process (root)")
    a = ap.parse_args(argv)
    if a.cold and not drop_caches():
        ap.error("--cold needs permission to write /proc/sys/vm/drop_caches (root)")
    got: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    for _ in range(a.rounds):
        for m in MODES:
            got[m].append(one(m, a.cold))
    print("| client made | botocore import s (median) | client s (median) | directories listed |")
    print("|---|---:|---:|---:|")
    for m in MODES:
        print(f"| {m} | {statistics.median(r['import'] for r in got[m]):.3f} | "
              f"{statistics.median(r['client'] for r in got[m]):.3f} | {got[m][0]['listdirs']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
