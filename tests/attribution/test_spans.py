"""The span splitter: conservation, settle-once, the split rule, bounds."""

from __future__ import annotations

import itertools
import math
import random

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


def test_pending_cap_drops_oldest_and_counts() -> None:
    splitter = SpanSplitter(settle_seconds=0.0, max_pending_spans=2)
    for k in range(3):
        splitter.add_span(Span("a", f"m{k}", BASE, BASE + 1.0))
    assert splitter.stats.pending_spans == 2
    assert splitter.stats.dropped_spans == 1
    splitter.add_tick(BASE, BASE + 1.0, {"a": {"cpu": 2.0}})
    result = splitter.settle(BASE + 1.0)
    assert sorted(r.model for r in result.requests) == ["m1", "m2"]
    assert result.in_spans_j["a"]["cpu"] == pytest.approx(2.0)


def test_evicting_a_partly_settled_span_emits_it_so_requests_match_in_spans() -> None:
    splitter = SpanSplitter(settle_seconds=0.0, max_pending_spans=1)
    splitter.add_span(Span("a", "long", BASE, BASE + 2.0))
    splitter.add_tick(BASE, BASE + 1.0, {"a": {"cpu": 1.0}})
    first = splitter.settle(BASE + 1.0)
    splitter.add_span(Span("a", "next", BASE + 1.5, BASE + 2.0))  # evicts "long"
    assert splitter.stats.truncated_spans == 1
    splitter.add_tick(BASE + 1.0, BASE + 2.0, {"a": {"cpu": 1.0}})
    second = splitter.settle(BASE + 2.0)
    energies = {r.model: r.energy_j["cpu"] for r in second.requests}
    assert energies == pytest.approx({"long": 1.0, "next": 0.5})
    assert first.in_spans_j["a"]["cpu"] + second.in_spans_j["a"]["cpu"] == pytest.approx(1.5)


def test_open_tick_cap_settles_oldest_early_and_conserves() -> None:
    splitter = SpanSplitter(settle_seconds=100.0, max_open_ticks=2)
    splitter.add_span(Span("a", "m", BASE, BASE + 0.5))
    for k in range(3):
        splitter.add_tick(BASE + k, BASE + k + 1, {"a": {"cpu": 1.0}})
    assert splitter.stats.forced_ticks == 1
    assert splitter.stats.open_ticks == 2
    forced = splitter.settle(BASE)  # nothing due, but the forced tick's result comes out
    assert forced.in_spans_j["a"]["cpu"] == pytest.approx(0.5)
    assert forced.outside_j["a"]["cpu"] == pytest.approx(0.5)
    assert len(forced.requests) == 1


def test_span_beyond_the_newest_tick_is_settled_after_the_wait_bound() -> None:
    splitter = SpanSplitter(settle_seconds=1.0, max_span_wait_s=10.0)
    splitter.add_span(Span("a", "m", BASE + 0.5, BASE + 5.0))
    splitter.add_tick(BASE, BASE + 1.0, {"a": {"cpu": 1.0}})  # then the tick loop stalls
    assert splitter.settle(BASE + 15.0).requests == ()
    (req,) = splitter.settle(BASE + 16.0).requests
    assert req.energy_j["cpu"] == pytest.approx(0.5)
    assert splitter.stats.truncated_spans == 1


def test_wall_clock_stepping_back_keeps_ticks_disjoint_and_energy_whole() -> None:
    splitter = SpanSplitter(settle_seconds=0.0)
    splitter.add_span(Span("a", "m", BASE, BASE + 2.0))
    splitter.add_tick(BASE, BASE + 1.0, {"a": {"cpu": 1.0}})
    splitter.add_tick(BASE + 0.5, BASE + 0.9, {"a": {"cpu": 7.0}})  # NTP stepped back
    splitter.add_tick(BASE + 1.0, BASE + 2.0, {"a": {"cpu": 1.0}})
    assert splitter.stats.clamped_ticks == 1
    result = splitter.flush()
    # The stepped-back tick is cut to zero length: no span time, so its 7 J go outside.
    assert result.outside_j["a"]["cpu"] == pytest.approx(7.0)
    (req,) = result.requests
    assert req.energy_j["cpu"] == pytest.approx(2.0)
    assert result.in_spans_j["a"]["cpu"] == pytest.approx(2.0)


