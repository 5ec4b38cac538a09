"""The live cost arithmetic, checked against values computed by hand."""

from __future__ import annotations

import math
import zoneinfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jouled import config
from jouled.cost import carbon, live
from jouled.cost.live import CostStage
from jouled.pipeline.cost import CostDelta, Factors
from tests.cost.helpers import T0, attribution, snapshot, tick

UTC = zoneinfo.ZoneInfo("UTC")


def cost_cfg(**cost: object) -> config.CostConfig:
    return config.validate({"cost": cost}, "test").cost


def test_the_issue_example_100w_pue_1_5_at_400g_is_60g_per_hour() -> None:
    assert live.rate_per_hour(100.0, 1.5, 400.0) == pytest.approx(60.0)
    # One hour of 100 W is 360 kJ: 0.1 kWh IT, 0.15 kWh facility.
    assert carbon.emissions_g(360_000.0, 1.5, 400.0) == pytest.approx(60.0)
    assert carbon.energy_cost(360_000.0, 1.5, 0.20) == pytest.approx(0.03)
    assert carbon.facility_kwh(3.6e6, 1.58) == pytest.approx(1.58)


def test_hourly_profile_picks_the_utc_hour() -> None:
    profile = tuple(float(h * 10) for h in range(24))
    assert live.hour_of(profile, 5 * 3600 + 59.9, UTC) == 50.0
    assert live.hour_of(profile, 86400 + 23 * 3600, UTC) == 230.0
    assert live.hour_of(475.0, 123.0, UTC) == 475.0


def test_defaults_are_the_documented_averages() -> None:
    cfg = config.DEFAULT_CONFIG.cost
    assert (cfg.pue, cfg.grid_intensity, cfg.window) == (1.58, 475.0, 60.0)
    assert (cfg.energy_price.per_kwh, cfg.energy_price.currency) == (0.20, "USD")


def test_a100_preset_price_and_components() -> None:
    items = live.hardware_items(
        cost_cfg(hardware=[{"name": "a100", "count": 2}, {"name": "box", "per_hour": 1.0}])
    )
    assert items[0] == live.HardwareItem("a100", 3.3741, 2, "gpu")
    assert items[0].total_per_hour == pytest.approx(6.7482)
    assert items[1].component == "cpu"


def run_host_and_two_workloads(ticks: int) -> tuple[CostStage, list[CostDelta]]:
    """Host: CPU 100 W, GPU 200 W. Workload a: CPU 40 W, GPU 150 W; b: CPU 10 W."""
    deltas: list[CostDelta] = []
    stage = CostStage(
        cost_cfg(
            pue=1.5,
            grid_intensity=400,
            energy_price={"per_kwh": 0.2},
            window=10,
            hardware=[{"name": "A100"}, {"name": "box", "per_hour": 1.0}],
        ),
        sink=deltas.append,
    )
    for i in range(1, ticks + 1):
        section = attribution(
            {
                ("a", "cpu", "rapl"): 40.0 * i,
                ("a", "gpu", "nvml"): 150.0 * i,
                ("b", "cpu", "rapl"): 10.0 * i,
            }
        )
        stage.on_tick(tick(i, {("cpu", "rapl"): 100.0, ("gpu", "nvml"): 200.0}), snapshot(section))
    return stage, deltas


def test_rates_and_hardware_shares_by_hand() -> None:
    stage, _ = run_host_and_two_workloads(20)
    c = stage.last
    assert c is not None
    # 300 W IT x 1.5 = 0.45 kW facility: x 0.2 $/kWh = 0.09 $/h; x 400 g/kWh = 180 g/h.
    assert c.host_cost_per_hour["energy"] == pytest.approx(0.09)
    assert c.host_emissions_g_per_hour == pytest.approx(180.0)
    assert c.host_cost_per_hour["hardware"] == pytest.approx(4.3741)
    # a: 190 W -> 190/1000*1.5*400 = 114 g/h. Hardware: A100 by GPU share 150/200, box by
    # CPU share 40/100: 3.3741*0.75 + 1.0*0.4.
    assert c.workload_emissions_g_per_hour["a"] == pytest.approx(114.0)
    assert c.workload_cost_per_hour[("a", "hardware")] == pytest.approx(3.3741 * 0.75 + 0.4)
    assert c.workload_cost_per_hour[("b", "hardware")] == pytest.approx(0.1)
    assert c.workload_cost_per_hour[("b", "energy")] == pytest.approx(0.010 * 1.5 * 0.2)
    assert c.window_s == pytest.approx(10.0)  # the window, not the whole run


