"""One request counted once: Triton's three nested SERVER spans, in any order and batch."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jouled.attribution.requests import RequestJoiner
from jouled.attribution.spans import Span, SpanSplitter, id_key

T0 = 1_700_000_000.0
TRACE = "ab" * 16

# Each test runs with the compiled pending-span record and with the Python one (conftest.py).
pytestmark = pytest.mark.usefixtures("pending_record")


def triton(i: int, model: str = "simple") -> list[Span]:
    """One inference as Triton's src/tracer.cc builds it: InferRequest (root) -> a span named
    after the model with triton.model_name -> compute; all SERVER; nested in time."""
    trace = f"{i:032x}"
    base = T0 + i
    root = Span("triton", "unknown", base, base + 0.8, trace_id=trace, span_id=f"{i:08x}0001")
    model_span = Span(
        "triton",
        model,
        base + 0.1,
        base + 0.7,
        trace_id=trace,
        span_id=f"{i:08x}0002",
        parent_id=root.span_id,
    )
    compute = Span(
        "triton",
        "unknown",
        base + 0.2,
        base + 0.6,
        trace_id=trace,
        span_id=f"{i:08x}0003",
        parent_id=model_span.span_id,
    )
    return [root, model_span, compute]


def settle_all(splitter: SpanSplitter, seconds: int = 10) -> list[tuple[str, float, float]]:
    for k in range(seconds):
        splitter.add_tick(T0 + k, T0 + k + 1, {"triton": {"cpu": 10.0}})
    result = splitter.flush()
    return [(r.model, sum(r.energy_j.values()), r.duration_s) for r in result.requests]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_three_span_chain_is_one_request_in_any_order(order: tuple[int, ...]) -> None:
    splitter = SpanSplitter(settle_seconds=5)
    joiner = RequestJoiner(splitter, memory_s=60)
    verdicts = []
    for i in range(4):  # four inferences, each span exported on its own
        chain = triton(i)
        verdicts += [joiner.add(chain[k]) for k in order]
    # Compute before InferRequest before the model span: two look unrelated until the model
    # span links them, and the inner one is taken back.
    assert "late" not in verdicts
    requests = settle_all(splitter)
    assert len(requests) == 4
    assert {model for model, _, _ in requests} == {"simple"}
    # Each request has the outer span's time (InferRequest, 0.8 s) wherever it came first
    # or could still be widened (nothing settles before the flush here).
    assert [round(d, 6) for _, _, d in requests] == [0.8] * 4
    assert sum(j for _, j, _ in requests) == pytest.approx(4 * 0.8 * 10.0)
    assert joiner.nested == 8


def test_outer_span_after_energy_was_split_keeps_the_inner_time_and_takes_the_model() -> None:
    splitter = SpanSplitter(settle_seconds=0)
    joiner = RequestJoiner(splitter, memory_s=60)
    root, model_span, compute = triton(0)
    assert joiner.add(compute) == "accepted"
    splitter.add_tick(T0, T0 + 0.5, {"triton": {"cpu": 5.0}})
    splitter.settle(T0 + 0.5)  # compute holds energy now: it cannot be swapped for its parent
    assert joiner.add(model_span) == "nested"
    assert joiner.add(root) == "nested"
    splitter.add_tick(T0 + 0.5, T0 + 1.0, {"triton": {"cpu": 5.0}})
    (request,) = splitter.flush().requests
    assert request.model == "simple"
    assert request.duration_s == pytest.approx(0.4)


def test_child_after_its_request_settled_is_nested_not_late_and_unrelated_spans_count() -> None:
    splitter = SpanSplitter(settle_seconds=0)
    joiner = RequestJoiner(splitter, memory_s=60)
    root, model_span, compute = triton(0)
    other = Span("triton", "m", T0 + 0.1, T0 + 0.2, trace_id=root.trace_id, span_id="ff" * 8)
    assert joiner.add(root) == "accepted"
    splitter.add_tick(T0, T0 + 2, {"triton": {"cpu": 1.0}})
    assert len(splitter.settle(T0 + 2).requests) == 1
    assert joiner.add(compute) != "nested"  # its parent (the model span) is not known yet
    assert joiner.add(model_span) == "nested"
    # A second request of the same trace that nests in nothing counts on its own (late here).
    assert joiner.add(other) == "late"
    joiner.expire(T0 + 1000)
    assert joiner.tracked == 0


def test_resent_copy_and_spans_without_ids() -> None:
    splitter = SpanSplitter(settle_seconds=5)
    joiner = RequestJoiner(splitter, memory_s=60, fallback_models={"triton": "simple"})
    root, _, _ = triton(0, model="simple")
    assert joiner.add(root) == "accepted"
    assert joiner.add(root) == "nested"  # the exporter resent the batch
    plain = Span("triton", "x", T0, T0 + 1)
    assert joiner.add(plain) == "accepted" and joiner.add(plain) == "accepted"
    # "simple" is the workload's configured model: a default, not a name, so a named child wins.
    named = Span(
        "triton", "resnet", T0 + 0.1, T0 + 0.2, trace_id=root.trace_id, span_id="77" * 8,
        parent_id=root.span_id,
    )  # fmt: skip
    assert joiner.add(named) == "nested"
    models = sorted(r.model for r in splitter.flush().requests)
    assert models == ["resnet", "x", "x"]


def test_memory_is_bounded() -> None:
    splitter = SpanSplitter(settle_seconds=5)
    joiner = RequestJoiner(splitter, memory_s=60, max_requests=10)
    for i in range(50):
        joiner.add(Span("w", "m", T0 + i, T0 + i + 0.5, trace_id=f"{i:032x}", span_id="01" * 8))
    assert joiner.tracked == 10


def test_a_request_of_one_span_is_remembered_without_the_span() -> None:
    """The joiner keeps the splitter's record of a lone span (with its ids' keys), not the
    span (its floats and ints, ~250 bytes more for the 15 s it is remembered) nor its ids'
    hex strings (~150 bytes more), and a second span of its trace still finds it with the
    first span's values."""
    import sys

    splitter = SpanSplitter(settle_seconds=5)
    joiner = RequestJoiner(splitter, memory_s=60)
    root, model_span, _ = triton(0, model="resnet")
    root = Span(root.workload, "unknown", root.start, root.end, 2.5, "/infer", root.trace_id,
                root.span_id, input_tokens=7)  # fmt: skip
    held = [sys.getrefcount(x) for x in (root, root.trace_id, root.span_id)]
    assert joiner.add(root) == "accepted"
    # Nothing of the joiner or the splitter holds the span or its ids.
    assert [sys.getrefcount(x) for x in (root, root.trace_id, root.span_id)] == held
    rec = splitter.admit(root)  # a resend: the pending record it duplicates
    assert not isinstance(rec, str)
    assert (rec.start, rec.end, rec.gflops, rec.input_tokens) == (root.start, root.end, 2.5, 7)
    assert joiner.add(model_span) == "nested"  # the child finds the remembered request
    (request,) = splitter.flush().requests
    assert (request.model, request.gflops, request.input_tokens) == ("resnet", 2.5, 7)
    assert request.duration_s == pytest.approx(0.8)


