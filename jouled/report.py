"""``jouled report``: energy, money and emissions from the ledger, as a table, CSV or JSON.

Totals are sums of the ledger's per-minute rows (each already priced with the factors in
force at its ticks), so a report of last week uses last week's grid intensity and prices.
``energy_joules`` is IT energy as measured; ``facility_energy_joules`` is IT energy x PUE
(the row's PUE), the energy that ``cost`` and ``emissions_grams`` are of.
A workload's ``joules_per_request`` is the energy its settled requests received, per request.

Over 400 lines because it is the command (queries, grouping, the three output formats);
carbon columns, plots and units are in report_carbon.py, report_plot.py and units.py.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import re
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from jouled import config as config_mod
from jouled.ledger import COMPONENTS, SCOPE_HOST, SCOPE_MODEL, SCOPE_WORKLOAD, reading
from jouled.report_carbon import CARBON_COLUMNS, carbon_totals, render_hosts, with_carbon
from jouled.report_carbon import render as render_carbon
from jouled.report_errors import ReportError
from jouled.units import (
    ENERGY_IN_JOULES,
    GFLOPS,
    GRAMS,
    JOULES,
    ColumnFormat,
    column_format,
    money_format,
)

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")


# The instants a report can name: years 1 to 9999 (what datetime and SQLite dates hold).
MIN_TIME_S = dt.datetime(1, 1, 1, tzinfo=dt.UTC).timestamp()
MAX_TIME_S = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC).timestamp()


def parse_time(text: str, now_s: float) -> float:
    """``now``, ``7d``/``12h``/``30m`` ago, unix seconds, or ISO 8601 (naive means UTC).
    ``ReportError`` for anything else, or an instant outside the years 1 to 9999."""
    seconds = _parse_time(text, now_s)
    if not MIN_TIME_S <= seconds <= MAX_TIME_S:  # 1e300, 99999999999d: tracebacks before
        raise ReportError(f"time {text[:40]!r} is outside the years 1 to 9999")
    return seconds


def _parse_time(text: str, now_s: float) -> float:
    value = text.strip()
    if value == "now":
        return now_s
    m = _RELATIVE.match(value)
    if m:
        return now_s - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds):
            return seconds
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ReportError(
            f"cannot read time {text!r}: use now, 7d / 12h / 30m (ago), unix seconds, "
            "or ISO 8601 such as 2025-03-01 or 2025-03-01T12:00Z"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat().replace("+00:00", "Z")


def _per_request(joules: float, n: int) -> float | None:
    return joules / n if n > 0 else None


def totals(conn: sqlite3.Connection, since_s: float | None, until_s: float) -> dict[str, Any]:
    """The JSON document: ``host``, ``workloads.<name>`` (with ``models``), ``currency``."""
    lo = -math.inf if since_s is None else since_s
    # Rows are whole minutes: a minute counts when it starts inside [since, until).
    where = "minute >= ? AND minute < ?"
    args = (lo, until_s)
    currencies = [
        r[0]
        for r in conn.execute(
            f"SELECT DISTINCT currency FROM minutes WHERE {where} ORDER BY 1", args
        )
    ]
    if len(currencies) > 1:
        raise ReportError(
            f"the ledger holds costs in several currencies ({', '.join(currencies)}) in this "
            "range; narrow it with --since/--until"
        )
    energy_cols = ", ".join(f"SUM(energy_{c}_j)" for c in COMPONENTS)
    row = conn.execute(
        f"SELECT SUM(energy_j), SUM(emissions_g), SUM(cost_energy), SUM(cost_hardware), "
        f"SUM(seconds), MIN(minute), MAX(minute), SUM(energy_j * pue), {energy_cols} "
        f"FROM minutes WHERE scope = ? AND {where}",
        (SCOPE_HOST, *args),
    ).fetchone()
    energy, grams, c_energy, c_hw, seconds, first, last, facility = (
        row[i] or 0.0 for i in range(8)
    )
    host = {
        "energy_joules": energy,
        "facility_energy_joules": facility,
        "emissions_grams": grams,
        "cost": c_energy + c_hw,
        "cost_energy": c_energy,
        "cost_hardware": c_hw,
        "seconds": seconds,
        "energy_by_component_joules": {
            c: row[8 + i] or 0.0 for i, c in enumerate(COMPONENTS) if row[8 + i]
        },
    }
    workloads: dict[str, dict[str, Any]] = {}
    for name, energy, facility, grams, c_energy, c_hw in conn.execute(
        "SELECT workload, SUM(energy_j), SUM(energy_j * pue), SUM(emissions_g), "
        f"SUM(cost_energy), SUM(cost_hardware) FROM minutes WHERE scope = ? AND {where} "
        "GROUP BY workload",
        (SCOPE_WORKLOAD, *args),
    ):
        workloads[name] = {
            "energy_joules": energy,
            "facility_energy_joules": facility,
            "emissions_grams": grams,
            "cost": c_energy + c_hw,
            "cost_energy": c_energy,
            "cost_hardware": c_hw,
        }
    models: dict[str, dict[str, dict[str, Any]]] = {}
    for name, model, n, energy, facility, gflops, c_energy, grams in conn.execute(
        "SELECT workload, model, SUM(requests), SUM(energy_j), SUM(energy_j * pue), "
        f"SUM(gflops), SUM(cost_energy), SUM(emissions_g) FROM minutes WHERE scope = ? AND "
        f"{where} GROUP BY workload, model",
        (SCOPE_MODEL, *args),
    ):
        models.setdefault(name, {})[model] = {
            "requests": int(n),
            "energy_joules": energy,
            "facility_energy_joules": facility,
            "joules_per_request": _per_request(energy, int(n)),
            "gflops": gflops,
            "cost": c_energy,
            "emissions_grams": grams,
        }
    for name in set(workloads) | set(models):
        w = workloads.setdefault(
            name,
            {
                "energy_joules": 0.0,
                "facility_energy_joules": 0.0,
                "emissions_grams": 0.0,
                "cost": 0.0,
                "cost_energy": 0.0,
                "cost_hardware": 0.0,
            },
        )
        mine = models.get(name, {})
        n = sum(m["requests"] for m in mine.values())
        request_j = math.fsum(m["energy_joules"] for m in mine.values())
        w["requests"] = n
        w["request_energy_joules"] = request_j
        w["joules_per_request"] = _per_request(request_j, n)
        w["gflops"] = math.fsum(m["gflops"] for m in mine.values())
        w["models"] = dict(sorted(mine.items()))
    return {
        "currency": currencies[0] if currencies else None,
        "first_minute": _iso(first) if row[5] is not None else None,
        "last_minute": _iso(last) if row[6] is not None else None,
        "host": host,
        "workloads": dict(sorted(workloads.items())),
    }


def _day(day_index: int) -> str:
    return dt.datetime.fromtimestamp(int(day_index) * 86400, dt.UTC).date().isoformat()


def by_day(conn: sqlite3.Connection, since_s: float | None, until_s: float) -> list[dict[str, Any]]:
    lo = -math.inf if since_s is None else since_s
    out = []
    for day, scope, name, energy, facility, grams, c_energy, c_hw in conn.execute(
        "SELECT minute / 86400, scope, workload, SUM(energy_j), SUM(energy_j * pue), "
        "SUM(emissions_g), SUM(cost_energy), SUM(cost_hardware) FROM minutes "
        "WHERE minute >= ? AND minute < ? AND scope IN (?, ?) "
        "GROUP BY minute / 86400, scope, workload ORDER BY 1, 2, 3",
        (lo, until_s, SCOPE_HOST, SCOPE_WORKLOAD),
    ):
        out.append(
            {
                "day": _day(day),
                "party": "(host)" if scope == SCOPE_HOST else name,
                "energy_joules": energy,
                "facility_energy_joules": facility,
                "emissions_grams": grams,
                "cost": c_energy + c_hw,
            }
        )
    requests: dict[tuple[str, str], int] = {}
    for day, name, n in conn.execute(
        "SELECT minute / 86400, workload, SUM(requests) FROM minutes "
        "WHERE minute >= ? AND minute < ? AND scope = ? GROUP BY 1, 2",
        (lo, until_s, SCOPE_MODEL),
    ):
        requests[(_day(day), name)] = int(n)
    for r in out:
        r["requests"] = requests.get((r["day"], r["party"]), 0)
    return out


def rows(doc: dict[str, Any], by: str, days: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flat rows for table and CSV output."""
    if by == "day":
        return days
    if by == "model":
        return [
            {"workload": w, "model": m, **stats}
            for w, wl in doc["workloads"].items()
            for m, stats in wl["models"].items()
        ]
    out = [
        {
            "workload": "(host)",
            "energy_joules": doc["host"]["energy_joules"],
            "facility_energy_joules": doc["host"]["facility_energy_joules"],
            "emissions_grams": doc["host"]["emissions_grams"],
            "cost": doc["host"]["cost"],
            "requests": None,
            "joules_per_request": None,
        }
    ]
    for w, wl in doc["workloads"].items():
        out.append(
            {
                "workload": w,
                "energy_joules": wl["energy_joules"],
                "facility_energy_joules": wl["facility_energy_joules"],
                "emissions_grams": wl["emissions_grams"],
                "cost": wl["cost"],
                "requests": wl["requests"],
                "joules_per_request": wl["joules_per_request"],
            }
        )
    return out


