"""The compiled tick split (jouled/attribution/_split.c) against the Python rule it stands for.

``split_fractions`` must give the same doubles, bit for bit, from both: the splitter's
conservation rests on the fractions, and the Python function is the reference (its own
tests check the rule against a segment-by-segment sweep). Random ticks mix lone spans,
clusters with ties on a millisecond grid, zero-length spans, spans outside the tick, unknown
work, and rates at and beyond the clamps (0, 1e-250, 1e250, inf, NaN, negative)."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from benchmarks.split import BASE as SHAPES_BASE
from benchmarks.split import shapes
from jouled.attribution import spans as spans_mod
from jouled.attribution.spans import SpanSplitter, py_split_fractions, split_fractions

c_split: Any = spans_mod._c_split_fractions
pytestmark = pytest.mark.skipif(c_split is None, reason="jouled.attribution._split not built")

BASE = 1_700_000_000.0
RATES = [0.0, 1.0, 2.5, 40.0, 1e-200, 1e200, 1e-250, 1e250, -3.0, float("inf"), float("nan")]


def same(a: tuple[float, list[float]] | None, b: tuple[float, list[float]]) -> bool:
    """Equal as doubles, bit for bit (0.0 and -0.0 differ, NaN equals NaN)."""
    assert a is not None, "the compiled split handed plain input back"
    pack = struct.Struct("<d").pack
    return pack(a[0]) == pack(b[0]) and [pack(x) for x in a[1]] == [pack(x) for x in b[1]]


_grid = st.integers(-200, 1200).map(lambda ms: BASE + ms / 1000)  # ties and touching spans
_free = st.floats(BASE - 0.5, BASE + 1.5)
_rate = st.one_of(st.sampled_from(RATES), st.floats(0.0, 1e12), st.floats(1e-300, 1e300))


@st.composite
def _span(draw: Any) -> tuple[float, float, float, bool]:
    s, e = sorted((draw(st.one_of(_grid, _free)), draw(st.one_of(_grid, _free))))
    if draw(st.integers(0, 9)) == 0:
        e = s  # zero length
    return (s, e, draw(_rate), draw(st.booleans()))


# Ticks of lengths that are not powers of two too (x / 1.0 hides a changed division order).
_tick = st.sampled_from(
    [
        (BASE, BASE + 1.0),
        (BASE + 0.1, BASE + 0.7),
        (BASE - 0.3, BASE + 1.2),
        (BASE + 0.25, BASE + 0.75),
        (BASE, BASE),
        (0.0, 1.0),
    ]
)


@settings(max_examples=1500, deadline=None)
@given(st.lists(_span(), max_size=60), _tick)
def test_the_compiled_split_gives_the_python_rules_doubles(
    items: list[tuple[float, float, float, bool]], tick: tuple[float, float]
) -> None:
    w0, w1 = tick
    assert same(c_split(items, w0, w1), py_split_fractions(items, w0, w1))


@settings(max_examples=1500, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=False, allow_infinity=False, min_value=0.0, max_value=1e300),
            st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300),
            st.sampled_from([1.0, 2.0**-53, 2.0**-52, 2.0**-54, 3 * 2.0**-53, 2.0**-1074, 1e300]),
        ),
        max_size=40,
    )
)
# Half an ulp of 1.0 plus a tail in the limb of the rounding bit, then in a lower limb.
@example([1.0, 2.0**-53, 2.0**-70])
@example([1.0, 2.0**-53, 2.0**-1000])
@example([1.0, 2.0**-53])  # a tie: to even
def test_the_exact_sum_rounds_as_math_fsum(values: list[float]) -> None:
    """Sums that need every bit: ties to even (1 + 2**-53), tails below the last bit,
    subnormals, cancellation; the rate sums and both fsums of the split use it."""
    from jouled.attribution._split import fsum

    got = fsum(values)
    if math.fsum(values) < 0:
        assert got is None
    else:
        assert got is not None and struct.pack("<d", got) == struct.pack("<d", math.fsum(values))


def test_one_big_cluster_of_long_requests_as_a_batching_llm_server_makes() -> None:
    """2,000 requests of 0.5-3 s open at once over a tick (continuous batching): every span
    in one cluster, work rates spread over 12 orders of magnitude (``benchmarks.split``)."""
    items, w0 = shapes()["llm"], SHAPES_BASE
    got = c_split(items, w0, w0 + 1.0)
    assert same(got, py_split_fractions(items, w0, w0 + 1.0))
    assert got is not None and got[0] == 0.0  # open all tick long: nothing outside


@pytest.mark.parametrize(
    ("items", "w0", "w1"),
    [
        ([(BASE, BASE + 1.0, 1.0, True)], 0, 1.0),  # an int bound
        ([(BASE, BASE + 1.0, 1.0, True)], BASE, float("inf")),
        ([(BASE, float("nan"), 1.0, True)], BASE, BASE + 1.0),
        ([(BASE, BASE + 1.0, 1, True)], BASE, BASE + 1.0),  # an int rate
        ([(BASE, BASE + 1.0, 1.0, 1)], BASE, BASE + 1.0),  # known not a bool
        ([[BASE, BASE + 1.0, 1.0, True]], BASE, BASE + 1.0),  # not a tuple
        ([(BASE, BASE + 1.0, 1.0)], BASE, BASE + 1.0),
        ((x for x in [(BASE, BASE + 1.0, 1.0, True)]), BASE, BASE + 1.0),  # an iterator
    ],
)
def test_input_off_the_plain_case_is_handed_to_python_which_still_answers(
    items: Any, w0: Any, w1: Any
) -> None:
    assert c_split(items, w0, w1) is None
    if isinstance(items, list) and len(items[0]) == 4:
        outside, fractions = split_fractions(items, w0, w1)  # the Python function's answer
        assert len(fractions) == 1 and not math.isnan(outside)


@pytest.mark.parametrize(
    ("items", "w0", "w1"),
    [
        # The tick's length overflows (found by a reviewer's fuzzing).
        ([(0.0, 1.0, 1.0, True)], -1e308, 1e308),
        ([(9e307, 1e308, 1.0, True)], -1e308, 1e308),
        # A finite length (DBL_MAX) whose two rounded gaps sum past it.
        (
            [(2.0**970 + 2.0**918, 2.0**970 + 2.0**918 + 2.0**960, 1.0, True)],
            -(2.0**1023),
            2.0**1023 - 2.0**971,
        ),
    ],
)
def test_bounds_whose_sums_overflow_are_left_to_python(
    items: list[tuple[float, float, float, bool]], w0: float, w1: float
) -> None:
    """Python's math.fsum raises OverflowError on some of these and sums infinities on
    others; the compiled split answers none of them, so the caller gets Python's answer."""
    assert c_split(items, w0, w1) is None
    try:
        want = py_split_fractions(items, w0, w1)
    except OverflowError:
        with pytest.raises(OverflowError):
            split_fractions(items, w0, w1)
    else:
        assert split_fractions(items, w0, w1) == want


