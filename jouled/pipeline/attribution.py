"""The attribution stage's published section: workloads, idle, requests and the span books.

Energies are cumulative joules since the daemon started; counts are since start too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestStats:
    count: int
    energy_sum_j: float
    bucket_counts: tuple[int, ...]  # cumulative, one per bound in ``buckets``, then +Inf
    gflops_total: float


@dataclass(frozen=True, slots=True)
class AttributionSnapshot:
    workload_energy_j: Mapping[tuple[str, str, str], float]  # (workload, component, source)
    idle_energy_j: Mapping[str, float]  # component
    idle_power_w: Mapping[str, float]  # component (gpu: summed over boards)
    unattributed_energy_j: Mapping[tuple[str, str], float]  # (component, source)
    workload_in_spans_j: Mapping[tuple[str, str], float]  # (workload, component)
    workload_outside_spans_j: Mapping[tuple[str, str], float]
    workload_processes: Mapping[str, int]
    requests: Mapping[tuple[str, str], RequestStats]  # (workload, model)
    energy_per_gflop_j: Mapping[tuple[str, str], float]
    # The cost model's prediction per (workload, model), where a fit file is configured.
    predicted_request_j: Mapping[tuple[str, str], float]
    buckets: tuple[float, ...]
    spans_received: int
    spans_accepted: int
    spans_late: int
    spans_rejected: Mapping[str, int]
    spans_pending: int
    spans_settled: int  # became requests (with all the energy their time had)
    spans_duplicate: int  # resent copies of a pending span, counted once
    spans_dropped: int  # evicted over the pending cap before any energy

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
