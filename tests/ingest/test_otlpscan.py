"""The span scanners (jouled/ingest/otlpscan.py, _otlpscan.c) against each other and upb.

Differential: random Span/ScopeSpans messages made by the generated protobuf classes, random
wire-level messages (fields repeated, wrong wire types, unknown fields and groups, merged
``value`` fields), and hostile bytes (every truncation, byte flips). Wherever upb parses the
bytes, the C scanner gives the very same tuples (compared by ``repr``: NaN, -0.0, bool vs int
and dict order count); where upb refuses them, the C scanner may raise ``ValueError`` or
return, never crash (the decoder validates with upb first).
"""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys
from typing import Any

import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span, Status

from jouled.ingest import otlpscan
from jouled.ingest.otlpscan import pure_scan_scope, pure_scan_span

try:
    from jouled.ingest import _otlpscan as c_scan
except ImportError:  # not built here: only the pure path is tested
    c_scan = None  # type: ignore[assignment]

needs_c = pytest.mark.skipif(c_scan is None, reason="jouled.ingest._otlpscan not built")
WANTED = frozenset({"http.route", "gen_ai.request.model", "jouled.gflops", "", "ü.κ"})
KEYS = st.sampled_from([*sorted(WANTED), "http.method", "other"]) | st.text(max_size=6)

# --- wire-format helpers (protobuf encoding spec) ----------------------------------------------


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def ld(number: int, payload: bytes) -> bytes:
    return tag(number, 2) + varint(len(payload)) + payload


def vi(number: int, value: int) -> bytes:
    return tag(number, 0) + varint(value)


def f64(number: int, value: int) -> bytes:
    return tag(number, 1) + struct.pack("<Q", value & (1 << 64) - 1)


def group(number: int, body: bytes) -> bytes:
    return tag(number, 3) + body + tag(number, 4)


# --- comparison -------------------------------------------------------------------------------


def outcome(scan: Any, data: bytes | memoryview) -> tuple[str, Any]:
    try:
        return "ok", repr(scan(data, WANTED))
    except (DecodeError, ValueError) as exc:
        return "error", type(exc).__name__


def agree(data: bytes, *, scope: bool) -> tuple[str, Any]:
    """Pure and C outcome on data; asserts the C contract. Returns the pure outcome."""
    pure = outcome(pure_scan_scope if scope else pure_scan_span, data)
    if c_scan is not None:
        c = outcome(c_scan.scan_scope if scope else c_scan.scan_span, data)
        if pure[0] == "ok":
            assert c == pure
        elif c[0] == "error":
            assert c[1] == "ValueError" or c[1] == "UnicodeDecodeError"
    return pure


# --- messages made by the generated classes --------------------------------------------------

NESTED_ARRAY = AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1)]))
NESTED_KVLIST = AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="a")]))
# (AnyValue, the value jouled reads)
VALUES: Any = st.one_of(
    st.just((AnyValue(), None)),
    st.text().map(lambda s: (AnyValue(string_value=s), s)),
    st.booleans().map(lambda b: (AnyValue(bool_value=b), b)),
    st.integers(-(2**63), 2**63 - 1).map(lambda i: (AnyValue(int_value=i), i)),
    st.floats().map(lambda x: (AnyValue(double_value=x), x)),
    st.binary(max_size=8).map(lambda b: (AnyValue(bytes_value=b), None)),
    st.just((NESTED_ARRAY, None)),
    st.just((NESTED_KVLIST, None)),
    st.integers(-(2**31), 2**31 - 1).map(lambda i: (AnyValue(string_value_strindex=i), None)),
)
ATTRIBUTES = st.lists(st.tuples(KEYS, VALUES, st.booleans()), max_size=12)
IDS = st.binary(max_size=20)


