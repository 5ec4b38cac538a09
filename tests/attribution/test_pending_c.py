"""The compiled pending-span record (jouled/attribution/_pending.c) against the Python class
it stands for (``jouled.attribution.spans._Pending``): the same values in, the same values
out, through every attribute the splitter reads and writes; errors where C cannot hold a
value; freed when nothing holds it."""

from __future__ import annotations

import gc
import math
import struct
import sys
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from jouled.attribution import spans as spans_mod
from jouled.attribution.spans import Span, _Pending

COMPILED: Any = spans_mod._compiled_pending()
pytestmark = pytest.mark.skipif(COMPILED is None, reason="jouled.attribution._pending not built")

FIELDS = (
    "workload",
    "model",
    "start",
    "end",
    "gflops",
    "route",
    "input_tokens",
    "output_tokens",
    "energy_j",
    "done",
    "dedup",
    "span_key",
    "parent_key",
)

_tokens = st.one_of(st.none(), st.integers(-(2**62) + 1, 2**62 - 1))
_time = st.floats(allow_nan=False, allow_infinity=False)


def view(rec: Any) -> tuple[Any, ...]:
    return tuple(getattr(rec, f) for f in FIELDS)


@given(
    workload=st.text(max_size=8),
    model=st.text(max_size=8),
    start=_time,
    end=_time,
    gflops=st.one_of(st.none(), st.floats(0.0, 1e300)),
    route=st.text(max_size=8),
    tokens=st.tuples(_tokens, _tokens),
    dedup=st.integers(-(2**63), 2**63 - 1),
    span_key=st.integers(-(2**63), 2**63 - 1),
    parent_key=st.integers(-(2**63), 2**63 - 1),
)
def test_same_values_as_the_python_record(
    workload: str,
    model: str,
    start: float,
    end: float,
    gflops: float | None,
    route: str,
    tokens: tuple[int | None, int | None],
    dedup: int,
    span_key: int,
    parent_key: int,
) -> None:
    span = Span(workload, model, start, end, gflops, route, "t", "s", "", *tokens)
    c = COMPILED(span, dedup, span_key, parent_key)
    py = _Pending(span, dedup, span_key, parent_key)
    assert view(c) == view(py)
    assert c.energy_j is None and c.done is False
    # What the splitter writes: amend (model, tokens, work), shares, done.
    for rec in (c, py):
        rec.model = "other"
        rec.input_tokens, rec.output_tokens = tokens[::-1]
        rec.gflops = None if gflops is not None else 2.5
        rec.energy_j = {"cpu": 1.5}
        rec.done = True
    assert view(c) == view(py)


def test_numbers_are_held_as_c_numbers_and_read_back_as_python_ones() -> None:
    span = Span("w", "m", 1, 2, 3, "", "", "", "", 4, 0)  # ints where floats belong
    rec = COMPILED(span, 7)
    assert (rec.start, rec.end, rec.gflops) == (1.0, 2.0, 3.0)
    assert type(rec.start) is float and type(rec.gflops) is float
    assert (rec.input_tokens, rec.output_tokens, rec.dedup) == (4, 0, 7)
    assert sys.getsizeof(rec) < sys.getsizeof(_Pending(span, 7))
    if not hasattr(sys, "gettotalrefcount"):  # a release build: 16-byte object header
        # pymalloc hands out multiples of 16 bytes: 97 would cost 112.
        assert sys.getsizeof(rec) == 96
    assert not gc.is_tracked(rec)


