"""A signal between the lock's grant and the command taking it over leaves no lock behind.

The CLI's signal handler raises ``Interrupted`` wherever the main thread is. Once
``LockManager.acquire`` has written and granted the lock, a signal before the command's
``try`` owns it used to leave the lock object in the store (the next unattended run then
found the repository locked). Here the interrupt is raised at that very point: by the
first call made after the grant, ``Repository.install_lock_check``.
"""

from __future__ import annotations

import signal

import pytest

from backupkit.errors import Interrupted
from backupkit.repo.lock import LOCK_PREFIX, LockManager
from backupkit.repo.repository import Repository
from backupkit.store.memory import MemoryObjectStore
from backupkit_cli.context import State
from tests.support.kit import INSECURE_TEST_KDF


def _repo() -> Repository:
    return Repository.init(MemoryObjectStore(), b"pw", kdf=INSECURE_TEST_KDF, cache_root=False)


def _locks(repo: Repository) -> list[str]:
    return [o.name for o in repo.store.list(LOCK_PREFIX)]


@pytest.mark.parametrize("exclusive", [False, True])
def test_interrupt_right_after_the_grant_removes_the_lock(monkeypatch, exclusive):
    repo = _repo()
    granted: list[int] = []

    def interrupted(check) -> None:
        granted.append(len(_locks(repo)))  # the lock exists at this point
        raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr(repo, "install_lock_check", interrupted)
    st = State()
    with pytest.raises(Interrupted):
        with st.locked_repo(exclusive=exclusive, operation="prune", opened=repo):
            pytest.fail("the block must not run")
    assert granted and granted[0] >= 1
    assert _locks(repo) == []
    assert st.lock is None


def test_release_granted_releases_what_acquire_handed_out():
    repo = _repo()
    mgr = LockManager(repo, refresh=0, recheck_delay=0)
    first = mgr.acquire(False, "backup")
    second = mgr.acquire(False, "check")
    assert len(_locks(repo)) == 2 and mgr.granted == {first, second}
    first.release()
    assert mgr.granted == {second}
    mgr.release_granted()
    assert _locks(repo) == [] and mgr.granted == set()
    second.release()  # idempotent
    mgr.release_granted()