@pytest.mark.parametrize(
    "bad",
    [
        Span("a", "m", BASE + 1.0, BASE),
        Span("a", "m", math.nan, BASE),
        Span("a", "m", BASE, BASE + 1.0, gflops=-1.0),
        Span("a", "m", BASE, BASE + 1.0, gflops=math.inf),
    ],
)
def test_invalid_spans_are_refused_loudly(bad: Span) -> None:
    with pytest.raises(ValueError):
        SpanSplitter().add_span(bad)


def test_invalid_tick_energy_is_refused_loudly() -> None:
    with pytest.raises(ValueError, match="finite"):
        SpanSplitter().add_tick(BASE, BASE + 1.0, {"a": {"cpu": -1.0}})


def test_thousand_open_spans_split_by_work_and_conserve() -> None:
    rng = random.Random(7)
    splitter = SpanSplitter(settle_seconds=0.0)
    gflops = [rng.uniform(1.0, 1000.0) for _ in range(1000)]
    for k, g in enumerate(gflops):
        splitter.add_span(Span("llm", str(k), BASE, BASE + 10.0, gflops=g))
    for k in range(10):
        splitter.add_tick(BASE + k, BASE + k + 1, {"llm": {"gpu": 300.0, "cpu": 50.0}})
    result = splitter.settle(BASE + 10.0)
    assert len(result.requests) == 1000
    total_g = math.fsum(gflops)
    for req in result.requests:
        # Same duration, always all open together: shares are exactly work proportions.
        assert req.energy_j["gpu"] == pytest.approx(3000.0 * req.gflops / total_g, rel=1e-9)  # type: ignore[operator]
    assert math.fsum(r.energy_j["gpu"] for r in result.requests) == pytest.approx(3000.0, rel=1e-12)


def test_thousand_staggered_spans_match_the_slow_reference() -> None:
    rng = random.Random(11)
    spans = []
    for _ in range(1000):
        s = BASE + rng.uniform(-0.5, 1.0)
        spans.append((s, s + rng.uniform(0.0, 0.7), rng.uniform(0, 50), rng.random() < 0.9))
    outside, fracs = split_fractions(spans, BASE, BASE + 1.0)
    ref_out, ref = reference_fractions(spans, BASE, BASE + 1.0)
    assert outside == pytest.approx(ref_out, abs=1e-12)
    assert fracs == pytest.approx(ref, rel=1e-6, abs=1e-12)
    assert math.fsum([outside, *fracs]) == pytest.approx(1.0, rel=1e-12)


# --- properties -------------------------------------------------------------------------------


def rate(gflops: float | None, duration: float) -> float:
    """The splitter's documented clamp: rates live in [1e-200, 1e200], below that 0."""
    if gflops is None or duration <= 0:
        return 0.0
    r = gflops / duration
    return 0.0 if r < 1e-200 else min(r, 1e200)


span_tuples = st.tuples(
    st.floats(-0.5, 2.0),  # start offset in the tick
    st.floats(0.0, 2.0),  # duration
    st.one_of(st.none(), st.floats(0.0, 1e6), st.sampled_from([0.0, 1e-300, 1e-150, 1e150, 1e300])),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(span_tuples, max_size=30))
