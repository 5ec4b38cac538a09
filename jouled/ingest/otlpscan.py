"""What jouled reads off a serialized OTLP span, as one tuple: C scanner or pure-Python fallback.

A span tuple (``SpanTuple``) is ``(trace_id: bytes, span_id: bytes, parent_span_id: bytes,
kind: int, start_ns: int, end_ns: int, name: str, has_links: bool, attrs)`` where ``attrs``
maps each attribute key in ``wanted`` to its value (str, bool, int or float for the scalar
``AnyValue`` members, None for arrays, kvlists, bytes and an unset value; a later duplicate
key wins), or is None when no wanted key is present. Field meanings:
opentelemetry/proto/trace/v1/trace.proto (``Span``) and common/v1/common.proto.

Two implementations with one API, ``scan_scope(data, wanted)`` over a serialized
``ScopeSpans`` (a list, one tuple per span) and ``scan_span(data, wanted)`` over one ``Span``:

- ``jouled.ingest._otlpscan`` (C, built by setup.py when a compiler is there): one pass over
  the wire format (0.8 µs a span against 5.3 for the walk through upb's Python wrappers,
  an OpenTelemetry SDK batch of FastAPI SERVER spans);
  raises ``ValueError`` on malformed bytes and does not check what it skips (so callers
  check the message first, as upb would parse it: ``read_scope``/``read_span``, with the
  compiled ``validate`` on protobuf 7, upb's parse elsewhere);
- the pure functions here: upb's ``FromString`` (protobuf's ``DecodeError`` when malformed).

``COMPILED`` says which one is in use: the C one when it imports, unless the environment
variable ``JOULED_PURE_PYTHON=1`` asks for the pure one (then the C module is not loaded).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeAlias

from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span

from jouled.native import pure_requested

SpanTuple: TypeAlias = tuple[bytes, bytes, bytes, int, int, int, str, bool, dict[str, Any] | None]
Data: TypeAlias = bytes | memoryview

_SCALARS: Final = frozenset({"string_value", "int_value", "double_value", "bool_value"})


def any_value(value: Any) -> Any:
    """The Python value of an ``AnyValue`` message: str, bool, int or float for its scalar
    members, None for the others (array, kvlist, bytes) and for an unset value."""
    which = value.WhichOneof("value")
    return getattr(value, which) if which in _SCALARS else None


def span_tuple(span: Any, wanted: frozenset[str]) -> SpanTuple:
    """The tuple of a parsed ``Span`` message (the upb walk the C scanner replaces)."""
    attrs: dict[str, Any] | None = None
    for kv in span.attributes:
        key = kv.key
        if key in wanted:
            if attrs is None:
                attrs = {}
            attrs[key] = any_value(kv.value)
    return (
        span.trace_id,
        span.span_id,
        span.parent_span_id,
        span.kind,
        span.start_time_unix_nano,
        span.end_time_unix_nano,
        span.name,
        len(span.links) > 0,
        attrs,
    )


def pure_scan_scope(data: Data, wanted: frozenset[str]) -> list[SpanTuple]:
    """Span tuples of a serialized ``ScopeSpans``, parsed by upb (``DecodeError``)."""
    return [span_tuple(span, wanted) for span in ScopeSpans.FromString(data).spans]


def pure_scan_span(data: Data, wanted: frozenset[str]) -> SpanTuple:
    """The span tuple of a serialized ``Span``, parsed by upb (``DecodeError``)."""
    return span_tuple(Span.FromString(data), wanted)


# The C functions when the extension imports, else the pure ones (then COMPILED is False).
_c_scan_scope: Callable[[Data, frozenset[str]], list[SpanTuple]] = pure_scan_scope
_c_scan_span: Callable[[Data, frozenset[str]], SpanTuple] = pure_scan_span
AVAILABLE = False  # the C extension was loaded
if not pure_requested():
    try:
        from jouled.ingest._otlpscan import scan_scope as _c_scan_scope
        from jouled.ingest._otlpscan import scan_span as _c_scan_span

        AVAILABLE = True
    except ImportError:  # not built (no compiler at install time): the pure path
        pass
# The compiled twin of decode's flat-batch request loop (jouled/ingest/_roots.c), used with
# the C scanner (so COMPILED switches both); None when not built or not wanted.
c_select_roots: Callable[..., list[Any] | None] | None = None
# The same loop straight off a scope's wire bytes (no span tuples): decode's flat-body path.
c_scan_roots: Callable[..., tuple[list[Any], int] | None] | None = None
if AVAILABLE:
    try:
        from jouled.ingest._roots import scan_roots, select_roots

        c_select_roots = select_roots
        c_scan_roots = scan_roots
    except ImportError:
        pass
# Whether the C scanner is in use (tests flip it to run both paths).
COMPILED = AVAILABLE


def scan_scope(data: Data, wanted: frozenset[str]) -> list[SpanTuple]:
    """Span tuples of a serialized ``ScopeSpans``; ``ValueError`` (C) or ``DecodeError``
    (pure) when malformed. The C scanner does not validate what it skips."""
    return (_c_scan_scope if COMPILED else pure_scan_scope)(data, wanted)


def scan_span(data: Data, wanted: frozenset[str]) -> SpanTuple:
    """The span tuple of a serialized ``Span``; errors as ``scan_scope``."""
    return (_c_scan_span if COMPILED else pure_scan_span)(data, wanted)


def schema_table(descriptor: Any) -> bytes | None:
    """The table ``_otlpscan.validate`` checks a message of ``descriptor``'s type by: the
    message types reachable from it (it first), then per type and field number two bytes
    (what the field is: varint, 64-bit, 32-bit, bytes, string (UTF-8 checked), message; and
    the message's index). None where the schema holds what the compiled check does not do
    as upb does (groups, maps, repeated scalars that may come packed, over 255 types or
    field numbers): then upb checks."""
    from google.protobuf.descriptor import FieldDescriptor as F

    kinds = {
        **dict.fromkeys(
            (F.TYPE_INT32, F.TYPE_INT64, F.TYPE_UINT32, F.TYPE_UINT64, F.TYPE_SINT32,
             F.TYPE_SINT64, F.TYPE_BOOL, F.TYPE_ENUM),
            1,
        ),
        **dict.fromkeys((F.TYPE_DOUBLE, F.TYPE_FIXED64, F.TYPE_SFIXED64), 2),
        **dict.fromkeys((F.TYPE_FLOAT, F.TYPE_FIXED32, F.TYPE_SFIXED32), 3),
        F.TYPE_BYTES: 4,
        F.TYPE_STRING: 5,
        F.TYPE_MESSAGE: 6,
    }  # fmt: skip

    def repeated(f: Any) -> bool:  # ``is_repeated`` from protobuf 6.31, ``label`` before
        flag = getattr(f, "is_repeated", None)
        return bool(flag) if flag is not None else f.label == F.LABEL_REPEATED

    messages = [descriptor]
    index = {descriptor.full_name: 0}
    for message in messages:  # grows as new types are met
        if message.GetOptions().map_entry:
            return None
        for f in message.fields:
            if f.type not in kinds or (repeated(f) and kinds[f.type] < 4):
                return None
            if f.message_type is not None and f.message_type.full_name not in index:
                index[f.message_type.full_name] = len(messages)
                messages.append(f.message_type)
    top = max(f.number for m in messages for f in m.fields)
    if len(messages) > 255 or top > 255:
        return None
    table = bytearray([len(messages), top]) + bytes(2 * len(messages) * top)
    for i, message in enumerate(messages):
        for f in message.fields:
            at = 2 + 2 * (i * top + f.number - 1)
            table[at] = kinds[f.type]
            table[at + 1] = index[f.message_type.full_name] if f.message_type else 0
    return bytes(table)


def _verified_upb() -> bool:
    """Whether the installed protobuf is the major version ``validate`` is held to by
    tests/ingest/test_validate.py (7): upb's rules moved before it (field 0 in skipped
    groups, the length of a length), and may again."""
    from google.protobuf import __version__ as version

    try:
        return int(version.split(".")[0]) == 7
    except (AttributeError, ValueError):
        return False


# The compiled check of a ScopeSpans or Span as upb would parse it (``validate``), or None:
# then upb's own parse checks.
_c_validate: Callable[[Data, bytes], None] | None = None
_SCOPE_TABLE = schema_table(ScopeSpans.DESCRIPTOR)
_SPAN_TABLE = schema_table(Span.DESCRIPTOR)
if AVAILABLE and _verified_upb():
    from jouled.ingest import _otlpscan

    _c_validate = getattr(_otlpscan, "validate", None)  # None in a build older than it


def check_scope(data: Data) -> None:
    """Raise protobuf's ``DecodeError`` where upb would not parse ``data`` as a ScopeSpans:
    the compiled check where in use (its message says what is wrong; ~0.1 µs a span against
    upb's ~0.55 parse), else upb's parse."""
    _check(data, _SCOPE_TABLE, ScopeSpans)


def _check(data: Data, table: bytes | None, message: Any) -> None:
    if COMPILED and _c_validate is not None and table is not None:
        try:
            _c_validate(data, table)
        except ValueError as exc:
            from google.protobuf.message import DecodeError

            raise DecodeError(f"{message.DESCRIPTOR.full_name}: {exc}") from None
    else:
        message.FromString(data)


def read_scope(data: Data, wanted: frozenset[str]) -> list[SpanTuple]:
    """``scan_scope`` after the message is checked as upb would parse it: protobuf's
    ``DecodeError`` on what upb rejects, on either path (``check_scope``)."""
    if COMPILED:
        _check(data, _SCOPE_TABLE, ScopeSpans)
        return _c_scan_scope(data, wanted)
    return pure_scan_scope(data, wanted)


def read_span(data: Data, wanted: frozenset[str]) -> SpanTuple:
    """``scan_span`` after the message is checked, as ``read_scope``."""
    if COMPILED:
        _check(data, _SPAN_TABLE, Span)
        return _c_scan_span(data, wanted)
    return pure_scan_span(data, wanted)
