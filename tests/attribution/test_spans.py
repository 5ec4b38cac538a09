"""The span splitter: conservation, settle-once, the split rule, bounds."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jouled.attribution.spans import (
    SettleResult,
    Span,
    SpanSplitter,
    split_fractions,
)

BASE = 1_700_000_000.0
WORKLOADS = ("classifier", "llm", "embed")
COMPONENTS = ("cpu", "dram", "gpu")

# Each test runs with the compiled pending-span record and with the Python one (conftest.py).
pytestmark = pytest.mark.usefixtures("pending_record")


def close(a: float, b: float, rel: float = 1e-9) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12 * max(1.0, abs(b)))


class Totals:
    """Sums of everything a splitter returned, per workload and component."""

    def __init__(self) -> None:
        self.in_spans: dict[tuple[str, str], float] = {}
        self.outside: dict[tuple[str, str], float] = {}
        self.requests: dict[tuple[str, str], float] = {}
        self.n_requests = 0
        self.results: list[SettleResult] = []

    def add(self, result: SettleResult) -> None:
        self.results.append(result)
        for into, src in ((self.in_spans, result.in_spans_j), (self.outside, result.outside_j)):
            for wl, per in src.items():
                for comp, joules in per.items():
                    assert joules >= 0.0
                    into[wl, comp] = into.get((wl, comp), 0.0) + joules
        for req in result.requests:
            self.n_requests += 1
            for comp, joules in req.energy_j.items():
                assert joules >= 0.0
                self.requests[req.workload, comp] = (
                    self.requests.get((req.workload, comp), 0.0) + joules
                )


def reference_fractions(
    spans: list[tuple[float, float, float, bool]], w0: float, w1: float
) -> tuple[float, list[float]]:
    """The split rule written the slow, obvious way: every segment, every open span."""
    points = sorted({w0, w1, *(min(max(t, w0), w1) for s, e, _, _ in spans for t in (s, e))})
    outside = 0.0
    shares = [0.0] * len(spans)
    for a, b in itertools.pairwise(points):
        frac = (b - a) / (w1 - w0)
        open_ = [i for i, (s, e, _, _) in enumerate(spans) if s <= a and e >= b and e > s]
        if not open_:
            outside += frac
            continue
        rates = [spans[i][2] for i in open_]
        if all(spans[i][3] for i in open_) and sum(rates) > 0:
            for i, r in zip(open_, rates, strict=True):
                shares[i] += frac * r / sum(rates)
        else:
            for i in open_:
                shares[i] += frac / len(open_)
    return outside, shares


# --- the split rule, exactly -----------------------------------------------------------------


_ms = st.integers(-200, 1200).map(lambda ms: BASE + ms / 1000)  # a ms grid: many ties
_split_span = st.tuples(_ms, _ms, st.sampled_from([0.0, 1.0, 2.5, 40.0, 1e3]), st.booleans()).map(
    lambda t: (min(t[0], t[1]), max(t[0], t[1]), t[2], t[3])
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_split_span, max_size=30))
def test_split_fractions_matches_the_segment_by_segment_reference(
    spans: list[tuple[float, float, float, bool]],
) -> None:
    """Lone spans take their time's share directly, clusters are swept: as the slow rule."""
    outside, fractions = split_fractions(spans, BASE, BASE + 1.0)
    want_outside, want = reference_fractions(spans, BASE, BASE + 1.0)
    assert outside == pytest.approx(want_outside, abs=1e-9)
    assert fractions == pytest.approx(want, abs=1e-9)
    assert math.fsum([outside, *fractions]) == pytest.approx(1.0, abs=1e-12)


