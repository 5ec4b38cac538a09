"""``jouled report --prometheus URL``: the report's totals for a whole fleet, from the
counters every host's jouled exports, read through a Prometheus HTTP API.

Each figure is one instant query at ``until`` of ``increase(COUNTER[R])`` with ``R`` the
report's range (``until - since``), summed over hosts: the same sums the ledger keeps, but
at scrape resolution. ``increase()`` extrapolates each series to the range's edges (at most
half a scrape interval, and never below a counter's zero), and a host's last ticks after its
last scrape are not in Prometheus at all, so a fleet total differs from the sum of the
hosts' ledgers by about one scrape interval of each host's power (measured in
tests/e2e/test_fleet_report.py and docs/COST.md). Request counts from ``increase()`` are
not integers for the same reason. Stdlib only (urllib), synchronous: a CLI.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import urllib.error
import urllib.parse
from collections.abc import Callable
from typing import Any, Final

from jouled import httpget

MAX_BODY_BYTES: Final = 32 << 20
TIMEOUT_S: Final = 30.0


class FleetError(Exception):
    """The Prometheus API could not answer; ``str()`` says what to check."""


Query = Callable[[str, float], list[tuple[dict[str, str], float]]]


def http_query(base_url: str, timeout_s: float = TIMEOUT_S) -> Query:
    """An instant-query function on ``base_url`` (``/api/v1/query``), for any compatible API
    (Prometheus, Thanos, Mimir, VictoriaMetrics).

    Each answer is bounded: ``timeout_s`` for the whole read (a server trickling bytes is
    cut off, not waited on byte by byte), at most ``MAX_BODY_BYTES``. Raises ``FleetError``
    saying what went wrong: unreachable, too slow, too large, not JSON, not a success, not a
    vector of samples. Only http and https URLs.
    """
    base = base_url.rstrip("/")
    if urllib.parse.urlsplit(base).scheme not in ("http", "https"):
        raise FleetError(f"--prometheus {base_url!r}: give an http:// or https:// URL")

    def query(expr: str, at_s: float) -> list[tuple[dict[str, str], float]]:
        params = urllib.parse.urlencode({"query": expr, "time": f"{at_s:.3f}"})
        url = f"{base}/api/v1/query?{params}"
        try:
            _status, body = httpget.get(url, timeout_s=timeout_s, max_bytes=MAX_BODY_BYTES)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise FleetError(f"cannot reach the Prometheus API at {base}: {reason}") from None
        except httpget.TooSlow:
            raise FleetError(
                f"{base} did not finish answering {expr!r} within {timeout_s:g} s"
            ) from None
        except httpget.TooLarge:
            raise FleetError(
                f"{base} answered {expr!r} with more than {MAX_BODY_BYTES >> 20} MiB: "
                "narrow --match to fewer hosts"
            ) from None
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            raise FleetError(f"{base} did not answer with Prometheus API JSON") from None
        if not isinstance(doc, dict) or doc.get("status") != "success":
            error = doc.get("error") if isinstance(doc, dict) else None
            raise FleetError(f"query {expr!r} failed: {error or 'no success status'}")
        try:
            return _vector(doc.get("data"))
        except (TypeError, KeyError, IndexError, ValueError, AttributeError) as exc:
            raise FleetError(
                f"query {expr!r}: {base} did not return a vector of samples "
                f"({type(exc).__name__}: {exc})"
            ) from None

    return query


def _vector(data: Any) -> list[tuple[dict[str, str], float]]:
    """The samples of an instant vector ``data``; raises on any other shape."""
    if not isinstance(data, dict) or data.get("resultType") != "vector":
        raise ValueError("resultType is not vector")
    out = []
    for sample in data["result"]:
        value = float(sample["value"][1])
        metric = sample.get("metric", {})
        if not isinstance(metric, dict):
            raise TypeError(f"metric is {type(metric).__name__}, not an object")
        if math.isfinite(value):
            out.append(({str(k): str(v) for k, v in metric.items()}, value))
    return out


def _range(seconds: float) -> str:
    return f"{max(1, round(seconds))}s"


class _Reader:
    def __init__(self, query: Query, at_s: float, seconds: float, match: str) -> None:
        self.query, self.at, self.r = query, at_s, _range(seconds)
        self.match = match  # extra label matchers, e.g. job="jouled"

    def _sel(self, metric: str, extra: str = "") -> str:
        matchers = ", ".join(m for m in (self.match, extra) if m)
        return f"{metric}{{{matchers}}}" if matchers else metric

    def inc(
        self, metric: str, by: tuple[str, ...] = (), extra: str = ""
    ) -> dict[tuple[str, ...], float]:
        """``sum by (by) (increase(metric[R]))`` as {label values: number}."""
        expr = f"sum by ({', '.join(by)}) (increase({self._sel(metric, extra)}[{self.r}]))"
        return {tuple(m.get(k, "") for k in by): v for m, v in self.query(expr, self.at)}

    def facility(self, metric: str, by: tuple[str, ...]) -> dict[tuple[str, ...], float]:
        """Like ``inc`` but each host's increase times its PUE averaged over the range."""
        pue = f"avg_over_time({self._sel('jouled_pue')}[{self.r}])"
        inner = f"increase({self._sel(metric)}[{self.r}]) * on (instance) group_left () {pue}"
        expr = f"sum by ({', '.join(by)}) ({inner})"
        return {tuple(m.get(k, "") for k in by): v for m, v in self.query(expr, self.at)}

    def span_s(self) -> dict[str, float]:
        """Seconds each host ticked in the range (first to last tick timestamp seen)."""
        sel = f"{self._sel('jouled_last_tick_timestamp_seconds')}[{self.r}]"
        expr = f"max by (instance) (max_over_time({sel}) - min_over_time({sel}))"
        return {m.get("instance", ""): v for m, v in self.query(expr, self.at)}


