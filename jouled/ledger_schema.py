"""The ledger's schema versions and the migration of older files in place.

Version 1 kept energy, money and location-based emissions with the PUE, intensity and price
in force. Version 2 adds the carbon books (market-based Scope 2, amortized embodied
emissions, water, estimated energy) and the grid factor's provenance. A version-1 file is
migrated when the daemon opens it (``ALTER TABLE ... ADD COLUMN``, one transaction): its
rows stay as they were, and the new columns of those rows are NULL ("not recorded"), which
``jouled report`` counts and says. A file from a newer jouled is refused, not rewritten.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Final

SCHEMA_VERSION: Final = 2

# Summed over a minute's ticks; NULL in rows written before version 2.
V2_SUMMED: Final = (
    "emissions_market_g",  # market-based Scope 2 gCO2e, PUE included
    "embodied_g",  # amortized embodied gCO2e of the hardware items (Scope 3 cat. 2)
    "water_on_site_l",  # IT kWh x WUE
    "water_off_site_l",  # facility kWh x the grid's water intensity
    "energy_estimated_j",  # the part of energy_j from the estimate collector
)
# As they stood at the minute's last tick.
V2_FACTORS: Final = (
    "grid_provider",  # electricitymaps | uk_national_grid | watttime | configured source
    "grid_zone",
    "factor_type",  # average | marginal | unstated
    "factor_boundary",  # operational | lifecycle | unstated
    "grid_age_s",  # age of the location-based factor
    "market_g_per_kwh",  # the market-based factor of the minute's last tick
    "market_basis",  # supplier | residual_mix | location_fallback
)
# measured | estimate | mixed: where the row's energy came from (merged across flushes).
ENERGY_SOURCE: Final = "energy_source"
_TEXT: Final = {"grid_provider", "grid_zone", "factor_type", "factor_boundary", "market_basis"}
V2_COLUMNS: Final = (*V2_SUMMED, *V2_FACTORS, ENERGY_SOURCE)


class LedgerSchemaError(Exception):
    """The file's schema cannot be used by this jouled; ``str()`` says what to do."""


def _decl(column: str) -> str:
    kind = "TEXT" if column in _TEXT or column == ENERGY_SOURCE else "REAL"
    return f"{column} {kind}"


def version(conn: sqlite3.Connection) -> int:
    """The file's schema version (0: none recorded). Raises LedgerSchemaError when the
    recorded value is not a whole number (a damaged file, or one jouled did not write)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if not row:
        return 0
    text = str(row[0])
    if not (text.isascii() and text.isdigit() and len(text) <= 9):
        raise LedgerSchemaError(
            f"the ledger's schema_version is {text[:40]!r}, not a version number: the file "
            "is damaged or was not written by jouled; set ledger.path to another file"
        )
    return int(text)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring an open ledger (v1 tables created) up to SCHEMA_VERSION; returns the version
    it had, or 0 for a file without rows (a new ledger: nothing was migrated). Raises
    LedgerSchemaError for a file written by a newer jouled."""
    with conn:
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1')")
    old = version(conn)
    if old > SCHEMA_VERSION:
        raise LedgerSchemaError(
            f"the ledger has schema version {old}, newer than this jouled's {SCHEMA_VERSION}; "
            "upgrade jouled, or set ledger.path to another file"
        )
    if old == SCHEMA_VERSION:
        return old
    have = {r[1] for r in conn.execute("PRAGMA table_info(minutes)")}
    rows = conn.execute("SELECT COUNT(*) FROM minutes").fetchone()[0]
    with conn:  # one transaction: a crash mid-migration leaves the v1 file as it was
        for column in V2_COLUMNS:
            if column not in have:
                conn.execute(f"ALTER TABLE minutes ADD COLUMN {_decl(column)}")
        conn.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
        )
        if rows:
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                (f"migrated_{old}_to_{SCHEMA_VERSION}_at", str(int(time.time()))),
            )
    return old if rows else 0


def columns(conn: sqlite3.Connection) -> set[str]:
    """The columns a (possibly read-only, possibly older) ledger file has."""
    return {r[1] for r in conn.execute("PRAGMA table_info(minutes)")}


def energy_source(energy_j: float, estimated_j: float) -> str | None:
    """measured | estimate | mixed, or None for a row without energy."""
    if energy_j <= 0:
        return None
    if estimated_j <= 0:
        return "measured"
    if estimated_j >= energy_j * (1 - 1e-9):
        return "estimate"
    return "mixed"


MERGE_SOURCE: Final = (
    f"{ENERGY_SOURCE} = CASE WHEN excluded.{ENERGY_SOURCE} IS NULL THEN {ENERGY_SOURCE} "
    f"WHEN {ENERGY_SOURCE} IS NULL OR {ENERGY_SOURCE} = excluded.{ENERGY_SOURCE} "
    f"THEN excluded.{ENERGY_SOURCE} ELSE 'mixed' END"
)
