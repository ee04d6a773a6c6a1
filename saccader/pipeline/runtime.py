"""Process-wide settings of a job that change its speed, never its results."""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

# glibc mallopt parameters (malloc.h). By default glibc hands freed memory back to the kernel (trim at 128 KB,
# mmap for blocks over 128 KB-32 MB), so every training step of a CPU job maps, faults in and zeroes its activation
# buffers again, in kernel time. Keeping the freed memory in the heap spares that work at about the same peak
# memory (bench/malloc.py measures both per embedded run; figures in bench/README.md). No PyTorch or ecosystem
# API sets this (the usual advice is to preload jemalloc or tcmalloc, which are not installed here); the allocator
# never changes a number that is computed, so weights and results stay bitwise the same.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
KEEP_FREED = {_M_MMAP_THRESHOLD: 1 << 30, _M_TRIM_THRESHOLD: 1 << 30, _M_TOP_PAD: 1 << 28}


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse (no-op, returning False, on other C libraries)."""
    try:  # the symbols already loaded into this process, libc's among them: no library search
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # macOS, Windows: no mallopt, nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = all(mallopt(param, value) == 1 for param, value in KEEP_FREED.items())  # musl's stub returns 0
    if not ok:
        log.debug("mallopt refused a setting; it and the ones after it keep their defaults")
    return ok
