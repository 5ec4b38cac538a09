"""The stage's booking of settled requests into its histograms: the compiled loop
(``_pending.book``) against the Python one (``stage._book``), request by request, through
energies of no, one and several components (NaN, infinities, signed zeros, sums that
overflow), work and tokens of every kind, and histograms made on first use."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from jouled.attribution import stage as stage_mod
from jouled.attribution.spans import SettledRequest
from jouled.attribution.stage import _book, _Histogram

BOOK: Any = stage_mod._c_book
pytestmark = pytest.mark.skipif(BOOK is None, reason="jouled.attribution._pending not built")

BOUNDS = (0.5, 1.0, 2.0, 5.0)

_joules = st.one_of(
    st.floats(0.0, 10.0),
    st.sampled_from([-0.0, 0.0, math.inf, -math.inf, math.nan, 1e308, -1e308]),
)
_request = st.builds(
    SettledRequest,
    workload=st.sampled_from(["a", "b"]),
    model=st.sampled_from(["m", "n"]),
    energy_j=st.dictionaries(st.sampled_from(["cpu", "dram", "gpu", "psys"]), _joules),
    gflops=st.one_of(st.none(), st.floats(allow_nan=True), st.just(0.0)),
    duration_s=st.just(0.01),
    route=st.just(""),
    input_tokens=st.sampled_from([None, None, 0, 7, -5, 2**70, 2**70, True]),
    output_tokens=st.one_of(st.none(), st.just(0), st.integers(0, 50)),
)


def _hists(hists: dict[Any, _Histogram]) -> dict[Any, tuple[Any, ...]]:
    return {
        key: (h.counts, repr(h.total), h.n, repr(h.gflops), h.input_tokens, h.output_tokens)
        for key, h in hists.items()
    }


def _run(fn: Any) -> tuple[Any, ...]:
    hists: dict[Any, _Histogram] = {}
    worked: dict[Any, list[float]] = {}
    try:
        fn(hists, worked)
        error = None
    except (ValueError, OverflowError) as exc:  # fsum's: "-inf + inf", intermediate overflow
        error = type(exc)
    # worked's joules by value: the C loop keeps 0.0 where Python's ``sum([])`` gave 0
    return error, _hists(hists), {k: [repr(float(v)) for v in got] for k, got in worked.items()}


@given(requests=st.lists(_request, max_size=30))
@example(  # two components summing to -0.0: fsum's zero, not the sum's
    requests=[SettledRequest("a", "m", {"cpu": -0.0, "dram": -0.0}, 1.0, 0.01, "", 2, 3)]
)
@example(  # one component of -0.0: sum's 0 + -0.0 is 0.0
    requests=[SettledRequest("a", "m", {"cpu": -0.0}, 1.0, 0.01, "", None, None)]
)
@example(  # inf - inf: ValueError from fsum after the histogram is made, in both loops
    requests=[
        SettledRequest("a", "m", {"cpu": 1.0}, 1.0, 0.01, "", None, None),
        SettledRequest("b", "m", {"cpu": math.inf, "dram": -math.inf}, 1.0, 0.01, "", None, None),
    ]
)
def test_the_compiled_booking_books_what_the_python_loop_books(
    requests: list[SettledRequest],
) -> None:
    def compiled(hists: dict[Any, _Histogram], worked: dict[Any, list[float]]) -> None:
        done = BOOK(requests, hists, BOUNDS, worked, _Histogram, SettledRequest)
        assert 0 <= done <= len(requests)
        _book(requests[done:], hists, BOUNDS, worked)

    def python(hists: dict[Any, _Histogram], worked: dict[Any, list[float]]) -> None:
        _book(requests, hists, BOUNDS, worked)

    assert _run(compiled) == _run(python)


def test_the_compiled_booking_leaves_what_it_does_not_take_to_python() -> None:
    plain = SettledRequest("a", "m", {"cpu": 1.5, "dram": 0.25}, 2.0, 0.01, "", 3, None)
    odd = SettledRequest("a", "m", {"cpu": 1}, None, 0.01, "", None, None)  # int joules
    hists: dict[Any, _Histogram] = {}
    worked: dict[Any, list[float]] = {}
    assert BOOK([plain, plain, odd, plain], hists, BOUNDS, worked, _Histogram, SettledRequest) == 2
    hist = hists[("a", "m")]
    assert (hist.n, hist.total, hist.counts, hist.gflops, hist.input_tokens) == (
        2,
        3.5,
        [0, 0, 2, 0, 0],
        4.0,
        6,
    )
    assert worked == {("a", "m"): [3.5, 4.0]}
    assert BOOK([plain], hists, (1, 2), worked, _Histogram, SettledRequest) == 0  # int bounds
    assert BOOK(iter([plain]), hists, BOUNDS, worked, _Histogram, SettledRequest) == 0
    with pytest.raises(TypeError, match="object slot"):
        BOOK([plain], hists, BOUNDS, worked, dict, SettledRequest)


class _Tracker:
    def claimed(self) -> dict[int, str]:
        return {}


def test_the_stage_books_a_settle_through_the_compiled_loop_as_without_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``AttributionStage._absorb`` with the compiled loop and without: the same histograms
    and per-GFLOP windows, the settle's requests a tuple as ``SpanSplitter`` gives them."""
    from jouled import config
    from jouled.attribution.spans import SettleResult

    cfg = config.validate({"workloads": [{"name": "a", "match": {"pid": 1}}]}, "test")
    requests = tuple(
        SettledRequest(w, m, {"cpu": 0.3 * i, "dram": 0.1}, float(i), 0.01, "", i, None)
        for i in range(20)
        for w, m in (("a", "m"), ("b", "n"))
    )
    got = []
    for book in (BOOK, None):
        monkeypatch.setattr(stage_mod, "_c_book", book)
        stage = stage_mod.AttributionStage(cfg, tracker=_Tracker())  # type: ignore[arg-type]
        stage._absorb(SettleResult({}, {}, requests), 100.0)
        got.append((_hists(stage._hist), {k: w.ratio(100.0) for k, w in stage._recent.items()}))
    assert got[0] == got[1]
    assert got[0][0][("a", "m")][2] == 20 and got[0][1][("a", "m")] is not None