def test_a_settled_record_the_joiner_still_holds_keeps_no_energy() -> None:
    """With a settle delay shorter than the joiner's memory the joiner outlives the record's
    settling: the record hands its energy to the settled request and keeps none."""
    splitter = SpanSplitter(settle_seconds=0)
    joiner = RequestJoiner(splitter, memory_s=15)
    root, _, _ = triton(0)
    assert joiner.add(root) == "accepted"
    splitter.add_tick(T0, T0 + 1, {"triton": {"cpu": 10.0}})
    (settled,) = splitter.settle(T0 + 1).requests
    assert settled.energy_j == {"cpu": pytest.approx(10.0 * 0.8)}
    rec = joiner._by_trace[id_key(root.trace_id)]  # the request of one span: its record
    assert rec.done and rec.energy_j is None  # type: ignore[union-attr]


def test_a_resend_after_the_joiner_forgot_its_request_keeps_what_a_child_gave_it() -> None:
    """A resend (an OTLP retry) of a request's first span after the joiner forgot it (15 s
    after it ended) while its record still waits to settle (30 s) is remembered by that
    record, with the model, work and tokens a named child already gave it: a later child
    names a model only where none is named yet and brings work and tokens only where none
    are known, as for a request the joiner never forgot."""
    splitter = SpanSplitter(settle_seconds=30)
    joiner = RequestJoiner(splitter, memory_s=15.0)
    trace = "7" * 32
    first = Span("w", "unknown", T0, T0 + 1, None, "/infer", trace, "a" * 16)
    child = Span("w", "llama", T0 + 0.2, T0 + 0.8, 3.0, "", trace, "c" * 16, "a" * 16, 10, 20)
    later = Span("w", "other", T0 + 0.3, T0 + 0.7, 9.0, "", trace, "d" * 16, "a" * 16, 1, 2)
    assert [joiner.add(first), joiner.add(child)] == ["accepted", "nested"]
    joiner.expire(T0 + 17)
    assert joiner.tracked == 0
    assert [joiner.add(first), joiner.add(later)] == ["accepted", "nested"]
    got = [(r.model, r.gflops, r.input_tokens, r.output_tokens) for r in splitter.flush().requests]
    assert got == [("llama", 3.0, 10, 20)]
    assert splitter.stats.duplicate_spans == 1