def test_records_of_the_same_labels_share_one_tuple_and_a_write_moves_to_another() -> None:
    import tracemalloc

    from jouled.attribution import _pending

    model = "".join(["lla", "ma"])  # a string of its own: its references count the holders
    held = sys.getrefcount(model)
    a = COMPILED(Span("chat", model, 0.0, 1.0, route="/v1/chat"), 1)
    b = COMPILED(Span("chat", model, 2.0, 3.0, route="/v1/chat"), 2)
    assert sys.getrefcount(model) == held + 1  # one shared tuple holds it, not each record
    a.model = "phi"  # amend: the record moves to the tuple of its new three
    assert (a.model, b.model, a.workload, a.route) == ("phi", model, "chat", "/v1/chat")
    assert sys.getrefcount(model) == held + 1
    del b
    assert sys.getrefcount(model) == held + 1  # the cache keeps the tuple for the next record
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        recs = [COMPILED(Span("chat", model, 0.0, 1.0, route="/v1/chat"), i) for i in range(1000)]
        grown = tracemalloc.get_traced_memory()[0] - before - sys.getsizeof(recs)
    finally:
        tracemalloc.stop()
    assert grown <= 96 * 1000 + 512  # the records alone: no tuple, no string of their own
    live = _pending.live()
    # A sender naming a new route in every span: each record its own tuple, the cache
    # emptied and filled again, every record's labels intact.
    many = [COMPILED(Span("chat", "m", 0.0, 1.0, route=f"/r{i}"), i) for i in range(10_000)]
    assert [r.route for r in many[::997]] == [f"/r{i}" for i in range(0, 10_000, 997)]
    assert _pending.live() == live + 10_000
    odd = COMPILED(Span("chat", "m", 0.0, 1.0), 5)
    odd.model = ["not", "hashable"]  # not the ingest's, but any object is kept
    assert odd.model == ["not", "hashable"] and odd.workload == "chat"

    class Label(str):
        def __hash__(self) -> int:
            raise ValueError("a label that runs code")

    # Only exact strs are shared: an equal object of another type is never swapped for the
    # cached one, and a label's own hash or equality never runs.
    one = COMPILED(Span(1, "m", 0.0, 1.0), 6)  # type: ignore[arg-type]
    yes = COMPILED(Span(True, "m", 0.0, 1.0), 7)  # type: ignore[arg-type]
    assert type(one.workload) is int and yes.workload is True
    odd.model = Label("m")
    assert type(odd.model) is Label
    assert type(COMPILED(Span("chat", "m", 0.0, 1.0), 8).model) is str
    assert len(recs) == 1000


def test_values_c_cannot_hold_raise_instead_of_wrapping() -> None:
    with pytest.raises(OverflowError):
        COMPILED(Span("w", "m", 0.0, 1.0, input_tokens=2**63), 0)
    with pytest.raises(OverflowError):  # the 63-bit field's limit
        COMPILED(Span("w", "m", 0.0, 1.0, input_tokens=2**62), 0)
    with pytest.raises(OverflowError):
        COMPILED(Span("w", "m", 0.0, 1.0, output_tokens=-(2**62)), 0)  # the None marker
    with pytest.raises(OverflowError):
        COMPILED(Span("w", "m", 0.0, 1.0, output_tokens=-(2**63)), 0)  # below int64
    with pytest.raises(TypeError):
        COMPILED(Span("w", "m", 0.0, 1.0, input_tokens=1.5), 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        COMPILED(Span("w", "m", "soon", 1.0), 0)  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        COMPILED(object(), 0)
    rec = COMPILED(Span("w", "m", 0.0, 1.0), 0)
    for name in ("model", "energy_j", "gflops", "input_tokens", "done"):
        with pytest.raises(AttributeError):
            delattr(rec, name)
    for name, bad in (
        ("start", None),
        ("end", "soon"),
        ("span_key", 2**63),
        ("parent_key", "c" * 16),
    ):
        with pytest.raises((TypeError, OverflowError)):
            setattr(rec, name, bad)
    assert (rec.start, rec.end, rec.dedup, rec.span_key, rec.parent_key) == (0.0, 1.0, 0, 0, 0)
    with pytest.raises(AttributeError):  # a RecordIndex finds the record by it
        rec.dedup = 1
    with pytest.raises(AttributeError):
        del rec.start
    assert math.isnan(COMPILED(Span("w", "m", 0.0, 1.0, math.nan), 0).gflops)


def test_records_are_freed_when_nothing_holds_them() -> None:
    from jouled.attribution import _pending

    before = _pending.live()
    recs = [COMPILED(Span(f"w{i}", "m", 0.0, 1.0), i) for i in range(100)]
    for rec in recs:
        rec.energy_j = {"cpu": 1.0}
    assert _pending.live() == before + 100
    del recs, rec
    assert _pending.live() == before
    with pytest.raises(AttributeError):
        COMPILED(object(), 0)
    assert _pending.live() == before  # a failed construction leaks nothing


def test_the_splitter_refuses_what_the_record_cannot_hold_without_changing_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Values ingest never produces (its rules cap tokens and make floats), from another
    # caller: refused as invalid (the stage counts ValueError so), nothing pushed out or
    # half-changed on the way.
    monkeypatch.setattr(spans_mod, "new_pending", COMPILED)
    splitter = spans_mod.SpanSplitter(max_pending_spans=2)
    ids = {"trace_id": "a" * 32, "span_id": "b" * 16}
    keys = spans_mod.id_key("a" * 32), spans_mod.id_key("b" * 16)
    assert splitter.add_span(Span("a", "m", 1.0, 2.0, **ids)) == "accepted"
    assert splitter.add_span(Span("a", "m", 1.5, 2.5)) == "accepted"
    with pytest.raises(ValueError, match="out of range"):
        splitter.add_span(Span("b", "m", 1.0, 2.0, input_tokens=2**63))  # full: would evict
    with pytest.raises(ValueError, match="out of range"):
        splitter.add_span(Span("b", "m", 10**400, 10**400))  # an int past float's range
    assert (splitter.pending, splitter.dropped) == (2, 0)
    with pytest.raises(ValueError, match="out of range"):
        splitter.amend("a", *keys, model="M2", gflops=None, tokens=(5, 2**63))
    rec = splitter._find("a", *keys)
    assert rec is not None
    assert (rec.model, rec.input_tokens, rec.output_tokens) == ("m", None, None)
    assert splitter.amend("a", *keys, model="M2", gflops=None, tokens=(5, 6))
    assert (rec.model, rec.input_tokens, rec.output_tokens) == ("M2", 5, 6)


# ---- IdIndex and RecordIndex: the joiner's and splitter's id indexes, against dicts ---------

_keys = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-40, 40),  # few keys: the same ones set, deleted and set again
    st.sampled_from([0, -1, 2**63 - 1, -(2**63), 1 << 40, 2 << 40, 3 << 40]),  # high bits only
)
_ops = st.lists(
    st.tuples(st.sampled_from(["set", "del", "get", "in", "item"]), _keys, st.integers(0, 9)),
    max_size=400,
)