def test_counters_accumulate_per_tick_and_the_sink_gets_every_tick() -> None:
    stage, deltas = run_host_and_two_workloads(20)
    c = stage.last
    assert c is not None
    # 20 s of 300 W = 6000 J IT -> 6000*1.5/3.6e6 kWh.
    kwh = 6000.0 * 1.5 / 3.6e6
    assert c.host_emissions_g_total == pytest.approx(kwh * 400)
    assert c.host_cost_total["energy"] == pytest.approx(kwh * 0.2)
    assert c.host_cost_total["hardware"] == pytest.approx(4.3741 * 20 / 3600)
    assert c.workload_emissions_g_total["a"] == pytest.approx(20 * 190 * 1.5 / 3.6e6 * 400)
    assert len(deltas) == 20
    assert math.fsum(d.host.emissions_g for d in deltas) == pytest.approx(c.host_emissions_g_total)
    assert deltas[-1].workloads["a"].energy_j == {"cpu": 40.0, "gpu": 150.0}
    # No market-based inputs: the market-based factor is the location-based one, flagged.
    assert deltas[-1].factors == Factors(1.5, 400.0, 0.0, 0.2, "USD", market_g_per_kwh=400.0)


class SteppedGrid:
    name = "test"

    def __init__(self) -> None:
        self.value = 400.0

    def current(self, wall_s: float, mono_s: float) -> tuple[float, float]:
        return self.value, 7.0

    def provenance(self, mono_s: float) -> None:
        return None


def test_time_matched_accounting_uses_the_intensity_in_force_at_each_tick() -> None:
    grid = SteppedGrid()
    stage = CostStage(cost_cfg(pue=1.0, window=5), grid)
    for i in range(1, 11):
        if i == 6:
            grid.value = 100.0
        stage.on_tick(tick(i, {("cpu", "rapl"): 360.0}), snapshot(None))
    c = stage.last
    assert c is not None
    # 360 J is 1e-4 kWh: 5 ticks at 400 g/kWh, then 5 at 100 g/kWh.
    assert c.host_emissions_g_total == pytest.approx(5 * 1e-4 * 400 + 5 * 1e-4 * 100)
    # The gauge: 360 W x the intensity now (100), not an average of the past factors.
    assert c.host_emissions_g_per_hour == pytest.approx(0.36 * 100)
    assert c.factors.grid_age_s == 7.0


def test_gauges_follow_the_window_and_counters_never_go_back() -> None:
    stage = CostStage(cost_cfg(pue=1.0, window=3))
    for i in range(1, 6):
        stage.on_tick(tick(i, {("cpu", "rapl"): 100.0}), snapshot(None))
    before = stage.last
    assert before is not None and before.host_emissions_g_per_hour > 0
    for i in range(6, 10):
        stage.on_tick(tick(i, {("cpu", "rapl"): 0.0}), snapshot(None))
    after = stage.last
    assert after is not None
    assert after.host_emissions_g_per_hour == 0.0  # 3 s window of idle host
    assert after.host_emissions_g_total == pytest.approx(before.host_emissions_g_total)


