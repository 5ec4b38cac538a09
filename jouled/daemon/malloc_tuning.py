"""glibc malloc settings for the long-running daemon (Linux; elsewhere nothing is changed).

Two of glibc's defaults cost the daemon resident memory it never gives back:

- ``M_MMAP_THRESHOLD`` starts at 128 KiB but rises to the size of each mmapped block freed
  (up to 32 MiB), so after the first few span bodies (100-300 KiB each from the OTLP SDKs)
  bodies are taken from the heap, whose freed middles stay resident. Fixing it at 128 KiB
  keeps every large body in its own mapping, returned to the kernel when freed.
- ``M_ARENA_MAX`` defaults to 8 arenas per core: each thread that allocates (ingest, tick,
  exposition, gRPC) gets its own heap, each holding freed memory of its own. One suffices:
  Python's small objects (up to 512 B) come from its own allocator, not from these arenas,
  and Python's threads allocate under the GIL, so they would seldom wait on its lock
  (grpcio's core threads allocate without it, a few times a request).

Measured with ``benchmarks.daemon_cpu``'s daemon at 1,000 spans/s over OTLP/HTTP: 97.3 MB
resident after 80 s without these settings, 92.8 MB with them (two arenas then); one arena
instead of two: 0.5-1.0 MB less at 1,000 spans/s, CPU within noise
(docs/BENCHMARKS_HISTORY.md).

A third default costs memory over minutes: glibc gives free memory back to the kernel only at
the top of its heap, so the pages of chunks freed in the middle (span batches' lists and
dicts, grpc-core's buffers) stay resident. ``trim_heap_every`` calls ``malloc_trim(0)``, which
also hands back whole free pages inside the heap, every ``HEAP_TRIM_S`` on a worker thread
(~0.2 ms a call at 1,000 spans/s: 0.02 ms a second).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, Final

log = logging.getLogger(__name__)

# glibc malloc.h
M_MMAP_THRESHOLD: Final = -3
M_ARENA_MAX: Final = -8
MMAP_THRESHOLD_BYTES: Final = 128 * 1024
ARENA_MAX: Final = 1
HEAP_TRIM_S: Final = 10.0


def _libc_function(name: str, *argtypes: type[ctypes._SimpleCData[Any]]) -> Any | None:
    """glibc's function ``name`` returning an int, with its argument types set; None where the
    process has no such symbol (not Linux, musl, macOS)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = getattr(ctypes.CDLL(None), name)  # the process's own symbols: libc's among them
    except (OSError, AttributeError):
        return None
    fn.argtypes = argtypes
    fn.restype = ctypes.c_int
    return fn


def tune_malloc() -> bool:
    """Apply the settings above; call before the daemon starts its threads. True when glibc
    took them (False elsewhere: musl, macOS, or a libc without ``mallopt``)."""
    mallopt = _libc_function("mallopt", ctypes.c_int, ctypes.c_int)
    if mallopt is None:
        return False
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_ARENA_MAX, ARENA_MAX)
    )
    if not ok:
        log.debug("mallopt refused the daemon's malloc settings; keeping glibc's defaults")
    return ok


@functools.cache
def _malloc_trim() -> Any | None:
    """glibc's ``malloc_trim``, looked up once; None where there is none (musl, macOS)."""
    return _libc_function("malloc_trim", ctypes.c_size_t)


def trim_heap() -> bool:
    """glibc's ``malloc_trim(0)``: the free pages of every arena go back to the kernel, in the
    middle of the heap too. True when called (whether or not it found pages to return); False
    where there is no glibc ``malloc_trim`` (musl, macOS)."""
    malloc_trim = _malloc_trim()
    if malloc_trim is None:
        return False
    malloc_trim(0)
    return True


async def trim_heap_every(
    interval_s: float,
    trim: Callable[[], bool] = trim_heap,
    collect: Callable[[int], object] | None = None,
) -> None:
    """Every ``interval_s`` seconds until cancelled: ``collect(round)`` on the event loop
    (``gc_tuning.collect_young``: the cycles it frees are trimmed right after), then ``trim``
    on a worker thread. Trimming stops for good the first time ``trim`` reports that it
    cannot (``collect`` goes on); the errors of either are logged, not raised: a heap that
    keeps its pages is no reason to stop the daemon."""
    can_trim = True
    round_ = 0
    while can_trim or collect is not None:
        await asyncio.sleep(interval_s)
        round_ += 1
        if collect is not None:
            try:
                collect(round_)
            except Exception:
                log.exception("garbage collection failed; trying again in %g s", interval_s)
        if not can_trim:
            continue
        try:
            if not await asyncio.to_thread(trim):
                log.debug("no glibc malloc_trim: the heap keeps its free pages")
                can_trim = False
        except Exception:
            log.exception("malloc_trim failed; trying again in %g s", interval_s)