@pytest.mark.parametrize("table", ["IdIndex", "RecordIndex"])
@given(ops=_ops)
def test_the_id_indexes_answer_as_a_dict_through_any_sequence_of_operations(
    table: str, ops: list[tuple[str, int, int]]
) -> None:
    from jouled.attribution import _pending

    def value_for(key: int, value: int) -> Any:
        if table == "RecordIndex":  # a record, under its own key
            return COMPILED(Span(f"w{value}", "m", 0.0, 1.0), key)
        return f"v{value}"

    index, ref = getattr(_pending, table)(), {}
    for op, key, value in ops:
        if op == "set":
            index[key] = ref[key] = value_for(key, value)
        elif op == "del":
            if key in ref:
                del index[key], ref[key]
            else:
                with pytest.raises(KeyError):
                    del index[key]
        elif op == "get":
            assert index.get(key) is ref.get(key)
            assert index.get(key, value) is ref.get(key, value)
        elif op == "in":
            assert (key in index) == (key in ref)
        elif key in ref:
            assert index[key] is ref[key]
        else:
            with pytest.raises(KeyError):
                index[key]
        assert len(index) == len(ref)
    for key, value in ref.items():
        assert index[key] is value


def test_the_id_index_holds_references_frees_them_and_refuses_what_is_not_an_int64() -> None:
    from jouled.attribution._pending import IdIndex

    class Value:
        pass

    index, value = IdIndex(), Value()
    before = sys.getrefcount(value)
    for key in range(5000):  # grows through several tables
        index[key] = value
    assert sys.getrefcount(value) == before + 5000
    for key in range(0, 5000, 2):
        del index[key]
    index[1] = value  # replaced: the old reference released
    assert sys.getrefcount(value) == before + 2500
    for key in range(10_000, 20_000):  # churn: tombstones are dropped as the table rebuilds
        index[key] = value
        del index[key]
    assert len(index) == 2500 and sys.getsizeof(index) < 64 * 2500
    del index
    assert sys.getrefcount(value) == before
    cyclic = IdIndex()
    holder = [cyclic]
    cyclic[1] = holder  # a cycle through the index: the collector frees it
    del cyclic, holder
    assert gc.collect() >= 2
    bad = IdIndex()
    with pytest.raises(TypeError, match="ints"):
        bad["1"] = value
    with pytest.raises(OverflowError):
        bad[2**63] = value
    with pytest.raises(TypeError):
        IdIndex(1)  # type: ignore[call-arg]
    assert len(bad) == 0 and bad.get(5, "d") == "d"