def test_lone_spans_get_their_time_and_overlapping_ones_share_by_rate() -> None:
    spans = [
        (BASE + 0.1, BASE + 0.2, 5.0, True),  # alone: 10 % of the tick whatever its rate
        (BASE + 0.5, BASE + 0.7, 1.0, True),  # with the next over [0.6, 0.7): rates 1 : 3
        (BASE + 0.6, BASE + 0.9, 3.0, True),
        (BASE + 0.2, BASE + 0.3, 1.0, False),  # touches the first one only: alone
    ]
    outside, fractions = split_fractions(spans, BASE, BASE + 1.0)
    assert outside == pytest.approx(0.4, abs=1e-6)  # [0, 0.1), [0.3, 0.5), [0.9, 1)
    assert fractions == pytest.approx([0.1, 0.125, 0.275, 0.1], abs=1e-6)


def test_known_work_splits_by_work_rate_one_to_three() -> None:
    splitter = SpanSplitter(settle_seconds=0.0)
    splitter.add_span(Span("llm", "m", BASE, BASE + 1.0, gflops=10.0))
    splitter.add_span(Span("llm", "m", BASE, BASE + 1.0, gflops=30.0))
    splitter.add_tick(BASE, BASE + 1.0, {"llm": {"gpu": 8.0, "cpu": 4.0}})
    result = splitter.settle(BASE + 1.0)
    by_gflops = {r.gflops: r.energy_j for r in result.requests}
    assert by_gflops[10.0] == pytest.approx({"gpu": 2.0, "cpu": 1.0}, rel=1e-12)
    assert by_gflops[30.0] == pytest.approx({"gpu": 6.0, "cpu": 3.0}, rel=1e-12)
    assert result.outside_j["llm"] == pytest.approx({"gpu": 0.0, "cpu": 0.0}, abs=1e-12)


def test_unknown_work_splits_by_overlap_time_and_gaps_go_outside() -> None:
    splitter = SpanSplitter(settle_seconds=0.0)
    # Binary fractions: exact at unix-time magnitudes, where a double resolves ~0.24 us.
    splitter.add_span(Span("a", "m", BASE + 0.0, BASE + 0.25, route="/x"))
    splitter.add_span(Span("a", "m", BASE + 0.25, BASE + 0.625, route="/y"))
    splitter.add_tick(BASE, BASE + 1.0, {"a": {"cpu": 10.0}})
    result = splitter.settle(BASE + 5.0)
    by_route = {r.route: r.energy_j["cpu"] for r in result.requests}
    assert by_route == pytest.approx({"/x": 2.5, "/y": 3.75}, rel=1e-12)
    assert result.outside_j["a"]["cpu"] == pytest.approx(3.75, rel=1e-12)
    assert result.in_spans_j["a"]["cpu"] == pytest.approx(6.25, rel=1e-12)


def test_overlapping_unknown_spans_share_each_segment_equally() -> None:
    splitter = SpanSplitter(settle_seconds=0.0)
    splitter.add_span(Span("a", "long", BASE, BASE + 1.0))
    splitter.add_span(Span("a", "short", BASE + 0.5, BASE + 1.0))
    splitter.add_tick(BASE, BASE + 1.0, {"a": {"cpu": 3.0}})
    result = splitter.settle(BASE + 1.0)
    by_model = {r.model: r.energy_j["cpu"] for r in result.requests}
    # [0, .5): long alone gets 1.5; [.5, 1): 1.5 shared equally.
    assert by_model == pytest.approx({"long": 2.25, "short": 0.75}, rel=1e-9)


def test_one_unknown_span_makes_a_segment_split_equally() -> None:
    splitter = SpanSplitter(settle_seconds=0.0)
    splitter.add_span(Span("a", "known", BASE, BASE + 1.0, gflops=100.0))
    splitter.add_span(Span("a", "unknown", BASE, BASE + 1.0))
    splitter.add_tick(BASE, BASE + 1.0, {"a": {"cpu": 2.0}})
    result = splitter.settle(BASE + 1.0)
    assert [r.energy_j["cpu"] for r in result.requests] == pytest.approx([1.0, 1.0])