def test_tokens_and_work_of_an_inner_span_stay_with_the_widened_request() -> None:
    splitter = SpanSplitter(settle_seconds=5)
    joiner = RequestJoiner(splitter, memory_s=60)
    root, model_span, _ = triton(0)
    inner = Span(
        "triton", "m", model_span.start, model_span.end, gflops=12.0, trace_id=root.trace_id,
        span_id=model_span.span_id, parent_id=root.span_id, input_tokens=30, output_tokens=5,
    )  # fmt: skip
    assert joiner.add(inner) == "accepted"
    assert joiner.add(root) == "nested"  # widened: the root's time, the inner span's work
    (request,) = splitter.flush().requests
    assert request.duration_s == pytest.approx(0.8)
    assert (request.model, request.gflops) == ("m", 12.0)
    assert (request.input_tokens, request.output_tokens) == (30, 5)


def _span(span_id: str, parent: str = "", start: float = T0, end: float = T0 + 1.0) -> Span:
    return Span("w", "m", start, end, trace_id=TRACE, span_id=span_id, parent_id=parent)


def _verdicts(joiner: RequestJoiner, spans: list[Span]) -> dict[str, int]:
    out: dict[str, int] = {}
    for span in spans:
        verdict = joiner.add(span)
        out[verdict] = out.get(verdict, 0) + 1
    return out


@pytest.mark.timeout(30)  # the scan over the trace's requests took minutes (O(n^2))
def test_one_trace_of_many_requests_is_linear_and_their_parent_makes_them_one() -> None:
    """20,000 SERVER spans of one trace, then their common parent: each found its request by
    scanning every request of the trace (8,000 took 9.5 s); the parent unites them into one
    request, whatever order of widths (the set of ids moved at each step: O(n^2))."""
    n = 20_000
    for widths in ("equal", "growing"):
        splitter = SpanSplitter(max_pending_spans=50_000)
        joiner = RequestJoiner(splitter, memory_s=15.0)
        step = 1e-6 if widths == "growing" else 0.0
        kids = [_span(f"k{i}", "p", T0 - i * step, T0 + 1.0 + i * step) for i in range(n)]
        assert _verdicts(joiner, kids) == {"accepted": n}
        assert splitter.pending == n
        assert _verdicts(joiner, [_span("p", start=T0 - 1.0, end=T0 + 2.0)]) == {"nested": 1}
        assert splitter.pending == 1 and joiner.tracked == 1
        assert joiner.nested == n  # the parent joined, n - 1 requests retracted into it


@pytest.mark.parametrize(
    "shape",
    [
        [("a", "a"), ("a", "a")],  # its own parent, sent twice
        [("a", "b"), ("b", "a")],  # a two-cycle
        [("a", "b"), ("b", "c"), ("c", "a")],  # a three-cycle
        [("a", ""), ("a", "x"), ("a", "y")],  # one span id, different content
    ],
)
def test_hostile_parent_links_count_one_request(shape: list[tuple[str, str]]) -> None:
    splitter = SpanSplitter()
    joiner = RequestJoiner(splitter, memory_s=15.0)
    spans = [_span(span_id, parent) for span_id, parent in shape]
    assert _verdicts(joiner, spans) == {"accepted": 1, "nested": len(shape) - 1}
    assert splitter.pending == 1 and joiner.tracked == 1


