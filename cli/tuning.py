"""Process tuning for the bulk commands (backup, restore, check).

The pipeline allocates and frees many 1-16 MiB buffers. glibc serves those with fresh
mmaps whose pages fault in on first touch, which cost more system time than the crypto.
Raising the mmap and trim thresholds lets freed buffers be reused instead.
"""

from __future__ import annotations

import sys

_done = False


def tune_malloc() -> None:
    global _done
    if _done or not sys.platform.startswith("linux"):
        return
    _done = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024 * 1024)
        libc.mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024)
    except (OSError, AttributeError):
        pass
