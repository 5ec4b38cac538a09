"""``RequestJoiner.add_all``'s compiled common case (``_pending.add_all``) against ``add``: the
same verdicts, span by span, and the same joiner and splitter afterwards, through batches of
new requests, nested spans, resends, late and invalid spans, caps small enough to refuse,
evict and forget, ticks, settles and expiry."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from jouled.attribution import requests as requests_mod
from jouled.attribution import spans as spans_mod
from jouled.attribution.requests import RequestJoiner, _Request, _Trace
from jouled.attribution.spans import Span, SpanSplitter, id_key

ADD_ALL: Any = requests_mod._c_add_all
pytestmark = pytest.mark.skipif(ADD_ALL is None, reason="jouled.attribution._pending not built")

T0 = 1.7e9
TRACES = [f"t{i}" for i in range(400)]

_span = st.tuples(
    st.sampled_from(["a", "b"]),  # workload
    st.sampled_from([None, 0, 1, 2, 3, *range(4, 400)]),  # trace (4 shared often); None: no ids
    st.integers(0, 6),  # span id
    st.one_of(st.none(), st.integers(0, 6)),  # parent id
    st.floats(-1.0, 6.0, allow_nan=False),  # start after T0 (the first tick's start)
    st.sampled_from([0.0, 0.25, 1.0, 2.5]),  # length
    st.sampled_from([None, 1.0, 40.0] * 4 + [-1.0, math.nan]),  # gflops (-1 and NaN invalid)
    st.sampled_from([None, 7] * 5 + [2**63]),  # input tokens (2^63: too big for the record)
    st.sampled_from(["m", "unknown"]),  # model
)
_op = st.one_of(
    st.tuples(st.just("batch"), st.lists(_span, max_size=20)),
    st.tuples(st.just("tick"), st.floats(0.1, 3.0, allow_nan=False)),
    st.tuples(st.just("settle"), st.floats(0.0, 6.0, allow_nan=False)),
    st.tuples(st.just("expire"), st.floats(0.0, 12.0, allow_nan=False)),
)


def _span_of(spec: tuple[Any, ...]) -> Span:
    workload, trace, sid, parent, start, length, gflops, tokens, model = spec
    ids = {}
    if trace is not None:
        ids = {"trace_id": TRACES[trace], "span_id": f"s{sid}"}
        if parent is not None:
            ids["parent_id"] = f"s{parent}"
    s = T0 + start
    return Span(workload, model, s, s + length, gflops, input_tokens=tokens, **ids)


def _rec(rec: Any) -> tuple[Any, ...]:
    return (
        rec.workload, rec.model, rec.start, rec.end, rec.gflops, rec.input_tokens,
        rec.output_tokens, rec.done, rec.dedup, rec.span_key, rec.parent_key, rec.energy_j,
    )  # fmt: skip


def _req(req: _Request) -> tuple[Any, ...]:
    return (
        req.workload, req.trace_key, req.span_key, req.start, req.end, req.model, req.named,
        req.gflops, req.tokens, sorted(req.ids), sorted(req.parents), req.alive, req.seq,
    )  # fmt: skip


def _held(got: Any) -> Any:
    if got is None:
        return None
    if isinstance(got, _Request):
        return ("request", _req(got))
    if isinstance(got, _Trace):
        return ("trace", got.size, sorted(got.by_span), sorted(got.by_parent))
    return ("record", _rec(got))


def _state(joiner: RequestJoiner, splitter: SpanSplitter) -> tuple[Any, ...]:
    """Everything both hold, by value (records are different objects on each side)."""
    return (
        joiner.tracked,
        joiner.nested,
        sorted(joiner._due),
        {
            due: (list(b.lone), [_req(r) for r in b.requests])
            for due, b in sorted(joiner._expiry.items())
        },
        [_held(joiner._by_trace.get(id_key(t))) for t in TRACES],
        splitter.stats,
        splitter.pending,
        dict(splitter._count),
        {w: [_rec(r) for r in fifo] for w, fifo in splitter._fifo.items()},
        len(splitter._by_id),
        len(splitter._ends),
        {w: (len(lane.waiting), len(lane.active)) for w, lane in splitter._lanes.items()},
    )


def _settled(result: Any) -> tuple[Any, ...]:
    return (
        result.in_spans_j,
        result.outside_j,
        [
            (r.workload, r.model, dict(r.energy_j), r.gflops, r.duration_s, r.input_tokens)
            for r in result.requests
        ],
    )


def _verdict(joiner: RequestJoiner, span: Span) -> str:
    try:
        return joiner.add(span)
    except ValueError:
        return "invalid"


def _run_both(ops: list[Any], cap: int, max_requests: int, memory_s: float) -> int:
    """Runs ``ops`` through two joiners, one by ``add_all`` and one span by span; asserts
    after each step that both answered and hold the same. Returns the spans ``add_all``
    took in C."""
    pairs = []
    for _ in range(2):
        splitter = SpanSplitter(settle_seconds=1.0, max_pending_spans=cap, max_span_wait_s=2.0)
        joiner = RequestJoiner(
            splitter, memory_s=memory_s, fallback_models={"a": "m"}, max_requests=max_requests
        )
        pairs.append((joiner, splitter))
    (fast, fast_splitter), (slow, slow_splitter) = pairs
    clock, in_c = T0, 0
    energy = {"a": {"cpu": 3.0}, "b": {"cpu": 1.0, "dram": 0.5}}
    for op in ops:
        if op[0] == "batch":
            batch = [_span_of(spec) for spec in op[1]]
            handed: dict[int, str] = {}

            def other(span: Span, handed: dict[int, str] = handed) -> None:
                handed[id(span)] = _verdict(fast, span)

            lone = fast.add_all(batch, other)
            got = [handed.get(id(s), "accepted") for s in batch]
            assert lone == len(batch) - len(handed)
            in_c += lone
            assert got == [_verdict(slow, s) for s in batch]
        elif op[0] == "tick":
            for splitter in (fast_splitter, slow_splitter):
                splitter.add_tick(clock, clock + op[1], energy)
            clock += op[1]
        elif op[0] == "settle":
            now = T0 + op[1] + 4.0
            assert _settled(fast_splitter.settle(now)) == _settled(slow_splitter.settle(now))
        else:
            fast.expire(T0 + op[1])
            slow.expire(T0 + op[1])
        assert _state(fast, fast_splitter) == _state(slow, slow_splitter)
    assert _settled(fast_splitter.flush()) == _settled(slow_splitter.flush())
    assert _state(fast, fast_splitter) == _state(slow, slow_splitter)
    return in_c


@given(
    ops=st.lists(_op, max_size=25),
    cap=st.one_of(st.integers(1, 30), st.just(1000)),
    max_requests=st.one_of(st.integers(1, 40), st.just(1000)),
    memory_s=st.sampled_from([0.5, 2.0, 15.0]),
)
@example(  # a second batch of the same trace: its spans nest, through add
    ops=[
        ("batch", [("a", 0, 0, None, 1.0, 1.0, None, None, "m")] * 2),
        (
            "batch",
            [("a", 0, 1, 0, 1.2, 0.25, 1.0, 7, "m"), ("a", 1, 0, None, 1.0, 1.0, None, None, "m")],
        ),
    ],
    cap=30,
    max_requests=40,
    memory_s=15.0,
)
@example(  # late by the oldest open tick: a span ending where it starts, not of zero length
    ops=[
        ("tick", 1.0),
        ("batch", [("a", 5, 0, None, 0.0, 0.25, None, None, "m"),
                   ("a", 6, 0, None, -1.0, 1.0, None, None, "m")]),
    ],
    cap=30, max_requests=40, memory_s=0.5,
)  # fmt: skip
def test_add_all_answers_and_holds_what_add_answers_and_holds_span_by_span(
    ops: list[Any], cap: int, max_requests: int, memory_s: float
) -> None:
    _run_both(ops, cap, max_requests, memory_s)


def test_a_batch_of_new_requests_is_counted_in_c_after_its_workloads_first_span() -> None:
    """The benchmark's shape: a workload's batch of requests of one span each, ending in one
    second. The first makes the workload's FIFO, lane and forget second through ``add``; the
    other 99 are taken in C. A second batch in the same second goes all in C."""
    starts = [T0 + 1.0 + i / 200 for i in range(100)]
    batch = [
        Span("a", "m", s, s + 0.004, 1.0, trace_id=f"{i:032x}", span_id=f"{i:016x}")
        for i, s in enumerate(starts)
    ]
    again = [
        Span("a", "m", s.start, s.end, trace_id=f"{i + 100:032x}", span_id="01")
        for i, s in enumerate(batch)
    ]
    splitter = SpanSplitter()
    joiner = RequestJoiner(splitter, memory_s=15.0)
    handed: list[Span] = []
    assert joiner.add_all(batch, _adding(joiner, handed)) == 99
    assert handed == batch[:1]
    assert joiner.add_all(again, handed.append) == 100 and len(handed) == 1
    assert splitter.pending == joiner.tracked == 200
    assert sum(len(b.lone) for b in joiner._expiry.values()) == 200
    result = splitter.flush()
    assert len(result.requests) == 200


def _adding(joiner: RequestJoiner, handed: list[Span]) -> Any:
    """An ``other`` that keeps the spans it is handed and adds them."""

    def other(span: Span) -> None:
        handed.append(span)
        joiner.add(span)

    return other


def test_add_all_keeps_the_counts_of_what_it_took_when_other_raises() -> None:
    splitter = SpanSplitter()
    joiner = RequestJoiner(splitter, memory_s=15.0)
    first = Span("a", "m", T0, T0 + 0.5, trace_id="t0", span_id="s0")
    joiner.add(first)
    batch = [
        Span("a", "m", T0, T0 + 0.5, trace_id="t1", span_id="s0"),  # in C
        Span("a", "m", T0, T0 + 0.5, trace_id="t0", span_id="s1"),  # nested: to other
        Span("a", "m", T0, T0 + 0.5, trace_id="t2", span_id="s0"),
    ]

    def other(span: Span) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        joiner.add_all(batch, other)
    assert splitter.pending == joiner.tracked == 2  # the first, and the one taken in C
    assert len(splitter._by_id) == 2 and len(splitter._fifo["a"]) == 2
    assert len(splitter.flush().requests) == 2


def test_add_all_hands_every_span_to_other_over_the_python_tables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(spans_mod, "new_record_index", dict)
    splitter = SpanSplitter()
    joiner = RequestJoiner(splitter, memory_s=15.0)
    batch = [Span("a", "m", T0, T0 + 0.5, trace_id=f"t{i}", span_id="s") for i in range(3)]
    handed: list[Span] = []
    assert joiner.add_all(batch, _adding(joiner, handed)) == 0
    assert handed == batch and splitter.pending == 3


def test_add_all_frees_what_it_made() -> None:
    from jouled.attribution import _pending

    before = _pending.live()
    splitter = SpanSplitter()
    joiner = RequestJoiner(splitter, memory_s=15.0)
    batch = [
        Span("a", "m", T0 + i / 100, T0 + i / 100 + 0.1, trace_id=f"t{i}", span_id="s")
        for i in range(50)
    ]
    bad = [Span("a", "m", T0, T0 + 1.0, input_tokens=2**63, trace_id="x", span_id="s")]
    verdicts: list[str] = []

    def other(span: Span) -> None:
        verdicts.append(_verdict(joiner, span))

    assert joiner.add_all(batch + bad, other) == 49
    assert verdicts == ["accepted", "invalid"]  # the first (it makes the workload's FIFO)
    assert _pending.live() == before + 50
    splitter.flush()
    joiner.expire(T0 + 1e6)
    assert joiner.tracked == 0
    splitter = joiner = None  # type: ignore[assignment]
    assert _pending.live() == before


def test_add_all_keeps_what_other_counted_before_it_raised() -> None:
    """A review found the counters written back stale when ``other`` counted a span and then
    raised: the pending count and the joiner's size must match what both hold."""
    splitter = SpanSplitter(settle_seconds=1.0)
    joiner = RequestJoiner(splitter, memory_s=15.0)
    first = Span("a", "m", T0 + 1.0, T0 + 1.004, 1.0, trace_id="t0", span_id="s0")
    joiner.add(first)
    batch = [
        Span("a", "m", T0 + 1.01, T0 + 1.014, 1.0, trace_id="t1", span_id="s1"),  # in C
        first,  # its trace is held: to other
    ]

    def other(span: Span) -> None:
        joiner.add(Span("a", "m", T0 + 1.5, T0 + 1.6, 1.0, trace_id="x", span_id="y"))
        raise RuntimeError("after counting one")

    with pytest.raises(RuntimeError):
        joiner.add_all(batch, other)
    assert splitter.pending == sum(splitter._count.values()) == len(splitter._by_id) == 3
    assert joiner.tracked == 3


def test_add_all_leaves_times_that_are_not_floats_to_add() -> None:
    """``admit`` checks the values it is given: an int end past 2^53 below an int start is
    refused there, though the doubles the record would hold are equal."""
    splitter = SpanSplitter()
    joiner = RequestJoiner(splitter, memory_s=15.0)
    # a span ending where the odd one would: its workload's FIFO, lane and forget second exist
    joiner.add(Span("a", "m", 2.0**53 - 8, 2.0**53, trace_id="t0", span_id="s"))
    odd = Span("a", "m", 2**53 + 1, 2**53, trace_id="t1", span_id="s")  # type: ignore[arg-type]
    verdicts: list[str] = []
    assert joiner.add_all([odd], lambda s: verdicts.append(_verdict(joiner, s))) == 0
    assert verdicts == ["invalid"] and splitter.pending == 1
