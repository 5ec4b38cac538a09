"""The fast text rendering equals prometheus-client's, byte for byte."""

import math
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from jouled.exporter.attribution import RequestCollector
from jouled.exporter.text import RequestText
from jouled.pipeline.attribution import AttributionSnapshot, RequestStats
from jouled.pipeline.snapshot import EMPTY, frozen

BOUNDS = (0.001, 0.5, 1.0, 2.5, 1000.0, 1e5)

names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12
) | st.sampled_from(['we"ird', "back\\slash", "new\nline", "ok"])
values = st.floats(allow_nan=True, allow_infinity=True) | st.integers(0, 10**9).map(float)


def section(requests, per_gflop, predicted) -> AttributionSnapshot:
    return AttributionSnapshot(
        workload_energy_j=frozen({}),
        idle_energy_j=frozen({}),
        idle_power_w=frozen({}),
        unattributed_energy_j=frozen({}),
        workload_in_spans_j=frozen({}),
        workload_outside_spans_j=frozen({}),
        workload_processes=frozen({}),
        requests=frozen(requests),
        energy_per_gflop_j=frozen(per_gflop),
        buckets=BOUNDS,
        spans_received=0,
        spans_accepted=0,
        spans_late=0,
        spans_rejected=frozen({}),
        spans_pending=0,
        predicted_request_j=frozen(predicted),
        spans_settled=0,
        spans_duplicate=0,
        spans_dropped=0,
    )


def reference(a: AttributionSnapshot) -> str:
    snap = replace(EMPTY, attribution=a)
    registry = CollectorRegistry()
    registry.register(RequestCollector(lambda: snap))
    return generate_latest(registry).decode()


keys = st.tuples(names, names)


@settings(max_examples=150, deadline=None)
@given(
    requests=st.dictionaries(
        keys,
        st.tuples(
            st.integers(0, 10**8),
            values,
            st.lists(st.integers(0, 10**8), min_size=7, max_size=7),
            values,
        ),
        max_size=6,
    ),
    per_gflop=st.dictionaries(keys, values, max_size=4),
    predicted=st.dictionaries(keys, values, max_size=4),
)
def test_fast_text_is_byte_identical_to_prometheus_client(requests, per_gflop, predicted) -> None:
    reqs = {k: RequestStats(n, s, tuple(sorted(b)), g) for k, (n, s, b, g) in requests.items()}
    a = section(reqs, per_gflop, predicted)
    renderer = RequestText()
    assert renderer.render(a) == reference(a)
    assert renderer.render(a) == reference(a)  # and again, from the label caches


def test_the_cache_is_bounded() -> None:
    renderer = RequestText(max_cached_keys=3)
    reqs = {(f"w{i}", "m"): RequestStats(1, 1.0, (1,) * 7, 1.0) for i in range(10)}
    a = section(reqs, {}, {})
    assert renderer.render(a) == reference(a)
    assert len(renderer._labels) <= 3
    assert not math.isnan(1.0)