# Table columns: header and how its numbers read (one unit and format per column).
_COLUMNS: dict[str, tuple[str, str]] = {
    "energy_joules": ("IT energy", "energy"),
    "facility_energy_joules": ("facility energy (x PUE)", "energy"),
    "emissions_grams": ("location-based CO2e", "grams"),  # Scope 2; market-based: below
    "cost": ("cost", "money"),
    "requests": ("requests", "count"),
    "joules_per_request": ("IT energy/request", "joules"),
    "gflops": ("work", "gflops"),
}
_KINDS: dict[str, tuple[tuple[tuple[str, float], ...], str]] = {
    "energy": (ENERGY_IN_JOULES, "Wh"),
    "grams": (GRAMS, "g"),
    "joules": (JOULES, "J"),
    "gflops": (GFLOPS, "GFLOP"),
}
_HIDDEN = ("energy_by_component_joules", "models")


def column_formats(items: list[dict[str, Any]], currency: str | None) -> dict[str, ColumnFormat]:
    """Each numeric column's format, its unit chosen for the largest value it shows."""
    formats: dict[str, ColumnFormat] = {}
    for key, (_, kind) in _COLUMNS.items():
        values = [r.get(key) for r in items if isinstance(r.get(key), int | float)]
        if kind in _KINDS:
            formats[key] = column_format(values, _KINDS[kind][0], default=_KINDS[kind][1])
        elif kind == "money":
            formats[key] = money_format(values, currency or "-")
        else:
            formats[key] = ColumnFormat("", 1.0, 0)
    return formats


