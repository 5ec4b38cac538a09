"""Prometheus views of the cost section (money, gCO2e, factors) and of the ledger's health.

Costs carry ``currency`` and ``kind`` (energy: facility energy x price; hardware: hourly
prices charged by energy share). Emissions are grams of CO2e, PUE included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from jouled.exporter.carbon import by_method, carbon_families
from jouled.exporter.families import family
from jouled.pipeline.cost import CostSnapshot, GridStatus, LedgerStatus
from jouled.pipeline.snapshot import Snapshot


class CostCollector(Collector):
    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        *,
        ledger: Callable[[], LedgerStatus | None] = lambda: None,
        grid: Callable[[], GridStatus | None] = lambda: None,
    ) -> None:
        self._snapshot = snapshot
        self._ledger = ledger
        self._grid = grid

    def collect(self) -> Iterator[Metric]:
        section = self._snapshot().cost
        if section is not None:
            yield from _cost(section)
        grid = self._grid()
        if grid is not None:
            yield from _grid(grid)
        ledger = self._ledger()
        if ledger is not None:
            yield from _ledger(ledger)


def _cost(c: CostSnapshot) -> Iterator[Metric]:
    f = c.factors
    cur = f.currency
    gauge, counter = GaugeMetricFamily, CounterMetricFamily
    yield family(
        gauge,
        "jouled_host_cost_per_hour",
        "Host cost rate: energy = IT power over cost.window x PUE x price in force; "
        "hardware = configured hourly prices.",
        ["currency", "kind"],
        {(cur, kind): v for kind, v in c.host_cost_per_hour.items()},
    )
    yield family(
        gauge,
        "jouled_workload_cost_per_hour",
        "Workload cost rate over cost.window (hardware: by its share of each item's "
        "component energy).",
        ["workload", "currency", "kind"],
        {(w, cur, kind): v for (w, kind), v in c.workload_cost_per_hour.items()},
    )
    market = c.emissions_market
    yield family(
        gauge,
        "jouled_host_emissions_grams_per_hour",
        "Host Scope 2 emissions rate in gCO2e/h: IT power over cost.window x PUE x factor; "
        "method: location (grid average) or market (instruments, supplier, residual mix).",
        ["method"],
        by_method(c.host_emissions_g_per_hour, market.host_per_hour if market else None),
    )
    yield family(
        gauge,
        "jouled_workload_emissions_grams_per_hour",
        "Workload Scope 2 emissions rate in gCO2e/h over cost.window, PUE included.",
        ["workload", "method"],
        by_method(c.workload_emissions_g_per_hour, market.workload_per_hour if market else None),
    )
    yield family(
        counter,
        "jouled_host_cost",
        "Host cost since start, each tick at the price in force (time-matched).",
        ["currency", "kind"],
        {(cur, kind): v for kind, v in c.host_cost_total.items()},
    )
    yield family(
        counter,
        "jouled_workload_cost",
        "Workload cost since start, each tick at the price in force.",
        ["workload", "currency", "kind"],
        {(w, cur, kind): v for (w, kind), v in c.workload_cost_total.items()},
    )
    yield family(
        counter,
        "jouled_host_emissions_grams",
        "Host Scope 2 emissions in gCO2e since start, each tick at the factor in force; "
        "method: location or market (sum one method, never both).",
        ["method"],
        by_method(c.host_emissions_g_total, market.host_total if market else None),
    )
    yield family(
        counter,
        "jouled_workload_emissions_grams",
        "Workload Scope 2 emissions in gCO2e since start, PUE included, by method.",
        ["workload", "method"],
        by_method(c.workload_emissions_g_total, market.workload_total if market else None),
    )
    yield from carbon_families(c)
    yield family(
        gauge,
        "jouled_grid_intensity_grams_per_kwh",
        "Grid carbon intensity in force (gCO2e/kWh).",
        [],
        {(): f.grid_g_per_kwh},
    )
    yield family(
        gauge,
        "jouled_grid_intensity_age_seconds",
        "Age of the grid intensity in force: 0 for a configured value; for a provider, "
        "seconds since its last good answer (since start if none yet).",
        [],
        {(): f.grid_age_s},
    )
    yield family(
        gauge, "jouled_pue", "Power usage effectiveness applied (facility / IT).", [], {(): f.pue}
    )
    yield family(
        gauge,
        "jouled_energy_price_per_kwh",
        "Energy price in force per kWh.",
        ["currency"],
        {cur: f.price_per_kwh},
    )
    yield family(
        gauge,
        "jouled_hardware_price_per_hour",
        "Configured hardware price per hour (all units of the item).",
        ["hardware", "currency"],
        {(name, cur): v for name, v in c.hardware_per_hour.items()},
    )


def _grid(s: GridStatus) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "jouled_grid_provider_up",
        "1 if the last poll of the grid-intensity provider succeeded.",
        labels=["provider"],
    )
    up.add_metric([s.provider], 1.0 if s.up else 0.0)
    yield up
    errors = CounterMetricFamily(
        "jouled_grid_provider_errors",
        "Failed polls of the grid-intensity provider, by reason.",
        labels=["provider", "reason"],
    )
    for reason, n in sorted(s.errors.items()):
        errors.add_metric([s.provider, reason], float(n))
    yield errors


def _ledger(s: LedgerStatus) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "jouled_ledger_up",
        "1 if the ledger file is open and its last write succeeded (0: disabled or failing).",
    )
    up.add_metric([], 1.0 if s.up else 0.0)
    yield up
    rows = CounterMetricFamily(
        "jouled_ledger_rows_written", "Per-minute ledger rows written (upserts)."
    )
    rows.add_metric([], float(s.rows_written))
    yield rows
    pending = GaugeMetricFamily(
        "jouled_ledger_pending_rows", "Ledger rows held in memory until the next flush."
    )
    pending.add_metric([], float(s.pending_rows))
    yield pending
    errors = CounterMetricFamily(
        "jouled_ledger_errors", "Ledger failures, by reason.", labels=["reason"]
    )
    for reason, n in sorted(s.errors.items()):
        errors.add_metric([reason], float(n))
    yield errors