def test_the_exact_sum_hands_back_what_math_fsum_cannot_sum() -> None:
    from jouled.attribution._split import fsum

    assert fsum([1e308, 1e308]) is None  # math.fsum: OverflowError
    assert fsum([1.0, -2.0]) is None  # negative
    assert fsum([1.0, float("inf")]) is None  # not finite
    # Where a partial sum overflows but the whole does not, the exact sum answers and
    # math.fsum raises; the split's summands are all >= 0, so it never meets this case.
    assert fsum([2.0**1023, 2.0**1023, -(2.0**1023)]) == 2.0**1023
    with pytest.raises(OverflowError):
        math.fsum([2.0**1023, 2.0**1023, -(2.0**1023)])


def test_the_splitter_settles_through_the_compiled_split(monkeypatch: pytest.MonkeyPatch) -> None:
    """The splitter's result is the same with the Python split, and the compiled one ran."""
    calls = 0

    def counted(items: Any, w0: float, w1: float) -> Any:
        nonlocal calls
        calls += 1
        return c_split(items, w0, w1)

    def settle() -> list[tuple[str, float]]:
        splitter = SpanSplitter(settle_seconds=0.0)
        for k in range(30):  # overlapping, with and without known work
            start = BASE + k / 40
            gflops = None if k % 4 == 0 else float(k + 1)
            splitter.add_span(spans_mod.Span("llm", "m", start, start + 0.1, gflops=gflops))
        splitter.add_tick(BASE, BASE + 1.0, {"llm": {"gpu": 300.0, "cpu": 30.0}})
        result = splitter.settle(BASE + 1.0)
        return sorted((f"{r.gflops}", r.energy_j["gpu"]) for r in result.requests)

    monkeypatch.setattr(spans_mod, "_c_split_fractions", counted)
    compiled = settle()
    assert calls == 1
    monkeypatch.setattr(spans_mod, "_c_split_fractions", None)
    assert settle() == compiled
