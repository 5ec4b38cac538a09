"""The carbon books of ``jouled report``: Scope 2 by both methods, embodied emissions, water,
estimated energy and the grid factors' provenance, with the flags an inventory needs.

Terms follow the GHG Protocol Scope 2 Guidance (2015): *location-based* is energy x the grid
average factor where it was used; *market-based* is energy x the factors of contractual
instruments, the supplier or the residual mix. Embodied hardware emissions are Scope 3
category 2 (capital goods), amortized here over the hardware's lifetime. A lifecycle grid
factor includes upstream emissions that an inventory reports in Scope 3 category 3.
"""

from __future__ import annotations

import math
import sqlite3
from typing import Any, TextIO

from jouled.ledger_schema import columns
from jouled.units import ENERGY_IN_JOULES, GRAMS, LITRES, column_format, money_format

SCOPE_HOST = "host"
SCOPE_WORKLOAD = "workload"
_SUMS = {
    "scope2_location_grams": "emissions_g",
    "scope2_market_grams": "emissions_market_g",
    "embodied_grams": "embodied_g",
    "water_on_site_liters": "water_on_site_l",
    "water_off_site_liters": "water_off_site_l",
    "energy_estimated_joules": "energy_estimated_j",
    "energy_joules": "energy_j",
}


def carbon_totals(
    conn: sqlite3.Connection, since_s: float | None, until_s: float
) -> dict[str, Any]:
    """The ``carbon`` section from ledger rows in [since, until); an old (schema 1) file
    reads too, its rows counted in ``minutes_not_recorded``."""
    have = columns(conn)

    def col(name: str) -> str:
        return name if name in have else "NULL"

    lo = -math.inf if since_s is None else since_s
    where = "minute >= ? AND minute < ?"
    sums = ", ".join(f"SUM({col(c)})" for c in _SUMS.values())
    missing = f"SUM(CASE WHEN {col('emissions_market_g')} IS NULL THEN 1 ELSE 0 END)"

    def pack(values: tuple[Any, ...]) -> dict[str, Any]:
        d = {k: v or 0.0 for k, v in zip(_SUMS, values, strict=True)}
        water = {
            "on_site": d.pop("water_on_site_liters"),
            "off_site": d.pop("water_off_site_liters"),
        }
        d.pop("energy_joules")
        return {**d, "water_liters": water}

    row = conn.execute(
        f"SELECT {sums}, {missing} FROM minutes WHERE scope = ? AND {where}",
        (SCOPE_HOST, lo, until_s),
    ).fetchone()
    out = pack(row[:-1])
    out["energy_joules"] = row[len(_SUMS) - 1] or 0.0
    out["minutes_not_recorded"] = int(row[-1] or 0)
    out["workloads"] = {
        r[0]: pack(r[1:])
        for r in conn.execute(
            f"SELECT workload, {sums} FROM minutes WHERE scope = ? AND {where} "
            "GROUP BY workload ORDER BY workload",
            (SCOPE_WORKLOAD, lo, until_s),
        )
    }
    labels = ("grid_provider", "grid_zone", "factor_type", "factor_boundary", "market_basis")
    out["factors"] = [
        {
            "provider": r[0] if r[0] is not None else "(not recorded)",
            "zone": r[1] or "",
            "factor_type": r[2] or "",
            "boundary": r[3] or "",
            "market_basis": r[4] or "",
            "minutes": r[5],
            "energy_joules": r[6] or 0.0,
            "max_age_seconds": r[7],
        }
        for r in conn.execute(
            f"SELECT {', '.join(col(c) for c in labels)}, COUNT(*), SUM(energy_j), "
            f"MAX({col('grid_age_s')}) FROM minutes WHERE scope = ? AND {where} "
            f"GROUP BY {', '.join(str(i + 1) for i in range(len(labels)))} ORDER BY 6 DESC",
            (SCOPE_HOST, lo, until_s),
        )
    ]
    return out


# Columns ``with_carbon`` adds to the rows by workload (CSV and JSON ``rows``).
CARBON_COLUMNS = (
    "emissions_market_grams",
    "embodied_grams",
    "water_on_site_liters",
    "water_off_site_liters",
    "energy_estimated_joules",
)


def with_carbon(items: list[dict[str, Any]], doc: dict[str, Any], by: str) -> list[dict[str, Any]]:
    """Rows by workload gain the carbon columns (the host row the host's, each workload its
    own); other groupings are returned as they are."""
    carbon = doc.get("carbon")
    if by != "workload" or not carbon:
        return items
    parties = {"(host)": carbon, **carbon.get("workloads", {})}
    out = []
    for row in items:
        c = parties.get(row.get("workload", ""), {})
        water = c.get("water_liters", {})
        out.append(
            {
                **row,
                "emissions_market_grams": c.get("scope2_market_grams"),
                "embodied_grams": c.get("embodied_grams"),
                "water_on_site_liters": water.get("on_site"),
                "water_off_site_liters": water.get("off_site"),
                "energy_estimated_joules": c.get("energy_estimated_joules"),
            }
        )
    return out


