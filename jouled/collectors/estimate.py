"""Estimated energy for hosts with nothing to measure (most cloud VMs expose no RAPL).

CPU power is interpolated between a per-vCPU idle and full-load wattage by utilization
(Cloud Carbon Footprint's method and default coefficients); memory power is a constant per
GB. Every reading carries ``source="estimate"``: an estimate is never shown as a measurement.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from jouled.clock import Clock
from jouled.collectors.base import CheckRow, DomainReading, Kind, Sample, Source

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CpuTimes:
    busy_s: float
    total_s: float


def host_cpu_times() -> CpuTimes:
    """Busy and total CPU seconds of the whole host since boot."""
    t = psutil.cpu_times()
    # iowait and idle are time the CPU was not executing; steal was spent by other guests.
    idle = t.idle + getattr(t, "iowait", 0.0) + getattr(t, "steal", 0.0)
    total = sum(t)
    # guest time is already counted inside user/nice on Linux; subtract to avoid counting twice.
    total -= getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0)
    return CpuTimes(busy_s=total - idle, total_s=total)


class EstimateCollector:
    """Integrates estimated CPU and memory power over the injected monotonic clock."""

    name = "estimate"

    def __init__(
        self,
        clock: Clock,
        *,
        cpu_min_watts_per_vcpu: float = 0.74,
        cpu_max_watts_per_vcpu: float = 3.5,
        memory_watts_per_gb: float = 0.392,
        vcpus: int | None = None,
        memory_gb: float | None = None,
        cpu_times: Callable[[], CpuTimes] = host_cpu_times,
    ) -> None:
        self._clock = clock
        self._min_w = cpu_min_watts_per_vcpu
        self._max_w = cpu_max_watts_per_vcpu
        self.vcpus = vcpus if vcpus is not None else (psutil.cpu_count(logical=True) or 1)
        self.memory_gb = memory_gb if memory_gb is not None else psutil.virtual_memory().total / 1e9
        self._memory_w = memory_watts_per_gb * self.memory_gb
        self._cpu_times = cpu_times
        self._last_times = cpu_times()
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
            )
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
                f"estimate: {self.memory_gb:.1f} GB x {self._memory_w / self.memory_gb:.3f} W/GB",
            ),
        ]

    def close(self) -> None:
        return None
