"""Prometheus views of the attribution section: workloads, requests, spans."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from jouled.exporter.families import family
from jouled.pipeline.attribution import AttributionSnapshot
from jouled.pipeline.snapshot import Snapshot


def _le(bound: float) -> str:
    """The ``le`` label as Prometheus's own clients write it (Go float formatting)."""
    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]


HELP = {
    "jouled_requests": "Requests per workload and model: spans settled, or the inference "
    "server's own request counter (server-metrics mode).",
    "jouled_request_energy_joules": "Energy per settled request (all components), in joules.",
    "jouled_request_gflops": "Work of settled requests, in GFLOPs (where known).",
    "jouled_energy_per_gflop_joules": "Joules per GFLOP of the requests settled in the recent "
    "window.",
    "jouled_predicted_request_energy_joules": "The cost model's predicted energy per request "
    "(spans.fit_file), beside the measured jouled_request_energy_joules.",
}


def section_of(snapshot: Snapshot) -> AttributionSnapshot | None:
    return snapshot.attribution


def predicted_of(snapshot: Snapshot) -> Mapping[tuple[str, str], float]:
    """The cost stage's predicted joules per request (rendered with the request families)."""
    return snapshot.cost.predicted_request_j if snapshot.cost is not None else {}


class RequestCollector(Collector):
    """The per-(workload, model) families: the bulk of a large exposition. ``RequestText``
    renders the same families as text several times faster; this one serves OpenMetrics."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        server_requests: Callable[[Snapshot], Mapping[tuple[str, str], float]] | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._server_requests = server_requests

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        a = section_of(snap)
        if a is None:
            return
        counts = {key: float(st.count) for key, st in a.requests.items()}
        if self._server_requests is not None:
            counts |= self._server_requests(snap)
        requests = CounterMetricFamily(
            "jouled_requests", HELP["jouled_requests"], labels=["workload", "model"]
        )
        gflops = CounterMetricFamily(
            "jouled_request_gflops", HELP["jouled_request_gflops"], labels=["workload", "model"]
        )
        hist = HistogramMetricFamily(
            "jouled_request_energy_joules",
            HELP["jouled_request_energy_joules"],
            labels=["workload", "model"],
        )
        bounds = [_le(b) for b in a.buckets] + ["+Inf"]
        for (workload, model), n in sorted(counts.items()):
            requests.add_metric([workload, model], n)
        for (workload, model), st in sorted(a.requests.items()):
            gflops.add_metric([workload, model], st.gflops_total)
            hist.add_metric(
                [workload, model],
                buckets=list(zip(bounds, [float(c) for c in st.bucket_counts], strict=True)),
                sum_value=st.energy_sum_j,
            )
        yield requests
        yield hist
        yield gflops
        for name, values in (
            ("jouled_energy_per_gflop_joules", a.energy_per_gflop_j),
            ("jouled_predicted_request_energy_joules", predicted_of(snap)),
        ):
            yield family(GaugeMetricFamily, name, HELP[name], ["workload", "model"], values)


class AttributionCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        a = section_of(self._snapshot())
        if a is None:
            return
        counter, gauge = CounterMetricFamily, GaugeMetricFamily
        yield family(
            counter,
            "jouled_host_idle_energy_joules",
            "Host energy counted as idle (idle power x time) and attributed to no workload.",
            ["component"],
            a.idle_energy_j,
        )
        yield family(
            gauge,
            "jouled_host_idle_power_watts",
            "Idle power in use per component: configured, or learned as the lowest "
            "10-tick average over the last hour.",
            ["component"],
            a.idle_power_w,
        )
        yield family(
            counter,
            "jouled_unattributed_energy_joules",
            "Active host energy used by processes of no configured workload.",
            ["component", "source"],
            a.unattributed_energy_j,
        )
        yield family(
            counter,
            "jouled_workload_energy_joules",
            "Energy attributed to each workload (its processes and their children).",
            ["workload", "component", "source"],
            a.workload_energy_j,
        )
        yield family(
            counter,
            "jouled_workload_outside_spans_energy_joules",
            "Settled workload energy spent while no request span was open.",
            ["workload", "component"],
            a.workload_outside_spans_j,
        )
        yield family(
            counter,
            "jouled_workload_spans_energy_joules",
            "Settled workload energy given to request spans.",
            ["workload", "component"],
            a.workload_in_spans_j,
        )
        yield family(
            gauge,
            "jouled_workload_processes",
            "Live processes matched to each workload (0: the workload is not running).",
            ["workload"],
            a.workload_processes,
        )
        yield family(
            gauge,
            "jouled_unseen_processes",
            "Processes jouled is told of but cannot see under attribution.proc_path "
            "(source=nvml: GPU processes; source=workload_rule: PIDs a workload's rules name): "
            "their energy stays unattributed. Fix: hostPID, or the host's /proc as proc_path.",
            ["source", "target"],
            a.unseen_processes,
        )
        received = CounterMetricFamily(
            "jouled_spans_received", "Spans received on the ingest listener."
        )
        received.add_metric([], float(a.spans_received))
        yield received
        late = CounterMetricFamily(
            "jouled_spans_late",
            "Spans that arrived after the energy of their time had settled; not split.",
        )
        late.add_metric([], float(a.spans_late))
        yield late
        yield family(
            counter, "jouled_spans_rejected", "Spans refused, by reason.", ["reason"],
            a.spans_rejected,
        )  # fmt: skip
        for name, value, text in (
            ("jouled_spans_settled", a.spans_settled, "Spans settled into requests."),
            (
                "jouled_spans_duplicate",
                a.spans_duplicate,
                "Resent copies of a span, and nested spans joined to a request already "
                "counted (one request counted once).",
            ),
            (
                "jouled_spans_dropped",
                a.spans_dropped,
                "Spans evicted over the pending cap before receiving energy.",
            ),
            (
                "jouled_spans_truncated",
                a.spans_truncated,
                "Settled spans that did not wait for all their time's energy (over the pending "
                "cap, or waiting too long for the ticks covering their end).",
            ),
            (
                "jouled_splitter_forced_ticks",
                a.ticks_forced,
                "Ticks settled before spans.settle_seconds because too many were open.",
            ),
            (
                "jouled_splitter_clamped_ticks",
                a.ticks_clamped,
                "Ticks that started before the previous one ended (wall clock stepped back), "
                "clamped to start at its end.",
            ),
        ):
            total = CounterMetricFamily(name, text)
            total.add_metric([], float(value))
            yield total
        pending = GaugeMetricFamily(
            "jouled_spans_pending", "Accepted spans waiting for their ticks to settle."
        )
        pending.add_metric([], float(a.spans_pending))
        yield pending
