"""The ledger under hostile conditions (issue 13): its file deleted while jouled runs, and
old rows holding inf."""

from __future__ import annotations

import io
import json
import logging
import sqlite3
from pathlib import Path

import pytest

from jouled.ledger import Ledger
from jouled.report import main
from tests.cost.test_report import NOW, build_ledger
from tests.ledger.test_ledger import T0, delta, read


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def test_a_ledger_deleted_while_running_is_recreated_with_every_row(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue: with the file deleted, jouled_ledger_up stayed 1, rows kept "being written"
    into the unlinked file, nothing was logged, and every row was gone at exit."""
    caplog.set_level(logging.INFO, logger="jouled.ledger")
    path = tmp_path / "ledger.db"
    ledger = Ledger(path)
    assert ledger.open()
    for i in range(120):  # two minutes before the deletion
        ledger.add(delta(T0 + i))
    assert ledger.flush() > 0
    _remove(path)
    for i in range(120, 180):  # one more minute after it
        ledger.add(delta(T0 + i))
    assert ledger.flush() > 0
    ledger.close()
    assert path.exists()
    doc = read(path)
    assert doc["host"]["energy_joules"] == pytest.approx(180 * 300.0)  # nothing lost
    status = ledger.status()
    assert status.errors == {"deleted": 1}
    assert "was deleted or replaced while jouled runs" in caplog.text
    # host and api rows of the three minutes started before the deletion
    assert "recreated with 6 earlier rows" in caplog.text


def test_a_ledger_that_cannot_be_recreated_is_down_and_keeps_rows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "state"
    path = folder / "ledger.db"
    ledger = Ledger(path)
    assert ledger.open()
    ledger.add(delta(T0))
    assert ledger.flush() > 0
    _remove(path)
    folder.rmdir()
    folder.write_text("a file where the directory was")  # recreating must fail
    ledger.add(delta(T0 + 1))
    with caplog.at_level(logging.WARNING):
        assert ledger.flush() == 0
    status = ledger.status()
    assert not status.up and status.pending_rows > 0  # jouled_ledger_up 0, rows in memory
    assert "cannot recreate ledger" in caplog.text
    folder.unlink()
    ledger.add(delta(T0 + 2))
    assert ledger.flush() > 0  # the directory is back: recreated, rows written
    assert ledger.status().up
    ledger.close()
    assert read(path)["host"]["energy_joules"] == pytest.approx(3 * 300.0)


def test_report_reads_an_old_ledger_row_holding_inf(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue: two spans with gflops 1e308 made the ledger store Inf, and `jouled report
    --format json` crashed. New spans are bounded (1e12 GFLOPs); an old row still reads."""
    path = tmp_path / "old.db"
    build_ledger(path, days=1)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE minutes SET gflops = 9e999 WHERE scope = 'model'")  # inf
    for fmt in ("json", "csv", "table"):
        out = io.StringIO()
        assert main(["--ledger", str(path), "--format", fmt], out=out, now_s=NOW) == 0
        if fmt == "json":
            doc = json.loads(out.getvalue())
            assert doc["workloads"]["api"]["models"]["bert"]["gflops"] is None
            assert doc["workloads"]["api"]["requests"] == 48
    assert "non-finite value(s)" in capsys.readouterr().err
