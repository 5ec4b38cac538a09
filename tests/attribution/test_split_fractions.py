"""``split_fractions`` against a plain segment-by-segment reference, on random spans."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jouled.attribution.spans import split_fractions

W0, W1 = 1_700_000_000.0, 1_700_000_001.0


def reference(spans: list[tuple[float, float, float, bool]]) -> tuple[float, list[float]]:
    """Cut [W0, W1) at every boundary; each segment goes to the spans open in it, by rate
    when every one has known work and the rates sum above 0, else equally."""
    clipped = [(max(s, W0), min(e, W1), r, k) for s, e, r, k in spans]
    points = sorted({W0, W1, *(c[0] for c in clipped if c[1] > c[0])}
                    | {c[1] for c in clipped if c[1] > c[0]})  # fmt: skip
    share = [0.0] * len(spans)
    outside = 0.0
    for a, b in itertools.pairwise(points):
        seg = (b - a) / (W1 - W0)
        open_ = [i for i, c in enumerate(clipped) if c[1] > c[0] and c[0] <= a and c[1] >= b]
        if not open_:
            outside += seg
            continue
        rates = [clipped[i][2] for i in open_]
        if all(clipped[i][3] for i in open_) and sum(rates) > 0:
            for i, r in zip(open_, rates, strict=True):
                share[i] += seg * r / sum(rates)
        else:
            for i in open_:
                share[i] += seg / len(open_)
    return outside, share


_time = st.integers(-200, 1200).map(lambda ms: W0 + ms / 1000)  # ms grid: many ties
_span = st.tuples(_time, _time, st.sampled_from([0.0, 1.0, 2.5, 40.0, 1e3]), st.booleans()).map(
    lambda t: (min(t[0], t[1]), max(t[0], t[1]), t[2], t[3])
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_span, max_size=30))
def test_matches_the_segment_by_segment_reference(spans: list[tuple[float, float, float, bool]]):
    outside, fractions = split_fractions(spans, W0, W1)
    want_outside, want = reference(spans)
    assert outside == pytest.approx(want_outside, abs=1e-9)
    assert fractions == pytest.approx(want, abs=1e-9)
    assert math.fsum([outside, *fractions]) == pytest.approx(1.0, abs=1e-12)


def test_lone_spans_get_their_time_and_overlapping_ones_share_by_rate() -> None:
    spans = [
        (W0 + 0.1, W0 + 0.2, 5.0, True),  # alone: 10 % of the tick whatever its rate
        (W0 + 0.5, W0 + 0.7, 1.0, True),  # with the next over [0.6, 0.7): rates 1 : 3
        (W0 + 0.6, W0 + 0.9, 3.0, True),
        (W0 + 0.2, W0 + 0.3, 1.0, False),  # touches the first one only: alone
    ]
    outside, fractions = split_fractions(spans, W0, W1)
    assert outside == pytest.approx(0.4, abs=1e-6)  # [0, 0.1), [0.3, 0.5), [0.9, 1)
    assert fractions == pytest.approx([0.1, 0.1 + 0.025, 0.2 + 0.075, 0.1], abs=1e-6)
