"""`jouled model fit --ledger`: the fit from what the daemon measured, not from a CSV."""

import json
import sqlite3
import time
from pathlib import Path

import pytest

from jouled.costmodel.cli import main
from jouled.ledger import SCHEMA


def make_ledger(path: Path, rows: list[tuple[str, str, int, float, float, float]]) -> None:
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA)
        for workload, model, requests, gflops, joules, age_days in rows:
            minute = int(time.time() - age_days * 86400) // 60 * 60
            conn.execute(
                "INSERT INTO minutes (minute, scope, workload, model, energy_j, requests, "
                "gflops, pue, grid_g_per_kwh, price_per_kwh, currency) "
                "VALUES (?, 'model', ?, ?, ?, ?, ?, 1.5, 400, 0.2, 'USD')",
                (minute, workload, model, joules, requests, gflops),
            )


def test_fit_reads_joules_and_gflops_per_request_from_the_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = tmp_path / "ledger.db"
    # 0.5 J per GFLOP exactly, for three models; split over two minutes for one of them.
    make_ledger(
        ledger,
        [
            ("api", "distilbert", 100, 100 * 48.5, 100 * 24.25, 0.1),
            ("api", "bert-base", 50, 50 * 97.1, 50 * 48.55, 0.1),
            ("api", "bert-base", 50, 50 * 97.1, 50 * 48.55, 0.2),
            ("api", "bert-large", 10, 10 * 336.3, 10 * 168.15, 0.1),
            ("api", "no-work", 10, 0.0, 10.0, 0.1),  # unknown work: not a point
            ("api", "old", 10, 10 * 1.0, 10 * 99.0, 30.0),  # outside --since-days
        ],
    )
    assert main(["fit", "--ledger", str(ledger), "--since-days", "7", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 3
    assert report["anchored"]["slope"] == pytest.approx(0.5)
    out = tmp_path / "fit.json"
    assert main(["fit", "--ledger", str(ledger), "--since-days", "7", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["slope_joules_per_gflop"] == pytest.approx(0.5)


def test_an_empty_or_missing_ledger_says_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fit", "--ledger", str(tmp_path / "none.db")]) == 2
    assert "no such ledger" in capsys.readouterr().err
    ledger = tmp_path / "ledger.db"
    make_ledger(ledger, [("api", "m", 10, 0.0, 5.0, 0.1)])
    assert main(["fit", "--ledger", str(ledger)]) == 2
    assert "no requests with known GFLOPs" in capsys.readouterr().err