def test_orphans_and_expiry_leave_no_trace_index_behind() -> None:
    """Spans whose parent never arrives stay requests of their own; once forgotten, the
    trace's index is gone (memory bounded by max_requests, not by the trace)."""
    splitter = SpanSplitter()
    joiner = RequestJoiner(splitter, memory_s=15.0, max_requests=100)
    spans = [_span(f"s{i}", f"never{i}") for i in range(300)]
    assert _verdicts(joiner, spans) == {"accepted": 300}
    assert joiner.tracked == 100
    joiner.expire(T0 + 100.0)
    assert joiner.tracked == 0 and not joiner._by_trace


_op = st.tuples(
    st.sampled_from(["w", "v"]),
    st.floats(0, 40),  # start, s after T0
    st.floats(0, 3),  # duration
    st.sampled_from(["t1", "t2", "t3"]),
    st.sampled_from(["a", "b", "c", "d"]),  # span id
    st.sampled_from(["", "a", "b", "x"]),  # parent id
    st.booleans(),  # then expire what ended 15 s before the span's start + 10 s
)


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(_op, max_size=30), max_requests=st.integers(1, 6))
def test_what_is_remembered_is_counted_and_all_of_it_is_forgotten(
    ops: list[tuple[str, float, float, str, str, str, bool]], max_requests: int
) -> None:
    """Requests of one span are remembered by their record and forgotten by their trace's
    key in the second they are due; a slot left behind when a second span made the request
    a ``_Request`` (or a request the cap forgot first) must never forget another request
    of the trace early or twice: ``tracked`` stays within the cap, never negative, and
    expiring everything leaves nothing behind."""
    splitter = SpanSplitter(settle_seconds=60, max_pending_spans=1_000)
    joiner = RequestJoiner(splitter, memory_s=15.0, max_requests=max_requests)
    first: dict[tuple[str, str], tuple[float, float, str]] = {}
    for workload, start0, duration0, trace, span_id, parent0, expire in ops:
        # A resend carries its first copy's times and parent.
        start, duration, parent = first.setdefault((trace, span_id), (start0, duration0, parent0))
        span = Span(workload, "m", T0 + start, T0 + start + duration, None, "", trace, span_id,
                    parent)  # fmt: skip
        assert joiner.add(span) in ("accepted", "nested")
        assert 0 <= joiner.tracked <= max_requests
        if expire:
            joiner.expire(T0 + start + 10.0)
            assert 0 <= joiner.tracked <= max_requests
    joiner.expire(math.inf)
    assert joiner.tracked == 0 and not joiner._by_trace and not joiner._expiry


def test_a_slot_left_behind_never_forgets_a_later_request_of_its_trace_early() -> None:
    """B, remembered as its record, becomes a ``_Request`` when A of its trace arrives,
    leaving its record's forget slot behind (at 26 s); C links both and B is united into A.
    Once A is forgotten (25 s), Z of the same trace is a request of one span again, due at
    46 s: B's old slot, due at 26 s, must not forget it."""
    splitter = SpanSplitter(settle_seconds=60)
    joiner = RequestJoiner(splitter, memory_s=15.0)
    b = _span("b", "c", start=T0 + 9.0, end=T0 + 10.5)
    a = _span("a", start=T0, end=T0 + 10.0)
    c = _span("c", "a", start=T0 + 1.0, end=T0 + 2.0)
    assert _verdicts(joiner, [b, a, c]) == {"accepted": 2, "nested": 1}
    assert joiner.tracked == 1  # B was united into A
    joiner.expire(T0 + 25.5)
    assert joiner.tracked == 0
    assert joiner.add(_span("z", start=T0 + 30.0, end=T0 + 31.0)) == "accepted"
    joiner.expire(T0 + 26.5)  # B's slot is due
    assert joiner.tracked == 1
    assert joiner.add(_span("y", "z", start=T0 + 30.2, end=T0 + 30.8)) == "nested"
