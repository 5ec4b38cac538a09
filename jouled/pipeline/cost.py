"""The cost stage's published section and the books it hands the ledger, with the health
of the grid-intensity poller and of the ledger (exported beside the costs).

Money is in the energy price's currency, emissions in grams of CO2e, energy in joules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Factors:
    """The conversion factors in force at one tick (stored with every ledger row)."""

    pue: float
    grid_g_per_kwh: float
    grid_age_s: float
    price_per_kwh: float
    currency: str


# --- one tick's books, handed to the ledger ---
@dataclass(frozen=True, slots=True)
class Books:
    """Energy (IT, by component), money and emissions of one party over one tick."""

    energy_j: Mapping[str, float]
    cost_energy: float
    cost_hardware: float
    emissions_g: float


@dataclass(frozen=True, slots=True)
class RequestBooks:
    """Requests settled this tick for one (workload, model): their energy and its price."""

    count: int
    energy_j: float
    gflops: float
    cost_energy: float
    emissions_g: float


@dataclass(frozen=True, slots=True)
class CostDelta:
    wall_s: float  # end of the tick (the ledger's minute)
    seconds: float
    factors: Factors
    host: Books
    workloads: Mapping[str, Books]
    requests: Mapping[tuple[str, str], RequestBooks]


# --- the published section ---
@dataclass(frozen=True, slots=True)
class CostSnapshot:
    factors: Factors
    grid_source: str
    window_s: float  # seconds of ticks behind the gauges (less than `window` after start)
    host_cost_per_hour: Mapping[str, float]  # kind
    host_emissions_g_per_hour: float
    workload_cost_per_hour: Mapping[tuple[str, str], float]  # (workload, kind)
    workload_emissions_g_per_hour: Mapping[str, float]
    host_cost_total: Mapping[str, float]  # kind
    host_emissions_g_total: float
    workload_cost_total: Mapping[tuple[str, str], float]
    workload_emissions_g_total: Mapping[str, float]
    hardware_per_hour: Mapping[str, float] = field(default_factory=dict)  # item name
    # The cost model's predicted joules per request by (workload, model), with spans.fit_file.
    predicted_request_j: Mapping[tuple[str, str], float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GridStatus:
    provider: str
    up: bool  # the last poll succeeded
    polls: int
    errors: Mapping[str, int]  # reason -> count


@dataclass(frozen=True, slots=True)
class LedgerStatus:
    enabled: bool  # a path is configured
    up: bool  # the file is open and the last flush succeeded
    path: str
    rows_written: int
    flushes: int
    pending_rows: int
    errors: Mapping[str, int]  # reason -> count
