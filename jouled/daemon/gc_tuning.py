"""Garbage-collector settings for the long-running daemon.

Under span load the daemon holds many small long-lived objects (about two per span in flight
and one per remembered request: ~200,000 at 1,000 spans/s with the default 30 s settle
delay). With CPython's default thresholds (700, 10, 10) the young generations are collected
every few hundred allocations and the survivors scanned again and again: a third of the
span path's CPU on the in-process benchmark. Objects built at start-up (modules, config,
registries) are frozen out of every collection, and the young generation is collected
automatically once 50,000 more container objects are alive than at the last collection.
Reference counting frees all garbage without cycles at once.

Cycles wait for a collection, and that threshold counts allocations *less deallocations*:
a daemon in steady state frees as much as it allocates, so only the cycles themselves move
it. grpcio's asyncio server leaves one cycle per call (``_find_method_handler``'s coroutine
scope and the closure it defines, holding the call's ``_HandlerCallDetails`` and metadata):
~0.85 KB a call, 2 calls a second at 1,000 spans/s from the OpenTelemetry SDK, 6 objects each,
so the threshold was reached after about 70 minutes, and until then the garbage grew the
daemon's Python heap by ~0.1 MB a minute (2.3 MB in 20 minutes, RSS 77.9 to 81.7 MB;
``benchmarks.daemon_memory --inspect``). ``collect_young`` collects the young generation on
a timer instead (with the heap trim, every ``malloc_tuning.HEAP_TRIM_S``; the middle
generation every ``MIDDLE_EVERY`` rounds): 0.5 ms and 1.4 ms a time on average, 0.07 ms of
CPU a second, and the heap stays flat.
"""

from __future__ import annotations

import gc
from typing import Final

THRESHOLDS: Final = (50_000, 20, 10)
MIDDLE_EVERY: Final = 6  # collect_young: the middle generation every 6th time (a minute)


def tune_gc() -> None:
    """Freeze what start-up built and raise the collection thresholds (``THRESHOLDS``)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


def collect_young(round_: int) -> int:
    """Collect the young generation, and the middle one too when ``round_`` is a multiple of
    ``MIDDLE_EVERY`` (so a cycle that was still alive at one young collection is found within
    a minute). Returns the number of unreachable objects found (``gc.collect``'s answer)."""
    return gc.collect(1 if round_ % MIDDLE_EVERY == 0 else 0)
