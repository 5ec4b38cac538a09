"""The host's CPU times from ``/proc/stat``, under an injectable proc root (``/host/proc`` in a
container): the one reader shared by the estimate collector and the process tracker."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PROC = Path("/proc")

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """Whole-host CPU seconds since boot, summed over CPUs."""

    busy_s: float  # user + nice + system + irq + softirq (guest time is inside user/nice)
    total_s: float  # busy + idle + iowait + steal


def host_cpu_times(proc_root: Path = DEFAULT_PROC) -> CpuTimes:
    """Read the aggregate ``cpu`` line of ``<proc_root>/stat`` (clock ticks, USER_HZ).

    iowait and idle are time no task ran; steal was spent by other guests, so neither is
    busy. Raises ``OSError`` when the file cannot be read, ``ValueError`` when its first line
    is not the ``cpu`` line.
    """
    with open(proc_root / "stat", "rb") as fh:
        first = fh.readline().split()
    if not first or first[0] != b"cpu":
        raise ValueError(f"{proc_root / 'stat'}: the first line is not the aggregate cpu line")
    v = [int(x) for x in first[1:]] + [0] * 10
    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
    busy = user + nice + system + irq + softirq
    hz = os.sysconf("SC_CLK_TCK")
    return CpuTimes(busy_s=busy / hz, total_s=(busy + idle + iowait + steal) / hz)


def host_busy_s(proc_root: Path = DEFAULT_PROC) -> float:
    """Busy CPU seconds of the whole host since boot; 0 when ``<proc_root>/stat`` cannot be
    read (callers compare two readings: a constant means "no evidence of work")."""
    try:
        return host_cpu_times(proc_root).busy_s
    except (OSError, ValueError):
        return 0.0


def busy_or_none(read: Callable[[], float] | None) -> float | None:
    """Host busy CPU seconds from a collector's injected reader (``host_busy_s``); None when
    it has none or the read fails: a broken /proc must not stop energy reads."""
    if read is None:
        return None
    try:
        return read()
    except Exception as exc:
        log.debug("host busy time unreadable: %s", exc)
        return None
