"""A fast Prometheus text (and OpenMetrics) rendering of the per-(workload, model) request families.

With 10 workloads x 50 models these are ~16,000 lines; prometheus-client formats each
sample anew (label sorting, escaping, float formatting: ~8 us a line). Here each series'
label text is built once and kept across scrapes (the keys change rarely), so a scrape only
formats numbers. The output is byte-for-byte what prometheus-client writes for
``RequestCollector`` (a test holds the two together).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from prometheus_client.utils import floatToGoString

from jouled.exporter.attribution import HELP, _le
from jouled.pipeline.attribution import AttributionSnapshot, RequestStats


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _num(value: float) -> str:
    # floatToGoString's output for a whole number below 1e6 is "<n>.0": skip the call.
    value = float(value)
    if value.is_integer() and 0 <= value < 1_000_000 and math.copysign(1.0, value) > 0:
        return f"{int(value)}.0"
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


def _header(name: str, kind: str, openmetrics: bool) -> str:
    base = name.removesuffix("_total")
    # OpenMetrics names a counter family without its _total suffix (its samples keep it)
    # and escapes quotes in HELP; the text format keeps the suffix and only \\ and newlines.
    if openmetrics:
        return f"# HELP {base} {_escape(HELP[base])}\n# TYPE {base} {kind}\n"
    doc = HELP[base].replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"


class RequestText:
    """Renders the request families; keeps label text per key and per bucket layout."""

    def __init__(self, max_cached_keys: int = 100_000) -> None:
        self._labels: dict[tuple[str, str], str] = {}
        self._bucket_lines: dict[tuple[tuple[str, str], tuple[float, ...]], list[str]] = {}
        self._max = max_cached_keys

    def _label(self, key: tuple[str, str]) -> str:
        text = self._labels.get(key)
        if text is None:
            if len(self._labels) >= self._max:
                self._labels.clear()
                self._bucket_lines.clear()
            # prometheus-client sorts label names: model before workload.
            text = f'model="{_escape(key[1])}",workload="{_escape(key[0])}"'
            self._labels[key] = text
        return text

    def _buckets(self, key: tuple[str, str], bounds: tuple[float, ...]) -> list[str]:
        cached = self._bucket_lines.get((key, bounds))
        if cached is None:
            label = self._label(key)
            cached = [
                f'jouled_request_energy_joules_bucket{{le="{le}",{label}}} '
                for le in [_le(b) for b in bounds] + ["+Inf"]
            ]
            self._bucket_lines[(key, bounds)] = cached
        return cached

    def render(
        self,
        a: AttributionSnapshot,
        predicted: Mapping[tuple[str, str], float],
        *,
        openmetrics: bool = False,
        server_requests: Mapping[tuple[str, str], float] | None = None,
    ) -> str:
        """The request families of ``a`` and the cost stage's ``predicted`` joules, as
        Prometheus text 0.0.4, or as OpenMetrics 1.0 (without the closing ``# EOF``).
        ``server_requests``: requests counted by inference servers (server-metrics mode);
        they stand for ``jouled_requests_total`` of their (workload, model)."""
        om = openmetrics
        items: list[tuple[tuple[str, str], RequestStats]] = sorted(a.requests.items())
        out: list[str] = [_header("jouled_requests_total", "counter", om)]
        if server_requests:
            merged = {key: float(st.count) for key, st in items} | dict(server_requests)
            for key, n in sorted(merged.items()):
                out.append(f"jouled_requests_total{{{self._label(key)}}} {_num(n)}\n")
        for key, st in items if not server_requests else ():
            out.append(f"jouled_requests_total{{{self._label(key)}}} {_num(float(st.count))}\n")
        out.append(_header("jouled_request_energy_joules", "histogram", om))
        for key, st in items:
            label = self._label(key)
            prefixes = self._buckets(key, a.buckets)
            counts = st.bucket_counts
            if len(counts) != len(prefixes):
                raise ValueError(f"{key}: {len(counts)} bucket counts for {len(prefixes)} bounds")
            # Cumulative whole counts below 1e6 (the last is the largest) format as "<n>.0",
            # exactly as floatToGoString would, without a call per line.
            if counts[0] >= 0 and counts[-1] < 1_000_000:
                out.extend([f"{p}{c}.0\n" for p, c in zip(prefixes, counts, strict=False)])
            else:
                out.extend([f"{p}{_num(c)}\n" for p, c in zip(prefixes, counts, strict=False)])
            # _count is the +Inf bucket, as prometheus-client writes it.
            out.append(f"jouled_request_energy_joules_count{{{label}}} ")
            out.append(f"{_num(float(st.bucket_counts[-1]))}\n")
            out.append(f"jouled_request_energy_joules_sum{{{label}}} {_num(st.energy_sum_j)}\n")
        out.append(_header("jouled_request_gflops_total", "counter", om))
        for key, st in items:
            out.append(
                f"jouled_request_gflops_total{{{self._label(key)}}} {_num(st.gflops_total)}\n"
            )
        gauges: tuple[tuple[str, Mapping[tuple[str, str], float]], ...] = (
            ("jouled_energy_per_gflop_joules", a.energy_per_gflop_j),
            ("jouled_predicted_request_energy_joules", predicted),
        )
        for name, values in gauges:
            out.append(_header(name, "gauge", om))
            for key, v in sorted(values.items()):
                out.append(f"{name}{{{self._label(key)}}} {_num(v)}\n")
        return "".join(out)
