"""The splitter's calendar queue hands records out exactly as a heap of (time, seq) would;
its compiled twin (``_pending.TimeQueue``) hands out the very same records in the same order."""

from __future__ import annotations

import heapq
import math
import sys
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from jouled.attribution import spans as spans_mod
from jouled.attribution.spans import Span, _end, _Pending, _TimeQueue

CompiledPending = spans_mod._compiled_pending()
CompiledQueue = spans_mod._compiled_table("TimeQueue")
needs_c = pytest.mark.skipif(
    CompiledQueue is None or CompiledPending is None,
    reason="jouled.attribution._pending not built (or JOULED_PURE_PYTHON=1)",
)

# (record type, queue by end) for each implementation built here.
KINDS: list[Any] = [
    pytest.param((_Pending, lambda: _TimeQueue(_end)), id="python"),
    pytest.param(
        (CompiledPending, lambda: CompiledQueue(True) if CompiledQueue else None),
        id="compiled",
        marks=needs_c,
    ),
]


def _rec(kind: Callable[..., Any], t: float, done: bool = False) -> Any:
    rec = kind(Span("w", "m", t, t))
    rec.done = done
    return rec


# (push time) or (take, through?, t): times near a unix second boundary and far apart.
_ops = st.lists(
    st.one_of(
        st.floats(1.7e9, 1.7e9 + 5, allow_nan=False).map(lambda t: ("push", t)),
        st.tuples(st.just("take"), st.booleans(), st.floats(1.7e9 - 1, 1.7e9 + 6, allow_nan=False)),
    ),
    max_size=200,
)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=200, deadline=None)
@given(ops=_ops)
def test_takes_match_a_heap(kind: Any, ops: list[Any]) -> None:
    record, make = kind
    queue = make()
    heap: list[tuple[float, int]] = []
    seq_of: dict[Any, int] = {}
    for seq, op in enumerate(ops):
        if op[0] == "push":
            rec = _rec(record, op[1])
            seq_of[rec] = seq
            queue.push(rec, rec.end)
            heapq.heappush(heap, (op[1], seq))
            continue
        _, through, t = op
        got = queue.take_through(t) if through else queue.take_before(t)
        want = []
        while heap and (heap[0][0] <= t if through else heap[0][0] < t):
            want.append(heapq.heappop(heap))
        assert [(r.end, seq_of[r]) for r in got] == want
        assert len(queue) == len(heap)
    assert [(r.end, seq_of[r]) for r in queue.take_through(float("inf"))] == sorted(heap)


@pytest.mark.parametrize("kind", KINDS)
def test_drop_done_keeps_the_rest_in_order(kind: Any) -> None:
    record, make = kind
    queue = make()
    for seq, t in enumerate([3.5, 1.2, 2.9, 1.1, 3.0]):
        queue.push(_rec(record, t, done=bool(seq % 2)), t)
    queue.drop_done()
    assert len(queue) == 3
    assert [r.end for r in queue.take_through(10.0)] == [2.9, 3.0, 3.5]
    assert len(queue) == 0 and not queue


# Operations on both queues at once: push (time index, by start or end), take, mark done,
# drop_done. Times repeat (equal keys keep push order), sit on second boundaries, and include
# ones no clock gives (beyond the C buckets' +-2^62 s) and the tiny and negative.
_TIMES = [
    1.7e9,
    1.7e9 + 0.5,
    1.7e9 + 1.0,
    1.7e9 + 1.0 - 1e-7,
    1.7e9 + 2.25,
    0.0,
    -0.5,
    -3.0,
    5e-324,
    2.0**62,
    2.0**62 + 2.0**11,
    1e300,
    -1e300,
    sys.float_info.max,
]
_both_ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.sampled_from(_TIMES)),
        st.tuples(
            st.just("take"),
            st.booleans(),
            st.one_of(st.sampled_from(_TIMES), st.just(math.inf), st.just(-math.inf)),
        ),
        st.tuples(st.just("done"), st.integers(0, 50)),
        st.just(("drop",)),
    ),
    max_size=120,
)


@needs_c
@settings(max_examples=400, deadline=None)
@given(ops=_both_ops, by_end=st.booleans())
# Found by the fuzz before the bottom bucket was looked into by any take, before buckets past
# 2^53 s were cut by bisection (second + 1 rounds), and before a take went on past an emptied
# bottom bucket.
@example(ops=[("push", -1e300), ("take", True, -1e300)], by_end=False)
@example(
    ops=[("push", -(2.0**62) - 4096), ("push", -(2.0**62)), ("take", False, -(2.0**62))],
    by_end=True,
)
@example(ops=[("push", -1e300), ("push", 1.7e9 + 1.0), ("take", True, 1.7e9 + 2.25)], by_end=True)
def test_compiled_queue_gives_what_the_python_one_gives(ops: list[Any], by_end: bool) -> None:
    assert CompiledQueue is not None and CompiledPending is not None
    c_queue = CompiledQueue(by_end)
    py_queue = _TimeQueue(_end if by_end else spans_mod._start)
    pushed: list[Any] = []
    for op in ops:
        if op[0] == "push":
            # start and end both t, or the other end a second away: the key is the one read.
            t = op[1]
            rec = CompiledPending(Span("w", "m", t, t))
            pushed.append(rec)
            c_queue.push(rec, t)
            py_queue.push(rec, t)
        elif op[0] == "take":
            _, through, t = op
            got = c_queue.take_through(t) if through else c_queue.take_before(t)
            want = py_queue.take_through(t) if through else py_queue.take_before(t)
            assert [id(r) for r in got] == [id(r) for r in want]
        elif op[0] == "done" and pushed:
            pushed[op[1] % len(pushed)].done = True
        elif op[0] == "drop":
            c_queue.drop_done()
            py_queue.drop_done()
        assert len(c_queue) == len(py_queue)
    rest = c_queue.take_through(math.inf)
    assert [id(r) for r in rest] == [id(r) for r in py_queue.take_through(math.inf)]
    assert len(c_queue) == 0


@needs_c
def test_compiled_queue_refuses_what_it_cannot_order_and_holds_its_records() -> None:
    assert CompiledQueue is not None and CompiledPending is not None
    queue = CompiledQueue(False)
    with pytest.raises(TypeError, match="Pending"):
        queue.push(_Pending(Span("w", "m", 1.0, 2.0)), 1.0)  # the Python record: not ours
    rec = CompiledPending(Span("w", "m", 1.0, 2.0))
    with pytest.raises(ValueError):
        queue.push(rec, math.nan)
    with pytest.raises(OverflowError):
        queue.push(rec, math.inf)
    assert len(queue) == 0
    before = sys.getrefcount(rec)
    for _ in range(100):
        queue.push(rec, rec.start)
    assert sys.getrefcount(rec) == before + 100 and len(queue) == 100
    assert queue.take_before(rec.start) == []  # its start is not before itself
    got = queue.take_through(rec.start)
    assert len(got) == 100 and len(queue) == 0
    del got
    assert sys.getrefcount(rec) == before
    for _ in range(10):
        queue.push(rec, rec.start)
    del queue  # a queue dropped with records in it lets them go
    assert sys.getrefcount(rec) == before
