"""A repository written before the typed entry and the object layer (commit 5cc126d)
still lists, restores byte-identical and checks clean: the format did not change.

The repository and its manifest are in tests/fixtures/format_v1/ (made by
tests/fixtures/make_format_v1.py, never to be regenerated).
"""

from __future__ import annotations

import json
import os
import shutil

import msgpack
import pytest

from backupkit.managers.check import CheckManager, CheckOptions
from backupkit.managers.ls import LsManager
from backupkit.managers.restore import RestoreManager, RestoreOptions
from backupkit.repo.repository import Repository
from backupkit.snapshot import find_snapshot, list_snapshots
from backupkit.store.local import LocalObjectStore
from backupkit.tree import SnapshotTree
from tests.support.manifest import tree_manifest

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "format_v1")


@pytest.fixture
def fixture_repo(tmp_path):
    with open(os.path.join(FIXTURE, "manifest.json")) as f:
        manifest = json.load(f)
    copy = tmp_path / "repo"
    shutil.copytree(os.path.join(FIXTURE, "repo"), copy)
    repo = Repository.open(LocalObjectStore(str(copy), fsync=False), manifest["password"].encode(), cache_root=False)
    yield repo, manifest
    repo.close()


def raw_entries(repo: Repository, snap_id: str) -> dict[bytes, bytes]:
    """Every (path, stored entry bytes) of a snapshot, read below the entry codec."""
    tree = SnapshotTree(repo, find_snapshot(repo, snap_id).root)
    return {p: bytes(v) for _k, p, v in tree.hamt.items(tree.root)}


def test_fixture_covers_every_entry_kind(fixture_repo):
    repo, manifest = fixture_repo
    kinds = set()
    for raw in raw_entries(repo, manifest["snapshots"][0]["id"]).values():
        e = msgpack.unpackb(raw, strict_map_key=False)
        kinds.add(e["t"])
        kinds.update(k for k in ("c", "cb", "x", "l") if k in e)
        if e["t"] == "f" and e.get("n", 1) > 1:
            kinds.add("hardlink")
    assert kinds >= {"f", "d", "l", "p", "c", "cb", "x", "hardlink"}


def test_fixture_lists(fixture_repo):
    repo, manifest = fixture_repo
    assert [s.id for s in sorted(list_snapshots(repo), key=lambda s: s.time_ns)] == [
        s["id"] for s in manifest["snapshots"]
    ]
    src = manifest["source"]
    for s in manifest["snapshots"]:
        listed = {e.path for e in LsManager(repo).ls(find_snapshot(repo, s["id"]), src, recursive=True)}
        want = {os.path.normpath(os.path.join(src, rel)) for rel in s["files"]}
        # display paths: non-UTF-8 bytes as \xNN
        want = {os.fsencode(p).decode("utf-8", "backslashreplace") for p in want}
        assert listed == want


@pytest.mark.parametrize("which", [0, 1])
def test_fixture_restores_byte_identical(fixture_repo, tmp_path, which):
    repo, manifest = fixture_repo
    s = manifest["snapshots"][which]
    target = tmp_path / "out"
    res = RestoreManager(repo).restore(find_snapshot(repo, s["id"]), RestoreOptions(target=str(target), verify=True))
    assert not res.errors and not res.verify_failures
    got = tree_manifest(os.path.join(os.fsencode(target), os.fsencode(manifest["source"]).lstrip(b"/")))
    assert got == s["files"]


def test_fixture_checks_clean(fixture_repo):
    repo, _manifest = fixture_repo
    res = CheckManager(repo).run(CheckOptions(read_data=True))
    assert res.ok, [f.to_json() for f in res.errors]
    assert res.snapshots == 2
