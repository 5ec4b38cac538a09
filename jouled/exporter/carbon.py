"""Prometheus views of the carbon books beside the costs: amortized embodied emissions
(Scope 3 category 2), water on and off site, and the provenance of the grid factors.

Per request, divide rates: ``rate(jouled_workload_embodied_emissions_grams_total[1h]) /
on(instance, workload) sum by (instance, workload) (rate(jouled_requests_total[1h]))``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from jouled.exporter.families import family
from jouled.pipeline.cost import CostSnapshot, Series

LOCATION = "location"
MARKET = "market"


def by_method(location: Any, market: Any) -> dict[Any, float]:
    """Label values -> number for a series with a ``method`` label (the last label).

    ``location`` and ``market`` are both numbers or both mappings keyed by the other labels.
    """
    out: dict[Any, float] = {}
    for method, values in ((LOCATION, location), (MARKET, market)):
        if values is None:
            continue
        if isinstance(values, Mapping):
            for key, v in values.items():
                labels = key if isinstance(key, tuple) else (key,)
                out[(*labels, method)] = v
        else:
            out[(method,)] = values
    return out


def _group(name: str, what: str, label: str | None, parts: dict[str, Series]) -> Iterator[Metric]:
    """Host and workload gauges (per hour) and counters (since start) of one quantity;
    with ``label``, one series per key of ``parts`` under that label."""
    if not parts:
        return
    extra = [label] if label else []
    hph: dict[Any, float] = {}
    ht: dict[Any, float] = {}
    wph: dict[Any, float] = {}
    wt: dict[Any, float] = {}
    for k, s in parts.items():
        key = (k,) if label else ()
        hph[key], ht[key] = s.host_per_hour, s.host_total
        wph.update({(w, *key): v for w, v in s.workload_per_hour.items()})
        wt.update({(w, *key): v for w, v in s.workload_total.items()})
    g, c = GaugeMetricFamily, CounterMetricFamily
    yield family(g, f"jouled_host_{name}_per_hour", f"Host {what}, per hour.", extra, hph)
    yield family(
        g,
        f"jouled_workload_{name}_per_hour",
        f"Workload {what}, per hour.",
        ["workload", *extra],
        wph,
    )
    yield family(c, f"jouled_host_{name}", f"Host {what}, since start.", extra, ht)
    yield family(
        c, f"jouled_workload_{name}", f"Workload {what}, since start.", ["workload", *extra], wt
    )


def carbon_families(c: CostSnapshot) -> Iterator[Metric]:
    f = c.factors
    yield from _group(
        "embodied_emissions_grams",
        "embodied hardware emissions in gCO2e, amortized over the lifetime (Scope 3 cat. 2)",
        None,
        {"": c.embodied} if c.embodied is not None else {},
    )
    if c.embodied_g_per_hour:
        yield family(
            GaugeMetricFamily,
            "jouled_hardware_embodied_grams_per_hour",
            "Amortized embodied gCO2e per hour of each configured hardware item (all units).",
            ["hardware"],
            c.embodied_g_per_hour,
        )
    water = {"on_site": c.water_on_site, "off_site": c.water_off_site}
    yield from _group(
        "water_liters",
        "water in litres (on_site: IT kWh x WUE; off_site: facility kWh x grid water intensity)",
        "location",
        {k: s for k, s in water.items() if s is not None},
    )
    info = GaugeMetricFamily(
        "jouled_grid_factor_info",
        "Provenance of the grid factors in force (value 1): provider or source, zone, "
        "factor_type (average|marginal|unstated), boundary (operational|lifecycle|unstated), "
        "market_basis of the market-based factor (supplier|residual_mix|location_fallback).",
        labels=["provider", "zone", "factor_type", "boundary", "market_basis"],
    )
    info.add_metric([f.provider, f.zone, f.factor_type, f.boundary, f.market_basis], 1.0)
    yield info
    yield family(
        GaugeMetricFamily,
        "jouled_grid_intensity_market_grams_per_kwh",
        "Market-based factor of the last tick (gCO2e/kWh, instruments then supplier, residual "
        "mix or, flagged, the location-based factor).",
        [],
        {(): f.market_g_per_kwh},
    )