def test_split_fractions_match_the_reference_and_sum_to_one(
    raw: list[tuple[float, float, float | None]],
) -> None:
    spans = [(BASE + s, BASE + s + d, rate(g, d), g is not None) for s, d, g in raw]
    outside, fracs = split_fractions(spans, BASE, BASE + 1.0)
    assert outside >= 0.0
    assert all(f >= 0.0 for f in fracs)
    assert math.fsum([outside, *fracs]) == pytest.approx(1.0, rel=1e-12)
    ref_out, ref = reference_fractions(spans, BASE, BASE + 1.0)
    assert outside == pytest.approx(ref_out, abs=1e-9)
    assert fracs == pytest.approx(ref, rel=1e-6, abs=1e-9)


tick_energy = st.dictionaries(
    st.sampled_from(WORKLOADS),
    st.dictionaries(st.sampled_from(COMPONENTS), st.floats(0.0, 1e4), min_size=1),
    max_size=3,
)
tick_shape = st.tuples(st.floats(0.05, 2.0), st.sampled_from([0.0, 0.0, 0.0, 0.3]), tick_energy)
span_shape = st.tuples(
    st.sampled_from(WORKLOADS),
    st.floats(-1.0, 12.0),
    st.sampled_from([0.0, 0.01, 0.3, 1.0, 4.0]),
    st.one_of(st.none(), st.floats(0.0, 1e4)),
)


Ticks = list[tuple[float, float, dict[str, dict[str, float]]]]
Ops = list[tuple[str, object]]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Ticks, Ops]:
    ticks: Ticks = []
    t = BASE
    for length, gap, energy in draw(st.lists(tick_shape, min_size=1, max_size=12)):
        t += gap
        ticks.append((t, t + length, energy))
        t += length
    ops: Ops = []
    for w0, w1, energy in ticks:
        for wl, start, duration, g in draw(st.lists(span_shape, max_size=5)):
            ops.append(("span", Span(wl, "m", BASE + start, BASE + start + duration, gflops=g)))
        ops.append(("tick", (w0, w1, energy)))
        if draw(st.booleans()):
            ops.append(("settle", w1 + draw(st.floats(0.0, 8.0))))
    return ticks, ops


def run(ops: Ops, extra_late: int = 0) -> tuple[Totals, SpanSplitter, int]:
    splitter = SpanSplitter(settle_seconds=2.0)
    totals = Totals()
    late_added = 0
    for kind, arg in ops:
        if kind == "span":
            assert isinstance(arg, Span)
            splitter.add_span(arg)
        elif kind == "tick":
            assert isinstance(arg, tuple)
            splitter.add_tick(*arg)
        else:
            assert isinstance(arg, float)
            totals.add(splitter.settle(arg))
            for k in range(extra_late):
                # Arrives after the ticks it overlaps have settled: must change nothing.
                until = splitter.settled_until
                if math.isfinite(until):
                    late = Span("classifier", "late", until - 0.5 - k, until + 1.0, gflops=1e9)
                    assert splitter.add_span(late) == "late"
                    late_added += 1
    totals.add(splitter.flush())
    return totals, splitter, late_added


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_conservation_no_negative_and_every_span_settled_once(
    scenario: tuple[Ticks, Ops],
) -> None:
    ticks, ops = scenario
    totals, splitter, _ = run(ops)
    expected: dict[tuple[str, str], float] = {}
    for _, _, energy in ticks:
        for wl, per in energy.items():
            for comp, joules in per.items():
                expected[wl, comp] = expected.get((wl, comp), 0.0) + joules
    keys = set(expected) | set(totals.in_spans) | set(totals.outside)
    for key in keys:
        got = totals.in_spans.get(key, 0.0) + totals.outside.get(key, 0.0)
        assert close(got, expected.get(key, 0.0)), (key, got, expected.get(key))
        # Every joule given to spans comes back in exactly one settled request.
        assert close(totals.requests.get(key, 0.0), totals.in_spans.get(key, 0.0), rel=1e-9)
    stats = splitter.stats
    n_spans = sum(1 for kind, _ in ops if kind == "span")
    assert totals.n_requests + stats.late_spans == n_spans
    assert stats.pending_spans == 0 and stats.open_ticks == 0


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_late_spans_never_change_settled_energy(
    scenario: tuple[Ticks, Ops],
) -> None:
    _, ops = scenario
    plain, _, _ = run(ops)
    with_late, splitter, added = run(ops, extra_late=2)
    assert splitter.stats.late_spans - added == run(ops)[1].stats.late_spans
    assert with_late.results == plain.results


