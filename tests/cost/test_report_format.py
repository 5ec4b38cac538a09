"""``jouled report`` reads well: one unit and format per column, IT and facility energy
apart, a precise message for a range without requests, and plots whose axes read."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest

from jouled import config
from jouled.cost.live import CostStage
from jouled.ledger import Ledger
from jouled.report import main
from jouled.units import ENERGY_IN_JOULES, GRAMS, column_format, money_format
from tests.cost.helpers import attribution, snapshot, tick
from tests.cost.test_report import NOW, build_ledger


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out, now_s=NOW)
    return code, out.getvalue()


def tiny_ledger(path: Path, *, requests: bool = True) -> None:
    """A few seconds of a demo: 0.009 J host ticks, a workload at 0.0003 J per tick."""
    ledger = Ledger(path)
    assert ledger.open()
    stage = CostStage(config.validate({"cost": {"pue": 1.58}}, "t").cost, sink=ledger.add)
    for i in range(1, 6):
        reqs = {("inference", "tiny-bert"): (3 * i, 0.0002 * i, 1.5 * i)} if requests else {}
        section = attribution({("inference", "cpu", "estimate"): 0.0003 * i}, reqs)
        stage.on_tick(tick(i, {("cpu", "estimate"): 0.009 * i}, seconds=0.5), snapshot(section))
    ledger.flush()
    ledger.close()


def test_the_issue_example_reads_in_one_unit_and_format() -> None:
    # 1.1343e-05 kWh and 0.00110021 kWh in one column (issue 15): Wh, 3 decimals each.
    fmt = column_format([1.1343e-05 * 3.6e6, 0.00110021 * 3.6e6], ENERGY_IN_JOULES)
    assert (fmt.unit, fmt(1.1343e-05 * 3.6e6), fmt(0.00110021 * 3.6e6)) == (
        "Wh",
        "0.011",
        "1.100",
    )
    assert column_format([2.5e9 * 3600], ENERGY_IN_JOULES).unit == "GWh"
    assert column_format([3.6e9], ENERGY_IN_JOULES)(3.6e9) == "1.000"  # 1 MWh
    assert column_format([0.0, None], GRAMS).unit == "g"
    assert column_format([1500.0, 2.0], GRAMS)(2.0) == "0.0020"  # kg; 2 digits for 2 g
    assert column_format([1.0], GRAMS)(math.nan) == "-"
    usd = money_format([19.32144, 0.00036], "USD")
    assert (usd.unit, usd(19.32144), usd(0.00036)) == ("USD", "19.32144", "0.00036")
    tiny = money_format([1.2e-8], "EUR")
    assert (tiny.unit, tiny(1.2e-8)) == ("nEUR", "12.0")


def test_a_value_below_the_columns_resolution_is_not_shown_as_zero() -> None:
    # A workload's 1e-7 USD beside the host's 0.44 USD (hardware cost charged by GPU share
    # on a host with no GPU energy): 5 decimals reach 0.00001, so the cell says "<0.00001",
    # not "0.00000", which reads as nothing; a true zero stays "0.00000".
    usd = money_format([0.44596, 1e-7, 0.0], "USD")
    assert [usd(v) for v in (0.44596, 1e-7, 0.0)] == ["0.44596", "<0.00001", "0.00000"]
    assert column_format([1.0, 0.0], GRAMS)(-1e-9) == "0.000"  # no "-0.000" either


def test_table_has_it_and_facility_energy_in_column_units(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    build_ledger(path)  # PUE 1.5: 48 x 360 J = 4.8 Wh IT, 7.2 Wh facility
    code, text = run("--ledger", str(path))
    assert code == 0
    lines = text.splitlines()
    assert lines[0].split("  ")[:3] == [
        "workload",
        "IT energy [Wh]",
        "facility energy (x PUE) [Wh]",
    ]
    assert lines[2].split() == ["(host)", "4.800", "7.200", "2.880", "19.32144", "-", "-"]
    assert lines[3].split() == ["api", "1.200", "1.800", "0.720", "0.00036", "96", "10.00"]
    assert lines[4].startswith("facility energy = IT energy x PUE")  # then the carbon books
    code, text = run("--ledger", str(path), "--format", "json")
    doc = json.loads(text)
    assert doc["host"]["facility_energy_joules"] == pytest.approx(48 * 360.0 * 1.5)
    assert doc["workloads"]["api"]["facility_energy_joules"] == pytest.approx(48 * 90.0 * 1.5)
    assert doc["workloads"]["api"]["models"]["bert"]["facility_energy_joules"] == pytest.approx(
        96 * 10.0 * 1.5
    )
    code, text = run("--ledger", str(path), "--by", "day", "--format", "csv")
    assert text.splitlines()[0].startswith("day,party,energy_joules,facility_energy_joules,")


def test_by_model_on_host_rows_without_requests_says_so(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    tiny_ledger(path, requests=False)
    code, text = run("--ledger", str(path), "--by", "model")
    assert code == 0
    assert text == (
        "no requests in this range: the ledger has 2.5 s of host energy in this range "
        "(minutes 2023-11-14T22:13:00Z) but no request (model) rows. Requests are booked "
        "from the spans a workload's server sends to jouled's ingest listener "
        "(docs/SPANS.md); --by workload shows the host and workload energy\n"
    )
    code, text = run("--ledger", str(path), "--since", "2030-01-01")
    assert text == "no ledger rows in this range (try a wider --since/--until)\n"


def test_plot_axes_read_and_the_path_is_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    from jouled.report import column_formats, rows, totals
    from jouled.report_plot import plot

    path = tmp_path / "t.db"
    tiny_ledger(path)
    png = tmp_path / "tiny.png"
    code, _ = run("--ledger", str(path), "--plot", str(png))
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert capsys.readouterr().err == f"jouled report: plot written to {png}\n"
    # The tick labels of every panel are short numbers in the panel's unit.
    from jouled.ledger import reading

    with reading(path) as conn:
        doc = totals(conn, None, NOW)
    items = rows(doc, "workload", [])
    ticks = plot(items, "workload", column_formats(items, "USD"), tmp_path / "again.png")
    # The emissions panel is the table's column: Scope 2 location-based, not market-based.
    assert list(ticks) == ["energy [µWh]", "location-based CO2e [µg]", "cost [nUSD]"]
    for title, labels in ticks.items():
        assert len(labels) >= 3, title
        assert all(len(label) <= 5 and "e" not in label for label in labels), (title, labels)