# ---- RecordIndex: the splitter's index, keyed by each record's own dedup -------------------


def test_the_record_index_holds_a_record_under_its_own_key_in_8_bytes_a_slot() -> None:
    from jouled.attribution._pending import IdIndex, RecordIndex

    recs = [COMPILED(Span("w", "m", 0.0, 1.0), key) for key in range(-5000, 5000, 7)]
    first = recs[0]
    before = sys.getrefcount(first)
    index, ids = RecordIndex(), IdIndex()
    for rec in recs:
        index[rec.dedup] = ids[rec.dedup] = rec
    assert sys.getrefcount(first) == before + 2
    assert len(index) == len(recs) and all(index[r.dedup] is r for r in recs)
    # The same table, the key read from the record: half the bytes of the id index.
    assert 2 * sys.getsizeof(index) - sys.getsizeof(RecordIndex()) == sys.getsizeof(ids)
    for rec in recs[::2]:
        del index[rec.dedup]
    assert len(index) == len(recs) - len(recs[::2])
    assert all((r.dedup in index) == (i % 2 == 1) for i, r in enumerate(recs))
    del index, ids
    assert sys.getrefcount(first) == before
    bad = RecordIndex()
    with pytest.raises(ValueError, match="own dedup"):
        bad[recs[1].dedup + 1] = recs[1]
    with pytest.raises(TypeError, match="Pending"):
        bad[3] = _Pending(Span("w", "m", 0.0, 1.0), 3)  # the Python record: a dict's job
    with pytest.raises(TypeError, match="ints"):
        bad["1"] = recs[1]
    assert len(bad) == 0 and bad.get(recs[1].dedup) is None


# Splitter operations for the compiled settle loop (``_pending.finish_all``) against the
# Python one: spans with and without ids (resends among them), a pending cap small enough to
# evict and truncate, ticks with energy, settles, retractions and a final flush.
_span_op = st.one_of(
    st.tuples(
        st.just("span"),
        st.sampled_from(["a", "b", "c"]),
        st.floats(0.0, 6.0, allow_nan=False),
        st.floats(0.0, 2.5, allow_nan=False),
        st.one_of(st.none(), st.floats(0.0, 50.0, allow_nan=False)),
        st.one_of(st.none(), st.integers(0, 12)),  # span id; None: no ids
    ),
    st.tuples(st.just("tick"), st.floats(0.0, 3.0, allow_nan=False)),
    st.tuples(st.just("settle"), st.floats(0.0, 4.0, allow_nan=False)),
    st.tuples(st.just("retract"), st.sampled_from(["a", "b", "c"]), st.integers(0, 12)),
)


def _settled_view(result: Any) -> tuple[Any, ...]:
    return (
        result.in_spans_j,
        result.outside_j,
        [
            (r.workload, r.model, dict(r.energy_j), r.gflops, r.duration_s, r.route, r.input_tokens)
            for r in result.requests
        ],
    )


@given(ops=st.lists(_span_op, max_size=60), cap=st.integers(1, 12))
def test_the_compiled_settle_loop_books_what_the_python_loop_books(
    ops: list[Any], cap: int
) -> None:
    assert spans_mod._c_finish_all is not None
    with pytest.MonkeyPatch.context() as mp:
        _run_both_settle_loops(ops, cap, mp)