def test_span_over_several_ticks_waits_for_its_end_and_sums_its_shares() -> None:
    splitter = SpanSplitter(settle_seconds=1.0)
    splitter.add_span(Span("a", "m", BASE + 0.5, BASE + 3.5))
    for k in range(4):
        splitter.add_tick(BASE + k, BASE + k + 1, {"a": {"cpu": 1.0, "gpu": 2.0}})
    early = splitter.settle(BASE + 4.0)  # ticks 0..2 settled, the span still open
    assert early.requests == ()
    assert early.in_spans_j["a"]["cpu"] == pytest.approx(2.5)
    assert splitter.stats.pending_spans == 1
    final = splitter.settle(BASE + 5.0)
    (req,) = final.requests
    assert req.energy_j == pytest.approx({"cpu": 3.0, "gpu": 6.0})
    assert req.duration_s == pytest.approx(3.0)
    assert early.outside_j["a"]["cpu"] + final.outside_j["a"]["cpu"] == pytest.approx(1.0)


def test_ticks_with_gaps_and_a_span_across_the_gap() -> None:
    splitter = SpanSplitter(settle_seconds=0.0)
    splitter.add_span(Span("a", "m", BASE + 0.5, BASE + 3.5))
    splitter.add_tick(BASE, BASE + 1.0, {"a": {"cpu": 1.0}})
    splitter.add_tick(BASE + 3.0, BASE + 4.0, {"a": {"cpu": 1.0}})  # [1, 3) never measured
    result = splitter.settle(BASE + 10.0)
    (req,) = result.requests
    assert req.energy_j["cpu"] == pytest.approx(1.0)
    assert result.outside_j["a"]["cpu"] == pytest.approx(1.0)


def test_zero_length_span_gets_nothing_but_counts_as_request() -> None:
    splitter = SpanSplitter(settle_seconds=0.0)
    splitter.add_span(Span("a", "m", BASE + 0.5, BASE + 0.5, gflops=1.0))
    splitter.add_tick(BASE, BASE + 1.0, {"a": {"cpu": 5.0}})
    result = splitter.settle(BASE + 1.0)
    (req,) = result.requests
    assert req.energy_j == {}
    assert req.duration_s == 0.0
    assert result.outside_j["a"]["cpu"] == 5.0


def test_span_of_a_workload_without_tick_energy_gets_zero() -> None:
    splitter = SpanSplitter(settle_seconds=0.0)
    splitter.add_span(Span("ghost", "m", BASE, BASE + 1.0))
    splitter.add_tick(BASE, BASE + 1.0, {"a": {"cpu": 5.0}})
    result = splitter.settle(BASE + 1.0)
    (req,) = result.requests
    assert req.workload == "ghost"
    assert sum(req.energy_j.values()) == 0.0
    assert result.outside_j == {"a": {"cpu": 5.0}}
    assert "ghost" not in result.in_spans_j


# --- settle once ---------------------------------------------------------------------------


def test_span_overlapping_a_settled_tick_is_late_and_changes_nothing() -> None:
    splitter = SpanSplitter(settle_seconds=2.0)
    splitter.add_tick(BASE, BASE + 1.0, {"a": {"cpu": 1.0}})
    splitter.add_tick(BASE + 1.0, BASE + 2.0, {"a": {"cpu": 1.0}})
    first = splitter.settle(BASE + 3.0)  # settles [0, 1) only
    assert first.outside_j == {"a": {"cpu": 1.0}}
    assert splitter.settled_until == BASE + 1.0
    assert splitter.add_span(Span("a", "m", BASE + 0.9, BASE + 1.5)) == "late"
    assert splitter.add_span(Span("a", "m", BASE + 1.0, BASE + 1.5)) == "accepted"
    assert splitter.stats.late_spans == 1
    rest = splitter.flush()
    (req,) = rest.requests
    assert req.energy_j["cpu"] == pytest.approx(0.5)