@st.composite
def spans(draw: Any) -> tuple[Span, dict[str, Any] | None]:
    """A random Span and the attributes a scanner must read off it (the oracle)."""
    attributes = draw(ATTRIBUTES)
    expected: dict[str, Any] = {}
    kvs = []
    for key, (value, read), has_value in attributes:
        kvs.append(KeyValue(key=key, value=value) if has_value else KeyValue(key=key))
        if key in WANTED:
            expected[key] = read if has_value else None
    span = Span(
        trace_id=draw(IDS),
        span_id=draw(IDS),
        parent_span_id=draw(IDS),
        trace_state=draw(st.text(max_size=4)),
        name=draw(st.text()),
        kind=draw(st.integers(-(2**31), 2**31 - 1)),  # type: ignore[arg-type]
        start_time_unix_nano=draw(st.integers(0, 2**64 - 1)),
        end_time_unix_nano=draw(st.integers(0, 2**64 - 1)),
        attributes=kvs,
        dropped_attributes_count=draw(st.integers(0, 2**32 - 1)),
        events=[Span.Event(name="e", attributes=kvs[:1])] * draw(st.integers(0, 2)),
        links=[Span.Link(trace_id=b"t", attributes=kvs[:2])] * draw(st.integers(0, 2)),
        status=Status(message=draw(st.text(max_size=4)), code=draw(st.integers(0, 2))),  # type: ignore[arg-type]
        flags=draw(st.integers(0, 2**32 - 1)),
    )
    return span, expected or None


@given(spans())
@settings(max_examples=300, deadline=None)
def test_span_tuple_reads_what_upb_reads(drawn: tuple[Span, dict[str, Any] | None]) -> None:
    span, expected_attrs = drawn
    data = span.SerializeToString()
    expected = (
        span.trace_id,
        span.span_id,
        span.parent_span_id,
        span.kind,
        span.start_time_unix_nano,
        span.end_time_unix_nano,
        span.name,
        bool(span.links),
        expected_attrs,
    )
    assert agree(data, scope=False) == ("ok", repr(expected))
    assert agree(ScopeSpans(spans=[span, span]).SerializeToString(), scope=True) == (
        "ok",
        repr([expected, expected]),
    )


@given(st.lists(spans().map(lambda d: d[0]), max_size=5), st.text(max_size=5))
@settings(max_examples=100, deadline=None)
def test_scope_spans_in_order(spans_: list[Span], schema_url: str) -> None:
    message = ScopeSpans(spans=spans_, schema_url=schema_url)
    message.scope.name = "fastapi"
    _, pure = agree(message.SerializeToString(), scope=True)
    assert pure == repr([pure_scan_span(s.SerializeToString(), WANTED) for s in spans_])


# --- hand-made wire tricks ------------------------------------------------------------------

TRICKS: dict[str, tuple[bytes, dict[str, Any]]] = {
    # name: (Span bytes, what the tuple must hold; index by field name)
    "scalar fields repeated: the last wins": (
        ld(5, b"first") + vi(6, 2) + ld(1, b"a") + ld(5, b"second") + vi(6, 3) + ld(1, b"bb"),
        {"name": "second", "kind": 3, "trace_id": b"bb"},
    ),
    "two value fields merge: the last member set wins": (
        ld(9, ld(1, b"http.route") + ld(2, ld(1, b"/x")) + ld(2, vi(3, 7))),
        {"attrs": {"http.route": 7}},
    ),
    "a message member after a scalar is None": (
        ld(9, ld(1, b"http.route") + ld(2, vi(2, 1)) + ld(2, ld(5, b""))),
        {"attrs": {"http.route": None}},
    ),
    "a scalar after a message member, in one AnyValue": (
        ld(9, ld(1, b"http.route") + ld(2, ld(6, b"") + f64(4, 0x3FF8000000000000))),
        {"attrs": {"http.route": 1.5}},
    ),
    "string_value_strindex is a member read as None": (
        ld(9, ld(1, b"http.route") + ld(2, ld(1, b"/x") + vi(8, 3))),
        {"attrs": {"http.route": None}},
    ),
    "key after value, key given twice": (
        ld(9, ld(2, ld(1, b"v")) + ld(1, b"other") + ld(1, b"http.route")),
        {"attrs": {"http.route": "v"}},
    ),
    "duplicate keys: the later wins, first position kept": (
        ld(9, ld(1, b"jouled.gflops") + ld(2, vi(3, 1)))
        + ld(9, ld(1, b"http.route") + ld(2, ld(1, b"r")))
        + ld(9, ld(1, b"jouled.gflops") + ld(2, vi(2, 5))),
        {"attrs": {"jouled.gflops": True, "http.route": "r"}},
    ),
    "wrong wire types are unknown fields": (
        vi(7, 5)  # start as a varint
        + ld(6, b"\x02")  # kind as bytes
        + vi(9, 1)  # an attribute as a varint
        + vi(13, 1)  # a link as a varint
        + f64(5, 0)  # name as fixed64
        + ld(9, vi(1, 1) + ld(1, b"http.route") + ld(2, ld(3, b"\x05") + tag(2, 5) + b"\0\0\0\1")),
        {"start_ns": 0, "kind": 0, "has_links": False, "name": "", "attrs": {"http.route": None}},
    ),
    "kind truncated to int32, times as unsigned": (
        vi(6, 2**32 + 2) + f64(7, -1) + tag(8, 0) + varint(-1) + f64(8, 2**63),
        {"kind": 2, "start_ns": 2**64 - 1, "end_ns": 2**63},
    ),
    "negative kind": (vi(6, -3), {"kind": -3}),
    "unknown fields and groups skipped": (
        vi(100, 1)
        + tag(101, 5)
        + b"abcd"
        + f64(102, 0)
        + ld(103, b"\xff\xff")
        + group(104, vi(1, 1) + group(2, ld(3, b"x")) + tag(4, 5) + b"wxyz")
        + group(9, ld(1, b"http.route"))  # attributes as a group: unknown
        + ld(5, b"n")
        + ld(13, b""),
        {"name": "n", "has_links": True, "attrs": None},
    ),
    "empty span": (b"", {"trace_id": b"", "kind": 0, "name": "", "attrs": None}),
    "key absent is the empty key": (ld(9, ld(2, vi(3, 9))), {"attrs": {"": 9}}),
    "long varint encodings": (
        tag(6, 0) + b"\x82\x80\x80\x80\x80\x80\x80\x80\x80\x00",
        {"kind": 2},
    ),
}
FIELDS = ("trace_id", "span_id", "parent_span_id", "kind", "start_ns", "end_ns", "name")
FIELDS += ("has_links", "attrs")


