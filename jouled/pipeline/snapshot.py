"""The immutable state one tick publishes; the exporter only ever reads it.

One writer (the sampler) builds a new ``Snapshot`` each tick and swaps a reference; readers
(``/metrics``) see either the old or the new one, never half of each (Kepler's design).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from jouled.pipeline.attribution import AttributionSnapshot
from jouled.pipeline.cost import CostSnapshot
from jouled.pipeline.server_metrics import ServerMetricsSnapshot


def frozen(mapping: Mapping[Any, Any]) -> Mapping[Any, Any]:
    """A read-only view of a copy: safe to hand to readers on other tasks."""
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class CollectorStatus:
    up: bool
    duration_s: float
    error: str = ""  # the last failure with its fix, "" when up
    problems: Mapping[str, str] = field(default_factory=dict)  # per-domain partial failures


@dataclass(frozen=True, slots=True)
class Snapshot:
    seq: int  # tick number; 0 before the first tick
    wall_time: float  # when the tick ended (unix seconds)
    monotonic_time: float
    # (domain, source) -> joules since the daemon started. Raw zones: they overlap.
    domain_energy_j: Mapping[tuple[str, str], float]
    # (component, source) -> joules; components do not overlap: they sum to host IT energy.
    host_energy_j: Mapping[tuple[str, str], float]
    # (domain, source) -> counter resets detected (driver reloads, GPU resets).
    counter_resets: Mapping[tuple[str, str], int]
    collectors: Mapping[str, CollectorStatus]
    # (domain, source) -> absurd single reads dropped (never a baseline, never energy).
    counter_glitches: Mapping[tuple[str, str], int] = field(default_factory=dict)
    # (domain, source) -> whether the counter is frozen now (not moving on a busy host).
    counter_frozen: Mapping[tuple[str, str], bool] = field(default_factory=dict)
    # Sections owned by later stages; None until that stage has run.
    attribution: AttributionSnapshot | None = None
    cost: CostSnapshot | None = None
    server_metrics: ServerMetricsSnapshot | None = None


SECTIONS = frozenset(
    {"attribution", "cost", "server_metrics"}
)  # the stage names the snapshot has a field for


EMPTY = Snapshot(
    seq=0,
    wall_time=0.0,
    monotonic_time=0.0,
    domain_energy_j=frozen({}),
    host_energy_j=frozen({}),
    counter_resets=frozen({}),
    collectors=frozen({}),
)