def test_hourly_price_profile_applies_per_tick() -> None:
    prices = [0.0] * 24
    hour = int(T0 // 3600) % 24
    prices[hour] = 0.36
    stage = CostStage(cost_cfg(pue=1.0, energy_price={"per_kwh": prices}))
    stage.on_tick(tick(1, {("cpu", "rapl"): 1e4}), snapshot(None))
    c = stage.last
    assert c is not None
    assert c.factors.price_per_kwh == 0.36
    assert c.host_cost_total["energy"] == pytest.approx(1e4 / 3.6e6 * 0.36)


def test_requests_are_booked_once_when_they_settle_including_the_final_flush() -> None:
    deltas: list[CostDelta] = []
    stage = CostStage(cost_cfg(pue=2.0, grid_intensity=500), sink=deltas.append)
    a1 = attribution({}, {("api", "bert"): (3, 36.0, 300.0)})
    stage.on_tick(tick(1, {("cpu", "rapl"): 10.0}), snapshot(a1))
    stage.on_tick(tick(2, {("cpu", "rapl"): 10.0}), snapshot(a1))  # nothing new
    assert [d.requests for d in deltas][1] == {}
    r = deltas[0].requests[("api", "bert")]
    assert (r.count, r.energy_j, r.gflops) == (3, 36.0, 300.0)
    assert r.emissions_g == pytest.approx(36.0 * 2.0 / 3.6e6 * 500)
    final = attribution({}, {("api", "bert"): (5, 60.0, 500.0)})
    assert stage.flush(final, T0 + 3, 3.0) is not None
    last = deltas[-1]
    assert last.seconds == 0.0 and last.host.cost_hardware == 0.0
    assert last.requests[("api", "bert")].count == 2
    assert last.requests[("api", "bert")].energy_j == pytest.approx(24.0)


def test_a_failing_sink_does_not_stop_the_live_numbers() -> None:
    def broken(delta: CostDelta) -> None:
        raise OSError("disk gone")

    stage = CostStage(cost_cfg(), sink=broken)
    out = stage.on_tick(tick(1, {("cpu", "rapl"): 10.0}), snapshot(None))
    assert out.host_emissions_g_total > 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0, 500),  # host cpu J
            st.floats(0, 800),  # host gpu J
            st.floats(0, 1),  # share of cpu to workload x
            st.floats(0, 1),  # share of gpu to workload x
            st.floats(0, 1),  # share of the rest of cpu to y
        ),
        min_size=1,
        max_size=30,
    ),
    st.floats(1.0, 3.0),
    st.floats(0, 1000),
)
def test_workloads_never_cost_more_than_the_host(
    steps: list[tuple[float, float, float, float, float]], pue: float, grid: float
) -> None:
    stage = CostStage(
        cost_cfg(pue=pue, grid_intensity=grid, hardware=[{"name": "A100"}, {"name": "T4"}])
    )
    cum: dict[tuple[str, str, str], float] = {}
    expected_g = 0.0
    for i, (cpu, gpu, sx, gx, sy) in enumerate(steps, start=1):
        for key, j in (
            (("x", "cpu", "rapl"), cpu * sx),
            (("x", "gpu", "nvml"), gpu * gx),
            (("y", "cpu", "rapl"), cpu * (1 - sx) * sy),
        ):
            cum[key] = cum.get(key, 0.0) + j
        stage.on_tick(
            tick(i, {("cpu", "rapl"): cpu, ("gpu", "nvml"): gpu}), snapshot(attribution(cum))
        )
        expected_g += (cpu + gpu) * pue / 3.6e6 * grid
    c = stage.last
    assert c is not None
    assert c.host_emissions_g_total == pytest.approx(expected_g, rel=1e-9, abs=1e-12)
    slack = 1 + 1e-9
    assert sum(c.workload_emissions_g_total.values()) <= c.host_emissions_g_total * slack + 1e-12
    for kind in ("energy", "hardware"):
        wl = sum(v for (_w, k), v in c.workload_cost_total.items() if k == kind)
        assert wl <= c.host_cost_total[kind] * slack + 1e-12


def test_a_fit_file_gives_the_predicted_energy_per_request_beside_the_measured() -> None:
    from types import MappingProxyType

    from jouled.costmodel.fitfile import Fit, ModelEntry

    stage = CostStage(cost_cfg())
    stage.fit = Fit(
        slope_joules_per_gflop=2.0,
        models=MappingProxyType({"bert": ModelEntry(gflops=97.1, joules_per_request=60.0)}),
    )
    # (count, joules, gflops) settled per (workload, model)
    a = attribution(
        {},
        {("api", "bert"): (1, 5.0, 97.1), ("api", "tiny"): (2, 3.0, 40.0)}
        | {("api", "unknown-work"): (1, 1.0, 0.0)},
    )
    snap = stage.on_tick(tick(1, {}), snapshot(a))
    assert snap.predicted_request_j[("api", "bert")] == 60.0  # the fit file's own entry
    assert snap.predicted_request_j[("api", "tiny")] == pytest.approx(2.0 * 20.0)  # mean work
    assert ("api", "unknown-work") not in snap.predicted_request_j  # no work, no prediction
    stage.fit = None
    assert stage.on_tick(tick(2, {}), snapshot(a)).predicted_request_j == {}
