"""The cost stage's published section and the books it hands the ledger, with the health
of the grid-intensity poller and of the ledger (exported beside the costs).

Money is in the energy price's currency, emissions in grams of CO2e, energy in joules.
"""

from __future__ import annotations

import math
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
    # Provenance of the location-based factor (jouled.cost.carbon.Provenance, flattened).
    provider: str = "configured"
    zone: str = ""
    factor_type: str = "unstated"  # average | marginal | unstated
    boundary: str = "unstated"  # operational | lifecycle | unstated
    # The market-based factor of the tick (instruments, then supplier/residual/location),
    # and how the energy no instrument covered was priced (supplier | residual_mix |
    # location_fallback). NaN until the tick's energy is known.
    market_g_per_kwh: float = math.nan
    market_basis: str = "location_fallback"


# --- one tick's books, handed to the ledger ---
@dataclass(frozen=True, slots=True)
class Books:
    """Energy (IT, by component), money and emissions of one party over one tick."""

    energy_j: Mapping[str, float]
    cost_energy: float
    cost_hardware: float
    emissions_g: float  # location-based, PUE included
    emissions_market_g: float = 0.0  # market-based, PUE included
    embodied_g: float = 0.0  # amortized manufacturing emissions of the hardware items
    water_on_site_l: float = 0.0
    water_off_site_l: float = 0.0
    estimated_j: float = 0.0  # the part of energy_j from the estimate collector


@dataclass(frozen=True, slots=True)
class RequestBooks:
    """Requests settled this tick for one (workload, model): their energy and its price."""

    count: int
    energy_j: float
    gflops: float
    cost_energy: float
    emissions_g: float
    emissions_market_g: float = 0.0
    water_on_site_l: float = 0.0
    water_off_site_l: float = 0.0


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
class Series:
    """One quantity for the host and each workload: a rate per hour (over cost.window, at
    today's factors) and a total since start (tick by tick, at the factors in force)."""

    host_per_hour: float
    host_total: float
    workload_per_hour: Mapping[str, float]
    workload_total: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class CostSnapshot:
    """The cost stage's section of a snapshot. Everything but ``factors`` defaults to empty
    (no cost booked yet), so a test or benchmark names only what it sets."""

    factors: Factors
    grid_source: str = "static"
    window_s: float = 0.0  # seconds of ticks behind the gauges (less than `window` after start)
    host_cost_per_hour: Mapping[str, float] = field(default_factory=dict)  # kind
    host_emissions_g_per_hour: float = 0.0
    # (workload, kind)
    workload_cost_per_hour: Mapping[tuple[str, str], float] = field(default_factory=dict)
    workload_emissions_g_per_hour: Mapping[str, float] = field(default_factory=dict)
    host_cost_total: Mapping[str, float] = field(default_factory=dict)  # kind
    host_emissions_g_total: float = 0.0
    workload_cost_total: Mapping[tuple[str, str], float] = field(default_factory=dict)
    workload_emissions_g_total: Mapping[str, float] = field(default_factory=dict)
    hardware_per_hour: Mapping[str, float] = field(default_factory=dict)  # item name
    # The cost model's predicted joules per request by (workload, model), with spans.fit_file.
    predicted_request_j: Mapping[tuple[str, str], float] = field(default_factory=dict)
    emissions_market: Series | None = None  # gCO2e, market-based Scope 2
    embodied: Series | None = None  # gCO2e, amortized (None without embodied items)
    embodied_g_per_hour: Mapping[str, float] = field(default_factory=dict)  # item name
    water_on_site: Series | None = None  # litres (None when cost.wue is 0)
    water_off_site: Series | None = None  # litres (None when grid_water_intensity is 0)


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