def _run_both_settle_loops(ops: list[Any], cap: int, mp: pytest.MonkeyPatch) -> None:
    from jouled.attribution import _pending
    from jouled.attribution.spans import SpanSplitter, id_key

    mp.setattr(spans_mod, "new_pending", COMPILED)
    mp.setattr(spans_mod, "new_record_index", _pending.RecordIndex)
    mp.setattr(spans_mod, "new_time_queue", _pending.TimeQueue)
    splitters = [
        SpanSplitter(settle_seconds=1.0, max_pending_spans=cap, max_span_wait_s=2.0)
        for _ in range(2)
    ]
    t0, clock = 1.7e9, 1.7e9
    energy = {"a": {"cpu": 3.0}, "b": {"cpu": 1.0, "dram": 0.5}}
    for op in ops:
        results = []
        for compiled, splitter in zip((True, False), splitters, strict=True):
            mp.setattr(spans_mod, "_c_finish_all", _pending.finish_all if compiled else None)
            if op[0] == "span":
                _, workload, start, length, gflops, sid = op
                ids = {} if sid is None else {"trace_id": "t", "span_id": f"s{sid}"}
                span = Span(workload, "m", t0 + start, t0 + start + length, gflops, **ids)
                results.append(splitter.add_span(span))
            elif op[0] == "tick":
                results.append(splitter.add_tick(clock, clock + op[1], energy))
            elif op[0] == "settle":
                results.append(_settled_view(splitter.settle(t0 + op[1] + 4.0)))
            else:
                _, workload, sid = op
                results.append(splitter.retract(workload, id_key("t"), id_key(f"s{sid}")))
            # and what it holds: records left in the id index or a lane would be a leak
            held = (
                len(splitter._by_id),
                sum(len(lane.active) for lane in splitter._lanes.values()),
            )
            results.append((splitter.stats, splitter.pending, held, dict(splitter._count)))
        if op[0] == "tick":
            clock += op[1]
        assert results[:2] == results[2:]
    mp.setattr(spans_mod, "_c_finish_all", _pending.finish_all)
    flushed = _settled_view(splitters[0].flush())
    mp.setattr(spans_mod, "_c_finish_all", None)
    assert flushed == _settled_view(splitters[1].flush())
    assert splitters[0].pending == splitters[1].pending == 0


def test_the_compiled_settle_loop_refuses_records_it_cannot_read_before_changing_any() -> None:
    from jouled.attribution import _pending
    from jouled.attribution.spans import SettledRequest, SpanSplitter

    splitter = SpanSplitter()
    requests: list[Any] = []
    good = COMPILED(Span("a", "m", 1.0, 2.0))
    with pytest.raises(TypeError, match="Pending"):
        _pending.finish_all(
            splitter, [good, _Pending(Span("a", "m", 1.0, 2.0))], _pending.RecordIndex(),
            {"a": 2}, {"a": None}, {}, requests, SettledRequest,
        )  # fmt: skip
    assert not good.done and requests == [] and splitter.pending == 0
    with pytest.raises(TypeError, match="RecordIndex"):
        _pending.finish_all(splitter, [good], {}, {"a": 1}, {}, {}, requests, SettledRequest)


@given(
    entries=st.lists(
        st.tuples(
            st.integers(-50, 50),  # key
            st.one_of(
                st.floats(-5.0, 5.0, allow_nan=False), st.none()
            ),  # a record's end, or another value
        ),
        max_size=40,
    ),
    asked=st.lists(st.integers(-60, 60), max_size=60),
    due=st.integers(-3, 25),
    memory_s=st.sampled_from([0.0, 15.0, 0.5, 2.25]),
    as_array=st.booleans(),
)
def test_forget_lone_deletes_what_the_joiners_python_loop_deletes(
    entries: list[tuple[int, float | None]],
    asked: list[int],
    due: int,
    memory_s: float,
    as_array: bool,
) -> None:
    """``IdIndex.forget_lone`` against ``RequestJoiner._forget_records``'s rule: a compiled
    record due at ``due`` goes; a record due at another second, another object (a request of
    several spans) and an absent key stay."""
    from array import array

    from jouled.attribution._pending import IdIndex

    index: Any = IdIndex()
    ref: dict[int, Any] = {}
    for key, end in entries:
        value = COMPILED(Span("w", "m", -10.0, end)) if end is not None else object()
        index[key] = ref[key] = value
    want = 0
    for key in asked:
        got = ref.get(key)
        if got is not None and type(got) is COMPILED and math.ceil(got.end + memory_s) == due:
            del ref[key]
            want += 1
    keys = array("q", asked) if as_array else list(asked)
    assert index.forget_lone(keys, due, memory_s) == want
    assert len(index) == len(ref)
    for key, value in ref.items():
        assert index[key] is value


