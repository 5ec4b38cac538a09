"""Garbage-collector settings for the long-running daemon.

Under span load the daemon holds many small long-lived objects (about two per span in flight
and one per remembered request: ~200,000 at 1,000 spans/s with the default 30 s settle
delay). With CPython's default thresholds (700, 10, 10) the young generations are collected
every few hundred allocations and the survivors scanned again and again: a third of the
span path's CPU on the in-process benchmark. Objects built at start-up (modules, config,
registries) are frozen out of every collection, and the young generation is collected every
50,000 container allocations (a second or two at 1,000 spans/s). Reference counting still
frees all garbage without cycles at once; cycles wait a little longer.
"""

from __future__ import annotations

import gc
from typing import Final

THRESHOLDS: Final = (50_000, 20, 10)


def tune_gc() -> None:
    """Freeze what start-up built and raise the collection thresholds (``THRESHOLDS``)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
