"""Walk an OTLP ``ExportTraceServiceRequest`` one span at a time, off its wire format.

Parsing a whole request with ``FromString`` builds every span's message (upb arena plus
Python wrappers) at once: ~24x the body in memory, 1.5 GB for a 64 MiB body. Here only the
framing of the three outer messages is read (field numbers and lengths, protobuf encoding
spec), and each ``Resource`` and each ``ScopeSpans`` up to ``WHOLE_SCOPE_BYTES`` (else each
of its ``Span`` messages) is parsed on its own by the generated classes, so memory stays
near 24x 256 KiB plus what the caller keeps.

opentelemetry/proto/collector/trace/v1/trace_service.proto:
  ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
opentelemetry/proto/trace/v1/trace.proto:
  ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2; ... }
  ScopeSpans { InstrumentationScope scope = 1; repeated Span spans = 2; ... }
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from jouled.ingest.otlpscan import SpanTuple

_VARINT, _I64, _LEN, _SGROUP, _EGROUP, _I32 = range(6)
_MAX_VARINT_BYTES: Final = 10
# A ScopeSpans up to this size is parsed whole (one call into upb for all its spans: a
# BatchSpanProcessor's 512 spans are ~200 KB); a larger one a span at a time.
WHOLE_SCOPE_BYTES: Final = 256 * 1024


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message; ``str()`` says where."""


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos >= end:
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if i == _MAX_VARINT_BYTES - 1:
            break
    raise WireError("varint longer than 10 bytes")


def fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value start, value end) of each field in buf[start:end];
    for VARINT/I64/I32 the span holds the raw value bytes."""
    pos = start
    while pos < end:
        key_at = pos
        key, pos = _varint(buf, pos, end)
        if pos - key_at > 5 or key > 0xFFFF_FFFF:  # as upb (and _otlpwire.h's read_tag)
            raise WireError("field tag too long")
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire_type == _VARINT:
            _, after = _varint(buf, pos, end)
        elif wire_type == _I64:
            after = pos + 8
        elif wire_type == _I32:
            after = pos + 4
        elif wire_type == _LEN:
            length_at = pos
            length, pos = _varint(buf, pos, end)
            if pos - length_at > 5 or length >= 0x7FFF_FFFF:  # upb's ReadSize (read_length)
                raise WireError(f"field {number}: length over 5 bytes or 2 GiB")
            after = pos + length
        else:  # groups are not used by OTLP
            raise WireError(f"unsupported wire type {wire_type} (field {number})")
        if after > end:
            raise WireError(f"field {number} runs past the end of its message")
        yield number, wire_type, pos, after
        pos = after


def scopes(buf: memoryview) -> Iterator[tuple[Any, int, int]]:
    """(Resource message, start, end) of each ScopeSpans in an ExportTraceServiceRequest, in
    order; the resource is parsed (merged, as protobuf does) before its scopes."""
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    for number, wire_type, a, b in fields(buf, 0, len(buf)):
        if number != 1 or wire_type != _LEN:
            continue  # unknown fields are skipped, as protobuf does
        resource = Resource()
        scopes: list[tuple[int, int]] = []
        for rnum, rtype, ra, rb in fields(buf, a, b):
            if rtype != _LEN:
                continue
            if rnum == 1:
                resource.MergeFromString(buf[ra:rb])  # a repeated message field merges
            elif rnum == 2:
                scopes.append((ra, rb))
        for sa, sb in scopes:
            yield resource, sa, sb


def _span_fields(buf: memoryview, start: int, end: int) -> Iterator[memoryview]:
    """The serialized Span messages of the ScopeSpans in buf[start:end]."""
    for number, wire_type, a, b in fields(buf, start, end):
        if number == 2 and wire_type == _LEN:
            yield buf[a:b]


def iter_span_batches(body: bytes, wanted: frozenset[str]) -> Iterator[tuple[Any, list[SpanTuple]]]:
    """(Resource message, span tuples) of an ExportTraceServiceRequest, in order: each
    ``ScopeSpans`` up to ``WHOLE_SCOPE_BYTES`` read whole (one list per scope: no step per
    span), a larger one a span at a time (memory stays near the body's size), each span as
    ``otlpscan.read_scope`` / ``read_span`` give it (C scanner or upb walk), with the
    attributes whose key is in ``wanted``. A resource's scopes come one after another, with
    the same Resource object.

    Raises ``WireError`` on malformed framing and protobuf's ``DecodeError`` on a malformed
    resource or span (each scope or large scope's span is checked as upb would parse it,
    ``otlpscan.read_scope``, then scanned).
    """
    from jouled.ingest.otlpscan import read_scope, read_span

    buf = memoryview(body)
    for resource, sa, sb in scopes(buf):
        if sb - sa <= WHOLE_SCOPE_BYTES:
            yield resource, read_scope(buf[sa:sb], wanted)
        else:
            for data in _span_fields(buf, sa, sb):
                yield resource, [read_span(data, wanted)]
