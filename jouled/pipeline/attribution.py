"""The attribution stage's published section: workloads, idle, requests and the span books.

Energies are cumulative joules since the daemon started; counts are since start too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True, slots=True)
class RequestStats:
    count: int
    energy_sum_j: float
    bucket_counts: tuple[int, ...]  # cumulative, one per bound in ``buckets``, then +Inf
    gflops_total: float
    input_tokens: int = 0  # summed over the requests that reported them
    output_tokens: int = 0


def _empty() -> Mapping[Any, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class AttributionSnapshot:
    """Cumulative joules and counts since start, keyed: ``workload_energy_j`` by (workload,
    component, source); ``idle_*`` by component (gpu summed over boards);
    ``unattributed_energy_j`` by (component, source); ``workload_*_spans_j`` by (workload,
    component); ``requests`` and ``energy_per_gflop_j`` by (workload, model). Every field
    defaults to empty or zero, so a test or a bench names only what it sets."""

    workload_energy_j: Mapping[tuple[str, str, str], float] = field(default_factory=_empty)
    idle_energy_j: Mapping[str, float] = field(default_factory=_empty)
    idle_power_w: Mapping[str, float] = field(default_factory=_empty)
    unattributed_energy_j: Mapping[tuple[str, str], float] = field(default_factory=_empty)
    workload_in_spans_j: Mapping[tuple[str, str], float] = field(default_factory=_empty)
    workload_outside_spans_j: Mapping[tuple[str, str], float] = field(default_factory=_empty)
    workload_processes: Mapping[str, int] = field(default_factory=_empty)
    # (source, target) -> processes jouled was told of but cannot see under the proc root:
    # ("nvml", "gpu-0") GPU processes, ("workload_rule", name) PIDs a workload's rules name.
    unseen_processes: Mapping[tuple[str, str], int] = field(default_factory=_empty)
    requests: Mapping[tuple[str, str], RequestStats] = field(default_factory=_empty)
    energy_per_gflop_j: Mapping[tuple[str, str], float] = field(default_factory=_empty)
    buckets: tuple[float, ...] = ()
    spans_received: int = 0
    spans_late: int = 0
    spans_rejected: Mapping[str, int] = field(default_factory=_empty)
    spans_pending: int = 0
    spans_settled: int = 0  # became requests (with all the energy their time had)
    spans_duplicate: int = 0  # resent copies of a pending span, and nested spans of a request
    spans_dropped: int = 0  # evicted over the pending cap before any energy
    # The splitter's degraded paths (each still conserves energy; see SplitterStats).
    spans_truncated: int = 0  # settled with the energy they had (cap, or waited too long)
    ticks_forced: int = 0  # settled early: more than the splitter's open-tick limit
    ticks_clamped: int = 0  # started before the previous tick ended (wall clock stepped back)

    @property
    def spans_balance(self) -> int:
        """received - (settled + late + rejected + duplicate + dropped + pending): 0 always."""
        return self.spans_received - (
            self.spans_settled
            + self.spans_late
            + sum(self.spans_rejected.values())
            + self.spans_duplicate
            + self.spans_dropped
            + self.spans_pending
        )