@pytest.mark.parametrize("name", sorted(TRICKS))
def test_wire_tricks_as_upb(name: str) -> None:
    data, want = TRICKS[name]
    assert agree(data, scope=False)[0] == "ok"
    got = pure_scan_span(data, WANTED)
    for field, value in want.items():
        assert repr(got[FIELDS.index(field)]) == repr(value)
    assert agree(ld(2, data) + ld(1, b"") + ld(2, data) + vi(3, 1), scope=True) == (
        "ok",
        repr([got, got]),
    )


@pytest.mark.parametrize(
    "data",
    [
        b"\x0a",  # a length missing
        b"\x0a\x05ab",  # a length past the end
        b"\x30",  # a varint missing
        b"\x30" + b"\xff" * 10 + b"\x01",  # a varint over 10 bytes
        b"\x39abc",  # fixed64 truncated
        b"\x1d\x00",  # fixed32 truncated
        b"\x0c",  # an end-group with no group
        b"\x0b\x08\x01",  # a group never closed
        b"\x0b\x14",  # a group closed by another number
        b"\x0e\x00",  # wire type 6
        b"\x0f\x00",  # wire type 7
        b"\x00\x00",  # field number 0
        b"\x80\x80\x80\x80\x80\x01\x00",  # a tag over 5 bytes
        ld(5, b"\xff"),  # a name not UTF-8
        ld(9, ld(1, b"http.route") + ld(2, ld(1, b"\xed\xa0\x80"))),  # a wanted value: surrogate
        ld(9, ld(1, b"http.route") + ld(2, b"\x12\x09")),  # an AnyValue truncated
        b"\x4a\x04\x0a\x05ab",  # a KeyValue's key past the KeyValue
    ],
)
def test_malformed_span_is_an_error_in_both(data: bytes) -> None:
    pure = agree(data, scope=False)
    assert pure == ("error", "DecodeError")
    if c_scan is not None:
        with pytest.raises(ValueError):
            c_scan.scan_span(data, WANTED)
        with pytest.raises(ValueError):
            c_scan.scan_scope(ld(2, data), WANTED)


def test_what_the_c_scanner_skips_is_left_to_upb() -> None:
    """Bytes the C scanner does not read (a key nobody wants, a trace_state, an event) are not
    checked by it: upb has validated them (``otlpscan.read_scope``)."""
    for data in (ld(9, ld(1, b"\xc3")), ld(3, b"\xff"), ld(11, b"\x00")):
        assert agree(data, scope=False) == ("error", "DecodeError")
        if c_scan is not None:
            assert c_scan.scan_span(data, WANTED)[-1] is None


@needs_c
def test_wanted_must_be_a_set_of_str() -> None:
    data = ld(9, ld(1, b"http.route") + ld(2, ld(1, b"/x")))
    with pytest.raises(TypeError, match="set of str"):
        c_scan.scan_span(data, frozenset({"http.route", 1}))  # type: ignore[arg-type]
    # A key that is no UTF-8 (a lone surrogate) matches nothing, as in upb's decoded keys.
    assert c_scan.scan_span(data, frozenset({"\ud800", "http.route"}))[-1] == {"http.route": "/x"}
    assert c_scan.scan_span(data, frozenset())[-1] is None


