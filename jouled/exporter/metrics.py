"""prometheus-client custom collectors rendering a ``Snapshot`` (metric names: the design's
public contract). Counters are exported in base units with the ``_total`` suffix."""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from jouled import __version__
from jouled.exporter.families import family
from jouled.pipeline.snapshot import Snapshot


class SnapshotCollector(Collector):
    """Host-level series: raw domains, non-overlapping components, collector health."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        info = GaugeMetricFamily(
            "jouled_build_info",
            "jouled build information; the value is always 1.",
            labels=["version", "python"],
        )
        info.add_metric([__version__, platform.python_version()], 1.0)
        yield info

        yield family(
            CounterMetricFamily,
            "jouled_domain_energy_joules",
            "Energy of each raw meter (RAPL zone, GPU board, estimate) since jouled started. "
            "Zones overlap (package contains core and uncore): do not sum across domains.",
            ["domain", "source"],
            snap.domain_energy_j,
        )
        yield family(
            CounterMetricFamily,
            "jouled_host_energy_joules",
            "Host IT energy by non-overlapping component (cpu, dram, gpu, other); "
            "sums to the host's measured or estimated energy.",
            ["component", "source"],
            snap.host_energy_j,
        )
        yield family(
            CounterMetricFamily,
            "jouled_domain_resets",
            "Hardware energy counter resets detected (driver reload, GPU reset); "
            "unfolded without a negative delta or a spike.",
            ["domain", "source"],
            snap.counter_resets,
        )
        yield family(
            CounterMetricFamily,
            "jouled_domain_glitches",
            "Single absurd counter reads dropped (a value that fits neither the reads before "
            "nor after it); never used as a baseline, never counted as energy.",
            ["domain", "source"],
            snap.counter_glitches,
        )
        yield family(
            GaugeMetricFamily,
            "jouled_domain_frozen",
            "1 while the meter's counter has not moved for 5 s although the host was busy: "
            "not a measurement (it covers no host component; the estimate takes over).",
            ["domain", "source"],
            {k: 1.0 if v else 0.0 for k, v in snap.counter_frozen.items()},
        )
        status = sorted(snap.collectors.items())
        for name, doc, value in (
            (
                "jouled_collector_up",
                "1 when the collector's last read succeeded, 0 when it failed or timed out.",
                lambda st: 1.0 if st.up else 0.0,
            ),
            (
                "jouled_collector_duration_seconds",
                "How long the collector's last read took.",
                lambda st: st.duration_s,
            ),
            (
                "jouled_collector_domain_errors",
                "Domains the collector could not read on its last read (vanished zone, lost GPU).",
                lambda st: float(len(st.problems)),
            ),
        ):
            yield family(
                GaugeMetricFamily, name, doc, ["collector"], {c: value(st) for c, st in status}
            )

        last = GaugeMetricFamily(
            "jouled_last_tick_timestamp_seconds",
            "Wall-clock time at which the last tick was published.",
        )
        last.add_metric([], snap.wall_time)
        yield last