def test_span_ending_before_the_oldest_retained_tick_is_late() -> None:
    splitter = SpanSplitter()
    splitter.add_tick(BASE + 10.0, BASE + 11.0, {"a": {"cpu": 1.0}})
    assert splitter.add_span(Span("a", "m", BASE, BASE + 5.0)) == "late"
    assert splitter.add_span(Span("a", "m", BASE, BASE + 10.5)) == "accepted"


def test_duplicate_span_ids_are_counted_once() -> None:
    splitter = SpanSplitter(settle_seconds=0.0)
    span = Span("a", "m", BASE, BASE + 1.0, trace_id="ab" * 16, span_id="cd" * 8)
    assert splitter.add_span(span) == "accepted"
    assert splitter.add_span(span) == "accepted"
    splitter.add_tick(BASE, BASE + 1.0, {"a": {"cpu": 1.0}})
    result = splitter.settle(BASE + 1.0)
    assert len(result.requests) == 1
    assert result.requests[0].energy_j["cpu"] == pytest.approx(1.0)
    assert splitter.stats.duplicate_spans == 1


# --- bounds ---------------------------------------------------------------------------------


def test_pending_cap_refuses_a_workloads_span_past_its_share_and_counts() -> None:
    splitter = SpanSplitter(settle_seconds=0.0, max_pending_spans=2)
    verdicts = [splitter.add_span(Span("a", f"m{k}", BASE, BASE + 1.0)) for k in range(3)]
    assert verdicts == ["accepted", "accepted", "refused"]
    assert splitter.stats.pending_spans == 2
    assert (splitter.stats.refused_spans, splitter.stats.dropped_spans) == (1, 0)
    splitter.add_tick(BASE, BASE + 1.0, {"a": {"cpu": 2.0}})
    result = splitter.settle(BASE + 1.0)
    assert sorted(r.model for r in result.requests) == ["m0", "m1"]  # accepted ones kept
    assert result.in_spans_j["a"]["cpu"] == pytest.approx(2.0)


def test_evicting_a_partly_settled_span_emits_it_so_requests_match_in_spans() -> None:
    splitter = SpanSplitter(settle_seconds=0.0, max_pending_spans=2)
    splitter.add_span(Span("a", "long", BASE, BASE + 2.0))
    splitter.add_span(Span("a", "long2", BASE, BASE + 2.0))
    splitter.add_tick(BASE, BASE + 1.0, {"a": {"cpu": 1.0}})
    first = splitter.settle(BASE + 1.0)
    # b holds none of its share (1 of 2): a's newest span makes room.
    assert splitter.add_span(Span("b", "next", BASE + 1.5, BASE + 2.0)) == "accepted"
    assert splitter.stats.truncated_spans == 1
    evicted = splitter.settle(BASE + 1.0).requests
    assert [(r.model, r.energy_j["cpu"]) for r in evicted] == [("long2", pytest.approx(0.5))]
    splitter.add_tick(BASE + 1.0, BASE + 2.0, {"a": {"cpu": 1.0}, "b": {"cpu": 1.0}})
    second = splitter.settle(BASE + 2.0)
    energies = {r.model: r.energy_j["cpu"] for r in second.requests}
    assert energies == pytest.approx({"long": 1.5, "next": 0.5})
    assert first.in_spans_j["a"]["cpu"] + second.in_spans_j["a"]["cpu"] == pytest.approx(2.0)


