"""Estimated energy for hosts with nothing to measure (most cloud VMs expose no RAPL).

CPU power is interpolated between a per-vCPU idle and full-load wattage by utilization
(Cloud Carbon Footprint's method and default coefficients); memory power is a constant per
GB, charged as CCF charges it: only on memory above what the per-vCPU figure already covers.
The per-vCPU watts come from SPECpower servers whose own memory (CCF's ``MEMORY_AVG``,
80.69 GB per physical chip on AWS) is inside them; CCF's ``calculateGigabyteHours``
(packages/core/src/memory/helpers.ts in cloud-carbon-footprint/cloud-carbon-footprint)
charges ``(largest instance memory / chips - 80.69 GB) x instance memory / largest memory``
with chips = ceil(largest vCPUs / 96). For an instance whose family has one memory-to-vCPU
ratio that is ``memory - vCPUs x 80.69 / 96`` GB, which jouled uses (the family's largest
instance is unknown on the host; 96 vCPUs per chip is CCF's divisor).

Every reading carries ``source="estimate"``: an estimate is never shown as a measurement.
Its zero-load power (vCPUs x the idle watts, and all of the memory's constant power) is
published as ``Sample.idle_w``, so attribution excludes it from the first tick.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path

from jouled.clock import Clock
from jouled.collectors.base import (
    CheckRow,
    CollectorError,
    DomainReading,
    Kind,
    Sample,
    Source,
)
from jouled.collectors.procstat import DEFAULT_PROC, CpuTimes, host_cpu_times

log = logging.getLogger(__name__)


def _physical_memory_gb() -> float:
    """The host's physical memory in GB: ``MemTotal`` of /proc/meminfo, by sysconf (what
    psutil's ``virtual_memory().total`` reads, without loading psutil into the daemon)."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1e9


def _read_times(proc_root: Path) -> CpuTimes:
    try:
        return host_cpu_times(proc_root)
    except (OSError, ValueError) as exc:
        raise CollectorError(
            f"cannot read the host's CPU times from {proc_root}/stat: {exc}",
            fix="point attribution.proc_path at the host's /proc (e.g. /host/proc in a container)",
        ) from None


class EstimateCollector:
    """Integrates estimated CPU and memory power over the injected monotonic clock."""

    name = "estimate"
    # read() is one /proc/stat read and arithmetic, never blocking: the sampler calls it on
    # the event loop instead of handing it to a thread.
    reads_inline = True

    def __init__(
        self,
        clock: Clock,
        *,
        cpu_min_watts_per_vcpu: float = 0.74,
        cpu_max_watts_per_vcpu: float = 3.5,
        memory_watts_per_gb: float = 0.392,
        memory_gb_included_per_vcpu: float = 80.69 / 96,
        vcpus: int | None = None,
        memory_gb: float | None = None,
        proc_root: Path = DEFAULT_PROC,
        cpu_times: Callable[[], CpuTimes] | None = None,
    ) -> None:
        """``proc_root`` is where /proc/stat is read (``attribution.proc_path``);
        ``cpu_times`` replaces that read (tests)."""
        self._clock = clock
        self._min_w = cpu_min_watts_per_vcpu
        self._max_w = cpu_max_watts_per_vcpu
        self.vcpus = vcpus if vcpus is not None else (os.cpu_count() or 1)
        self.memory_gb = memory_gb if memory_gb is not None else _physical_memory_gb()
        self._memory_w_per_gb = memory_watts_per_gb
        self.memory_gb_included = self.vcpus * memory_gb_included_per_vcpu
        self.memory_gb_charged = max(0.0, self.memory_gb - self.memory_gb_included)
        self._memory_w = memory_watts_per_gb * self.memory_gb_charged
        self._cpu_times = cpu_times or functools.partial(_read_times, proc_root)
        self._last_times = self._cpu_times()
        self._last_t = clock.monotonic()
        self._cpu_j = 0.0
        self._memory_j = 0.0
        self.last_utilization = 0.0

    def cpu_power_w(self, utilization: float) -> float:
        u = min(max(utilization, 0.0), 1.0)
        return self.vcpus * (self._min_w + u * (self._max_w - self._min_w))

    def read(self) -> Sample:
        now = self._clock.monotonic()
        times = self._cpu_times()
        dt = now - self._last_t
        d_total = times.total_s - self._last_times.total_s
        d_busy = times.busy_s - self._last_times.busy_s
        if dt > 0:
            # Utilization over the interval; with no CPU time elapsed (a frozen fake, or a
            # very short interval) keep the previous value rather than claim idle.
            if d_total > 0:
                self.last_utilization = min(max(d_busy / d_total, 0.0), 1.0)
            self._cpu_j += self.cpu_power_w(self.last_utilization) * dt
            self._memory_j += self._memory_w * dt
        self._last_t = now
        self._last_times = times
        return Sample(
            readings=(
                DomainReading("cpu", Kind.CPU, Source.ESTIMATE, self._cpu_j),
                DomainReading("memory", Kind.MEMORY, Source.ESTIMATE, self._memory_j),
            ),
            idle_w={"cpu": self.cpu_power_w(0.0), "memory": self._memory_w},
        )

    def check(self) -> list[CheckRow]:
        return [
            CheckRow(
                self.name,
                "cpu",
                True,
                f"estimate: {self.vcpus} vCPU x {self._min_w}-{self._max_w} W by utilization",
            ),
            CheckRow(
                self.name,
                "memory",
                True,
                f"estimate: {self.memory_gb_charged:.1f} GB x {self._memory_w_per_gb:.3f} W/GB "
                f"= {self._memory_w:.2f} W (of {self.memory_gb:.1f} GB, "
                f"{self.memory_gb_included:.1f} GB counted in the per-vCPU watts)",
            ),
        ]

    def close(self) -> None:
        return None
