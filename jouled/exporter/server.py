"""Prometheus views of the server-metrics section and of energy per model.

``jouled_model_energy_joules_total{workload, model}`` has one meaning in both modes: the
energy of the work a model did. With spans it is the settled requests' energy (the sum of
``jouled_request_energy_joules``); in server-metrics mode, the workload's energy split by
the work its server reported per model. So ``rate(model energy) / rate(tokens)`` is joules
per token either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from jouled.exporter.attribution import section_of
from jouled.exporter.families import family
from jouled.exporter.tokens import tokens_family
from jouled.pipeline.server_metrics import ServerMetricsSnapshot
from jouled.pipeline.snapshot import Snapshot


def server_section(snapshot: Snapshot) -> ServerMetricsSnapshot | None:
    return snapshot.server_metrics


def server_requests(snapshot: Snapshot) -> Mapping[tuple[str, str], float]:
    """Requests the servers counted, per (workload, model): for ``jouled_requests_total``."""
    section = server_section(snapshot)
    return section.requests if section is not None else {}


def model_energy(snapshot: Snapshot) -> dict[tuple[str, str], float]:
    """Joules per (workload, model): the server split where a workload is in server-metrics
    mode, else the settled requests' energy."""
    out: dict[tuple[str, str], float] = {}
    server = server_section(snapshot)
    skip = server.workloads if server is not None else frozenset()
    a = section_of(snapshot)
    if a is not None:
        for key, st in a.requests.items():
            if key[0] not in skip:
                out[key] = st.energy_sum_j
    if server is not None:
        out.update(server.model_energy_j)
    return out


class ServerMetricsCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        counter, gauge = CounterMetricFamily, GaugeMetricFamily
        yield family(
            counter,
            "jouled_model_energy_joules",
            "Energy of each model's work, in joules: its settled requests' energy (spans), or "
            "the workload's energy split by the work its server reported (server_metrics).",
            ["workload", "model"],
            model_energy(snap),
        )
        yield tokens_family(snap)
        s = server_section(snap)
        if s is None:
            return
        yield family(
            gauge,
            "jouled_server_metrics_up",
            "1 if the last read of the workload's inference-server /metrics succeeded and "
            "found token or request counters.",
            ["workload"],
            {w: 1.0 if st.up else 0.0 for w, st in s.status.items()},
        )
        yield family(
            gauge,
            "jouled_server_metrics_duration_seconds",
            "Time the last read of the inference server's /metrics took.",
            ["workload"],
            {w: st.duration_s for w, st in s.status.items()},
        )
        yield family(
            counter,
            "jouled_server_metrics_resets",
            "Reads that found a server counter lower than before (server restarts).",
            ["workload"],
            {w: float(n) for w, n in s.resets.items()},
        )
        yield family(
            counter,
            "jouled_server_unserved_energy_joules",
            "Workload energy of ticks in which its server reported no work for longer than "
            "server_metrics.carry_seconds; given to no model.",
            ["workload"],
            s.unserved_j,
        )
        yield family(
            gauge,
            "jouled_server_pending_energy_joules",
            "Workload energy waiting for its server to report work (at most carry_seconds).",
            ["workload"],
            s.pending_j,
        )
