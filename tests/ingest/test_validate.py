"""The compiled check of an OTLP ScopeSpans or Span (``_otlpscan.validate``) accepts exactly
what upb's parse accepts: random wire-level messages (unknown fields, groups, fields of the
wrong wire type), those messages cut short and with bytes changed, invalid UTF-8 in every
string field at every depth, and nesting around upb's depth limit. It stands for upb's parse
on the compiled path (``otlpscan.check_scope``), so a difference is a body accepted or
refused wrongly."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span

from jouled.ingest import otlpscan
from tests.ingest.test_otlpscan import SCOPE, SPAN, f64, group, ld, sample_scope, tag, vi

pytestmark = pytest.mark.skipif(
    otlpscan._c_validate is None, reason="jouled.ingest._otlpscan not built"
)
SCOPE_TABLE = otlpscan.schema_table(ScopeSpans.DESCRIPTOR)
SPAN_TABLE = otlpscan.schema_table(Span.DESCRIPTOR)


def upb_ok(data: bytes, message: Any) -> bool:
    try:
        message.FromString(data)
    except DecodeError:
        return False
    return True


def ours_ok(data: bytes, table: bytes | None) -> bool:
    assert otlpscan._c_validate is not None and table is not None
    try:
        otlpscan._c_validate(data, table)
    except ValueError:
        return False
    return True


def agree(data: bytes, *, scope: bool = True) -> bool:
    """Both verdicts on data (a ScopeSpans, else a Span), asserted equal; returns upb's."""
    message, table = (ScopeSpans, SCOPE_TABLE) if scope else (Span, SPAN_TABLE)
    expected = upb_ok(data, message)
    assert ours_ok(data, table) == expected, data
    return expected


def test_the_tables_cover_the_otlp_schema() -> None:
    assert SCOPE_TABLE is not None and SPAN_TABLE is not None
    assert SCOPE_TABLE[0] == 10  # ScopeSpans, InstrumentationScope, Span, KeyValue, ...
    assert otlpscan.COMPILED  # the check that runs is the compiled one


@given(SCOPE)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_wire_scopes(data: bytes) -> None:
    agree(data)


@given(SPAN)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_wire_spans(data: bytes) -> None:
    agree(data, scope=False)
    agree(ld(2, data))


@given(SCOPE, st.data())
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_changed_bytes(data: bytes, draw: st.DataObject) -> None:
    body = bytearray(data or sample_scope())
    for _ in range(draw.draw(st.integers(1, 4))):
        at = draw.draw(st.integers(0, len(body) - 1))
        body[at] = draw.draw(st.sampled_from([0x00, 0x80, 0xFF, 0x08, 0x0C, 0xED, 0xC0])
                             | st.integers(0, 255))  # fmt: skip
    agree(bytes(body))


def test_every_cut_of_a_real_scope() -> None:
    data = sample_scope()
    assert agree(data)
    for end in range(len(data)):
        agree(data[:end])
        agree(data[end:])


@given(st.binary(max_size=64))
@settings(max_examples=500, deadline=None)
def test_random_bytes(data: bytes) -> None:
    agree(data)
    agree(data, scope=False)


BAD_UTF8 = [
    b"\xff",
    b"\xc0\x80",  # overlong NUL
    b"\xc1\xbf",  # overlong
    b"\xe0\x80\x80",  # overlong
    b"\xed\xa0\x80",  # a surrogate
    b"\xf4\x90\x80\x80",  # past U+10FFFF
    b"\xf5\x80\x80\x80",
    b"\xe2\x82",  # cut short
    b"\x80",  # a lone continuation byte
    b"ok\xf0\x9f\x98",  # cut short after ASCII
    b"12345678\xa0",  # past the 8-byte ASCII step
]
GOOD_UTF8 = [
    b"",
    b"\x00",
    b"\xf0\x9f\x98\x80",
    b"\xf4\x8f\xbf\xbf",
    b"\xed\x9f\xbf",
    b"ascii only!",
]