def _by(d: dict[tuple[str, ...], float], key: str) -> float:
    return d.get((key,), 0.0)


def totals(query: Query, since_s: float, until_s: float, match: str = "") -> dict[str, Any]:
    """The report document (``host``, ``workloads``, ``carbon``, ``hosts``, ``currency``)
    for every host the API has, over [since, until)."""
    if until_s <= since_s:
        raise FleetError("--until must be after --since")
    rd = _Reader(query, until_s, until_s - since_s, match)
    energy = rd.inc("jouled_host_energy_joules_total", ("instance", "component", "source"))
    cost = rd.inc("jouled_host_cost_total", ("instance", "currency", "kind"))
    grams = rd.inc("jouled_host_emissions_grams_total", ("instance", "method"))
    embodied = rd.inc("jouled_host_embodied_emissions_grams_total", ("instance",))
    water = rd.inc("jouled_host_water_liters_total", ("location",))
    spans = rd.span_s()
    currencies = sorted({k[1] for k in cost})
    if len(currencies) > 1:
        raise FleetError(
            f"the fleet's costs are in several currencies ({', '.join(currencies)}); "
            "narrow the hosts with --match"
        )
    hosts: dict[str, dict[str, Any]] = {}
    for inst in sorted({k[0] for k in energy} | {k[0] for k in grams} | set(spans)):
        mine = {k[1:]: v for k, v in energy.items() if k[0] == inst}
        hosts[inst] = {
            "energy_joules": math.fsum(mine.values()),
            "energy_estimated_joules": math.fsum(v for k, v in mine.items() if k[1] == "estimate"),
            "emissions_grams": grams.get((inst, "location"), 0.0),
            "emissions_market_grams": grams.get((inst, "market"), 0.0),
            "embodied_grams": embodied.get((inst,), 0.0),
            "cost": math.fsum(v for k, v in cost.items() if k[0] == inst),
            "seconds": spans.get(inst, 0.0),
        }
    by_component: dict[str, float] = {}
    for (_i, component, _s), v in energy.items():
        by_component[component] = by_component.get(component, 0.0) + v
    kinds = {k[2] for k in cost}
    cost_by = {kind: math.fsum(v for k, v in cost.items() if k[2] == kind) for kind in kinds}
    host = {
        "energy_joules": math.fsum(h["energy_joules"] for h in hosts.values()),
        "facility_energy_joules": sum(
            rd.facility("jouled_host_energy_joules_total", ("instance",)).values()
        ),
        "emissions_grams": math.fsum(h["emissions_grams"] for h in hosts.values()),
        "cost": math.fsum(cost_by.values()),
        "cost_energy": cost_by.get("energy", 0.0),
        "cost_hardware": cost_by.get("hardware", 0.0),
        "seconds": math.fsum(spans.values()),
        "energy_by_component_joules": dict(sorted(by_component.items())),
    }
    workloads = _workloads(rd)
    estimated = math.fsum(h["energy_estimated_joules"] for h in hosts.values())
    carbon = {
        "energy_joules": host["energy_joules"],
        "scope2_location_grams": host["emissions_grams"],
        "scope2_market_grams": math.fsum(h["emissions_market_grams"] for h in hosts.values()),
        "embodied_grams": math.fsum(h["embodied_grams"] for h in hosts.values()),
        "water_liters": {k[0]: v for k, v in sorted(water.items())},
        "energy_estimated_joules": estimated,
        "factors": _factors(rd),
        "workloads": {
            w: {
                "scope2_location_grams": wl["emissions_grams"],
                "scope2_market_grams": wl.pop("emissions_market_grams"),
                "embodied_grams": wl.pop("embodied_grams"),
            }
            for w, wl in workloads.items()
        },
    }
    return {
        "prometheus": True,
        "currency": currencies[0] if currencies else None,
        "first_minute": None,
        "last_minute": None,
        "host": host,
        "workloads": workloads,
        "carbon": carbon,
        "hosts": hosts,
    }


