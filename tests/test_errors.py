"""Every exception backupkit raises on purpose is defined in ``backupkit.errors`` (the
old homes re-export theirs), and the tree in its docstring names each one."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import backupkit
from backupkit import errors


def all_modules():
    for info in pkgutil.walk_packages(backupkit.__path__, "backupkit."):
        yield importlib.import_module(info.name)


def test_exceptions_live_in_errors():
    outside = sorted(
        f"{mod.__name__}.{name}"
        for mod in all_modules()
        if mod is not errors
        for name, obj in vars(mod).items()
        if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == mod.__name__
        and not name.startswith("_")  # private control flow (lock.py's _RetryNow) is no user's error
    )
    assert outside == []


def test_the_docstring_tree_names_every_error():
    classes = [obj for obj in vars(errors).values() if inspect.isclass(obj) and issubclass(obj, errors.BackupkitError)]
    assert len(classes) > 10
    for cls in classes:
        assert f" {cls.__name__} " in errors.__doc__ or f"{cls.__name__}\n" in errors.__doc__, cls.__name__


def test_old_homes_reexport():
    from backupkit.managers.prune import DamagedRepository
    from backupkit.repo.lock import LockConflict, LockLost

    assert (DamagedRepository, LockConflict, LockLost) == (errors.DamagedRepository, errors.LockConflict, errors.LockLost)
    assert issubclass(errors.LockConflict, errors.LockError) and issubclass(errors.DamagedRepository, errors.RepositoryError)
