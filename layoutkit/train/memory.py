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
import os
import sys

M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
# Blocks from this size up are mapped on their own and unmapped when freed, instead of coming from the heap. glibc
# raises its threshold itself, up to 32 MiB, each time such a block is freed, so the activations of a step (a few
# MiB to 30 MiB each, in shapes that change with every batch) end up in the heap and fragment it. A fixed 4 MiB
# (which also stops that raising) took the low-memory comparison's peak from 1249 to 1096 MiB; 1 MiB cost a third
# of the speed (docs/speed.md).
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024


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


def map_large_blocks() -> bool:
    """Give blocks of 4 MiB or more their own mapping, returned to the system when freed (glibc's
    `mallopt(M_MMAP_THRESHOLD, ...)`). Left alone where MALLOC_MMAP_THRESHOLD_ is set: the user's choice wins.
    False where unavailable or left alone."""
    libc = glibc()
    if libc is None or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def release_free_memory() -> bool:
    """Return the free pages of the C heap to the system (glibc's `malloc_trim(0)`); False where unavailable."""
    libc = glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