def _workloads(rd: _Reader) -> dict[str, dict[str, Any]]:
    energy = rd.inc("jouled_workload_energy_joules_total", ("workload",))
    facility = rd.facility("jouled_workload_energy_joules_total", ("workload",))
    cost = rd.inc("jouled_workload_cost_total", ("workload", "kind"))
    grams = rd.inc("jouled_workload_emissions_grams_total", ("workload", "method"))
    embodied = rd.inc("jouled_workload_embodied_emissions_grams_total", ("workload",))
    requests = rd.inc("jouled_requests_total", ("workload", "model"))
    request_j = rd.inc("jouled_request_energy_joules_sum", ("workload", "model"))
    gflops = rd.inc("jouled_request_gflops_total", ("workload", "model"))
    names = {k[0] for k in energy} | {k[0] for k in requests}
    out: dict[str, dict[str, Any]] = {}
    for w in sorted(names):
        c_energy = cost.get((w, "energy"), 0.0)
        c_hw = cost.get((w, "hardware"), 0.0)
        models: dict[str, dict[str, Any]] = {}
        for (wl, model), n in sorted(requests.items()):
            if wl != w:
                continue
            j = request_j.get((wl, model), 0.0)
            models[model] = {
                "requests": n,
                "energy_joules": j,
                "facility_energy_joules": None,  # per request: not in Prometheus
                "joules_per_request": j / n if n > 0 else None,
                "gflops": gflops.get((wl, model), 0.0),
            }
        n = math.fsum(m["requests"] for m in models.values())
        j = math.fsum(m["energy_joules"] for m in models.values())
        out[w] = {
            "energy_joules": _by(energy, w),
            "facility_energy_joules": _by(facility, w),
            "emissions_grams": grams.get((w, "location"), 0.0),
            "emissions_market_grams": grams.get((w, "market"), 0.0),
            "embodied_grams": _by(embodied, w),
            "cost": c_energy + c_hw,
            "cost_energy": c_energy,
            "cost_hardware": c_hw,
            "requests": n,
            "request_energy_joules": j,
            "joules_per_request": j / n if n > 0 else None,
            "gflops": math.fsum(m["gflops"] for m in models.values()),
            "models": models,
        }
    return out


def _factors(rd: _Reader) -> list[dict[str, Any]]:
    """Which grid factors each host used in the range (from ``jouled_grid_factor_info``)."""
    labels = ("instance", "provider", "zone", "factor_type", "boundary", "market_basis")
    sel = f"{rd._sel('jouled_grid_factor_info')}[{rd.r}]"
    expr = f"count by ({', '.join(labels)}) (count_over_time({sel}))"
    found = [{k: m.get(k, "") for k in labels} for m, _v in rd.query(expr, rd.at)]
    return sorted(found, key=lambda f: tuple(f.values()))


def by_day(query: Query, since_s: float, until_s: float, match: str = "") -> list[dict[str, Any]]:
    """Rows per UTC day (host and each workload) like the ledger's ``--by day``: one
    ``totals`` per day, each over that day's part of [since, until)."""
    out: list[dict[str, Any]] = []
    day = math.floor(since_s / 86400) * 86400
    while day < until_s:
        lo, hi = max(since_s, day), min(until_s, day + 86400)
        doc = totals(query, lo, hi, match)
        name = dt.datetime.fromtimestamp(day, dt.UTC).date().isoformat()
        parties = {"(host)": doc["host"], **doc["workloads"]}
        for party, d in parties.items():
            out.append(
                {
                    "day": name,
                    "party": party,
                    "energy_joules": d["energy_joules"],
                    "facility_energy_joules": d["facility_energy_joules"],
                    "emissions_grams": d["emissions_grams"],
                    "cost": d["cost"],
                    "requests": d.get("requests", 0),
                }
            )
        day += 86400
    return out
