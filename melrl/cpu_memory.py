"""Peak memory of CPU training under glibc: hand freed memory back between generation and the update.

glibc keeps freed blocks below its mmap threshold (adaptive, up to 32 MiB) in the heap for reuse. Generation
(KV caches that grow every step) and the update (activations, gradients) free blocks of different sizes, so the
heap a step ends with holds memory neither phase can reuse: on the embedded model 0.3-0.5 GiB of the peak.
`update_phase()` releases the heap's free pages (`malloc_trim`) and returns blocks of `UPDATE_MMAP_THRESHOLD` or
more to the system as soon as they are freed; `generation_phase()` lets generation reuse heap memory again.
Elsewhere (no glibc, not Linux, or another malloc such as jemalloc preloaded: see `melrl.allocator`) both do
nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

from .allocator import jemalloc_loaded

M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h
GENERATION_MMAP_THRESHOLD = 32 * 2**20  # glibc's own upper bound for its adaptive threshold
UPDATE_MMAP_THRESHOLD = 2**20


@functools.lru_cache(maxsize=1)
def _glibc():
    """The C library when it is glibc (has `mallopt` and `malloc_trim`) and its malloc is in use, else None."""
    if jemalloc_loaded():
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def generation_phase() -> bool:
    """Let freed blocks up to 32 MiB stay in the heap for reuse. Returns whether anything was set."""
    libc = _glibc()
    return bool(libc and libc.mallopt(M_MMAP_THRESHOLD, GENERATION_MMAP_THRESHOLD))


def update_phase() -> bool:
    """Release the heap's free pages and return blocks of 1 MiB or more when freed. Returns whether it did."""
    libc = _glibc()
    if not libc:
        return False
    libc.malloc_trim(0)
    return bool(libc.mallopt(M_MMAP_THRESHOLD, UPDATE_MMAP_THRESHOLD))
