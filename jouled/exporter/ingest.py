"""Prometheus view of the ingest listeners' request book (requests, not spans)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from jouled.exporter.families import family


class IngestCollector(Collector):
    """``jouled_ingest_requests_total{listener, code, reason}`` from a totals callable
    ((listener, code, reason) -> requests)."""

    def __init__(self, totals: Callable[[], Mapping[tuple[str, str, str], int]]) -> None:
        self._totals = totals

    def collect(self) -> Iterator[Metric]:
        yield family(
            CounterMetricFamily,
            "jouled_ingest_requests",
            "Requests answered by the ingest listeners (HTTP bodies, gRPC calls) by listener, "
            "status code and reason; a refused body is one request, never a span.",
            ["listener", "code", "reason"],
            {k: float(v) for k, v in self._totals().items()},
        )
