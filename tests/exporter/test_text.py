"""The fast text rendering equals prometheus-client's, byte for byte."""

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from jouled.exporter.attribution import RequestCollector
from jouled.exporter.text import RequestText
from jouled.pipeline.attribution import AttributionSnapshot, RequestStats
from jouled.pipeline.cost import CostSnapshot, Factors
from jouled.pipeline.snapshot import EMPTY, frozen

BOUNDS = (0.001, 0.5, 1.0, 2.5, 1000.0, 1e5)

names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12
) | st.sampled_from(['we"ird', "back\\slash", "new\nline", "ok"])
values = st.floats(allow_nan=True, allow_infinity=True) | st.integers(0, 10**9).map(float)


def section(requests, per_gflop) -> AttributionSnapshot:
    return AttributionSnapshot(
        requests=frozen(requests), energy_per_gflop_j=frozen(per_gflop), buckets=BOUNDS
    )


def cost(predicted) -> CostSnapshot:
    return CostSnapshot(
        factors=Factors(1.0, 0.0, 0.0, 0.0, "USD"), predicted_request_j=frozen(predicted)
    )


def reference(a: AttributionSnapshot, predicted=None) -> str:
    snap = replace(EMPTY, attribution=a, cost=cost(predicted or {}))
    registry = CollectorRegistry()
    registry.register(RequestCollector(lambda: snap))
    return generate_latest(registry).decode()


keys = st.tuples(names, names)


def request_maps(max_size: int) -> st.SearchStrategy[dict[tuple[str, str], RequestStats]]:
    """(workload, model) -> RequestStats with any counts and any floats (NaN, inf too)."""
    entry = st.tuples(
        st.integers(0, 10**8),
        values,
        st.lists(st.integers(0, 10**8), min_size=7, max_size=7),
        values,
    ).map(lambda t: RequestStats(t[0], t[1], tuple(sorted(t[2])), t[3]))
    return st.dictionaries(keys, entry, max_size=max_size)


@settings(max_examples=150, deadline=None)
@given(
    requests=request_maps(6),
    per_gflop=st.dictionaries(keys, values, max_size=4),
    predicted=st.dictionaries(keys, values, max_size=4),
)
def test_fast_text_is_byte_identical_to_prometheus_client(requests, per_gflop, predicted) -> None:
    a = section(requests, per_gflop)
    renderer = RequestText()
    assert renderer.render(a, predicted) == reference(a, predicted)
    # and again, from the label caches
    assert renderer.render(a, predicted) == reference(a, predicted)


def test_the_cache_is_bounded() -> None:
    renderer = RequestText(max_cached_keys=3)
    reqs = {(f"w{i}", "m"): RequestStats(1, 1.0, (1,) * 7, 1.0) for i in range(10)}
    a = section(reqs, {})
    assert renderer.render(a, {}) == reference(a)
    assert len(renderer._labels) <= 3