@pytest.mark.parametrize("depth", [1, 50, 99, 100, 101, 200, 5000])
def test_nested_groups_as_upb_deep_ones_raise_not_crash(depth: int) -> None:
    data = ld(5, b"n") + tag(20, 3) * depth + tag(20, 4) * depth + group(21, b"") * 200
    pure = agree(data, scope=False)
    assert pure[0] == ("ok" if depth <= 100 else "error")  # upb: 100 levels at most
    if c_scan is not None and depth > 100:
        with pytest.raises(ValueError, match="too deep"):
            c_scan.scan_span(data, WANTED)


# --- random wire-level messages -----------------------------------------------------------

SMALL_INTS = st.integers(0, 2**64 - 1) | st.integers(-5, 5)


def junk(numbers: Any, unknown: Any) -> Any:
    """One field upb skips: a number from numbers with a wire type other than its own, or an
    unknown number (any wire type), or a group (skipped whole, whatever it holds)."""
    payload = st.binary(max_size=6) | st.text(max_size=4).map(str.encode)
    leaf = st.one_of(
        st.builds(vi, numbers | unknown, SMALL_INTS),
        st.builds(f64, numbers | unknown, SMALL_INTS),
        st.builds(lambda n, b: tag(n, 5) + b, numbers | unknown, st.binary(min_size=4, max_size=4)),
        st.builds(ld, unknown, payload),
    )
    anything = st.recursive(
        leaf | st.builds(ld, numbers, payload),
        lambda inner: st.builds(lambda n, fs: group(n, b"".join(fs)), numbers, st.lists(inner)),
        max_leaves=4,
    )
    return leaf | st.builds(
        lambda n, fs: group(n, b"".join(fs)), numbers | unknown, st.lists(anything)
    )


ANY_VALUE_FIELD = st.one_of(
    st.builds(ld, st.just(1), st.text(max_size=5).map(str.encode)),
    st.builds(vi, st.sampled_from([2, 3]), SMALL_INTS),
    st.builds(f64, st.just(4), SMALL_INTS),
    st.builds(ld, st.sampled_from([5, 6, 7]), st.just(b"") | st.just(ld(1, vi(3, 1)))),
    st.builds(vi, st.just(8), SMALL_INTS),  # string_value_strindex (profiles): None
    junk(st.integers(1, 8), st.integers(9, 40)),
)
ANY_VALUE = st.lists(ANY_VALUE_FIELD, max_size=4).map(b"".join)
KEY_VALUE_FIELD = st.one_of(
    st.builds(ld, st.just(1), KEYS.map(str.encode)),
    st.builds(ld, st.just(2), ANY_VALUE),
    st.builds(vi, st.just(3), SMALL_INTS),  # key_strindex (profiles): not the key
    junk(st.integers(1, 3), st.integers(4, 40)),
)
KEY_VALUE = st.lists(KEY_VALUE_FIELD, max_size=4).map(b"".join)
SPAN_FIELD = st.one_of(
    st.builds(ld, st.sampled_from([1, 2, 4]), st.binary(max_size=9)),
    st.builds(ld, st.just(13), st.just(b"") | st.just(ld(1, b"t") + vi(4, 1))),
    st.builds(ld, st.just(5), st.text(max_size=5).map(str.encode)),
    st.builds(vi, st.just(6), SMALL_INTS),
    st.builds(f64, st.sampled_from([7, 8]), SMALL_INTS),
    st.builds(ld, st.just(9), KEY_VALUE),
    st.builds(ld, st.just(9), KEY_VALUE),
    junk(st.integers(1, 16), st.integers(17, 40) | st.integers(17, 2**29 - 1)),
)
SPAN = st.lists(SPAN_FIELD, max_size=12).map(b"".join)
SCOPE_FIELD = st.builds(ld, st.just(2), SPAN) | junk(st.integers(1, 3), st.integers(4, 40))
SCOPE = st.lists(SCOPE_FIELD, max_size=5).map(b"".join)


