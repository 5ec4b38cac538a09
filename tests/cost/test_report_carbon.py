"""``jouled report``'s carbon books over a real ledger, by hand: both Scope 2 methods,
embodied, water, estimated energy flagged, factor provenance; an old ledger reads too;
--prometheus errors say what to check."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import pytest

from jouled import config
from jouled.cost.live import CostStage
from jouled.ledger import Ledger
from jouled.report import main
from tests.cost.helpers import T0, attribution, snapshot, stated_factor, tick
from tests.ledger.test_migration import V1_DDL

NOW = T0 + 86400

CFG = {
    "pue": 1.2,
    "grid_intensity": stated_factor("Electricity Maps 2023 yearly", boundary="lifecycle"),
    # 4.38 MWh over 2023 is a flat 0.5 kW; the rest at the residual mix 500 g/kWh.
    "market_based": {
        "residual_mix": 500,
        "instruments": [{"name": "go", "mwh": 4.38, "start": "2023-01-01", "end": "2024-01-01"}],
    },
    # 876.6 kgCO2e over a year is 100 g/h.
    "hardware": [
        {"name": "box", "embodied_kgco2e": 876.6, "lifetime_years": 1, "component": "host"}
    ],
    "wue": 0.5,
    "grid_water_intensity": 2.0,
}


def build(path: Path, hours: int = 3) -> None:
    """``hours`` ticks of an hour: 0.8 kWh RAPL CPU + 0.2 kWh estimated DRAM; api 0.4 kWh."""
    ledger = Ledger(path)
    assert ledger.open()
    stage = CostStage(config.validate({"cost": CFG}, "t").cost, sink=ledger.add)
    for i in range(1, hours + 1):
        host = {("cpu", "rapl"): 2.88e6, ("dram", "estimate"): 0.72e6}
        section = attribution({("api", "cpu", "rapl"): 1.44e6 * i})
        stage.on_tick(tick(i, host, seconds=3600.0), snapshot(section))
    ledger.flush()
    ledger.close()


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out, now_s=NOW)
    return code, out.getvalue()


def test_carbon_books_by_hand(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    build(path)
    code, text = run("--ledger", str(path), "--format", "json")
    assert code == 0
    c = json.loads(text)["carbon"]
    # Per hour: 1 kWh IT, 1.2 kWh facility. Location: 1.2 x 300 = 360 g; 3 h: 1080 g.
    assert c["scope2_location_grams"] == pytest.approx(1080.0)
    # Market: 0.5 kWh covered at 0, 0.7 kWh x 500 = 350 g an hour; 3 h: 1050 g.
    assert c["scope2_market_grams"] == pytest.approx(1050.0)
    # Embodied 100 g/h for 3 h; water on site 3 x 0.5 L, off site 3 x 1.2 x 2 L.
    assert c["embodied_grams"] == pytest.approx(300.0)
    assert c["water_liters"] == {"on_site": pytest.approx(1.5), "off_site": pytest.approx(7.2)}
    assert c["energy_estimated_joules"] == pytest.approx(3 * 0.72e6)
    assert c["minutes_not_recorded"] == 0
    api = c["workloads"]["api"]
    # api: 0.4 kWh an hour = 40 % of host energy: 40 % of each host figure.
    assert api["scope2_location_grams"] == pytest.approx(432.0)
    assert api["scope2_market_grams"] == pytest.approx(420.0)
    assert api["embodied_grams"] == pytest.approx(120.0)
    assert api["energy_estimated_joules"] == 0.0
    (factor,) = c["factors"]
    assert factor == {
        "provider": "Electricity Maps 2023 yearly",
        "zone": "DE",
        "factor_type": "average",
        "boundary": "lifecycle",
        "market_basis": "residual_mix",
        "minutes": 3,
        "energy_joules": pytest.approx(3 * 3.6e6),
        "max_age_seconds": 0.0,
    }


def test_table_shows_methods_apart_and_flags_estimated_energy_and_lifecycle(
    tmp_path: Path,
) -> None:
    path = tmp_path / "l.db"
    build(path)
    code, text = run("--ledger", str(path))
    assert code == 0
    lines = {line.split("  ")[0]: line for line in text.splitlines()}
    # One unit for the three emission rows (the largest, 1080 g, reads 1.080 kg), fixed
    # point: no 6-significant-digit or 1e-05 cells.
    assert lines["Scope 2, location-based [kgCO2e]"].split()[-2:] == ["1.080", "0.432"]
    assert lines["Scope 2, market-based [kgCO2e]"].split()[-2:] == ["1.050", "0.420"]
    assert lines["embodied hardware, amortized [kgCO2e]"].split()[-2:] == ["0.300", "0.120"]
    assert lines["water on site [L]"].split()[-2:] == ["1.500", "0.600"]
    assert lines["water off site [L]"].split()[-2:] == ["7.200", "2.880"]
    assert "! ESTIMATED ENERGY: 600.0 Wh (20.0% of host IT energy)" in text
    assert "! LIFECYCLE FACTOR" in text and "Scope 3 category 3" in text
    assert "MARGINAL" not in text and "MARKET-BASED = LOCATION-BASED" not in text


def test_an_old_ledger_reports_and_says_what_it_lacks(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(V1_DDL)
    conn.close()
    before = path.read_bytes()
    code, text = run("--ledger", str(path), "--since", "0")
    assert code == 0
    assert "1 minutes were booked before ledger schema 2" in text
    code, doc = run("--ledger", str(path), "--since", "0", "--format", "json")
    assert json.loads(doc)["host"]["emissions_grams"] == 0.6
    assert json.loads(doc)["carbon"]["scope2_market_grams"] == 0.0
    assert path.read_bytes() == before  # the report never migrates (read-only)


def test_prometheus_errors_say_what_to_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--prometheus", "http://127.0.0.1:1") == (1, "")
    assert "--prometheus needs --since" in capsys.readouterr().err
    assert run("--prometheus", "http://127.0.0.1:1", "--since", "1h")[0] == 1
    assert "cannot reach the Prometheus API at http://127.0.0.1:1" in capsys.readouterr().err


def test_csv_rows_carry_both_methods_embodied_and_water(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    build(path)
    code, text = run("--ledger", str(path), "--format", "csv")
    assert code == 0
    host, api = list(csv.DictReader(io.StringIO(text)))
    assert float(host["emissions_grams"]) == pytest.approx(1080.0)  # location-based
    assert float(host["emissions_market_grams"]) == pytest.approx(1050.0)
    assert float(api["emissions_market_grams"]) == pytest.approx(420.0)
    assert float(api["embodied_grams"]) == pytest.approx(120.0)
    assert float(host["water_off_site_liters"]) == pytest.approx(7.2)
    assert float(host["energy_estimated_joules"]) == pytest.approx(3 * 0.72e6)
    # The table keeps them out of its columns (they are in the carbon books below it).
    table = run("--ledger", str(path))[1]
    assert "emissions_market_grams" not in table.splitlines()[0]


def test_fleet_host_table_has_one_unit_per_column() -> None:
    """Per-host rows of a fleet report: SI units chosen per column, not 6-digit floats."""
    import io

    from jouled.report_carbon import render_hosts

    def host(joules: float, grams: float, cost: float) -> dict[str, float]:
        return {
            "energy_joules": joules,
            "energy_estimated_joules": 0.0,
            "emissions_grams": grams,
            "emissions_market_grams": grams / 2,
            "embodied_grams": 0.5,
            "cost": cost,
            "seconds": 7200.0,
        }

    out = io.StringIO()
    render_hosts({"a:9877": host(7.2e6, 1500.0, 0.4), "b:9877": host(36.0, 0.02, 2e-6)}, out, "USD")
    header, _, a, b = out.getvalue().splitlines()
    assert [c.strip() for c in header.split("  ") if c.strip()] == [
        "host (instance)",
        "IT energy [kWh]",
        "estimated [Wh]",
        "location [kgCO2e]",
        "market [gCO2e]",
        "embodied [mgCO2e]",
        "cost [USD]",
        "seconds",
    ]
    # 7.2e6 J = 2 kWh, and b's 36 J = 0.000010 kWh keeps 2 significant digits, not 0.000.
    assert a.split() == [
        "a:9877",
        "2.000000",
        "0.000",
        "1.500000",
        "750.000",
        "500.0",
        "0.40000",
        "7,200",
    ]
    assert b.split() == [
        "b:9877",
        "0.000010",
        "0.000",
        "0.000020",
        "0.010",
        "500.0",
        "<0.00001",
        "7,200",
    ]
