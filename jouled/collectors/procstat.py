"""The host's CPU times from ``/proc/stat``, under an injectable proc root (``/host/proc`` in a
container): the one reader shared by the estimate collector and the process tracker."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

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


# The last reading of each root: (time.monotonic() when read, its CpuTimes). The kernel
# renders the whole of /proc/stat for each read (one line per CPU and a count per interrupt
# line: ~0.2-1 ms on a host of 100+ CPUs); a reader that accepts a reading ``max_age_s`` old
# shares the one another reader made in the same tick.
_last: dict[Path, tuple[float, CpuTimes]] = {}
# The age a reader that only compares busy time between ticks accepts (the process tracker,
# RAPL's and NVML's frozen-counter checks): half the shortest tick (``interval`` >= 0.1 s),
# so it shares the reading the estimate collector made at the start of the same tick and
# never reuses one of the tick before.
SHARED_MAX_AGE_S: Final = 0.05
# proc root -> (its stat file, whether it is a procfs whose readings may be shared)
_stat_paths: dict[Path, tuple[Path, bool]] = {}


def is_procfs(root: Path | str) -> bool:
    """Whether ``root`` is a procfs (it has a ``self`` link), not a directory of regular files
    standing in for one, as tests make: those change between reads and are read afresh."""
    return os.path.islink(f"{root}/self")


def host_cpu_times(proc_root: Path = DEFAULT_PROC, *, max_age_s: float = 0.0) -> CpuTimes:
    """Read the aggregate ``cpu`` line of ``<proc_root>/stat`` (clock ticks, USER_HZ).

    iowait and idle are time no task ran; steal was spent by other guests, so neither is
    busy. ``max_age_s`` > 0: the last reading of this root (by any caller) when it is younger
    than that, instead of a new read (a procfs only; any other root is always read). Raises
    ``OSError`` when the file cannot be read, ``ValueError`` when its first line is not the
    ``cpu`` line.
    """
    known = _stat_paths.get(proc_root)
    if known is None:
        known = _stat_paths[proc_root] = (proc_root / "stat", is_procfs(proc_root))
    path, shared = known
    if shared and max_age_s > 0.0:
        last = _last.get(proc_root)
        if last is not None and 0.0 <= time.monotonic() - last[0] < max_age_s:
            return last[1]
    first = _first_line(path).split()
    if not first or first[0] != b"cpu":
        raise ValueError(f"{path}: the first line is not the aggregate cpu line")
    v = [int(x) for x in first[1:]] + [0] * 10
    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
    busy = user + nice + system + irq + softirq
    times = CpuTimes(busy_s=busy / _HZ, total_s=(busy + idle + iowait + steal) / _HZ)
    if shared:
        _last[proc_root] = (time.monotonic(), times)
    return times


def host_busy_s(proc_root: Path = DEFAULT_PROC, *, max_age_s: float = 0.0) -> float:
    """Busy CPU seconds of the whole host since boot; 0 when ``<proc_root>/stat`` cannot be
    read (callers compare two readings: a constant means "no evidence of work").
    ``max_age_s`` as in ``host_cpu_times``."""
    try:
        return host_cpu_times(proc_root, max_age_s=max_age_s).busy_s
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
