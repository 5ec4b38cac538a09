"""Ledger schema 1 -> 2: an old ledger opens, keeps its rows, and gains the carbon columns
(NULL, "not recorded", for the old rows); per-row provenance and energy source are stored;
a file from a newer jouled is refused, not rewritten."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from jouled.ledger import Ledger, connect
from jouled.ledger_schema import SCHEMA_VERSION, columns
from jouled.pipeline.cost import Books, CostDelta, Factors

# What jouled wrote with schema version 1 (the DDL of that release, verbatim).
V1_DDL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE minutes (
    minute INTEGER NOT NULL, scope TEXT NOT NULL, workload TEXT NOT NULL,
    model TEXT NOT NULL, seconds REAL NOT NULL DEFAULT 0,
    energy_cpu_j REAL NOT NULL DEFAULT 0, energy_dram_j REAL NOT NULL DEFAULT 0,
    energy_gpu_j REAL NOT NULL DEFAULT 0, energy_other_j REAL NOT NULL DEFAULT 0,
    energy_j REAL NOT NULL DEFAULT 0, requests INTEGER NOT NULL DEFAULT 0,
    gflops REAL NOT NULL DEFAULT 0, cost_energy REAL NOT NULL DEFAULT 0,
    cost_hardware REAL NOT NULL DEFAULT 0, emissions_g REAL NOT NULL DEFAULT 0,
    pue REAL NOT NULL, grid_g_per_kwh REAL NOT NULL, price_per_kwh REAL NOT NULL,
    currency TEXT NOT NULL,
    PRIMARY KEY (minute, scope, workload, model)
) WITHOUT ROWID;
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO minutes (minute, scope, workload, model, seconds, energy_cpu_j, energy_j,
    cost_energy, emissions_g, pue, grid_g_per_kwh, price_per_kwh, currency)
VALUES (1699999980, 'host', '', '', 60, 3600, 3600, 0.0003, 0.6, 1.5, 400, 0.2, 'USD'),
       (1699999980, 'workload', 'api', '', 0, 1200, 1200, 0.0001, 0.2, 1.5, 400, 0.2, 'USD');
"""

T1 = 1_700_000_045.0  # in minute 1700000040, the one after the old rows
F = Factors(
    1.5, 400.0, 12.0, 0.2, "USD", "electricitymaps", "DE", "average", "lifecycle", 100.0, "supplier"
)


