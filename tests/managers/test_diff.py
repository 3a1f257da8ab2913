"""bk diff: classification of changes, and cost proportional to the change."""

from __future__ import annotations

import os
import random

from backupkit.entry import Keyer
from backupkit.objects.entry import Entry
from backupkit.managers.diff import ADDED, METADATA, MODIFIED, REMOVED, DiffManager
from backupkit.snapshot import save_snapshot
from backupkit.store.memory import MemoryObjectStore
from backupkit.tree import entry_change, make_hamt
from tests.managers.lifecycle_util import backup, day, init_repo, local_store, write_files


def _snapshot(repo, root: bytes, n: int):
    doc = {"v": 1, "root": root, "time": n, "host": "h", "user": "u", "paths": [b"/data"], "source": {},
           "tags": [], "meta": {}, "parent": None, "generator": "test", "summary": {}}
    return save_snapshot(repo, doc)


def test_diff_of_100k_files_touches_nodes_proportional_to_the_change():
    repo = init_repo(MemoryObjectStore())
    keyer = Keyer(repo.sealer.keyed_hash)
    rnd = random.Random(7)
    entries = {}
    for d in range(100):
        dp = b"/data/d%03d" % d
        entries[dp] = {"t": "d", "m": 0o755, "mt": 1}
        for f in range(1000):
            entries[dp + b"/f%04d" % f] = {"t": "f", "m": 0o644, "s": 10, "mt": 1, "c": [rnd.randbytes(32)]}
    hamt = make_hamt(repo)
    root_a = hamt.build(entry_change(keyer, p, Entry.from_wire(e) if e is not None else None) for p, e in entries.items())
    files = [p for p, e in entries.items() if e["t"] == "f"]
    changed = rnd.sample(files, 10)
    changes = []
    for i, p in enumerate(changed):
        e = dict(entries[p])
        if i < 5:
            e["c"] = [rnd.randbytes(32)]  # content
        else:
            e["m"] = 0o600  # metadata only
        changes.append(entry_change(keyer, p, Entry.from_wire(e) if e is not None else None))
    root_b = hamt.update(root_a, changes)
    repo.flush()
    a, b = _snapshot(repo, root_a, 1), _snapshot(repo, root_b, 2)
    total_nodes = sum(1 for _ in hamt.walk_nodes(root_a))

    res = DiffManager(repo).diff(a, b, data_sizes=False)

    assert (res.added, res.removed, res.modified, res.metadata) == (0, 0, 5, 5)
    assert {c.path for c in res.changes} == set(changed)
    assert total_nodes > 1000
    # each change costs at most one root-to-leaf path in each trie (depth ~3-4 here)
    assert res.nodes_visited < 200, (res.nodes_visited, total_nodes)
    print(f"diff visited {res.nodes_visited} of {total_nodes} nodes")


def test_diff_classifies_real_backups(tmp_path):
    src = tmp_path / "src"
    write_files(src, {"keep.txt": b"same", "mod.txt": b"old content", "gone.txt": b"bye", "meta.txt": b"m" * 100})
    repo = init_repo(local_store(tmp_path / "repo"))
    a = backup(repo, src, day(0))
    (src / "mod.txt").write_bytes(b"new content that is longer")
    (src / "gone.txt").unlink()
    write_files(src, {"new/added.bin": os.urandom(5000)})
    os.chmod(src / "meta.txt", 0o600)
    b = backup(repo, src, day(1))

    res = DiffManager(repo).diff(a, b)

    kinds = {c.display.rsplit("/", 2)[-1] if "new" not in c.display else c.display.split("src", 1)[1]: c.kind for c in res.changes}
    assert kinds["mod.txt"] == MODIFIED
    assert kinds["gone.txt"] == REMOVED
    assert kinds["meta.txt"] == METADATA
    assert kinds["/new/added.bin"] == ADDED and kinds["/new"] == ADDED
    assert "keep.txt" not in kinds
    assert res.size_added == 5000 and res.size_removed == 3
    assert res.data_added >= 5000 + len(b"new content that is longer")
    assert res.data_removed == len(b"bye") + len(b"old content")
    meta = next(c for c in res.changes if c.display.endswith("meta.txt"))
    assert "m" in meta.fields and "c" not in meta.fields
    # the source directory itself changed (mtime): metadata only
    assert res.to_json()["summary"]["added"] == 2


def test_diff_of_a_snapshot_with_itself_reads_nothing(tmp_path):
    src = tmp_path / "src"
    write_files(src, {"a": b"x"})
    repo = init_repo(local_store(tmp_path / "repo"))
    a = backup(repo, src, day(0))
    res = DiffManager(repo).diff(a, a)
    assert res.changes == () and res.nodes_visited == 0


