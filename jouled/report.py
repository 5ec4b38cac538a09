"""``jouled report``: energy, money and emissions from the ledger, as a table, CSV or JSON.

Totals are sums of the ledger's per-minute rows (each already priced with the factors in
force at its ticks), so a report of last week uses last week's grid intensity and prices.
``energy_joules`` is IT energy as measured; ``cost`` and ``emissions_grams`` include PUE.
A workload's ``joules_per_request`` is the energy its settled requests received, per request.
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

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")


class ReportError(Exception):
    """A problem the user fixes (bad time, no ledger); ``str()`` says how."""


def parse_time(text: str, now_s: float) -> float:
    """``now``, ``7d``/``12h``/``30m`` ago, unix seconds, or ISO 8601 (naive means UTC)."""
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
        f"SUM(seconds), MIN(minute), MAX(minute), {energy_cols} "
        f"FROM minutes WHERE scope = ? AND {where}",
        (SCOPE_HOST, *args),
    ).fetchone()
    energy, grams, c_energy, c_hw, seconds, first, last = (row[i] or 0.0 for i in range(7))
    host = {
        "energy_joules": energy,
        "emissions_grams": grams,
        "cost": c_energy + c_hw,
        "cost_energy": c_energy,
        "cost_hardware": c_hw,
        "seconds": seconds,
        "energy_by_component_joules": {
            c: row[7 + i] or 0.0 for i, c in enumerate(COMPONENTS) if row[7 + i]
        },
    }
    workloads: dict[str, dict[str, Any]] = {}
    for name, energy, grams, c_energy, c_hw in conn.execute(
        "SELECT workload, SUM(energy_j), SUM(emissions_g), SUM(cost_energy), "
        f"SUM(cost_hardware) FROM minutes WHERE scope = ? AND {where} GROUP BY workload",
        (SCOPE_WORKLOAD, *args),
    ):
        workloads[name] = {
            "energy_joules": energy,
            "emissions_grams": grams,
            "cost": c_energy + c_hw,
            "cost_energy": c_energy,
            "cost_hardware": c_hw,
        }
    models: dict[str, dict[str, dict[str, Any]]] = {}
    for name, model, n, energy, gflops, c_energy, grams in conn.execute(
        "SELECT workload, model, SUM(requests), SUM(energy_j), SUM(gflops), SUM(cost_energy), "
        f"SUM(emissions_g) FROM minutes WHERE scope = ? AND {where} GROUP BY workload, model",
        (SCOPE_MODEL, *args),
    ):
        models.setdefault(name, {})[model] = {
            "requests": int(n),
            "energy_joules": energy,
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
    for day, scope, name, energy, grams, c_energy, c_hw in conn.execute(
        "SELECT minute / 86400, scope, workload, SUM(energy_j), SUM(emissions_g), "
        "SUM(cost_energy), SUM(cost_hardware) FROM minutes "
        "WHERE minute >= ? AND minute < ? AND scope IN (?, ?) "
        "GROUP BY minute / 86400, scope, workload ORDER BY 1, 2, 3",
        (lo, until_s, SCOPE_HOST, SCOPE_WORKLOAD),
    ):
        out.append(
            {
                "day": _day(day),
                "party": "(host)" if scope == SCOPE_HOST else name,
                "energy_joules": energy,
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
                "emissions_grams": wl["emissions_grams"],
                "cost": wl["cost"],
                "requests": wl["requests"],
                "joules_per_request": wl["joules_per_request"],
            }
        )
    return out


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if key == "energy_joules":
            return f"{value / 3.6e6:.6g} kWh"
        if key == "cost":
            return f"{value:.6g}"
        return f"{value:.6g}"
    return str(value)


def render_table(items: list[dict[str, Any]], out: TextIO, currency: str | None) -> None:
    if not items:
        out.write("no ledger rows in this range\n")
        return
    headers = [k for k in items[0] if k != "energy_by_component_joules"]
    names = {
        "energy_joules": "energy",
        "emissions_grams": "gCO2e",
        "cost": f"cost ({currency or '-'})",
        "joules_per_request": "J/request",
    }
    table = [[names.get(h, h) for h in headers]]
    table += [[_cell(h, r.get(h)) for h in headers] for r in items]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    for n, row in enumerate(table):
        out.write(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
            + "\n"
        )
        if n == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")


def render_csv(items: list[dict[str, Any]], out: TextIO) -> None:
    if not items:
        return
    headers = [k for k in items[0] if k not in ("models", "energy_by_component_joules")]
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
    return p


def _label(row: dict[str, Any], by: str) -> str:
    if by == "day":
        return f"{row['day']} {row['party']}"
    if by == "model":
        return f"{row['workload']}/{row['model']}"
    return str(row["workload"])


def plot(items: list[dict[str, Any]], by: str, currency: str | None, path: Path) -> None:
    """Energy (kWh), emissions (gCO2e) and cost per row, side by side, as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ReportError("--plot needs matplotlib: pip install 'jouled[report]'") from None
    labels = [_label(r, by) for r in items]
    panels = (
        ("energy (kWh)", [(r.get("energy_joules") or 0.0) / 3.6e6 for r in items]),
        ("emissions (gCO2e)", [r.get("emissions_grams") or 0.0 for r in items]),
        (f"cost ({currency or '-'})", [r.get("cost") or 0.0 for r in items]),
    )
    height = max(3.0, 0.35 * len(labels) + 1.5)
    fig, axes = plt.subplots(1, 3, figsize=(13, height), sharey=True)
    for ax, (title, values) in zip(axes, panels, strict=True):
        bars = ax.barh(labels, values, color="#3a7dc0")
        ax.bar_label(bars, fmt="%.3g", padding=2, fontsize=8)
        ax.set_title(title)
        ax.invert_yaxis()  # first row on top, as in the table
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlim(0, max(values, default=1.0) * 1.25 or 1.0)
    fig.suptitle(f"jouled report by {by}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str], *, out: TextIO | None = None, now_s: float | None = None) -> int:
    args = _parser().parse_args(list(argv))
    out = out or sys.stdout
    now = time.time() if now_s is None else now_s
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
    items = rows(doc, args.by, days)
    if args.plot is not None:
        if not any((r.get("energy_joules") or 0.0) > 0 for r in items):
            print("jouled report: no ledger rows in this range to plot", file=sys.stderr)
            return 1
        try:
            plot(items, args.by, doc["currency"], args.plot)
        except ReportError as exc:
            print(f"jouled report: {exc}", file=sys.stderr)
            return 2
    if args.format == "json":
        doc["by"] = args.by
        doc["rows"] = items
        json.dump(doc, out, indent=2, allow_nan=False)
        out.write("\n")
    elif args.format == "csv":
        render_csv(items, out)
    else:
        render_table(items, out, doc["currency"])
    return 0