def render_table(items: list[dict[str, Any]], out: TextIO, currency: str | None) -> None:
    """Aligned columns; numeric headers name their unit once, e.g. ``IT energy [kWh]``."""
    # The carbon columns are in CSV and JSON rows; the table shows them as the carbon books.
    headers = [k for k in items[0] if k not in _HIDDEN and k not in CARBON_COLUMNS]
    formats = column_formats(items, currency)
    names = [
        f"{_COLUMNS[h][0]} [{formats[h].unit}]" if h in _COLUMNS and formats[h].unit else h
        for h in headers
    ]
    table = [names]
    for r in items:
        cells = []
        for h in headers:
            value = r.get(h)
            cells.append(
                formats[h](value) if h in formats else "-" if value is None else str(value)
            )
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    first_numeric = next((i for i, h in enumerate(headers) if h in formats), len(headers))
    for n, row in enumerate(table):
        out.write(
            "  ".join(
                c.ljust(w) if i < first_numeric else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
            + "\n"
        )
        if n == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")
    if "facility_energy_joules" in headers:
        out.write(
            "facility energy = IT energy x PUE (each minute's); emissions and cost are of "
            "facility energy\n"
        )


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def nothing_to_show(doc: dict[str, Any], by: str) -> str:
    """Why a range has no rows for ``--by``: nothing at all, or host energy but no requests."""
    if doc["first_minute"] is None:
        return "no ledger rows in this range (try a wider --since/--until)"
    first, last = doc["first_minute"], doc["last_minute"]
    host = (
        f"the ledger has {_duration(doc['host']['seconds'])} of host energy in this range "
        f"(minutes {first}{'' if last == first else ' to ' + last})"
    )
    return (
        f"no requests in this range: {host} but no request (model) rows. Requests are "
        "booked from the spans a workload's server sends to jouled's ingest listener "
        "(docs/SPANS.md); --by workload shows the host and workload energy"
        if by == "model"
        else f"nothing to show by {by}: {host}"
    )


def render_csv(items: list[dict[str, Any]], out: TextIO) -> None:
    if not items:
        return
    headers = [k for k in items[0] if k not in _HIDDEN]
    writer = csv.DictWriter(out, fieldnames=headers, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in items:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in headers})


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jouled report",
        description="Energy, cost and emissions totals from the ledger.",
    )
    p.add_argument("--config", type=Path, help="the daemon's YAML config (for ledger.path)")
    p.add_argument("--ledger", type=Path, help="ledger file (overrides ledger.path)")
    p.add_argument("--since", help="start: now, 7d, 12h, unix seconds or ISO 8601 (UTC)")
    p.add_argument("--until", help="end (exclusive), same forms; default now")
    p.add_argument("--by", choices=["workload", "model", "day"], default="workload")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--plot", type=Path, help="also draw the rows as a PNG (needs matplotlib)")
    p.add_argument(
        "--prometheus",
        metavar="URL",
        help="a fleet report from this Prometheus HTTP API (increase() of every host's "
        "counters over --since..--until) instead of one host's ledger",
    )
    p.add_argument(
        "--match",
        default="",
        help='with --prometheus: label matchers for the hosts, e.g. job="jouled"',
    )
    return p


