"""Small concurrency helpers shared by the managers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def bounded_map(pool: ThreadPoolExecutor, fn: Callable[..., T], items: Iterable, window: int) -> Iterator[T]:
    """``pool.map`` that keeps at most ``window`` calls in flight (memory stays flat);
    results come in the order of ``items``."""
    pending: list[Future[T]] = []
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.pop(0).result()
    for f in pending:
        yield f.result()
