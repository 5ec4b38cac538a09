"""One way to build a labelled metric family from a mapping of label values to numbers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily


def family(
    kind: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    documentation: str,
    labels: Sequence[str],
    values: Mapping[Any, float],
) -> CounterMetricFamily | GaugeMetricFamily:
    """``values`` maps a label value (or a tuple of them, in ``labels`` order) to a number;
    samples come out sorted, so expositions are stable."""
    fam = kind(name, documentation, labels=list(labels))
    for key, value in sorted(values.items()):
        fam.add_metric(list(key) if isinstance(key, tuple) else [key], float(value))
    return fam