def flags(carbon: dict[str, Any]) -> list[str]:
    """What a reader of the inventory must know about these numbers (empty: nothing)."""
    out = []
    energy = carbon.get("energy_joules") or 0.0
    estimated = carbon.get("energy_estimated_joules") or 0.0
    if estimated > 0:
        share = f" ({estimated / energy:.1%} of host IT energy)" if energy > 0 else ""
        shown = column_format([estimated], ENERGY_IN_JOULES)
        out.append(
            f"ESTIMATED ENERGY: {shown(estimated)} {shown.unit}{share} came from the estimate "
            "collector (a power model), not from a meter"
        )
    if carbon.get("minutes_not_recorded"):
        out.append(
            f"{carbon['minutes_not_recorded']} minutes were booked before ledger schema 2: "
            "no market-based, embodied, water or provenance figures for them"
        )
    seen = carbon.get("factors") or []
    if any(f.get("factor_type") == "marginal" for f in seen):
        out.append(
            "MARGINAL FACTOR: a marginal rate (WattTime co2_moer) is for decisions, not for "
            "the location-based Scope 2 figure, which needs a grid average factor"
        )
    if any(f.get("boundary") == "lifecycle" for f in seen):
        out.append(
            "LIFECYCLE FACTOR: it includes upstream emissions that an inventory reports in "
            "Scope 3 category 3; set boundary: operational for Scope 2 factors"
        )
    if any(
        f.get("factor_type") in ("unstated", "") or f.get("provider") == "fallback" for f in seen
    ):
        out.append(
            "UNSTATED FACTOR: some minutes used a bare number or a provider's fallback; state "
            "factor_type and boundary in cost.grid_intensity"
        )
    if any(f.get("market_basis") == "location_fallback" for f in seen):
        out.append(
            "MARKET-BASED = LOCATION-BASED where no instrument, supplier factor or residual "
            "mix was configured (cost.market_based)"
        )
    return out


# (title, key, unit prefix list, quantity): rows of one quantity share a unit, chosen for
# the largest value any of them shows (as a column of the main table: docs in units.py).
_BOOK_ROWS = (
    ("Scope 2, location-based", "scope2_location_grams", GRAMS, "CO2e"),
    ("Scope 2, market-based", "scope2_market_grams", GRAMS, "CO2e"),
    ("embodied hardware, amortized", "embodied_grams", GRAMS, "CO2e"),
    ("water on site", "on_site", LITRES, ""),
    ("water off site", "off_site", LITRES, ""),
    ("estimated IT energy", "energy_estimated_joules", ENERGY_IN_JOULES, ""),
)


def render(carbon: dict[str, Any], out: TextIO) -> None:
    """The carbon books as text: one column per party, then the factors and the flags."""
    parties = {"(host)": carbon, **carbon.get("workloads", {})}

    def value(party: dict[str, Any], key: str) -> float | None:
        if key in ("on_site", "off_site"):
            v: float | None = party.get("water_liters", {}).get(key)
            return v
        return party.get(key)

    values = {key: [value(p, key) for p in parties.values()] for _, key, _, _ in _BOOK_ROWS}
    table = [["carbon books", *parties]]
    for title, key, units, suffix in _BOOK_ROWS:
        same_unit = [v for t, k, u, _ in _BOOK_ROWS if u is units for v in values[k]]
        fmt = column_format(same_unit, units, default="Wh" if units is ENERGY_IN_JOULES else None)
        table.append([f"{title} [{fmt.unit}{suffix}]", *(fmt(v) for v in values[key])])
    _write(table, out)
    factors = carbon.get("factors") or []
    if factors:
        out.write("\ngrid factors in force\n")
        keys = [k for k in factors[0] if k != "energy_joules"]
        rows = [keys] + [
            ["-" if f.get(k) is None else str(f.get(k)) for k in keys] for f in factors
        ]
        _write(rows, out)
    notes = flags(carbon)
    if notes:
        out.write("\n" + "".join(f"! {n}\n" for n in notes))


def _write(table: list[list[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for n, row in enumerate(table):
        cells = (
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        out.write("  ".join(cells).rstrip() + "\n")
        if n == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")


def render_hosts(
    hosts: dict[str, dict[str, Any]], out: TextIO, currency: str | None = None
) -> None:
    """A fleet report's per-host table (instance, energy, both Scope 2 figures, embodied)."""
    quantities = [
        ("IT energy", "energy_joules", ENERGY_IN_JOULES),
        ("estimated", "energy_estimated_joules", ENERGY_IN_JOULES),
        ("location", "emissions_grams", GRAMS),
        ("market", "emissions_market_grams", GRAMS),
        ("embodied", "embodied_grams", GRAMS),
    ]
    header = ["host (instance)"]
    cells: list[list[str]] = [[name] for name in hosts]
    for title, key, units in quantities:
        default = "Wh" if units is ENERGY_IN_JOULES else None
        fmt = column_format([h[key] for h in hosts.values()], units, default=default)
        suffix = "CO2e" if units is GRAMS else ""
        header.append(f"{title} [{fmt.unit}{suffix}]")
        for row, h in zip(cells, hosts.values(), strict=True):
            row.append(fmt(h[key]))
    money = money_format([h["cost"] for h in hosts.values()], currency or "")
    header += [f"cost [{money.unit}]" if money.unit else "cost", "seconds"]
    for row, h in zip(cells, hosts.values(), strict=True):
        row += [money(h["cost"]), f"{h['seconds']:,.0f}"]
    _write([header, *cells], out)
