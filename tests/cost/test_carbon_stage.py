"""The cost stage's carbon books over one hour, every number computed by hand: location- and
market-based emissions, amortized embodied emissions, water, estimated energy, provenance."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from jouled import config
from jouled.cost.live import CostStage
from jouled.pipeline.cost import CostDelta
from jouled.pipeline.snapshot import frozen
from jouled.pipeline.tick import Tick
from tests.cost.helpers import attribution, snapshot, stated_factor, tick

CFG = {
    "pue": 1.2,
    "grid_intensity": stated_factor("UBA 2024"),
    "market_based": {
        "supplier_factor": 100,
        # 4.38 MWh over 2023 (8760 h) is a flat 0.5 kW.
        "instruments": [{"name": "go", "mwh": 4.38, "start": "2023-01-01", "end": "2024-01-01"}],
    },
    # 876.6 kgCO2e over 1 year (8766 h) is 100 g/h, shared by all IT energy.
    "hardware": [
        {"name": "gpu-box", "embodied_kgco2e": 876.6, "lifetime_years": 1, "component": "host"}
    ],
    "wue": 0.5,
    "grid_water_intensity": 2.0,
}


def test_one_hour_of_one_kilowatt_by_hand() -> None:
    deltas: list[CostDelta] = []
    stage = CostStage(config.validate({"cost": CFG}, "t").cost, sink=deltas.append)
    # One hour (2023-11-14, inside the instrument's year): 0.8 kWh RAPL CPU and 0.2 kWh of
    # estimated DRAM = 1 kWh IT, 1.2 kWh facility. Workload "api" got 0.4 kWh of the CPU.
    host = {("cpu", "rapl"): 2.88e6, ("dram", "estimate"): 0.72e6}
    c = stage.on_tick(
        tick(1, host, seconds=3600.0), snapshot(attribution({("api", "cpu", "rapl"): 1.44e6}))
    )
    d = deltas[-1]
    # Location-based: 1.2 kWh x 300 g/kWh = 360 g.
    assert d.host.emissions_g == pytest.approx(360.0)
    # Market-based: the certificate covers 0.5 kWh at 0 g; the supplier's 100 g/kWh prices
    # the other 0.7 kWh: 70 g. Effective factor 70 g / 1.2 kWh = 58.33 g/kWh.
    assert d.host.emissions_market_g == pytest.approx(70.0)
    assert d.factors.market_g_per_kwh == pytest.approx(70.0 / 1.2)
    assert d.factors.market_basis == "supplier"
    # The workload's 0.4 kWh IT (0.48 kWh facility) at 58.33 g/kWh: 28 g; at 300: 144 g.
    assert d.workloads["api"].emissions_market_g == pytest.approx(28.0)
    assert d.workloads["api"].emissions_g == pytest.approx(144.0)
    # Embodied: 100 g/h for the host; the workload's share of host energy is 0.4: 40 g.
    assert d.host.embodied_g == pytest.approx(100.0)
    assert d.workloads["api"].embodied_g == pytest.approx(40.0)
    # Water: on site 1 kWh IT x 0.5 L = 0.5 L; off site 1.2 kWh x 2 L = 2.4 L.
    assert (d.host.water_on_site_l, d.host.water_off_site_l) == pytest.approx((0.5, 2.4))
    assert d.workloads["api"].water_off_site_l == pytest.approx(0.96)  # 0.48 kWh x 2
    # Estimated energy is kept apart: 0.2 kWh of the host's, none of the workload's.
    assert d.host.estimated_j == pytest.approx(0.72e6)
    assert d.workloads["api"].estimated_j == 0.0
    # Provenance travels with the factors.
    f = d.factors
    assert (f.provider, f.zone, f.factor_type, f.boundary) == (
        "UBA 2024",
        "DE",
        "average",
        "operational",
    )
    # The published series: totals and per-hour rates at the window's 1 kW.
    assert c.emissions_market is not None and c.embodied is not None
    assert c.emissions_market.host_total == pytest.approx(70.0)
    assert c.emissions_market.host_per_hour == pytest.approx(70.0)  # 1 kW x 1.2 x 58.33
    assert c.embodied.host_per_hour == pytest.approx(100.0)
    assert c.embodied.workload_per_hour["api"] == pytest.approx(40.0)
    assert c.embodied_g_per_hour == {"gpu-box": pytest.approx(100.0)}
    assert c.water_on_site is not None and c.water_off_site is not None
    assert c.water_on_site.host_per_hour == pytest.approx(0.5)
    assert c.water_off_site.workload_total["api"] == pytest.approx(0.96)


def test_without_market_inputs_or_embodied_or_water_the_series_say_so() -> None:
    stage = CostStage(config.validate({"cost": {"grid_intensity": 300}}, "t").cost)
    c = stage.on_tick(tick(1, {("cpu", "rapl"): 3.6e6}, seconds=3600.0), snapshot(None))
    # Market-based = location-based (1 kWh x 1.58 PUE x 300), flagged location_fallback.
    assert c.emissions_market is not None
    assert c.emissions_market.host_total == pytest.approx(1.58 * 300)
    assert c.factors.market_basis == "location_fallback"
    assert c.factors.factor_type == "unstated"
    assert c.embodied is None and c.water_on_site is None and c.water_off_site is None


def test_the_quarterly_inventory_of_docs_cost_md() -> None:
    """docs/COST.md's worked example, tick by tick: Q1 2025 (2160 h) of one C4140 host."""
    cfg = {
        "pue": 1.3,
        "timezone": "Europe/Berlin",
        "grid_intensity": {**stated_factor("illustrative"), "value": 380},
        "market_based": {
            "instruments": [
                {"name": "go", "mwh": 2.16, "start": "2025-01-01", "end": "2025-04-01"}
            ],
            "residual_mix": 600,
        },
        "hardware": [{"name": "dell-poweredge-c4140"}],
        "wue": 0.3,
        "grid_water_intensity": 1.5,
    }
    deltas: list[CostDelta] = []
    stage = CostStage(config.validate({"cost": cfg}, "t").cost, sink=deltas.append)
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC).timestamp()
    # Each hour: 0.6 kWh RAPL CPU + 0.6 kWh NVML GPU measured, 0.05 kWh estimated DRAM.
    host = frozen(
        {
            ("cpu", "rapl"): 0.6 * 3.6e6,
            ("gpu", "nvml"): 0.6 * 3.6e6,
            ("dram", "estimate"): 0.05 * 3.6e6,
        }
    )
    for h in range(2160):
        t = Tick(
            h + 1,
            h * 3600.0,
            (h + 1) * 3600.0,
            start + h * 3600.0,
            start + (h + 1) * 3600.0,
            frozen({}),
            host,
            frozen({}),
        )
        stage.on_tick(t, snapshot(None))

    def total(attr: str) -> float:
        return math.fsum(getattr(d.host, attr) for d in deltas)

    assert math.fsum(math.fsum(d.host.energy_j.values()) for d in deltas) == pytest.approx(
        2700 * 3.6e6
    )
    assert total("estimated_j") == pytest.approx(108 * 3.6e6)  # 0.05 kW x 2160 h
    assert total("emissions_g") == pytest.approx(1_333_800)  # 3510 kWh x 380
    assert total("emissions_market_g") == pytest.approx(810_000)  # 1350 kWh x 600
    assert total("embodied_g") == pytest.approx(1244.4e3 * 2160 / 35064)  # 76.657 kg
    assert total("water_on_site_l") == pytest.approx(810)  # 2700 kWh x 0.3
    assert total("water_off_site_l") == pytest.approx(5265)  # 3510 kWh x 1.5
