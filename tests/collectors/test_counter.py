"""Properties of ``unfold``: the one rule that turns wrapping, resetting counters into totals."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jouled.collectors.counter import Event, unfold

RAPL_RANGE_UJ = 262_143_328_850  # a real package's max_energy_range_uj
COUNTER_MAX = 2**64 - 1

counters = st.integers(min_value=0, max_value=COUNTER_MAX)
optional_ints = st.none() | st.integers(min_value=0, max_value=COUNTER_MAX)


@st.composite
def wrapping_runs(draw: st.DrawFn) -> tuple[int, int | None, int, list[int]]:
    """(max_range, max_delta, start, increments), every increment plausible and < range."""
    max_range = draw(st.integers(min_value=1, max_value=2**48))
    max_delta = draw(st.none() | st.integers(min_value=0, max_value=2**49))
    start = draw(st.integers(min_value=0, max_value=max_range - 1))
    cap = max_range - 1 if max_delta is None else min(max_range - 1, max_delta)
    increments = draw(st.lists(st.integers(min_value=0, max_value=cap), max_size=60))
    return max_range, max_delta, start, increments


@settings(max_examples=300)
@given(wrapping_runs())
def test_unfolded_deltas_sum_to_the_true_total(
    run: tuple[int, int | None, int, list[int]],
) -> None:
    max_range, max_delta, counter, increments = run
    total = 0
    for inc in increments:
        cur = (counter + inc) % max_range
        step = unfold(counter, cur, max_range, max_delta)
        assert step.event is (Event.WRAP if cur < counter else Event.NONE)
        total += step.delta
        counter = cur
    assert total == sum(increments)


@settings(max_examples=300)
@given(prev=counters, cur=counters, max_range=optional_ints, max_delta=optional_ints)
def test_delta_is_never_negative_and_never_beyond_max_delta(
    prev: int, cur: int, max_range: int | None, max_delta: int | None
) -> None:
    step = unfold(prev, cur, max_range, max_delta)
    assert step.delta >= 0
    if max_delta is not None:
        assert step.delta <= max_delta  # no spike, whatever the counter did


@settings(max_examples=200)
@given(data=st.data(), max_delta=st.integers(min_value=1, max_value=RAPL_RANGE_UJ // 4))
def test_reset_to_a_small_value_is_a_reset_with_delta_cur(
    data: st.DataObject, max_delta: int
) -> None:
    # After a reset the counter holds the energy since the restart, at most max_delta.
    cur = data.draw(st.integers(min_value=0, max_value=max_delta))
    # prev far enough from the top of the range that a wrap would be implausible.
    prev = data.draw(st.integers(min_value=cur + 1, max_value=RAPL_RANGE_UJ - max_delta + cur - 1))
    step = unfold(prev, cur, RAPL_RANGE_UJ, max_delta)
    assert step.event is Event.RESET
    assert step.delta == cur


@settings(max_examples=200)
@given(data=st.data(), max_delta=st.integers(min_value=0, max_value=RAPL_RANGE_UJ // 4))
def test_reset_to_a_large_value_counts_nothing(data: st.DataObject, max_delta: int) -> None:
    cur = data.draw(st.integers(min_value=max_delta + 1, max_value=RAPL_RANGE_UJ // 2))
    prev = data.draw(st.integers(min_value=cur + 1, max_value=RAPL_RANGE_UJ - max_delta + cur - 1))
    step = unfold(prev, cur, RAPL_RANGE_UJ, max_delta)
    assert step == unfold(prev, cur, RAPL_RANGE_UJ, max_delta)  # pure
    assert step.event is Event.RESET
    assert step.delta == 0


@settings(max_examples=200)
@given(
    prev=counters,
    jump=st.integers(min_value=1, max_value=2**40),
    max_delta=st.integers(min_value=0, max_value=2**40),
    max_range=optional_ints,
)
def test_forward_jump_beyond_max_delta_is_a_glitch_counting_zero(
    prev: int, jump: int, max_delta: int, max_range: int | None
) -> None:
    cur = prev + max_delta + jump
    step = unfold(prev, cur, max_range, max_delta)
    assert step.event is Event.GLITCH
    assert step.delta == 0


@settings(max_examples=200)
@given(data=st.data(), max_delta=st.none() | st.integers(min_value=0, max_value=2**40))
def test_backwards_without_a_range_is_a_reset(data: st.DataObject, max_delta: int | None) -> None:
    # NVML's 64-bit counter never wraps: going backwards can only be a restart.
    prev = data.draw(st.integers(min_value=1, max_value=COUNTER_MAX))
    cur = data.draw(st.integers(min_value=0, max_value=prev - 1))
    step = unfold(prev, cur, None, max_delta)
    assert step.event is Event.RESET
    assert step.delta == (cur if max_delta is None or cur <= max_delta else 0)


@settings(max_examples=200)
@given(
    start=st.integers(min_value=0, max_value=RAPL_RANGE_UJ - 1),
    steps=st.lists(
        st.tuples(st.booleans(), st.integers(min_value=0, max_value=3_000_000_000)),
        max_size=40,
    ),
)
def test_runs_with_resets_are_exact_where_each_reset_is_recognisable(
    start: int, steps: list[tuple[bool, int]]
) -> None:
    # A 2 kW bound at 1 s ticks with margin: 3000 J, as the RAPL collector uses.
    max_delta = 3_000_000_000
    counter, total_true, total_unfolded = start, 0, 0
    resets_done = resets_seen = ambiguous = 0
    for reset, inc in steps:
        prev = counter
        if reset:
            counter = 0
            resets_done += 1
        cur = (counter + inc) % RAPL_RANGE_UJ
        step = unfold(prev, cur, RAPL_RANGE_UJ, max_delta)
        if reset:
            # Recognisable: the counter went backwards by more than a plausible wrap allows.
            if prev > cur and RAPL_RANGE_UJ - prev + cur > max_delta:
                assert step.event is Event.RESET
                assert step.delta == inc  # the energy since the restart, no spike
            else:
                ambiguous += 1
        total_true += inc
        total_unfolded += step.delta
        resets_seen += step.event is Event.RESET
        counter = cur
    assert resets_seen == resets_done - ambiguous
    if ambiguous == 0:
        assert total_unfolded == total_true
    else:
        # A reset that looks like a plausible wrap or a small forward step costs at most one
        # tick's plausible energy, never a spike.
        assert abs(total_unfolded - total_true) <= ambiguous * max_delta


def test_negative_raw_values_are_rejected() -> None:
    with pytest.raises(ValueError, match="never negative"):
        unfold(-1, 5, 100)
    with pytest.raises(ValueError, match="never negative"):
        unfold(5, -1, 100)


@pytest.mark.parametrize(
    ("prev", "cur", "max_range", "max_delta", "expected"),
    [
        (90, 10, 100, None, (20, Event.WRAP)),
        (90, 10, 100, 20, (20, Event.WRAP)),
        (90, 10, 100, 19, (10, Event.RESET)),  # a 20-unit wrap is too much: a restart
        (100, 5, 100, None, (5, Event.WRAP)),  # the counter sat at the top of its range
        (150, 5, 100, None, (5, Event.RESET)),  # above the range: cannot have wrapped
        (10, 10, 100, 0, (0, Event.NONE)),
        (10, 11, 100, 0, (0, Event.GLITCH)),
    ],
)
def test_worked_examples(
    prev: int, cur: int, max_range: int, max_delta: int | None, expected: tuple[int, Event]
) -> None:
    step = unfold(prev, cur, max_range, max_delta)
    assert (step.delta, step.event) == expected
