"""Splitting one tick's host energy among workloads, exactly.

Per component and source: ``measured = idle + Σ workloads + unattributed`` (invariant 1).
CPU, DRAM and the platform remainder are split by CPU time (the only per-process signal
the kernel offers without perf counters; it ignores frequency and AVX, as Kepler notes);
each GPU's energy by its processes' SM utilization. With ``idle: exclude`` (the thesis's
method) idle power is subtracted first and only the active part is shared; with
``idle: share`` everything is shared by the workloads' share of busy CPU.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

IdleMode = Literal["exclude", "share"]
Key = tuple[str, str]  # (component, source)


@dataclass(frozen=True, slots=True)
class TickShares:
    idle_j: Mapping[Key, float]
    workload_j: Mapping[str, Mapping[Key, float]]
    unattributed_j: Mapping[Key, float]


class IdleModel:
    """Idle power of one meter, in order of trust: configured; ``known_w``, the meter's own
    zero-load power where it has one (the estimate's model); or learned as the lowest 10-tick
    average power seen over the last hour. Until the first 10 ticks are learned it is the
    lowest single-tick power seen so far: never below the true idle, so a request in the
    first seconds is never charged idle power nobody has measured yet (issue 14). On a host
    that is never idle this overestimates idle (so it under-attributes); configure
    ``attribution.idle_power_watts`` where accuracy matters.
    """

    def __init__(self, configured_w: float | None = None, *, block: int = 10, blocks: int = 360):
        self.configured_w = configured_w
        self.known_w: float | None = None
        self._lowest_tick_w: float | None = None
        self._block = block
        self._acc_j = 0.0
        self._acc_s = 0.0
        self._n = 0
        self._averages: deque[float] = deque(maxlen=blocks)

    def observe(self, energy_j: float, seconds: float) -> None:
        if seconds <= 0 or energy_j <= 0:
            # A tick without energy (the sampler's first, a baseline) teaches nothing.
            return
        tick_w = energy_j / seconds
        if self._lowest_tick_w is None or tick_w < self._lowest_tick_w:
            self._lowest_tick_w = tick_w
        self._acc_j += energy_j
        self._acc_s += seconds
        self._n += 1
        if self._n >= self._block:
            self._averages.append(self._acc_j / self._acc_s)
            self._acc_j = self._acc_s = 0.0
            self._n = 0

    @property
    def power_w(self) -> float:
        if self.configured_w is not None:
            return self.configured_w
        if self.known_w is not None:
            return self.known_w
        if self._averages:
            return min(self._averages)
        # Still learning: the lowest power seen is an upper bound of idle, so nothing is
        # charged that might be idle. Before any tick: nothing to exclude.
        return self._lowest_tick_w if self._lowest_tick_w is not None else 0.0

    @property
    def learned(self) -> bool:
        """Whether the idle power is known (configured or the meter's own) or learned."""
        return self.configured_w is not None or self.known_w is not None or bool(self._averages)


def _split(total: float, weights: Mapping[str, float], capacity: float) -> dict[str, float]:
    """Give each workload ``total * weight / capacity``; never more than ``total`` in all."""
    if total <= 0 or capacity <= 0:
        return {w: 0.0 for w in weights}
    # Over-reported CPU time is normalized, not overpaid. Each fraction is <= 1 before it
    # meets ``total``: a subnormal capacity must not turn total/capacity into inf (0*inf=NaN).
    denom = max(capacity, sum(weights.values()))
    return {w: total * (v / denom) for w, v in weights.items()}


def split_tick(
    host_j: Mapping[Key, float],
    seconds: float,
    *,
    idle_w: Mapping[Key, float],
    cpu_s: Mapping[str, float],
    host_busy_s: float,
    gpu_j: Mapping[str, float] | None = None,
    gpu_weights: Mapping[str, Mapping[str, float]] | None = None,
    gpu_idle_w: Mapping[str, float] | None = None,
    mode: IdleMode = "exclude",
) -> TickShares:
    """One tick's split. ``gpu_weights``: GPU index -> workload -> weight (summed SM
    utilization of its processes; the key "" holds processes of no workload)."""
    idle: dict[Key, float] = {}
    unattr: dict[Key, float] = {}
    per: dict[str, dict[Key, float]] = {w: {} for w in cpu_s}
    for key, measured in host_j.items():
        component, _source = key
        if component == "gpu" and gpu_j:
            continue  # split per board below
        idle_part = 0.0
        if mode == "exclude":
            idle_part = min(measured, max(0.0, idle_w.get(key, 0.0) * seconds))
        active = measured - idle_part
        shares = _split(active, cpu_s, host_busy_s)
        for w, j in shares.items():
            per[w][key] = j
        idle[key] = idle_part
        unattr[key] = active - sum(shares.values())
    gpu_keys = [k for k in host_j if k[0] == "gpu"]
    if gpu_j and gpu_keys:
        key = gpu_keys[0]
        idle[key] = 0.0
        unattr[key] = 0.0
        for parts in per.values():
            parts[key] = 0.0
        for device, measured in gpu_j.items():
            idle_part = 0.0
            if mode == "exclude":
                idle_part = min(measured, max(0.0, (gpu_idle_w or {}).get(device, 0.0) * seconds))
            active = measured - idle_part
            weights = dict((gpu_weights or {}).get(device, {}))
            own = {w: v for w, v in weights.items() if w in per}
            total_w = sum(weights.values())
            if total_w <= 0 and own:
                # Processes present but no utilization sample: share equally among them.
                own = dict.fromkeys(own, 1.0)
                total_w = float(len(weights))
            shares = _split(active, own, total_w)
            for w, j in shares.items():
                per[w][key] += j
            idle[key] += idle_part
            unattr[key] += active - sum(shares.values())
    return TickShares(idle_j=idle, workload_j=per, unattributed_j=unattr)