def test_a_junk_burst_naming_real_workloads_evicts_no_earlier_span() -> None:
    """The issue's example at 1/100 scale: pending cap 1,000; "api" and "chat" have 100
    legitimate spans pending each; one batch of 5,000 junk spans names "api"."""
    splitter = SpanSplitter(settle_seconds=0.0, max_pending_spans=1000)
    for k in range(100):
        for w in ("api", "chat"):
            assert splitter.add_span(Span(w, "legit", BASE + k / 100, BASE + 1.0)) == "accepted"
    junk = [splitter.add_span(Span("api", "junk", BASE, BASE + 1.0)) for _ in range(5000)]
    assert (junk.count("accepted"), junk.count("refused")) == (800, 4200)
    # chat still gets in up to its share (500 of 1,000): api's newest (junk) spans make room.
    more = [splitter.add_span(Span("chat", "legit", BASE, BASE + 1.0)) for _ in range(500)]
    assert more.count("accepted") == 400 and more.count("refused") == 100
    stats = splitter.stats
    assert (stats.pending_spans, stats.dropped_spans, stats.refused_spans) == (1000, 400, 4300)
    splitter.add_tick(BASE, BASE + 1.0, {"api": {"cpu": 1.0}, "chat": {"cpu": 1.0}})
    settled = splitter.settle(BASE + 1.0).requests
    kept = [(r.workload, r.model) for r in settled]
    assert kept.count(("api", "legit")) == 100  # every earlier span of both workloads
    assert kept.count(("chat", "legit")) == 500
    assert kept.count(("api", "junk")) == 400


def test_eviction_is_constant_time_and_dead_entries_stay_bounded() -> None:
    """Spans finished in place leave queue entries behind; they are compacted as the queue
    grows, and eviction pops the newest live entry (the old dict walk re-skipped every
    deleted entry on each eviction: ~65 us each at 100k)."""
    splitter = SpanSplitter(settle_seconds=0.0, max_pending_spans=20_000)
    splitter.add_span(Span("hog", "long", BASE, BASE + 100.0))
    for _ in range(5_000):
        splitter.add_span(Span("hog", "m", BASE + 0.5, BASE + 0.5))  # zero-length
    splitter.add_tick(BASE, BASE + 1.0, {"hog": {"cpu": 1.0}})
    assert len(splitter.settle(BASE + 1.0).requests) == 5_000  # finished in place
    for k in range(19_999):
        splitter.add_span(Span("hog", "m", BASE + 2.0, BASE + 3.0 + k / 1e4))
    assert splitter.stats.pending_spans == 20_000
    assert len(splitter._fifo["hog"]) <= 2 * 20_000 + 1024
    for _ in range(10_000):
        assert splitter.add_span(Span("small", "m", BASE + 2.0, BASE + 3.0)) == "accepted"
    assert splitter.add_span(Span("small", "m", BASE + 2.0, BASE + 3.0)) == "refused"
    assert splitter.stats.dropped_spans == 10_000
    hog_left = [r for r in splitter._fifo["hog"] if not r.done]
    assert hog_left[0].model == "long" and len(hog_left) == 10_000  # the newest went


def test_settled_spans_are_let_go_at_settle_not_at_the_next_arrival() -> None:
    # A workload's exporter sends every 5 s: its settled spans (and their energy) must not
    # wait for its next batch to be freed. Counted as live records in the collector's view.
    import gc

    from jouled.attribution import spans as spans_mod

    def live_records() -> int:
        if spans_mod.new_pending is not spans_mod._Pending:
            from jouled.attribution import _pending  # not tracked by gc: it counts its own

            return _pending.live()
        return sum(1 for o in gc.get_objects() if type(o) is spans_mod._Pending)

    before = live_records()
    splitter = SpanSplitter(settle_seconds=1.0)
    for i in range(100):
        start = BASE + i / 100
        splitter.add_span(Span("a", "m", start, start + 0.005, 1.0, "", f"{i:032x}", f"{i:016x}"))
    later = BASE + 5.0  # still pending: the workload's queue stays
    splitter.add_span(Span("a", "m", later, later + 0.005, 1.0, "", "f" * 32, "f" * 16))
    splitter.add_tick(BASE, BASE + 1.0, {"a": {"cpu": 10.0}})
    result = splitter.settle(BASE + 2.0)
    assert len(result.requests) == 100
    assert splitter.pending == 1
    assert live_records() == before + 1