def _string_paths(text: bytes) -> list[tuple[bytes, bool]]:
    """(message, is a ScopeSpans) with ``text`` in each string field OTLP has, and in bytes
    fields (never checked) and unknown fields for contrast."""
    any_str = ld(1, text)
    kv = ld(1, text) + ld(2, any_str)
    nested = ld(2, ld(5, ld(1, ld(6, ld(1, ld(1, b"k") + ld(2, any_str))))))  # array, kvlist
    span_fields = [
        ld(3, text),  # trace_state
        ld(5, text),  # name
        ld(9, kv),  # attribute key and value
        ld(9, ld(1, b"k") + nested),
        ld(11, ld(2, text)),  # event name
        ld(11, ld(3, kv)),  # event attribute
        ld(13, ld(3, text)),  # link trace_state
        ld(13, ld(4, kv)),
        ld(15, ld(2, text)),  # status message
        ld(1, text),  # trace_id: bytes
        ld(9, ld(2, ld(7, text))),  # bytes_value
        ld(40, text),  # unknown
        ld(15, ld(1, text)),  # Status field 1: reserved, unknown
        ld(6, text),  # kind sent delimited: an unknown field
    ]
    out = [(span, False) for span in span_fields]
    out += [(ld(2, span), True) for span in span_fields]
    out += [
        (ld(1, ld(1, text)), True),  # scope name
        (ld(1, ld(2, text)), True),  # scope version
        (ld(1, ld(3, kv)), True),  # scope attribute
        (ld(3, text), True),  # schema_url
    ]
    return out


@pytest.mark.parametrize("text", BAD_UTF8 + GOOD_UTF8)
def test_utf8_in_every_string_field(text: bytes) -> None:
    verdicts = {agree(data, scope=scope) for data, scope in _string_paths(text)}
    if text in GOOD_UTF8:
        assert verdicts == {True}
    else:
        assert verdicts == {True, False}  # refused in string fields, not in bytes or unknown


def _nested_values(depth: int) -> bytes:
    """A Span whose one attribute holds arrays nested ``depth`` AnyValues deep."""
    value = ld(1, b"x")
    for _ in range(depth):
        value = ld(5, ld(1, value))  # AnyValue.array_value.values[0]
    return ld(9, ld(1, b"k") + ld(2, value))


@pytest.mark.parametrize("depth", [10, 45, 46, 47, 48, 49, 50, 60])
def test_nesting_at_upbs_depth_limit(depth: int) -> None:
    span = _nested_values(depth)
    agree(span, scope=False)
    agree(ld(2, span))


@pytest.mark.parametrize("depth", [1, 96, 97, 98, 99, 100, 101, 150])
def test_groups_at_upbs_depth_limit(depth: int) -> None:
    groups = tag(20, 3) * depth + tag(20, 4) * depth
    agree(groups, scope=False)
    agree(ld(2, groups))
    agree(ld(2, ld(9, groups)))
    agree(groups)


@example(b"\x0c")
@example(b"\x0b\x00\x0c\x0c")  # field number 0 in a skipped group: upb takes it
@example(b"\x0b\x03\x04\x0c")  # a group numbered 0 in a skipped group
@example(b"\x00\x01")  # field number 0 elsewhere: refused
@example(b"\x1a\x80\x80\x80\x80\x80\x00")  # a length in 6 bytes: refused
@example(b"\x1a\x80\x80\x80\x80\x00")  # in 5: taken
@example(b"\x0b\x0a\x80\x80\x80\x80\x80\x00\x0c")  # in 6, in a skipped group
@example(tag(2, 3) + ld(5, b"x") + tag(2, 4))  # spans sent as a group: unknown, skipped
@example(vi(2, 5) + f64(1, 3))  # known numbers, other wire types
@example(group(7, b"") + tag(7, 4))
@given(st.binary(max_size=12))
@settings(max_examples=200, deadline=None)
def test_odd_framing(data: bytes) -> None:
    agree(data)
    agree(ld(2, data))
    agree(ld(2, ld(9, data)))


