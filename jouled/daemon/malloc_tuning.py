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
instead of two: 0.5-1.0 MB less at 1,000 spans/s, CPU within noise (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import ctypes
import logging
import sys
from typing import Final

log = logging.getLogger(__name__)

# glibc malloc.h
M_MMAP_THRESHOLD: Final = -3
M_ARENA_MAX: Final = -8
MMAP_THRESHOLD_BYTES: Final = 128 * 1024
ARENA_MAX: Final = 1


def tune_malloc() -> bool:
    """Apply the settings above; call before the daemon starts its threads. True when glibc
    took them (False elsewhere: musl, macOS, or a libc without ``mallopt``)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols: libc's among them
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_ARENA_MAX, ARENA_MAX)
    )
    if not ok:
        log.debug("mallopt refused the daemon's malloc settings; keeping glibc's defaults")
    return ok
