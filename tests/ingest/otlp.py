"""Builders for OTLP test requests with the real opentelemetry-proto classes."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

NOW = 1_700_000_000.0
SERVER = PbSpan.SpanKind.SPAN_KIND_SERVER
INTERNAL = PbSpan.SpanKind.SPAN_KIND_INTERNAL
CLIENT = PbSpan.SpanKind.SPAN_KIND_CLIENT
TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=str(value))


def kvs(attrs: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attrs.items()]


def pb_span(
    span_id: int,
    *,
    start: float = NOW - 2.0,
    end: float = NOW - 1.0,
    kind: int = SERVER,
    parent: int | None = None,
    **attrs: Any,
) -> PbSpan:
    return PbSpan(
        trace_id=TRACE,
        span_id=span_id.to_bytes(8, "big"),
        parent_span_id=parent.to_bytes(8, "big") if parent is not None else b"",
        name="op",
        kind=kind,  # type: ignore[arg-type]
        start_time_unix_nano=int(start * 1e9),
        end_time_unix_nano=int(end * 1e9),
        attributes=kvs({k.replace("__", "."): v for k, v in attrs.items()}),
    )


def request(spans: list[PbSpan], **resource: Any) -> ExportTraceServiceRequest:
    res = {"service.name": "classifier", **{k.replace("__", "."): v for k, v in resource.items()}}
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=kvs(res)),
                scope_spans=[ScopeSpans(spans=spans)],
            )
        ]
    )
