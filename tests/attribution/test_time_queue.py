"""The splitter's calendar queue hands records out exactly as a heap of (time, seq) would."""

from __future__ import annotations

import heapq
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from jouled.attribution.spans import Span, _end, _Pending, _TimeQueue


def _rec(t: float, done: bool = False) -> _Pending:
    rec = _Pending(Span("w", "m", t, t))
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


@settings(max_examples=200, deadline=None)
@given(_ops)
def test_takes_match_a_heap(ops: list[Any]) -> None:
    queue = _TimeQueue(_end)
    heap: list[tuple[float, int]] = []
    seq_of: dict[_Pending, int] = {}
    for seq, op in enumerate(ops):
        if op[0] == "push":
            rec = _rec(op[1])
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


def test_drop_done_keeps_the_rest_in_order() -> None:
    queue = _TimeQueue(_end)
    for seq, t in enumerate([3.5, 1.2, 2.9, 1.1, 3.0]):
        queue.push(_rec(t, done=bool(seq % 2)), t)
    queue.drop_done()
    assert [r.end for r in queue.take_through(10.0)] == [2.9, 3.0, 3.5]
    assert len(queue) == 0
