"""The server-metrics stage's published section: energy, tokens and requests per model as
the workloads' inference servers report them (``workloads[].server_metrics``).

Energies are cumulative joules since the daemon started; counts are since start too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerStatus:
    up: bool
    error: str  # why it is down, "" when up
    servers: tuple[str, ...]  # recognized: vllm, sglang, tgi, triton
    duration_s: float  # the last read, seconds


@dataclass(frozen=True, slots=True)
class ServerMetricsSnapshot:
    model_energy_j: Mapping[tuple[str, str], float]  # (workload, model)
    tokens: Mapping[tuple[str, str, str], float]  # (workload, model, "input"|"output")
    requests: Mapping[tuple[str, str], float]  # (workload, model)
    status: Mapping[str, ServerStatus]  # workload
    resets: Mapping[str, int]  # workload: reads that found a counter reset
    unserved_j: Mapping[str, float]  # workload: energy of ticks with no work reported
    pending_j: Mapping[str, float]  # workload: energy waiting for work to be reported
    workloads: frozenset[str]  # the workloads in server-metrics mode
