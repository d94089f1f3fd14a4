"""Hand freed heap back to the kernel after a large request.

A GetPreferredAllocation for a resource with 100,000 slots carries every free
slot ID (~3.5 MB); gRPC parses it into heap that glibc keeps after it is freed
(per-thread arenas, and a mmap threshold that grows with the largest block
freed), so RSS stayed ~20 MiB up after such a burst (bench/bench_allocation.py).
malloc_trim(0) (glibc, malloc_trim(3)) returns the free pages of every arena.
Called only after requests that large (server.LARGE_REQUEST_IDS, 50,000 IDs),
once the call is over. Where the C
library has no malloc_trim (musl), it does nothing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

_looked_up = False
_trim: Callable[[int], int] | None = None


def release_free_memory() -> None:
    global _looked_up, _trim
    if not _looked_up:
        _looked_up = True
        try:
            _trim = ctypes.CDLL(None).malloc_trim  # the C library the process runs with
        except (OSError, AttributeError):
            _trim = None
    if _trim is not None:
        _trim(0)
