"""``bk`` end to end on S3: the real executable in a subprocess against a real SeaweedFS.

The repository URL is ``s3:http://127.0.0.1:PORT/bucket/prefix`` and the credentials
reach ``bk`` the AWS way (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``), as a user
would run it. One scenario per test (a module-scoped world would be rebuilt on every
xdist worker anyway):

* the round trip: init, two backups of a real tree (nested dirs, a symlink, an empty
  file, a file stored as a multipart pack), snapshots, ls, restore to a directory and as
  a ZIP stream, diff, forget --keep-last 1 --prune, check --read-data, and the remaining
  snapshot still restores byte for byte;
* the request statistics: ``--json`` documents carry ``"store"``, ``-v`` prints one
  summary line, and what ``bk snapshots`` costs on S3.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import stat
import uuid
import zipfile
from pathlib import Path

import pytest

from tests.support.kit import cli_env, diff_trees, ok, record_tree, run_bk

MiB = 1024 * 1024
#: Small multipart settings so that a pack holding the big file goes up in parts.
MULTIPART = ("-o", "s3.multipart_threshold=5MiB", "-o", "s3.part_size=5MiB")



def s3_env(server, prefix: str, cache: Path) -> dict[str, str]:
    env = cli_env(server.url(prefix), cache)
    for var in list(env):
        if var.startswith("AWS_"):
            del env[var]
    env.update(
        AWS_ACCESS_KEY_ID=server.access_key,
        AWS_SECRET_ACCESS_KEY=server.secret_key,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def files(root: Path) -> dict[str, bytes | str]:
    """Relative path -> bytes for files, ``-> target`` for symlinks, ``dir`` for dirs."""
    out: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = p.read_bytes()
    return out


def make_tree(src: Path) -> None:
    rng = random.Random(42)
    (src / "docs" / "deep" / "er").mkdir(parents=True)
    (src / "empty-dir").mkdir()
    (src / "hello.txt").write_text("hello, s3\n")
    (src / "empty").write_bytes(b"")
    (src / "docs" / "notes.md").write_text("# notes\n" * 500)
    (src / "docs" / "deep" / "er" / "leaf.bin").write_bytes(rng.randbytes(300_000))
    (src / "medium.bin").write_bytes(rng.randbytes(2 * MiB + 17))
    (src / "big.bin").write_bytes(rng.randbytes(12 * MiB + 3))  # its pack exceeds 5 MiB: multipart
    (src / "to-be-removed.txt").write_text("only in the first snapshot\n")
    os.symlink("docs/notes.md", src / "link-to-notes")


def restored_root(target: Path, src: Path) -> Path:
    return target / str(src).lstrip("/")


def object_names(server, prefix: str) -> list[str]:
    """Every key under the repository prefix, listed by a plain botocore client."""
    client = server.client()
    names, token = [], None
    for _ in range(1000):  # bounded pagination
        kw = {"Bucket": server.bucket, "Prefix": prefix + "/"}
        if token:
            kw["ContinuationToken"] = token
        page = client.list_objects_v2(**kw)
        names += [o["Key"][len(prefix) + 1 :] for o in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            return names
        token = page["NextContinuationToken"]
    raise AssertionError("listing did not end")


def test_round_trip_on_seaweedfs(s3_server, tmp_path):
    assert s3_server.kind in ("seaweedfs", "external"), f"expected a real S3 server, got {s3_server.kind}"
    prefix = "cli-" + uuid.uuid4().hex[:10]
    env = s3_env(s3_server, prefix, tmp_path / "cache")
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)

    r = ok(run_bk("--json", "init", env=env))
    assert json.loads(r.stdout)["repository"] == s3_server.url(prefix)
    assert {"config"} <= set(object_names(s3_server, prefix))

    first = json.loads(ok(run_bk("--json", *MULTIPART, "backup", "--tag", "one", src, env=env)).stdout.splitlines()[-1])
    assert first["errors"] == [] and first["files_new"] == 7 and first["parent"] is None
    tree1 = files(src)
    record1 = record_tree(src)

    # A pack larger than the multipart threshold went up in parts (S3 ETags of multipart
    # objects end in -<parts>).
    client = s3_server.client()
    packs = [n for n in object_names(s3_server, prefix) if n.startswith("data/")]
    sizes = {n: client.head_object(Bucket=s3_server.bucket, Key=f"{prefix}/{n}") for n in packs}
    big = [n for n, h in sizes.items() if h["ContentLength"] > 5 * MiB]
    assert big, {n: h["ContentLength"] for n, h in sizes.items()}
    assert all(re.search(r"-\d+\"?$", sizes[n]["ETag"]) for n in big), [sizes[n]["ETag"] for n in big]

    # Second backup: one file changed, one added, one removed, the rest unchanged.
    (src / "hello.txt").write_text("hello again, s3\n")
    (src / "docs" / "deep" / "new.txt").write_text("added in the second snapshot\n")
    (src / "to-be-removed.txt").unlink()
    second = json.loads(ok(run_bk("--json", *MULTIPART, "backup", "--tag", "two", src, env=env)).stdout.splitlines()[-1])
    assert second["parent"] == first["snapshot_id"]
    assert (second["files_new"], second["files_changed"]) == (1, 1)
    assert second["files_read"] == 2  # unchanged files, the 12 MiB one too, are not read again
    tree2 = files(src)
    record2 = record_tree(src)

    snaps = json.loads(ok(run_bk("--json", "snapshots", env=env)).stdout)
    assert [s["id"] for s in snaps] == [first["snapshot_id"], second["snapshot_id"]]
    assert [s["tags"] for s in snaps] == [["one"], ["two"]]
    assert all(s["paths"] == [str(src)] for s in snaps)

    listing = json.loads(ok(run_bk("--json", "ls", "-R", "latest", str(src), env=env)).stdout)
    types = {e["path"]: e["type"] for e in listing["entries"]}
    assert types[f"{src}/link-to-notes"] == "symlink"
    assert types[f"{src}/docs/deep/er"] == "dir" and types[f"{src}/docs/deep/er/leaf.bin"] == "file"
    assert f"{src}/to-be-removed.txt" not in types and f"{src}/docs/deep/new.txt" in types

    # Restore the second snapshot to a directory: bytes, modes, mtimes, the symlink.
    out = tmp_path / "restore-2"
    ok(run_bk("restore", "latest", "--target", out, "--verify", env=env))
    assert files(restored_root(out, src)) == tree2
    assert diff_trees(record2, record_tree(restored_root(out, src))) == []

    # Restore the first snapshot as a ZIP stream (stdout is a pipe).
    z = ok(run_bk("restore", first["snapshot_id"], env=env, timeout=180)).stdout
    got: dict[str, bytes | str] = {}
    base = str(src).lstrip("/") + "/"
    with zipfile.ZipFile(io.BytesIO(z)) as zf:
        assert zf.testzip() is None
        for zi in zf.infolist():
            name = zi.filename.rstrip("/")
            if not name.startswith(base):
                continue
            mode = zi.external_attr >> 16
            if stat.S_ISLNK(mode):
                got[name[len(base) :]] = "-> " + zf.read(zi).decode()
            elif zi.is_dir():
                got[name[len(base) :]] = "dir"
            else:
                got[name[len(base) :]] = zf.read(zi)
    assert got == tree1

    diff = json.loads(ok(run_bk("--json", "diff", first["snapshot_id"], second["snapshot_id"], env=env)).stdout)
    assert (diff["a"], diff["b"]) == (first["snapshot_id"], second["snapshot_id"])
    content = {(c["kind"], c["path"]) for c in diff["changes"] if c["kind"] != "metadata"}
    assert content == {
        ("added", f"{src}/docs/deep/new.txt"),
        ("removed", f"{src}/to-be-removed.txt"),
        ("modified", f"{src}/hello.txt"),
    }, diff["changes"]
    assert (diff["summary"]["added"], diff["summary"]["removed"], diff["summary"]["modified"]) == (1, 1, 1)

    before = set(object_names(s3_server, prefix))
    forget = json.loads(ok(run_bk("--json", "forget", "--keep-last", "1", "--prune", "--max-unused", "0%", env=env)).stdout)
    assert forget["removed"] == [first["snapshot_id"]], forget
    assert forget["prune"]["packs_deleted"] + forget["prune"]["index_deleted"] >= 1, forget["prune"]
    after = set(object_names(s3_server, prefix))
    assert f"snapshots/{first['snapshot_id']}" in before and f"snapshots/{first['snapshot_id']}" not in after
    assert not any(n.startswith("locks/") for n in after)  # every lock was released

    check = json.loads(ok(run_bk("--json", "check", "--read-data", env=env)).stdout)
    assert check["ok"] is True and check["errors"] == 0 and check["snapshots"] == 1
    assert check["packs_read"] == check["packs"] >= 1 and check["bytes_read"] > 12 * MiB
    assert not [f for f in check["findings"] if f["severity"] != "info"], check["findings"]

    snaps = json.loads(ok(run_bk("--json", "snapshots", env=env)).stdout)
    assert [s["id"] for s in snaps] == [second["snapshot_id"]]
    again = tmp_path / "restore-2-again"
    ok(run_bk("restore", second["snapshot_id"][:10], "--target", again, env=env))
    assert files(restored_root(again, src)) == tree2
    assert diff_trees(record2, record_tree(restored_root(again, src))) == []
    assert record1 != record2


# -- request statistics ---------------------------------------------------------------------

KINDS = ("GET", "GET_RANGE", "PUT", "LIST", "HEAD", "DELETE")
SUMMARY_RE = re.compile(
    r"^store: (?P<total>\d+) requests? (?:\((?P<kinds>[^)]*)\))?, (?P<up>[\d.]+ \w+) up, "
    r"(?P<down>[\d.]+ \w+) down, (?P<retries>\d+) retr(?:y|ies)$"
)


def summary_of(stderr: str) -> dict[str, int]:
    """The counts in the one ``store: ...`` line ``-v`` prints (exactly one, the last line);
    with --json that line is ``{"message_type": "store", "message": "store: ...", ...}``."""
    if stderr.lstrip().startswith("{"):
        docs = [json.loads(ln) for ln in stderr.splitlines() if ln.strip()]
        assert docs[-1]["message_type"] == "store" and [d["message_type"] for d in docs].count("store") == 1, stderr
        counts = summary_of(docs[-1]["message"] + "\n")
        assert {k: docs[-1][k] for k in (*KINDS, "requests", "retries")} == counts, docs[-1]
        return counts
    lines = [ln for ln in stderr.splitlines() if ln.startswith("store:")]
    assert len(lines) == 1, stderr
    assert stderr.rstrip("\n").splitlines()[-1] == lines[0], stderr
    m = SUMMARY_RE.match(lines[0])
    assert m, lines[0]
    counts = {k: 0 for k in KINDS}
    for part in filter(None, (m["kinds"] or "").split(", ")):
        kind, n = part.split(" ")
        counts[kind] = int(n)
    counts.update(requests=int(m["total"]), retries=int(m["retries"]))
    assert counts["requests"] == sum(counts[k] for k in KINDS), lines[0]
    return counts


def test_request_statistics_on_seaweedfs(s3_server, tmp_path):
    from backupkit.managers.backup import BackupManager, BackupOptions
    from backupkit.repo.repository import Repository
    from tests.support.kit import PASSWORD

    prefix = "stats-" + uuid.uuid4().hex[:10]
    env = s3_env(s3_server, prefix, tmp_path / "cache")
    src = tmp_path / "src"
    src.mkdir()
    payload = random.Random(3).randbytes(MiB)  # incompressible: at least this much goes up
    (src / "data.bin").write_bytes(payload)
    (src / "small.txt").write_text("small\n")

    r = ok(run_bk("-v", "init", env=env))
    init = summary_of(r.stderr)
    assert init["PUT"] == 2 and init["HEAD"] == 1  # key file and config; "exists?" first

    r = ok(run_bk("--json", "backup", src, env=env))
    doc = json.loads(r.stdout.splitlines()[-1])
    assert "store:" not in r.stderr  # the line only with -v
    st = doc["store"]
    assert set(st) == {"requests", *KINDS, "bytes_up", "bytes_down", "retries"}, st
    assert st["requests"] == sum(st[k] for k in KINDS) > 0
    # packs, index, snapshot, catalog, the lock object and its refresh before publishing
    assert st["PUT"] >= 5 and st["LIST"] >= 2 and st["GET"] >= 2
    assert len(payload) < st["bytes_up"] < 3 * len(payload)
    assert st["retries"] == 0 and st["bytes_down"] > 0

    # More snapshots (made in-process, cheaply): what `bk snapshots` costs must not grow.
    repo = Repository.open(s3_server.store(prefix), PASSWORD, cache_root=False)
    for i in range(8):
        (src / "small.txt").write_text(f"small {i}\n")
        BackupManager(repo).run(BackupOptions(paths=(str(src),), host=f"h{i % 2}"))
    repo.close()

    costs = []
    for _ in range(2):  # the first run may rebuild nothing; both must cost the same
        r = ok(run_bk("--json", "-v", "snapshots", env=env))
        snaps = json.loads(r.stdout)
        assert isinstance(snaps, list) and len(snaps) == 9  # the array stays an array
        costs.append(summary_of(r.stderr))
    for c in costs:
        # Open: LIST keys/ (config and key file come from the local cache, which earlier
        # commands filled). Then one LIST of snapshots/ and one GET of the catalog: the
        # brief's <= 3. Nothing written, nothing locked.
        assert {k: c[k] for k in KINDS} == {"GET": 1, "GET_RANGE": 0, "PUT": 0, "LIST": 2, "HEAD": 0, "DELETE": 0}, c
        assert c["requests"] == 3 and c["retries"] == 0

    # The JSON numbers and the -v line agree (both taken after the repository is closed).
    r = ok(run_bk("--json", "-v", "check", env=env))
    doc = json.loads(r.stdout)
    line = summary_of(r.stderr)
    assert doc["ok"] is True
    assert {k: doc["store"][k] for k in (*KINDS, "requests", "retries")} == {k: line[k] for k in (*KINDS, "requests", "retries")}
    # A shared lock: one lock object written and deleted; no probe, no sentinel.
    assert (doc["store"]["PUT"], doc["store"]["DELETE"]) == (1, 1), doc["store"]

    # An exclusive lock first probes If-None-Match (two conditional writes, the second
    # refused, one delete), then writes its lock object and the sentinel.
    doc = json.loads(ok(run_bk("--json", "forget", "--keep-last", "100", env=env)).stdout)
    assert doc["removed"] == []
    assert (doc["store"]["PUT"], doc["store"]["DELETE"]) == (4, 3), doc["store"]


def test_request_statistics_on_a_local_repository(tmp_path):
    env = cli_env(tmp_path / "repo", tmp_path / "cache")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(b"x" * 5000)
    assert summary_of(ok(run_bk("-v", "init", env=env)).stderr)["PUT"] == 2
    doc = json.loads(ok(run_bk("--json", "backup", tmp_path / "src", env=env)).stdout.splitlines()[-1])
    assert doc["store"]["PUT"] >= 4 and doc["store"]["bytes_up"] > 0
    # bk cat prints a repository object as it is: no "store" key mixed into it.
    config = json.loads(ok(run_bk("--json", "cat", "config", env=env)).stdout)
    assert "store" not in config and config["version"] == 1
    # A failing command still reports what it cost, after its one error line.
    r = run_bk("-v", "restore", "nosuchsnap", "--target", tmp_path / "out", env=env)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln]
    assert err[0].startswith("error: ") and len(err) == 2
    assert summary_of(r.stderr)["requests"] > 0
