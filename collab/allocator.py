"""Giving freed memory back to the operating system after a large document unloads.

CPython hands strings over 512 bytes to the C allocator. glibc's malloc serves the first large
ones with mmap and unmaps them when freed, but then raises its mmap threshold (up to 32 MiB), so
later large strings come from the heap and their pages stay with the process after they are
freed: a 100 MB document left the server at its peak RSS after unloading (docs/operations.md
has the figures). ``malloc_trim(0)`` returns the free pages of every arena. Elsewhere (musl,
macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def return_free_memory() -> bool:
    """Returns the C allocator's free pages to the OS; False where that is not possible."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
