"""Reuse freed memory instead of faulting in fresh pages: the C allocator's thresholds for compute runs.

Why: torch allocates every operation's output afresh. With glibc's defaults a buffer above the mmap threshold
(128 KiB, raised dynamically to at most 32 MiB) is mapped when allocated and unmapped when freed, and free memory
at the top of the heap is handed back past a small trim threshold. The next operation's output then lands on
fresh pages that the kernel must fault in and zero. Measured on the built-in encoder (512 patches of 224 px,
batches of 64, 2 cores, ``benchmarks/bench_extract.py``): about 500,000 page faults and a quarter of its CPU
time. With both thresholds raised, freed buffers stay in the heap for the next batch: no faults, and the same
patches encode about a third faster.

Cost: a compute process keeps its peak working set mapped between batches instead of returning it to the OS.
:func:`release_free_memory` hands the free part back; the napari widgets call it when a job ends.

Linux with glibc only. Nothing is changed elsewhere, when the user already tunes malloc
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``), or with
``NAPARI_PATHM3_MALLOC=0``. Stdlib only (ctypes), so the thread policy can apply it cheaply.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
from typing import Any

__all__ = ["ENV_VAR", "keep_freed_memory", "release_free_memory"]

log = logging.getLogger(__name__)

#: ``0`` turns the tuning off (any other value, or unset: on where supported)
ENV_VAR = "NAPARI_PATHM3_MALLOC"
#: allocations up to this size come from the heap (and are reused) instead of fresh mappings: above the float
#: copy of a batch of 64 patches (38.5 MB). Larger ones (a 100k-patch feature matrix) are still mapped and
#: returned to the OS when freed, which keeps the full model's peak at 100k patches near glibc's own (bench_model:
#: 1,890 MB untuned, 1,969 MB with 64 MiB, 2,030 MB with 256 MiB)
MMAP_THRESHOLD = 64 << 20
#: free memory kept at the top of the heap: above one batch's working set (~0.3 GB for 64 patches of the
#: built-in encoder, ~0.6 GB for 128)
TRIM_THRESHOLD = 1 << 30
# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_USER_TUNING = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")

_lock = threading.Lock()
_applied: bool | None = None  # None: not tried yet; then whether the thresholds are ours


def _libc() -> Any | None:
    """glibc through ctypes, or ``None`` where the C library is another one (musl, macOS, Windows)."""
    if not platform.system() == "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process (see the module docstring).

    Returns whether this process runs with the raised thresholds. Safe to call at every job start.
    """
    global _applied
    with _lock:
        if _applied is not None:
            return _applied
        _applied = False
        if os.environ.get(ENV_VAR, "").strip() == "0":
            log.debug("allocator tuning off (%s=0)", ENV_VAR)
            return False
        if any(os.environ.get(name) for name in _USER_TUNING):
            log.debug("allocator tuning left to the user's malloc settings")
            return False
        libc = _libc()
        if libc is None:
            return False
        # mallopt returns 1 on success; the mmap threshold first, so a refused trim leaves glibc's dynamic mode
        ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        ok = ok and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        _applied = ok
        log.info(
            "allocator: freed buffers up to %d MiB reused (%s)",
            MMAP_THRESHOLD >> 20,
            "on" if ok else "refused",
        )
        return ok


def release_free_memory() -> None:
    """Hand the heap's free pages back to the OS (``malloc_trim(0)``), e.g. when a GUI job has ended."""
    if not _applied:
        return
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
