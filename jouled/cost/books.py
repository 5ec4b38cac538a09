"""The carbon side of the cost stage: market-based emissions, amortized embodied emissions
and water, beside the location-based emissions and money of ``jouled.cost.live``.

The arithmetic is in ``jouled.cost.carbon`` and ``jouled.cost.embodied``; this keeps the
running totals and builds the published series. Stdlib only.
"""

from __future__ import annotations

import dataclasses
import math
import zoneinfo
from collections.abc import Iterable, Mapping

from jouled.config import CostConfig
from jouled.cost.carbon import (
    MarketBased,
    Provenance,
    emissions_g,
    energy_cost,
    facility_kwh,
    provenance,
    water_litres,
)
from jouled.pipeline.cost import Books, Factors, RequestBooks, Series
from jouled.pipeline.snapshot import frozen


def _add(totals: dict[str, float], key: str, value: float) -> None:
    totals[key] = totals.get(key, 0.0) + value


class _Totals:
    def __init__(self) -> None:
        self.host = 0.0
        self.workloads: dict[str, float] = {}

    def add(self, host: float, workloads: Iterable[tuple[str, float]]) -> None:
        self.host += host
        for w, v in workloads:
            _add(self.workloads, w, v)

    def series(self, host_rate: float, workload_rate: Mapping[str, float]) -> Series:
        return Series(host_rate, self.host, frozen(workload_rate), frozen(self.workloads))


class CarbonAccount:
    """Market-based emissions, water and factor provenance for one host (running totals)."""

    def __init__(self, cfg: CostConfig) -> None:
        self.market_total = _Totals()
        self.embodied_total = _Totals()
        self.water_on_total = _Totals()
        self.water_off_total = _Totals()
        self.reconfigure(cfg)

    def reconfigure(self, cfg: CostConfig) -> None:
        self.tz = zoneinfo.ZoneInfo(cfg.timezone)
        self.market = MarketBased(cfg.market_based)
        self.provenance: Provenance = provenance(cfg)
        self.wue = cfg.wue
        self.grid_water = cfg.grid_water_intensity

    def factors(
        self,
        f: Factors,
        host_j: float,
        wall_s: float,
        seconds: float,
        grid: Provenance | None = None,
    ) -> Factors:
        """The tick's factors with provenance (``grid``'s when it says, else the configured
        one's) and the market-based factor filled in."""
        p = grid or self.provenance
        split = self.market.split(facility_kwh(host_j, f.pue), wall_s, seconds, f.grid_g_per_kwh)
        return dataclasses.replace(
            f,
            provider=p.provider,
            zone=p.zone,
            factor_type=p.factor_type,
            boundary=p.boundary,
            market_g_per_kwh=split.g_per_kwh,
            market_basis=split.basis,
        )

    def _extras(self, f: Factors, it_j: float) -> tuple[float, float, float]:
        """(market-based gCO2e, on-site litres, off-site litres) of ``it_j`` IT joules."""
        on, off = water_litres(it_j, f.pue, self.wue, self.grid_water)
        return facility_kwh(it_j, f.pue) * f.market_g_per_kwh, on, off

    def books(self, f: Factors, books: Books, embodied_g: float, estimated_j: float) -> Books:
        market, on, off = self._extras(f, math.fsum(books.energy_j.values()))
        return dataclasses.replace(
            books,
            emissions_market_g=market,
            embodied_g=embodied_g,
            water_on_site_l=on,
            water_off_site_l=off,
            estimated_j=estimated_j,
        )

    def request(self, f: Factors, count: int, energy_j: float, gflops: float) -> RequestBooks:
        """One (workload, model)'s requests of a tick, priced: made once, every field at
        hand (``dataclasses.replace`` on a made one cost ~4x, for 50 models a tick)."""
        market, on, off = self._extras(f, energy_j)
        return RequestBooks(
            count,
            energy_j,
            gflops,
            energy_cost(energy_j, f.pue, f.price_per_kwh),
            emissions_g(energy_j, f.pue, f.grid_g_per_kwh),
            market,
            on,
            off,
        )

    def add(self, host: Books, workloads: Mapping[str, Books]) -> None:
        for totals, attr in (
            (self.market_total, "emissions_market_g"),
            (self.embodied_total, "embodied_g"),
            (self.water_on_total, "water_on_site_l"),
            (self.water_off_total, "water_off_site_l"),
        ):
            totals.add(getattr(host, attr), ((w, getattr(b, attr)) for w, b in workloads.items()))

    def publish(
        self,
        f: Factors,
        host_w: float,
        workload_w: Mapping[str, float],
        embodied_rates: tuple[float, Mapping[str, float]] | None,
    ) -> dict[str, Series | None]:
        """The CostSnapshot fields of the carbon series, from the window's average powers."""

        def rate(per_kwh: float, pue: float = f.pue) -> tuple[float, dict[str, float]]:
            return host_w / 1000.0 * pue * per_kwh, {
                w: p / 1000.0 * pue * per_kwh for w, p in workload_w.items()
            }

        market_factor = f.market_g_per_kwh if not math.isnan(f.market_g_per_kwh) else 0.0
        out: dict[str, Series | None] = {
            "emissions_market": self.market_total.series(*rate(market_factor)),
            "embodied": None,
            "water_on_site": None,
            "water_off_site": None,
        }
        if embodied_rates is not None:
            out["embodied"] = self.embodied_total.series(*embodied_rates)
        if self.wue > 0 or self.water_on_total.host > 0:
            out["water_on_site"] = self.water_on_total.series(*rate(self.wue, pue=1.0))
        if self.grid_water > 0 or self.water_off_total.host > 0:
            out["water_off_site"] = self.water_off_total.series(*rate(self.grid_water))
        return out