@given(SPAN)
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(ld(9, ld(2, ld(1, b"x") + vi(2, 1)) + ld(1, b"http.route") + ld(2, ld(7, b""))))
@example(ld(5, b"n") + b"\x0b\x00\x0c\x0c")  # field 0 in a skipped group: upb takes it
@example(ld(9, ld(1, b"http.route") + b"\x13\x03\x04\x14" + ld(2, ld(1, b"/x"))))
def test_random_wire_spans_agree(data: bytes) -> None:
    assert agree(data, scope=False)[0] == "ok"


@given(SCOPE)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_wire_scopes_agree(data: bytes) -> None:
    assert agree(data, scope=True)[0] == "ok"


# --- hostile bytes --------------------------------------------------------------------------


def sample_scope() -> bytes:
    kvs = [
        KeyValue(key="http.route", value=AnyValue(string_value="/v1/ünïcode")),
        KeyValue(key="jouled.gflops", value=AnyValue(double_value=math.nan)),
        KeyValue(key="gen_ai.request.model", value=NESTED_ARRAY),
        KeyValue(key="http.method", value=AnyValue(string_value="POST")),
        KeyValue(key="", value=AnyValue(int_value=-(2**63))),
    ]
    span = Span(
        trace_id=b"\x01" * 16,
        span_id=b"\x02" * 8,
        parent_span_id=b"\x03" * 8,
        name="POST /x",
        kind=Span.SpanKind.SPAN_KIND_SERVER,
        start_time_unix_nano=1,
        end_time_unix_nano=2**64 - 1,
        attributes=kvs,
        links=[Span.Link(trace_id=b"t")],
        status=Status(code=Status.StatusCode.STATUS_CODE_ERROR),
    )
    message = ScopeSpans(spans=[span, Span(name="second", attributes=kvs[::-1])])
    message.scope.name = "s"
    return message.SerializeToString()


def test_every_truncation_raises_or_agrees() -> None:
    data = sample_scope()
    assert agree(data, scope=True)[0] == "ok"
    for end in range(len(data)):
        agree(data[:end], scope=True)
        agree(data[end:], scope=True)
    span = ScopeSpans.FromString(data).spans[0].SerializeToString()
    for end in range(len(span)):
        agree(span[:end], scope=False)


@given(st.data())
@settings(max_examples=500, deadline=None)
def test_byte_flips_raise_or_agree(data: st.DataObject) -> None:
    body = bytearray(sample_scope())
    for _ in range(data.draw(st.integers(1, 4))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    agree(bytes(body), scope=True)


# --- the API --------------------------------------------------------------------------------


@needs_c
def test_c_takes_memoryview_and_checks_arguments() -> None:
    data = sample_scope()
    view = memoryview(b"xx" + data)[2:]
    assert repr(c_scan.scan_scope(view, WANTED)) == repr(pure_scan_scope(data, WANTED))
    from_bytearray = c_scan.scan_scope(bytearray(data), set(WANTED))  # type: ignore[arg-type]
    assert repr(from_bytearray) == repr(c_scan.scan_scope(data, WANTED))
    with pytest.raises(TypeError):
        c_scan.scan_scope(data, ["http.route"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        c_scan.scan_span("text", WANTED)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        c_scan.scan_span(data)  # type: ignore[call-arg]
    with pytest.raises(BufferError):
        c_scan.scan_span(memoryview(bytes(8))[::2], WANTED)  # not contiguous


def test_read_validates_with_upb_on_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = ld(2, ld(3, b"\xff"))  # trace_state not UTF-8: the C scanner never looks at it
    for compiled in {False, otlpscan.AVAILABLE}:
        monkeypatch.setattr(otlpscan, "COMPILED", compiled)
        with pytest.raises(DecodeError):
            otlpscan.read_scope(bad, WANTED)
        with pytest.raises(DecodeError):
            otlpscan.read_span(bad[2:], WANTED)
        good = sample_scope()
        assert repr(otlpscan.read_scope(good, WANTED)) == repr(pure_scan_scope(good, WANTED))
        assert repr(otlpscan.scan_scope(good, WANTED)) == repr(pure_scan_scope(good, WANTED))


def test_pure_python_forced_by_environment() -> None:
    code = (
        "import sys; from jouled.ingest import otlpscan;"
        "print(otlpscan.COMPILED, 'jouled.ingest._otlpscan' in sys.modules)"
    )
    for value, compiled in (("1", False), ("0", c_scan is not None)):
        env = {**os.environ, "JOULED_PURE_PYTHON": value}
        argv = [sys.executable, "-c", code]
        out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
        assert out.stdout.split() == [str(compiled)] * 2