def test_forget_lone_refuses_a_second_past_exact_doubles_and_keys_that_are_not_int64() -> None:
    from jouled.attribution._pending import IdIndex

    index: Any = IdIndex()
    index[1] = COMPILED(Span("w", "m", 0.0, 1.0))
    with pytest.raises(ValueError, match="2\\^53"):
        index.forget_lone([1], 2**53, 0.0)
    with pytest.raises(TypeError):
        index.forget_lone(["1"], 1, 0.0)
    with pytest.raises(OverflowError):
        index.forget_lone([2**64], 1, 0.0)
    assert len(index) == 1 and index.forget_lone(b"\x01", 1, 0.0) == 1  # bytes: ints


def _same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN and -0.0 told from 0.0 (repr does both)."""
    return repr(a) == repr(b)


_energy = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(["cpu", "dram", "gpu"]), st.floats(), max_size=3),
)


@given(
    recs=st.lists(
        st.tuples(_time, st.floats(0.0, 1e9), st.one_of(st.none(), st.floats(0.0, 1e12)), _energy),
        max_size=20,
    ),
    fractions=st.lists(st.floats(), min_size=20, max_size=20),
    parts=st.dictionaries(st.sampled_from(["cpu", "dram", "gpu", "psys"]), st.floats()),
)
@example(  # -0.0 joules: kept as -0.0 in a new dict, 0.0 + -0.0 = 0.0 added to a held one
    recs=[(1.0, 1.0, None, None), (1.0, 1.0, None, {"dram": 1.0})],
    fractions=[0.5, 0.5] + [0.0] * 18,
    parts={"cpu": -0.0},
)
def test_the_compiled_tick_step_packs_and_shares_as_the_python_loop(
    recs: list[tuple[float, float, float | None, dict[str, float] | None]],
    fractions: list[float],
    parts: dict[str, float],
) -> None:
    """``_pending.rates`` against ``_settle_tick``'s tuples (the same fractions out of
    ``split_fractions``), and ``_pending.share_out`` against its loop (the same energy in
    each record, new dicts and added ones)."""
    from jouled.attribution import _pending
    from jouled.attribution.spans import split_fractions

    def made() -> list[Any]:
        out = []
        for start, length, gflops, energy in recs:
            rec = COMPILED(Span("w", "m", start, start + length, gflops))
            rec.energy_j = dict(energy) if energy is not None else None
            out.append(rec)
        return out

    active, twins = made(), made()
    tuples = [
        (r.start, r.end, r.gflops / (r.end - r.start) if r.end > r.start else 0.0, True)
        if r.gflops is not None
        else (r.start, r.end, 0.0, False)
        for r in active
    ]
    packed = _pending.rates(active)
    assert isinstance(packed, bytes) and len(packed) == 32 * len(active)
    unpacked = [(s, e, r, has == 1.0) for s, e, r, has in struct.iter_unpack("4d", packed)]
    assert _same(unpacked, tuples)
    w0, w1 = min((t[0] for t in tuples), default=0.0), max((t[1] for t in tuples), default=1.0)

    def outcome(spans: Any) -> Any:  # the fractions, or the error (ticks ~1e308 long)
        try:
            return split_fractions(spans, w0, w1)
        except (OverflowError, ValueError) as exc:
            return type(exc)

    assert _same(outcome(packed), outcome(tuples))
    fracs, items = fractions[: len(active)], list(parts.items())
    assert _pending.share_out(active, fracs, items) is True
    for rec, frac in zip(twins, fracs, strict=True):  # _settle_tick's loop
        if frac > 0.0:
            got = rec.energy_j
            if got is None:
                rec.energy_j = {component: j * frac for component, j in items}
            else:
                for component, j in items:
                    got[component] = got.get(component, 0.0) + j * frac
    assert _same([r.energy_j for r in active], [r.energy_j for r in twins])


def test_the_compiled_tick_step_declines_what_it_does_not_take_before_changing_any() -> None:
    from jouled.attribution import _pending

    rec = COMPILED(Span("w", "m", 1.0, 2.0))
    assert _pending.rates([rec, _Pending(Span("w", "m", 1.0, 2.0))]) is None
    assert _pending.rates((rec,)) is None
    for args in [
        ([rec], [1.0], [("cpu", 1)]),  # int joules
        ([rec], [1], [("cpu", 1.0)]),  # int fraction
        ([rec], [1.0, 1.0], [("cpu", 1.0)]),  # lengths differ
        ([rec, _Pending(Span("w", "m", 1.0, 2.0))], [1.0, 1.0], [("cpu", 1.0)]),
    ]:
        assert _pending.share_out(*args) is False
        assert rec.energy_j is None
    rec.energy_j = {"cpu": 1}  # an int held (its addition could run Python code): declined
    assert _pending.share_out([rec], [0.5], [("cpu", 3.0)]) is False
    assert rec.energy_j == {"cpu": 1}
    held = {"cpu": 1.0}
    rec.energy_j = held

    class Shifty(float):  # its addition would run Python code: declined, not run
        def __add__(self, other: object) -> float:
            rec.energy_j = None  # would free the dict being added to
            return 0.0

    held["dram"] = Shifty(1.0)
    assert _pending.share_out([rec], [0.5], [("dram", 3.0)]) is False
    assert rec.energy_j is held and held["cpu"] == 1.0
    rec.energy_j = [1.0]  # not a dict: declined
    assert _pending.share_out([rec], [0.5], [("cpu", 3.0)]) is False


def test_the_record_reads_a_spans_slots_and_sees_a_changed_or_other_type() -> None:
    """The record reads ``Span``'s slots straight (a cache per attribute name of the type and
    its version): another type, a subclass overriding an attribute, and a class changed after
    the cache was filled are all read as Python reads them."""
    from dataclasses import dataclass

    @dataclass(slots=True)
    class Other:  # the same fields, another slots class
        workload: str = "w"
        model: str = "m"
        start: float = 1.0
        end: float = 2.0
        gflops: float | None = None
        route: str = ""
        input_tokens: int | None = None
        output_tokens: int | None = None

    class Later(Span):
        __slots__ = ()

        @property  # type: ignore[misc]
        def model(self) -> str:  # a property over the slot: Python reads the property
            return "from-property"

        @model.setter
        def model(self, value: str) -> None:
            pass

    first = COMPILED(Span("w", "m", 1.0, 2.0, 3.0))
    assert (first.workload, first.model, first.end, first.gflops) == ("w", "m", 2.0, 3.0)
    other = COMPILED(Other(model="o", end=5.0))
    assert (other.model, other.end, other.gflops) == ("o", 5.0, None)
    assert COMPILED(Later("w", "m", 1.0, 2.0)).model == "from-property"

    class Plain:  # no slots: attributes from the instance dict
        def __init__(self) -> None:
            for name in ("workload", "model", "route"):
                setattr(self, name, name[0])
            self.start, self.end, self.gflops = 1.0, 4.0, 2.0
            self.input_tokens = self.output_tokens = None

    assert (COMPILED(Plain()).model, COMPILED(Plain()).end) == ("m", 4.0)

    class Asked(Span):  # its own __getattribute__: Python asks it each time, and so must C
        __slots__ = ()

        def __getattribute__(self, name: str) -> Any:
            return 5.0 if name == "start" else object.__getattribute__(self, name)

    asked = Asked("w", "m", 1.0, 10.0)
    assert [COMPILED(asked).start for _ in range(3)] == [5.0, 5.0, 5.0]
    saved = Other.end
    made_before = Other(end=5.0)  # its slot is set
    assert COMPILED(made_before).end == 5.0  # the cache holds Other's slot now
    try:
        Other.end = property(lambda self: 9.0, lambda self, v: None)  # type: ignore
        assert COMPILED(Other()).end == 9.0  # the type changed: looked up again
        assert COMPILED(made_before).end == 9.0  # the property, not the slot
    finally:
        Other.end = saved  # type: ignore[method-assign]
    assert COMPILED(Other(end=6.0)).end == 6.0 and COMPILED(Span("w", "m", 0.0, 7.0)).end == 7.0
