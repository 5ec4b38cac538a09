"""``jouled report`` over a ledger written by the real Ledger; the cost metrics' names."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from jouled import config
from jouled.cost.live import CostStage
from jouled.exporter.cost import CostCollector
from jouled.ledger import Ledger
from jouled.pipeline.cost import Factors
from jouled.pipeline.snapshot import EMPTY
from jouled.report import ReportError, main, parse_time
from tests.cost.helpers import T0, attribution, snapshot, tick

NOW = T0 + 3 * 86400


def build_ledger(path: Path, days: int = 2) -> CostStage:
    """``days`` days, one tick an hour: host 360 J/tick, api 90 J and 2 bert requests."""
    ledger = Ledger(path)
    assert ledger.open()
    cfg = config.validate(
        {"cost": {"pue": 1.5, "grid_intensity": 400, "hardware": [{"name": "T4"}]}}, "t"
    ).cost
    stage = CostStage(cfg, sink=ledger.add)
    n = days * 24
    for i in range(1, n + 1):
        section = attribution(
            {("api", "cpu", "rapl"): 90.0 * i}, {("api", "bert"): (2 * i, 20.0 * i, 100.0 * i)}
        )
        stage.on_tick(tick(i, {("cpu", "rapl"): 360.0}, seconds=3600.0), snapshot(section))
    ledger.flush()
    ledger.close()
    return stage


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out, now_s=NOW)
    return code, out.getvalue()


def test_json_has_host_and_workloads_with_the_contract_keys(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    stage = build_ledger(path)
    code, text = run("--ledger", str(path), "--format", "json")
    assert code == 0
    doc = json.loads(text)
    host, api = doc["host"], doc["workloads"]["api"]
    assert doc["currency"] == "USD"
    assert host["energy_joules"] == pytest.approx(48 * 360.0)
    # 48 x 360 J = 17280 J = 0.0048 kWh IT; x 1.5 x 400 = 2.88 g.
    assert host["emissions_grams"] == pytest.approx(2.88)
    assert host["cost_hardware"] == pytest.approx(48 * 0.4025)
    assert host["cost"] == pytest.approx(48 * 0.4025 + 0.0048 * 1.5 * 0.2)
    assert set(api) >= {
        "energy_joules",
        "emissions_grams",
        "cost",
        "requests",
        "joules_per_request",
    }
    assert api["requests"] == 96 and api["joules_per_request"] == pytest.approx(10.0)
    assert api["models"]["bert"]["gflops"] == pytest.approx(4800.0)
    # The ledger agrees with the live counters.
    c = stage.last
    assert c is not None
    assert host["emissions_grams"] == pytest.approx(c.host_emissions_g_total, rel=1e-9)
    assert api["emissions_grams"] == pytest.approx(c.workload_emissions_g_total["api"], rel=1e-9)


def test_since_until_and_by_day_and_model(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    build_ledger(path, days=2)
    day1 = "2023-11-15"  # T0 is 2023-11-14T22:13Z; ticks run an hour apart
    code, text = run(
        "--ledger", str(path), "--since", day1, "--until", "2023-11-16", "--format", "json"
    )
    assert code == 0
    assert json.loads(text)["host"]["energy_joules"] == pytest.approx(24 * 360.0)
    code, text = run("--ledger", str(path), "--by", "day", "--format", "csv")
    table = list(csv.DictReader(io.StringIO(text)))
    host_days = [r for r in table if r["party"] == "(host)"]
    assert [r["day"] for r in host_days] == ["2023-11-14", "2023-11-15", "2023-11-16"]
    assert sum(float(r["energy_joules"]) for r in host_days) == pytest.approx(48 * 360.0)
    api_days = [r for r in table if r["party"] == "api"]
    assert sum(int(r["requests"]) for r in api_days) == 96
    code, text = run("--ledger", str(path), "--by", "model")
    assert code == 0 and "bert" in text and "IT energy/request [J]" in text
    code, text = run("--ledger", str(path))
    assert "(host)" in text and "api" in text and "IT energy [Wh]" in text


def test_parse_time_forms() -> None:
    assert parse_time("now", 1000.0) == 1000.0
    assert parse_time("7d", 10 * 86400.0) == 3 * 86400.0
    assert parse_time("90m", 10_000.0) == 10_000.0 - 5400
    assert parse_time("1700000000", 0) == 1_700_000_000.0
    assert parse_time("2023-11-14T22:13:20Z", 0) == 1_700_000_000.0
    assert parse_time("2023-11-14T22:13:20", 0) == 1_700_000_000.0  # naive is UTC
    with pytest.raises(ReportError, match="ISO 8601"):
        parse_time("last tuesday", 0)
    assert parse_time("0001-01-01", 0) == -62_135_596_800.0  # the first instant a report names


@pytest.mark.parametrize("when", ["1e300", "-1e300", "1e18", "99999999999d"])
def test_times_past_the_calendar_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], when: str
) -> None:
    # OverflowError, OSError or ValueError tracebacks out of `jouled report` before.
    build_ledger(tmp_path / "l.db", days=1)
    assert run("--ledger", str(tmp_path / "l.db"), f"--since={when}")[0] == 1
    assert capsys.readouterr().err == (
        f"jouled report: time {when!r} is outside the years 1 to 9999\n"
    )


def test_a_fleet_report_by_day_over_centuries_is_refused_before_any_query(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # One query set per day, one after another: 0001-01-01 to now ran ~740,000 days.
    code = main(
        ["--prometheus", "http://127.0.0.1:9", "--since", "0001-01-01", "--by", "day"],
        out=io.StringIO(),
    )
    assert code == 1
    assert "covers at most 3660 days" in capsys.readouterr().err


def test_errors_say_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--ledger", str(tmp_path / "none.db"))[0] == 1
    assert "no ledger at" in capsys.readouterr().err
    cfg = tmp_path / "j.yaml"
    cfg.write_text("ledger: {path: ''}\n")
    assert run("--config", str(cfg))[0] == 2
    assert "disabled" in capsys.readouterr().err
    build_ledger(tmp_path / "l.db", days=1)
    assert run("--ledger", str(tmp_path / "l.db"), "--since", "whenever")[0] == 1
    cfg.write_text("ledger: {bogus: 1}\n")
    assert run("--config", str(cfg))[0] == 2


def test_mixed_currencies_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from jouled.pipeline.cost import Books, CostDelta

    ledger = Ledger(tmp_path / "l.db")
    assert ledger.open()
    for i, cur in enumerate(("USD", "EUR")):
        f = Factors(1.0, 1.0, 0.0, 1.0, cur)
        ledger.add(CostDelta(T0 + 60 * i, 1.0, f, Books({}, 0.0, 0.0, 0.0), {}, {}))
    ledger.flush()
    assert run("--ledger", str(tmp_path / "l.db"))[0] == 1
    assert "EUR, USD" in capsys.readouterr().err


def test_cost_metrics_render_and_pass_promtool(tmp_path: Path) -> None:
    stage = build_ledger(tmp_path / "l.db", days=1)
    snap = replace(EMPTY, cost=stage.last)
    ledger = Ledger(tmp_path / "l.db")
    registry = CollectorRegistry()
    registry.register(CostCollector(lambda: snap, ledger=ledger.status))
    assert registry.get_sample_value(
        "jouled_host_cost_per_hour", {"currency": "USD", "kind": "hardware"}
    ) == pytest.approx(0.4025)
    assert registry.get_sample_value("jouled_pue") == 1.5
    assert registry.get_sample_value("jouled_grid_intensity_grams_per_kwh") == 400.0
    assert registry.get_sample_value("jouled_grid_intensity_age_seconds") == 0.0
    assert registry.get_sample_value("jouled_energy_price_per_kwh", {"currency": "USD"}) == 0.2
    assert registry.get_sample_value("jouled_ledger_up") == 0.0  # never opened
    assert registry.get_sample_value(
        "jouled_workload_emissions_grams_total", {"workload": "api", "method": "location"}
    ) == pytest.approx(24 * 90 * 1.5 / 3.6e6 * 400)
    assert registry.get_sample_value(
        "jouled_workload_cost_total", {"workload": "api", "currency": "USD", "kind": "energy"}
    ) == pytest.approx(24 * 90 * 1.5 / 3.6e6 * 0.2)
    text = generate_latest(registry)
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    res = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, check=False
    )
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("by", ["workload", "model", "day"])
def test_plot_draws_the_rows_as_a_png(tmp_path: Path, by: str) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "l.db"
    build_ledger(path, days=2)
    png = tmp_path / f"report-{by}.png"
    code, text = run("--ledger", str(path), "--by", by, "--plot", str(png))
    assert code == 0 and text  # the table is still printed
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    height, width = matplotlib.image.imread(str(png)).shape[:2]
    assert width > 1000 and height > 300


def test_plot_of_an_empty_range_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "l.db"
    build_ledger(path, days=1)
    code, _ = run("--ledger", str(path), "--since", "2030-01-01", "--plot", str(tmp_path / "x.png"))
    assert code == 1
    assert "no ledger rows" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