def test_cpu_budget_gives_a_short_request_the_cpu_it_used() -> None:
    from jouled.attribution.spans import Span as S
    from jouled.attribution.spans import SpanSplitter as Splitter

    sp = Splitter(settle_seconds=0.0)
    sp.add_span(S("api", "m", 100.0, 100.006, gflops=1.0))
    # 10 J in a 1 s tick; the workload ran 6 ms of CPU: all of it fits in the 6 ms span.
    sp.add_tick(100.0, 101.0, {"api": {"cpu": 10.0}}, busy_s={"api": 0.006})
    res = sp.settle(200.0)
    assert res.requests[0].energy_j["cpu"] == pytest.approx(10.0)
    # 60 ms of CPU: the span can hold 6 ms of it, so 10 %; the rest ran outside.
    sp2 = Splitter(settle_seconds=0.0)
    sp2.add_span(S("api", "m", 100.0, 100.006, gflops=1.0))
    sp2.add_tick(100.0, 101.0, {"api": {"cpu": 10.0}}, busy_s={"api": 0.06})
    res2 = sp2.settle(200.0)
    assert res2.requests[0].energy_j["cpu"] == pytest.approx(1.0)
    assert res2.outside_j["api"]["cpu"] == pytest.approx(9.0)
    # Never less than the time share: a span covering the tick keeps it all with 2 busy cores.
    sp3 = Splitter(settle_seconds=0.0)
    sp3.add_span(S("api", "m", 100.0, 101.0))
    sp3.add_tick(100.0, 101.0, {"api": {"cpu": 10.0}}, busy_s={"api": 2.0})
    assert sp3.settle(200.0).requests[0].energy_j["cpu"] == pytest.approx(10.0)


@settings(max_examples=200, deadline=None)
@given(
    spans=st.lists(
        st.tuples(st.floats(0, 3), st.floats(0, 2), st.none() | st.floats(0, 100)),
        max_size=12,
    ),
    ticks=st.lists(
        st.tuples(st.floats(0, 500), st.none() | st.floats(0, 4)), min_size=1, max_size=4
    ),
)
def test_cpu_budget_conserves_energy_and_never_cuts_the_time_share(spans, ticks) -> None:
    from jouled.attribution.spans import Span as S
    from jouled.attribution.spans import SpanSplitter as Splitter

    timed = Splitter(settle_seconds=0.0)
    budgeted = Splitter(settle_seconds=0.0)
    for start, length, gflops in spans:
        for sp in (timed, budgeted):
            sp.add_span(S("w", "m", 1000.0 + start, 1000.0 + start + length, gflops=gflops))
    total = 0.0
    for i, (joules, busy) in enumerate(ticks):
        bounds = (1000.0 + i, 1001.0 + i)
        timed.add_tick(*bounds, {"w": {"cpu": joules}})
        budgeted.add_tick(*bounds, {"w": {"cpu": joules}}, busy_s={"w": busy} if busy else None)
        total += joules
    a, b = timed.flush(), budgeted.flush()
    in_a = a.in_spans_j.get("w", {}).get("cpu", 0.0)
    in_b = b.in_spans_j.get("w", {}).get("cpu", 0.0)
    out_b = b.outside_j.get("w", {}).get("cpu", 0.0)
    assert in_b + out_b == pytest.approx(total, rel=1e-9, abs=1e-9)
    assert out_b >= -1e-9 and in_b >= -1e-9
    assert in_b >= in_a - 1e-9 * max(1.0, total)  # the budget only ever adds to spans
    assert sum(sum(r.energy_j.values()) for r in b.requests) == pytest.approx(
        in_b, rel=1e-9, abs=1e-9
    )
