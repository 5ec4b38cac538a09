"""Unfolding raw hardware energy counters into a monotonic total.

RAPL ``energy_uj`` wraps at ``max_energy_range_uj``; NVML's total-energy counter restarts
at zero when the driver reloads. Both look the same to a naive reader: the counter goes
backwards. ``unfold`` is the one pure function that tells them apart, so every collector
shares one tested rule and never exports a negative delta or a spike.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Event(enum.StrEnum):
    NONE = "none"
    WRAP = "wrap"
    RESET = "reset"  # counter restarted (driver reload, GPU reset)
    GLITCH = "glitch"  # an implausible forward jump; dropped rather than exported as a spike


@dataclass(frozen=True, slots=True)
class Step:
    delta: int  # energy in the counter's own unit since the previous read, never negative
    event: Event


def unfold(
    prev: int,
    cur: int,
    max_range: int | None,
    max_delta: int | None = None,
) -> Step:
    """Energy between two raw reads of a counter.

    ``max_range`` is the counter's range: it counts modulo this value (RAPL's
    ``max_energy_range_uj``, as Kepler and node_exporter unfold it), or ``None``
    for a counter that never wraps (NVML's 64-bit mJ counter).

    ``max_delta`` is the most energy the domain can plausibly have spent since the previous
    read (its maximum power times the elapsed time, with margin), or ``None`` when unknown.
    It separates a wrap from a reset: after a wrap the energy is ``max_range - prev + cur``,
    which must be plausible; after a reset the counter restarted near zero and ``cur`` is
    the energy since the restart. A forward jump beyond ``max_delta`` is a glitch and counts
    as zero rather than a spike.
    """
    if prev < 0 or cur < 0:
        raise ValueError("raw energy counters are never negative")
    if cur >= prev:
        delta = cur - prev
        if max_delta is not None and delta > max_delta:
            return Step(0, Event.GLITCH)
        return Step(delta, Event.NONE)
    # The counter went backwards: a wrap or a reset.
    if max_range is not None and prev <= max_range:
        wrapped = max_range - prev + cur
        if max_delta is None or wrapped <= max_delta:
            return Step(wrapped, Event.WRAP)
    # A reset: the counter restarted at zero, so ``cur`` accrued since then.
    if max_delta is not None and cur > max_delta:
        return Step(0, Event.RESET)
    return Step(cur, Event.RESET)