def test_the_compiled_booking_leaves_histograms_of_other_numbers_to_python() -> None:
    """A review found the C loop adding to a histogram's values through Python code that
    could free the histogram under it (a segfault): values that are not exact ints and
    floats are now ``_book``'s, which adds them as Python does."""
    hists: dict[Any, Any] = {}

    class Evil(float):
        def __add__(self, other: object) -> float:
            hists.clear()  # drops the only reference to the histogram being booked
            return 1.0

    hist = _Histogram(BOUNDS)
    hist.total = Evil(0.0)
    hists[("a", "m")] = hist
    del hist
    req = SettledRequest("a", "m", {"cpu": 1.0}, 2.0, 0.01, "", 3, 4)
    assert BOOK([req], hists, BOUNDS, {}, _Histogram, SettledRequest) == 0
    assert ("a", "m") in hists and hists[("a", "m")].n == 0
    _book([req], hists, BOUNDS, {})
    assert hists == {}  # Python ran Evil.__add__, as it would have without the C loop


def test_a_type_the_booking_cannot_read_leaves_the_one_it_knows_intact() -> None:
    """A failed look at a type's slots must not overwrite the offsets of the type learned
    before it (a review found the next good call reading the wrong slots)."""
    req = SettledRequest("w", "m", {"cpu": 1.0}, None, 0.01, "")

    class Bad:
        __slots__ = ("model", "workload")  # two fields, swapped; no energy_j

    with pytest.raises(TypeError, match=r"book: .*energy_j is not an object slot"):
        BOOK([req], {}, BOUNDS, {}, _Histogram, Bad)
    hists: dict[Any, _Histogram] = {}
    assert BOOK([req], hists, BOUNDS, {}, _Histogram, SettledRequest) == 1
    assert list(hists) == [("w", "m")] and hists[("w", "m")].n == 1
