"""The splitter's calendar queue hands entries out exactly as a heap of (time, seq) would."""

from __future__ import annotations

import heapq
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from jouled.attribution.spans import _TimeQueue


class _Rec:
    done = False


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
    queue, heap = _TimeQueue(), []
    rec = _Rec()
    for seq, op in enumerate(ops):
        if op[0] == "push":
            entry = (op[1], seq, rec)
            queue.push(entry)  # type: ignore[arg-type]
            heapq.heappush(heap, entry)
            continue
        _, through, t = op
        got = queue.take_through(t) if through else queue.take_before(t)
        want = []
        while heap and (heap[0][0] <= t if through else heap[0][0] < t):
            want.append(heapq.heappop(heap))
        assert got == want
        assert len(queue) == len(heap)
    assert queue.take_through(float("inf")) == sorted(heap)


def test_drop_done_keeps_the_rest_in_order() -> None:
    queue = _TimeQueue()
    live, dead = _Rec(), _Rec()
    dead.done = True
    for seq, t in enumerate([3.5, 1.2, 2.9, 1.1, 3.0]):
        queue.push((t, seq, dead if seq % 2 else live))  # type: ignore[arg-type]
    queue.drop_done()
    assert [e[0] for e in queue.take_through(10.0)] == [2.9, 3.0, 3.5]
    assert len(queue) == 0
