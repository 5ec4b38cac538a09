"""jouled.fleet's PromQL and arithmetic on canned answers (the real Prometheus is in
tests/e2e/test_fleet_report.py): sums across hosts, provenance, day windows."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from jouled import fleet

DAY0 = dt.datetime(2025, 3, 1, tzinfo=dt.UTC).timestamp()


class Canned:
    """Answers each query by the metric it asks for; records (expr, at)."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, float]] = []

    def __call__(self, expr: str, at: float) -> list[tuple[dict[str, str], float]]:
        self.asked.append((expr, at))
        if "jouled_pue" in expr:  # facility energy: increase x PUE 1.5
            return [({"instance": "a"}, 1.5 * 3600.0), ({"instance": "b"}, 1.5 * 7200.0)]
        if "jouled_host_energy_joules_total" in expr:
            return [
                ({"instance": "a", "component": "cpu", "source": "rapl"}, 3600.0),
                ({"instance": "b", "component": "cpu", "source": "estimate"}, 7200.0),
            ]
        if "jouled_host_emissions_grams_total" in expr:
            return [
                ({"instance": "a", "method": "location"}, 0.6),
                ({"instance": "a", "method": "market"}, 0.2),
                ({"instance": "b", "method": "location"}, 1.2),
                ({"instance": "b", "method": "market"}, 0.4),
            ]
        if "jouled_host_cost_total" in expr:
            return [({"instance": "a", "currency": "EUR", "kind": "energy"}, 0.25)]
        if "jouled_grid_factor_info" in expr:
            return [({"instance": "a", "provider": "watttime", "factor_type": "marginal"}, 1)]
        return []


def test_totals_sum_hosts_and_keep_methods_apart() -> None:
    q = Canned()
    doc = fleet.totals(q, DAY0, DAY0 + 3600, 'job="jouled"')
    assert doc["host"]["energy_joules"] == 10800.0
    assert doc["host"]["facility_energy_joules"] == pytest.approx(16200.0)
    assert doc["carbon"]["scope2_location_grams"] == pytest.approx(1.8)  # 0.6 + 1.2
    assert doc["carbon"]["scope2_market_grams"] == pytest.approx(0.6)  # 0.2 + 0.4
    assert doc["carbon"]["energy_estimated_joules"] == 7200.0  # host b's estimate
    assert doc["hosts"]["b"]["energy_estimated_joules"] == 7200.0
    assert doc["currency"] == "EUR"
    assert doc["carbon"]["factors"][0]["factor_type"] == "marginal"
    # Every query is an increase() (or the factor info) over the whole range, at its end,
    # restricted by the matchers.
    for expr, at in q.asked:
        assert at == DAY0 + 3600
        assert 'job="jouled"' in expr
        assert "[3600s]" in expr


def test_by_day_asks_each_day_over_its_own_part_of_the_range() -> None:
    q = Canned()
    rows = fleet.by_day(q, DAY0 + 12 * 3600, DAY0 + 86400 + 6 * 3600)
    assert [(r["day"], r["party"]) for r in rows] == [
        ("2025-03-01", "(host)"),
        ("2025-03-02", "(host)"),
    ]
    windows = {(at, re.findall(r"\[(\d+)s\]", e)[0]) for e, at in q.asked}
    assert windows == {(DAY0 + 86400, "43200"), (DAY0 + 86400 + 6 * 3600, "21600")}


def test_until_before_since_and_mixed_currencies_are_refused() -> None:
    with pytest.raises(fleet.FleetError, match="--until must be after --since"):
        fleet.totals(Canned(), DAY0, DAY0)

    def two(expr: str, at: float) -> list[tuple[dict[str, str], float]]:
        if "jouled_host_cost_total" in expr:
            return [({"currency": "EUR", "kind": "energy"}, 1.0), ({"currency": "USD"}, 1.0)]
        return []

    with pytest.raises(fleet.FleetError, match="several currencies"):
        fleet.totals(two, DAY0, DAY0 + 60)