def _non_finite_to_none(value: Any) -> int:
    """Replace inf and NaN in nested dicts and lists by None, in place; how many."""
    items: Any = value.items() if isinstance(value, dict) else enumerate(value)
    count = 0
    for key, item in list(items):
        if isinstance(item, float) and not math.isfinite(item):
            value[key] = None
            count += 1
        elif isinstance(item, dict | list):
            count += _non_finite_to_none(item)
    return count


def main(argv: Sequence[str], *, out: TextIO | None = None, now_s: float | None = None) -> int:
    args = _parser().parse_args(list(argv))
    out = out or sys.stdout
    now = time.time() if now_s is None else now_s
    loaded = _fleet_doc(args, now) if args.prometheus else _ledger_doc(args, now)
    if isinstance(loaded, int):
        return loaded
    doc, days = loaded
    return _emit(args, doc, days, out)


MAX_FLEET_DAYS = 3660  # ten years of daily rows


def _fleet_doc(args: argparse.Namespace, now: float) -> tuple[dict[str, Any], list[Any]] | int:
    from jouled import fleet

    try:
        if not args.since:
            raise ReportError("--prometheus needs --since (e.g. --since 90d)")
        since = parse_time(args.since, now)
        until = parse_time(args.until, now) if args.until else now
        if args.by == "day" and until - since > MAX_FLEET_DAYS * 86400:
            # A query set per day, one after another: 0001-01-01 to now was 740,000 days.
            raise ReportError(
                f"--by day from Prometheus covers at most {MAX_FLEET_DAYS} days; "
                "narrow --since/--until"
            )
        query = fleet.http_query(args.prometheus)
        doc = fleet.totals(query, since, until, args.match)
        days = fleet.by_day(query, since, until, args.match) if args.by == "day" else []
    except (ReportError, fleet.FleetError) as exc:
        print(f"jouled report: {exc}", file=sys.stderr)
        return 1
    doc["first_minute"], doc["last_minute"] = _iso(since), _iso(until)
    return {"prometheus": args.prometheus, "since": _iso(since), "until": _iso(until), **doc}, days


