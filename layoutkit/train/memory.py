"""Handing the memory the process no longer uses back to the system (--release_memory), on glibc Linux.

glibc's malloc keeps freed memory in its heap for the next allocation instead of returning it. With dynamic
padding every batch has other tensor shapes, so freed blocks rarely fit the next ones exactly: the heap fragments
and the resident memory creeps up epoch after epoch (docs/speed.md, "Where the memory goes"), and what the
encoding of the dataset allocated stays resident through training. `malloc_trim(0)` returns every free page of
the heap to the system, costing a few milliseconds; the pages are faulted in again only if they are needed again.
Elsewhere (macOS, Windows, musl) there is nothing to call and these functions do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def glibc():
    """glibc as a ctypes library, or None where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # only glibc has it (musl, Alpine's C library, does not)
        libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return libc


def release_free_memory() -> bool:
    """Return the free pages of the C heap to the system (glibc's `malloc_trim(0)`); False where unavailable."""
    libc = glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
