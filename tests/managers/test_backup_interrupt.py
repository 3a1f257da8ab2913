"""An interrupted backup keeps its complete packs (indexed); index checkpoints by count
by time and by blobs held (``Tuning.index_checkpoint_packs`` / ``index_checkpoint_seconds`` /
``index_checkpoint_blobs``).

The CLI side (signals, exit codes, the line printed) is ``tests/cli/test_signals.py``.
"""

from __future__ import annotations

import dataclasses
import os
import signal

import pytest

from backupkit.errors import BackupInterrupted, Interrupted
from backupkit.managers.backup import BackupManager, BackupOptions, NullBackupReporter
from backupkit.tuning import Tuning
from tests.support.kit import make_test_repo, reopen

KiB = 1024
FILES = 30
#: one chunk per file (under the chunker's minimum) read by the walk itself
FILE_SIZE = 60 * KiB


@pytest.fixture
def src(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    for i in range(FILES):
        (d / f"f{i:02d}").write_bytes(os.urandom(FILE_SIZE))
    return d


@pytest.fixture
def repo(tmp_path):
    r = make_test_repo(tmp_path / "repo", pack_size=128 * KiB)
    yield r
    r.close()


class StopAfter(NullBackupReporter):
    """Raises a SIGTERM interrupt from the walk's thread after ``n`` files."""

    def __init__(self, n: int) -> None:
        self.n = n

    def file_done(self, path: str, size: int, status: str) -> None:
        self.n -= 1
        if self.n == 0:
            raise Interrupted(signal.SIGTERM)


def names(repo, prefix: str) -> list[str]:
    return sorted(o.name for o in repo.store.list(prefix))


def test_interrupted_backup_indexes_every_complete_pack(repo, src, tmp_path):
    with pytest.raises(BackupInterrupted) as info:
        BackupManager(repo, StopAfter(FILES // 2)).run(BackupOptions(paths=(str(src),)))
    e = info.value
    assert e.signum == signal.SIGTERM and isinstance(e, KeyboardInterrupt)
    saved = e.saved
    assert saved is not None and saved.packs >= 4
    data_packs = names(repo, "data/")
    assert saved.packs == len(data_packs) + len(names(repo, "meta/"))
    assert saved.bytes == sum(o.size for o in repo.store.list("data/")) + sum(o.size for o in repo.store.list("meta/"))
    assert names(repo, "snapshots/") == []
    repo.close()

    # a fresh open sees every uploaded pack in the index; the next backup reuses them
    again = reopen(repo)
    indexed = {p.id.hex() for p in again.index.packs()}
    assert {n.rsplit("/", 1)[1] for n in data_packs} <= indexed
    res = BackupManager(again).run(BackupOptions(paths=(str(src),)))
    assert res.snapshot is not None
    assert res.blobs_added <= FILES - saved.blobs + 2  # + the snapshot's trie nodes
    assert res.bytes_added < FILES * FILE_SIZE - saved.blobs * FILE_SIZE + 16 * KiB
    again.close()


@pytest.mark.parametrize(
    "tuning, at_least",
    [
        (Tuning(index_checkpoint_packs=2, index_checkpoint_seconds=1e9), 4),
        (Tuning(index_checkpoint_seconds=0.0), 5),  # every pack is "5 minutes" after the last index
        (Tuning(index_checkpoint_blobs=4, index_checkpoint_seconds=1e9), 4),  # ~2 blobs a pack
    ],
)
def test_index_checkpoints(repo, src, tuning, at_least):
    repo.tuning = tuning
    BackupManager(repo).run(BackupOptions(paths=(str(src),)))
    packs = len(names(repo, "data/"))
    assert packs >= 10
    assert len(names(repo, "index/")) >= at_least


def test_default_writes_the_index_at_the_end(repo, src):
    assert dataclasses.asdict(repo.tuning)["index_checkpoint_packs"] == 64
    BackupManager(repo).run(BackupOptions(paths=(str(src),)))
    assert len(names(repo, "index/")) <= 2  # the data packs', then the trie's