def test_check_scope_raises_decode_error_saying_what(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = ld(2, ld(3, b"\xff"))
    with pytest.raises(DecodeError, match="ScopeSpans: a string field is not UTF-8"):
        otlpscan.check_scope(bad)
    monkeypatch.setattr(otlpscan, "COMPILED", False)
    with pytest.raises(DecodeError):
        otlpscan.check_scope(bad)  # upb's parse
    otlpscan.check_scope(sample_scope())


def test_the_check_refuses_a_malformed_schema() -> None:
    assert otlpscan._c_validate is not None
    with pytest.raises(TypeError):
        otlpscan._c_validate(b"", "table")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="schema"):
        otlpscan._c_validate(b"", b"\x02\x02\x00")
    with pytest.raises(ValueError, match="schema"):
        otlpscan._c_validate(b"\x08\x00", b"\x00\x05")  # no message types
    # One type whose field 1 is a message of type 5, which the table does not hold.
    with pytest.raises(ValueError, match="schema"):
        otlpscan._c_validate(ld(1, b""), b"\x01\x01\x06\x05")


def _body_of(span: bytes) -> bytes:
    """An ExportTraceServiceRequest of one resource (service.name w0) and one span."""
    resource = ld(1, ld(1, b"service.name") + ld(2, ld(1, b"w0")))
    return ld(1, ld(1, resource) + ld(2, ld(2, span)))


@pytest.mark.parametrize(
    "span",
    [
        ld(5, b"op") + b"\x0b\x00\x0c\x0c",  # field 0 in a skipped group: upb takes it
        ld(5, b"op") + b"\x0b\x03\x04\x0c",
        ld(5, b"op") + ld(9, ld(1, b"k") + b"\x0b\x00\x01\x0c"),
        ld(5, b"op") + b"\x1a\x80\x80\x80\x80\x80\x00",  # a 6-byte length: refused
        ld(5, b"\xed\xa0\x80"),
    ],
)
def test_the_compiled_decode_takes_what_upb_takes(
    span: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole decode, scanners included, compiled and pure: the same outcome."""
    from jouled.ingest.decode import MalformedBody, decode_otlp_protobuf
    from jouled.ingest.rules import Rules

    def outcome() -> str:
        try:
            return repr(decode_otlp_protobuf(_body_of(span), Rules(now=0.0)).ignored)
        except MalformedBody:
            return "malformed"

    compiled = outcome()
    monkeypatch.setattr(otlpscan, "COMPILED", False)
    assert compiled == outcome()


def test_the_table_reads_descriptors_of_older_protobuf() -> None:
    """protobuf before 6.31 has ``label`` where later ones have ``is_repeated``."""
    from google.protobuf.descriptor import FieldDescriptor as F

    class Field:
        def __init__(self, f: Any) -> None:
            self._f = f
            self.label = F.LABEL_REPEATED if f.is_repeated else F.LABEL_OPTIONAL

        def __getattr__(self, name: str) -> Any:
            if name == "is_repeated":
                raise AttributeError(name)
            return getattr(self._f, name)

    class Message:
        def __init__(self, d: Any) -> None:
            self._d = d
            self.fields = [Field(f) for f in d.fields]

        def __getattr__(self, name: str) -> Any:
            return getattr(self._d, name)

    table = otlpscan.schema_table(Message(ScopeSpans.DESCRIPTOR))
    assert table is not None and table == SCOPE_TABLE


@pytest.mark.parametrize(
    "body",
    [
        b"\x0a\x80\x80\x80\x80\x80\x00",  # a ResourceSpans whose length takes 6 bytes
        b"\x0a\x80\x80\x80\x80\x00",  # in 5: taken
        b"\x8a\x80\x80\x80\x80\x01\x00",  # a tag over 32 bits
        b"\x0a\x07\x0a\x80\x80\x80\x80\x80\x00",  # a Resource's length in 6 bytes
        b"\x0a\x08\x12\x06\x0a\x80\x80\x80\x80\x00",  # a scope's InstrumentationScope, 5
    ],
)
def test_the_request_framing_takes_what_upb_takes(body: bytes) -> None:
    """The outer messages (request, ResourceSpans, ScopeSpans) are framed in Python
    (``jouled.ingest.wire``), not checked by ``validate``: the same tag and length rules."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from jouled.ingest.decode import MalformedBody, decode_otlp_protobuf
    from jouled.ingest.rules import Rules

    try:
        ExportTraceServiceRequest.FromString(body)
        upb = "ok"
    except DecodeError:
        upb = "malformed"
    try:
        decode_otlp_protobuf(body, Rules(now=0.0))
        ours = "ok"
    except MalformedBody:
        ours = "malformed"
    assert ours == upb
