"""The carbon books' pure arithmetic: Scope 2 methods, factor provenance, water, local hours.

GHG Protocol Scope 2 Guidance (2015) asks for *dual reporting*:

- **location-based**: energy x the average emission factor of the grid where it is consumed
  (``cost.grid_intensity``); a marginal factor (WattTime) or a lifecycle one (Electricity
  Maps' default) is kept, but its provenance says so and the report flags it;
- **market-based**: energy x the factor of the contractual instruments the reporter holds
  (energy attribute certificates, PPAs, green tariffs), then the supplier's specific factor,
  then the residual mix, for the energy no instrument covers. With none of those, the
  location-based factor stands and the provenance says ``location_fallback``.

An instrument's MWh are spread evenly over its period (``mwh / (end - start)``): each tick may
claim at most that rate times its seconds, in the order the instruments are configured. This
never claims more than the instrument holds and needs no state across restarts; coverage a
tick does not use is not carried to later ticks (conservative: allocate the MWh per host).

Water (as CodeCarbon and EcoLogits): on site = IT kWh x WUE (The Green Grid defines WUE per
kWh of IT energy), off site = facility kWh x the grid's water intensity. Stdlib only.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from typing import Final

from jouled.config import (
    CostConfig,
    GridFactorConfig,
    GridProviderConfig,
    InstrumentConfig,
    MarketBasedConfig,
)

J_PER_KWH: Final = 3.6e6


def facility_kwh(it_energy_j: float, pue: float) -> float:
    return it_energy_j * pue / J_PER_KWH


def emissions_g(it_energy_j: float, pue: float, grid_g_per_kwh: float) -> float:
    return facility_kwh(it_energy_j, pue) * grid_g_per_kwh


def energy_cost(it_energy_j: float, pue: float, price_per_kwh: float) -> float:
    return facility_kwh(it_energy_j, pue) * price_per_kwh


# How the market-based factor of energy no instrument covers was chosen.
BASIS_SUPPLIER: Final = "supplier"
BASIS_RESIDUAL: Final = "residual_mix"
BASIS_LOCATION: Final = "location_fallback"

# What each provider's value is, from its documentation (docs/COST.md cites them).
PROVIDER_FACTORS: Final = {
    "electricitymaps": ("average", "lifecycle"),
    "uk_national_grid": ("average", "operational"),
    "watttime": ("marginal", "operational"),
}


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where a grid factor comes from: stored with every ledger row."""

    provider: str  # electricitymaps | uk_national_grid | watttime | the configured source
    zone: str
    factor_type: str  # average | marginal | unstated
    boundary: str  # operational | lifecycle | unstated


def provenance(cfg: CostConfig) -> Provenance:
    """The provenance of the configured location-based factor (a provider's answer may
    refine the boundary later: Electricity Maps says which one it sent)."""
    gi = cfg.grid_intensity
    if isinstance(gi, GridProviderConfig):
        factor_type, boundary = PROVIDER_FACTORS[gi.provider]
        if gi.boundary is not None:
            boundary = gi.boundary
        return Provenance(gi.provider, gi.zone or "GB", factor_type, boundary)
    if isinstance(gi, GridFactorConfig):
        return Provenance(gi.source, gi.zone, gi.factor_type, gi.boundary)
    return Provenance("configured", "", "unstated", "unstated")


def local_hour(wall_s: float, tz: zoneinfo.ZoneInfo) -> int:
    """The hour (0-23) on the wall clock of ``tz`` at unix time ``wall_s`` (DST applied)."""
    return dt.datetime.fromtimestamp(wall_s, tz).hour


def hour_of(value: float | tuple[float, ...], wall_s: float, tz: zoneinfo.ZoneInfo) -> float:
    """A flat value, or the entry of a 24-hour profile for the local hour of ``wall_s``."""
    if isinstance(value, tuple):
        return value[local_hour(wall_s, tz)]
    return value


def water_litres(it_j: float, pue: float, wue: float, grid_l_per_kwh: float) -> tuple[float, float]:
    """(on site, off site) litres for ``it_j`` joules of IT energy.

    1 kWh of IT energy at WUE 0.5 L/kWh, PUE 1.2 and 3.1 L/kWh off site: (0.5, 3.72).
    """
    it_kwh = it_j / J_PER_KWH
    return it_kwh * wue, it_kwh * pue * grid_l_per_kwh


@dataclass(frozen=True, slots=True)
class _Instrument:
    name: str
    start_s: float
    end_s: float
    kwh_per_s: float
    factor: float

    @classmethod
    def of(cls, cfg: InstrumentConfig) -> _Instrument:
        start, end = cfg.start.timestamp(), cfg.end.timestamp()
        return cls(cfg.name, start, end, cfg.mwh * 1000.0 / (end - start), cfg.factor)

    def allowance_kwh(self, t0: float, t1: float) -> float:
        overlap = min(t1, self.end_s) - max(t0, self.start_s)
        return self.kwh_per_s * overlap if overlap > 0 else 0.0


@dataclass(frozen=True, slots=True)
class MarketSplit:
    """One tick's facility energy under the market-based method."""

    grams: float
    covered_kwh: dict[str, float]  # instrument name -> kWh it covered this tick
    rest_kwh: float
    rest_g_per_kwh: float
    basis: str  # supplier | residual_mix | location_fallback

    @property
    def g_per_kwh(self) -> float:
        """The effective market-based factor of the tick (the rest factor without energy)."""
        kwh = self.rest_kwh + sum(self.covered_kwh.values())
        return self.grams / kwh if kwh > 0 else self.rest_g_per_kwh


class MarketBased:
    """The market-based factor hierarchy for one host (see the module docstring)."""

    def __init__(self, cfg: MarketBasedConfig) -> None:
        self.instruments = tuple(_Instrument.of(i) for i in cfg.instruments)
        self.supplier = cfg.supplier_factor
        self.residual = cfg.residual_mix

    def rest(self, location_g_per_kwh: float) -> tuple[float, str]:
        if self.supplier is not None:
            return self.supplier, BASIS_SUPPLIER
        if self.residual is not None:
            return self.residual, BASIS_RESIDUAL
        return location_g_per_kwh, BASIS_LOCATION

    def split(
        self, facility_kwh: float, wall_s: float, seconds: float, location_g_per_kwh: float
    ) -> MarketSplit:
        """Allocate ``facility_kwh`` consumed over ``[wall_s - seconds, wall_s]``."""
        left = max(0.0, facility_kwh)
        covered: dict[str, float] = {}
        grams = 0.0
        for ins in self.instruments:
            if left <= 0:
                break
            kwh = min(left, ins.allowance_kwh(wall_s - seconds, wall_s))
            if kwh > 0:
                covered[ins.name] = kwh
                grams += kwh * ins.factor
                left -= kwh
        factor, basis = self.rest(location_g_per_kwh)
        return MarketSplit(grams + left * factor, covered, left, factor, basis)