def _ledger_doc(args: argparse.Namespace, now: float) -> tuple[dict[str, Any], list[Any]] | int:
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as exc:
        print(f"jouled report: config error: {exc}", file=sys.stderr)
        return 2
    path = args.ledger or cfg.ledger.path
    if path is None:
        print(
            "jouled report: the ledger is disabled (ledger.path is empty); give --ledger PATH",
            file=sys.stderr,
        )
        return 2
    try:
        since = parse_time(args.since, now) if args.since else None
        until = parse_time(args.until, now) if args.until else now + 60.0
        if not path.exists():
            raise ReportError(
                f"no ledger at {path} (has the daemon run with this ledger.path? "
                "is it readable by you?)"
            )
        try:
            with reading(path) as conn:
                doc = totals(conn, since, until)
                doc["carbon"] = carbon_totals(conn, since, until)
                days = by_day(conn, since, until) if args.by == "day" else []
        except sqlite3.Error as exc:
            raise ReportError(f"cannot read the ledger {path}: {exc}") from None
    except ReportError as exc:
        print(f"jouled report: {exc}", file=sys.stderr)
        return 1
    doc = {
        "ledger": str(path),
        "since": _iso(since),
        "until": _iso(until if args.until else None),
        **doc,
    }
    return doc, days


def _emit(args: argparse.Namespace, doc: dict[str, Any], days: list[Any], out: TextIO) -> int:
    items = with_carbon(rows(doc, args.by, days), doc, args.by)
    bad = _non_finite_to_none(doc) + _non_finite_to_none(items)
    if bad:
        # Rows written before spans' work was bounded may hold inf (gflops 1e308 twice).
        print(
            f"jouled report: {bad} non-finite value(s) in the ledger's range (an old jouled "
            "stored them); shown as null / n/a",
            file=sys.stderr,
        )
    empty = doc["first_minute"] is None or not items
    if args.plot is not None:
        from jouled.report_plot import plot

        if empty or not any((r.get("energy_joules") or 0.0) > 0 for r in items):
            print(f"jouled report: {nothing_to_show(doc, args.by)}; no plot", file=sys.stderr)
            return 1
        try:
            plot(items, args.by, column_formats(items, doc["currency"]), args.plot)
        except ReportError as exc:
            print(f"jouled report: {exc}", file=sys.stderr)
            return 2
        print(f"jouled report: plot written to {args.plot}", file=sys.stderr)
    if args.format == "json":
        doc["by"] = args.by
        doc["rows"] = items
        json.dump(doc, out, indent=2, allow_nan=False)
        out.write("\n")
    elif args.format == "csv":
        render_csv(items, out)
    elif empty:
        out.write(nothing_to_show(doc, args.by) + "\n")
    else:
        render_table(items, out, doc["currency"])
        if doc.get("hosts"):
            out.write("\n")
            render_hosts(doc["hosts"], out, doc["currency"])
        if doc.get("carbon"):
            out.write("\n")
            render_carbon(doc["carbon"], out)
    return 0
