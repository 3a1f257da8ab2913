"""Backoff and request accounting shared by the store backends.

Vocabulary: an *attempt* is one try of one store operation; a *kind* is the name a
backend counts a request under (``GET``, ``GET_RANGE``, ``PUT``, ``LIST``, ``HEAD``,
``DELETE``). ``Backoff`` only computes and sleeps; deciding what is retryable stays with
the backend, which knows its library's errors (S3 retries most things through botocore
and uses this only for what botocore cannot retry: bodies cut short mid-download and
409 ConditionalRequestConflict).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: The request kinds every ``stats()`` dict reports, in this order.
REQUEST_KINDS = ("GET", "GET_RANGE", "PUT", "LIST", "HEAD", "DELETE")


@dataclass
class Backoff:
    """Truncated binary exponential backoff with full jitter.

    Attempt ``n`` (0-based) waits ``uniform(0, min(cap, base * 2**n))`` seconds.

    Attributes:
        attempts: how many times an operation is tried in all (>= 1).
        base: the first delay's upper bound, in seconds.
        cap: the largest delay, in seconds.
    """

    attempts: int = 3
    base: float = 0.2
    cap: float = 5.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("Backoff.attempts must be at least 1")

    def delay(self, attempt: int) -> float:
        """The delay before retrying after failed attempt ``attempt`` (0-based)."""
        return self._rng.uniform(0, min(self.cap, self.base * (2**attempt)))

    def wait(self, attempt: int) -> None:
        """Sleep before the retry that follows failed attempt ``attempt``."""
        delay = self.delay(attempt)
        if delay > 0:
            self.sleep(delay)


class RequestStats:
    """Thread-safe counters of requests per kind and of payload bytes moved.

    ``snapshot()`` returns ``{"GET": n, ..., "DELETE": n, "bytes_up": n,
    "bytes_down": n, "retries": n}``; backends may add keys of their own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = dict.fromkeys(REQUEST_KINDS, 0)
        self._counts.update(bytes_up=0, bytes_down=0, retries=0)

    def add(self, key: str, n: int = 1) -> None:
        """Add ``n`` to counter ``key`` (a request kind or a byte/retry counter)."""
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + n

    def snapshot(self) -> dict[str, int]:
        """A copy of every counter."""
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        """Set every counter back to zero."""
        with self._lock:
            for key in self._counts:
                self._counts[key] = 0