def v1_ledger(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(V1_DDL)
    conn.close()


def delta(wall: float, estimated_j: float) -> CostDelta:
    k = 1.5 / 3.6e6
    host = Books(
        {"cpu": 3600.0}, 0.0, 0.0, 3600 * k * 400, 3600 * k * 100, 5.0, 0.1, 0.2, estimated_j
    )
    return CostDelta(wall, 1.0, F, host, {}, {})


def rows(path: Path) -> list[sqlite3.Row]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM minutes ORDER BY minute, scope").fetchall()
    finally:
        conn.close()


def test_an_old_ledger_opens_keeps_its_rows_and_gains_the_carbon_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    v1_ledger(path)
    ledger = Ledger(path)
    assert ledger.open()
    ledger.add(delta(T1, estimated_j=0.0))
    assert ledger.flush() == 1
    ledger.close()

    old_host, old_api, new_host = rows(path)
    # The old rows are unchanged, and their new columns say "not recorded" (NULL).
    assert (old_host["energy_j"], old_host["emissions_g"], old_host["seconds"]) == (3600, 0.6, 60)
    assert old_api["workload"] == "api" and old_api["emissions_g"] == 0.2
    for column in ("emissions_market_g", "embodied_g", "grid_provider", "energy_source"):
        assert old_host[column] is None
    # The new row carries provenance, the market-based figure and the energy source.
    assert new_host["grid_provider"] == "electricitymaps" and new_host["grid_zone"] == "DE"
    assert (new_host["factor_type"], new_host["factor_boundary"]) == ("average", "lifecycle")
    assert new_host["grid_age_s"] == 12.0 and new_host["market_basis"] == "supplier"
    # 3600 J x 1.5 / 3.6e6 = 0.0015 kWh: 0.6 g at 400 (location), 0.15 g at 100 (market).
    assert new_host["emissions_g"] == pytest.approx(0.6)
    assert new_host["emissions_market_g"] == pytest.approx(0.15)
    assert (new_host["embodied_g"], new_host["water_on_site_l"]) == (5.0, 0.1)
    assert new_host["energy_source"] == "measured"
    conn = connect(path, readonly=True)
    try:
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (
            str(SCHEMA_VERSION),
        )
        assert conn.execute("SELECT value FROM meta WHERE key='migrated_1_to_2_at'").fetchone()
    finally:
        conn.close()

    # Opening again is a no-op: same columns, same rows.
    again = Ledger(path)
    assert again.open()
    again.close()
    assert len(rows(path)) == 3


def test_energy_source_merges_to_mixed_across_flushes(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    assert ledger.open()
    ledger.add(delta(T1, estimated_j=0.0))
    ledger.flush()
    ledger.add(delta(T1 + 1, estimated_j=3600.0))  # same minute, estimated this time
    ledger.flush()
    ledger.add(delta(T1 + 60, estimated_j=3600.0))
    ledger.flush()
    ledger.close()
    first, second = rows(tmp_path / "l.db")
    assert first["energy_source"] == "mixed"
    assert first["energy_estimated_j"] == 3600.0 and first["energy_j"] == 7200.0
    assert second["energy_source"] == "estimate"


def test_a_nan_market_factor_is_stored_as_null(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    assert ledger.open()
    d = delta(T1, 0.0)
    ledger.add(CostDelta(d.wall_s, 1.0, Factors(1.5, 400.0, 0.0, 0.2, "USD"), d.host, {}, {}))
    ledger.flush()
    ledger.close()
    assert math.isnan(Factors(1.5, 400.0, 0.0, 0.2, "USD").market_g_per_kwh)
    assert rows(tmp_path / "l.db")[0]["market_g_per_kwh"] is None


def assert_not_migrated(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        assert "energy_source" not in columns(conn)  # untouched
    finally:
        conn.close()


def test_a_ledger_from_a_newer_jouled_is_refused_not_rewritten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "new.db"
    v1_ledger(path)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    ledger = Ledger(path)
    assert not ledger.open()
    assert "schema version 99, newer than this jouled's" in caplog.text
    assert ledger.status().errors == {"schema": 1}
    assert_not_migrated(path)


@pytest.mark.parametrize("recorded", ["abc", "1.5", "-1", "9" * 5000])
def test_a_damaged_schema_version_disables_the_ledger_with_the_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, recorded: str
) -> None:
    # int() of these raised ValueError out of Ledger.open: the daemon did not start.
    path = tmp_path / "damaged.db"
    v1_ledger(path)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (recorded,))
    conn.close()
    ledger = Ledger(path)
    assert not ledger.open()
    assert f"schema_version is {recorded[:40]!r}, not a version number" in caplog.text
    assert ledger.status().errors == {"schema": 1}
    assert_not_migrated(path)


def test_only_a_ledger_with_rows_says_it_was_migrated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A new file is created at schema 1 and brought to 2 in the same breath: the first log
    lines of a fresh install must not claim a migration of data that never existed."""
    caplog.set_level("INFO", logger="jouled.ledger")
    connect(tmp_path / "new.db").close()
    assert [r.getMessage() for r in caplog.records if "migrated" in r.getMessage()] == []
    old = tmp_path / "old.db"
    v1_ledger(old)
    connect(old).close()
    said = [r.getMessage() for r in caplog.records if "migrated" in r.getMessage()]
    assert said == [f"ledger {old} migrated from schema 1 to {SCHEMA_VERSION}"]
