"""The host's CPU times from ``/proc/stat``, under an injectable proc root (``/host/proc`` in a
container): the one reader shared by the estimate collector and the process tracker."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PROC = Path("/proc")

log = logging.getLogger(__name__)

# /proc/stat is read once or twice a tick (the estimate collector, the process tracker): kept
# open and read from offset 0 (one pread, which makes the kernel render it afresh) instead of
# open + buffered read + close, which took ~250 us a read on an idle daemon's cold caches
# against ~50 us (a fifth of an idle tick). A few roots at most (the daemon has one; tests
# make many): past _MAX_KEPT, roots are opened per read. A root whose kept file fails a
# read is opened per read from then on (its descriptor is not closed under a reader).
_MAX_KEPT = 8
_kept: dict[Path, int] = {}
_not_kept: set[Path] = set()
_kept_lock = threading.Lock()


def _first_line(path: Path) -> bytes:
    fd = _kept.get(path)
    if fd is None:
        with _kept_lock:
            fd = _kept.get(path)
            if fd is None and path not in _not_kept and len(_kept) < _MAX_KEPT:
                fd = _kept[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    if fd is None:
        with open(path, "rb") as fh:
            return fh.readline()
    try:
        data = os.pread(fd, 1024, 0)
    except OSError:
        with _kept_lock:
            if _kept.get(path) == fd:
                del _kept[path]
                _not_kept.add(path)
        raise
    return data.split(b"\n", 1)[0]


_HZ = os.sysconf("SC_CLK_TCK")


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
    first = _first_line(proc_root / "stat").split()
    if not first or first[0] != b"cpu":
        raise ValueError(f"{proc_root / 'stat'}: the first line is not the aggregate cpu line")
    v = [int(x) for x in first[1:]] + [0] * 10
    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
    busy = user + nice + system + irq + softirq
    return CpuTimes(busy_s=busy / _HZ, total_s=(busy + idle + iowait + steal) / _HZ)


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
