"""Handing memory a step freed back to the system, between steps and between partners.

Two allocators keep what a step freed for their own later use, so that a process's resident
size only ever grows over a run, and one step's freed memory sits beside the next step's:

- Arrow's (mimalloc) keeps freed pages for Arrow alone: a step's freed strings would stay
  resident while the next step allocates NumPy memory beside them;
- the C library's malloc (NumPy's arrays, Python's large objects) keeps freed blocks in its
  heaps once its threshold for mapping large blocks apart has risen past them (glibc raises
  it each time such a block is freed), and gives back only the top of a heap unless asked.

At a million records each is worth hundreds of MiB on a process's peak.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import sys
from collections.abc import Iterator


@functools.cache
def _malloc_trim():
    """glibc's `malloc_trim`, or None (another C library: nothing to call)."""
    try:
        # glibc's name first: find_library runs `ldconfig -p` in a child process.
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        libc = None
    try:
        libc = libc or ctypes.CDLL(ctypes.util.find_library("c"))
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_unused_memory() -> None:
    """Give the memory both allocators hold free back to the system (a few ms)."""
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None:
        pyarrow.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused inside, restarted after (on failure too):
    for a large import, which makes many objects and almost no garbage (the collector's full
    passes over a growing heap cost ~15% of its CPU)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


@contextlib.contextmanager
def imported_then_frozen() -> Iterator[None]:
    """For a process of our own that imports much before it works (the fork server, the
    background process): the imports inside run with the collector paused
    (`collector_paused`), and what they made is frozen after (`gc.freeze`): moved to a
    generation the collector never visits, so neither this process nor one forked from it
    walks those objects again or copies their memory pages (a visit writes to every object's
    header, and a write to a page shared with the parent copies it). Not for a process that
    keeps running other code (a test session, an Airflow task): it could never collect them."""
    with collector_paused():
        yield
    gc.freeze()
