"""The ingest HTTP app: OTLP/HTTP ``POST /v1/traces``, jouled's ``POST /v1/spans``, health.

Decoded spans go to a ``SpanSink`` (the daemon's span splitter); rejected spans are counted
there by reason. Answers follow the OTLP/HTTP spec: 200 with an ExportTraceServiceResponse in
the request's encoding (``partial_success`` when spans were rejected), 4xx with a
google.rpc.Status. No input crashes a handler: every failure becomes a 4xx with a reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

from aiohttp import web

from jouled.attribution.spans import Span
from jouled.clock import Clock
from jouled.ingest.attributes import DEFAULT_NAMES, AttributeNames
from jouled.ingest.decode import decode_otlp_json, decode_otlp_protobuf, decode_spans_json
from jouled.ingest.guard import TokenBucket, guard_middleware
from jouled.ingest.modelcap import ModelCap, apply_model_cap
from jouled.ingest.rules import MALFORMED, DecodeResult, MalformedBody, Rules, TokenCostFn
from jouled.ingest.sender import SenderLookup, UnknownServiceWarning

log = logging.getLogger(__name__)

MIB: Final = 1024 * 1024
PROTOBUF_TYPES: Final = frozenset({"application/x-protobuf", "application/protobuf"})
JSON_TYPE: Final = "application/json"
# Reasons counted once per refused body (spans inside it are unknown).
TOO_LARGE: Final = "too_large"
UNSUPPORTED_MEDIA_TYPE: Final = "unsupported_media_type"
# Bodies above this are decoded in a worker thread so that the tick loop keeps its pace.
_INLINE_DECODE_BYTES: Final = 256 * 1024
# aiohttp's parser decodes all of these itself (auto_decompress); OTLP clients send gzip.
_CONTENT_ENCODINGS: Final = frozenset({"identity", "gzip", "x-gzip", "deflate", "br", "zstd"})
_GRPC_INVALID_ARGUMENT: Final = 3
_GRPC_INTERNAL: Final = 13

Encoding = Literal["protobuf", "json"]


class SpanSink(Protocol):
    """Where decoded spans go; the daemon implements it over its ``SpanSplitter``."""

    def submit(self, spans: Sequence[Span]) -> tuple[int, int]:
        """Take valid spans; return (accepted, late). Counts them as received."""
        ...

    def rejected(self, reason: str, n: int) -> None:
        """Count ``n`` spans (or refused bodies) rejected for ``reason``."""
        ...


@dataclass(slots=True)
class IngestState:
    sink: SpanSink
    clock: Clock
    known_workloads: Callable[[], set[str]] | None
    gflops_per_token: Mapping[str, float]
    max_body_bytes: int
    model_cap: ModelCap
    max_future_s: float
    max_age_s: float
    names: AttributeNames = DEFAULT_NAMES
    default_models: Callable[[], Mapping[str, str]] | None = None
    senders: SenderLookup | None = None
    verify_sender: bool = False
    unknown_warning: UnknownServiceWarning | None = None
    token_costs: Mapping[str, TokenCostFn] = field(default_factory=dict)

    def rules(self, sender: Callable[[], str | None] | None = None) -> Rules:
        known = self.known_workloads() if self.known_workloads is not None else None
        return Rules(
            now=self.clock.time(),
            known_workloads=known,
            gflops_per_token=self.gflops_per_token,
            token_costs=self.token_costs,
            max_future_s=self.max_future_s,
            max_age_s=self.max_age_s,
            names=self.names,
            default_models=self.default_models() if self.default_models is not None else {},
            sender=sender,
            verify_sender=self.verify_sender,
        )


def request_sender(state: IngestState, request: web.Request) -> Callable[[], str | None] | None:
    """The sending workload's resolver for an HTTP request (unix socket or loopback TCP)."""
    if state.senders is None or request.transport is None:
        return None
    transport = request.transport
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family == getattr(socket, "AF_UNIX", None):
        return state.senders.for_unix(sock)
    peer, local = transport.get_extra_info("peername"), transport.get_extra_info("sockname")
    if isinstance(peer, tuple) and isinstance(local, tuple):
        return state.senders.for_tcp((str(peer[0]), int(peer[1])), (str(local[0]), int(local[1])))
    return None


STATE_KEY: Final = web.AppKey("jouled_ingest_state", IngestState)


class _Refused(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _status_body(code: int, message: str, encoding: Encoding) -> tuple[bytes, str]:
    """A google.rpc.Status; hand-encoded so that googleapis-common-protos is not needed."""
    if encoding == "json":
        return json.dumps({"code": code, "message": message}).encode(), JSON_TYPE
    text = message.encode()
    body = b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text
    return body, "application/x-protobuf"


def _status_response(
    http_status: int, message: str, encoding: Encoding, code: int = _GRPC_INVALID_ARGUMENT
) -> web.Response:
    body, content_type = _status_body(code, message, encoding)
    return web.Response(status=http_status, body=body, content_type=content_type)


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The request body, gunzipped, refused past ``limit`` bytes (after decompression)."""
    encoding = (request.headers.get("Content-Encoding") or "identity").strip().lower()
    if encoding not in _CONTENT_ENCODINGS:
        raise _Refused(415, UNSUPPORTED_MEDIA_TYPE, f"unsupported Content-Encoding {encoding!r}")
    declared = request.content_length
    if encoding == "identity" and declared is not None and declared > limit:
        raise _Refused(413, TOO_LARGE, f"body of {declared} bytes exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise _Refused(413, TOO_LARGE, f"body exceeds {limit} bytes")
            chunks.append(chunk)
    except web.RequestPayloadError as exc:
        # Raised by aiohttp's own decompression of a corrupt gzip/deflate body.
        raise _Refused(400, MALFORMED, f"cannot read body: {exc.__cause__ or exc}") from None
    body = b"".join(chunks)
    # aiohttp's server gunzips request bodies itself by default (auto_decompress); decode
    # here only what still carries the gzip magic, with the same limit.
    if encoding != "identity" and body[:2] == b"\x1f\x8b":
        body = _gunzip(body, limit)
    return body


def _gunzip(data: bytes, limit: int) -> bytes:
    out: list[bytes] = []
    size = 0
    while data:
        inflater = zlib.decompressobj(wbits=31)
        try:
            piece = inflater.decompress(data, limit + 1 - size)
        except zlib.error as exc:
            raise _Refused(400, MALFORMED, f"bad gzip body: {exc}") from None
        size += len(piece)
        if size > limit or inflater.unconsumed_tail:
            raise _Refused(413, TOO_LARGE, f"body exceeds {limit} bytes after decompression")
        if not inflater.eof:
            raise _Refused(400, MALFORMED, "truncated gzip body")
        out.append(piece)
        data = inflater.unused_data  # a gzip stream may hold several members
    return b"".join(out)


async def _decode(
    decoder: Callable[[bytes, Rules], DecodeResult], body: bytes, rules: Rules
) -> DecodeResult:
    if len(body) > _INLINE_DECODE_BYTES:
        return await asyncio.to_thread(decoder, body, rules)
    return decoder(body, rules)


async def _ingest(
    request: web.Request, decoder: Callable[[bytes, Rules], DecodeResult]
) -> tuple[DecodeResult, int, int]:
    """Read, decode, cap models and submit; (result, accepted, late). Raises _Refused."""
    state = request.app[STATE_KEY]
    body = await _read_body(request, state.max_body_bytes)
    return await ingest_body(state, decoder, body, request_sender(state, request))


async def ingest_body(
    state: IngestState,
    decoder: Callable[[bytes, Rules], DecodeResult],
    body: bytes,
    sender: Callable[[], str | None] | None,
) -> tuple[DecodeResult, int, int]:
    """Decode a read body, cap models and submit (HTTP and gRPC alike). Raises _Refused."""
    try:
        result = await _decode(decoder, body, state.rules(sender))
    except MalformedBody as exc:
        raise _Refused(400, MALFORMED, str(exc)) from None
    except Exception as exc:
        # A decoder bug on strange input must not become a 500 loop of client retries.
        log.warning("span decoder failed on a %d-byte body", len(body), exc_info=True)
        raise _Refused(400, MALFORMED, f"cannot decode body: {type(exc).__name__}") from None
    spans = apply_model_cap(result.spans, state.model_cap)
    accepted, late = state.sink.submit(spans) if spans else (0, 0)
    for reason, n in result.rejected.items():
        state.sink.rejected(reason, n)
    if result.unknown_services and state.unknown_warning is not None:
        state.unknown_warning.note(result.unknown_services)
    return result, accepted, late


def _encoding_of(request: web.Request) -> Encoding | None:
    if request.content_type in PROTOBUF_TYPES:
        return "protobuf"
    if request.content_type == JSON_TYPE:
        return "json"
    return None


def _trace_response(result: DecodeResult, encoding: Encoding) -> web.Response:
    rejected = result.rejected_total
    message = f"{rejected} span(s) rejected; first: {result.first_error}" if rejected else ""
    if encoding == "json":
        payload: dict[str, object] = {}
        if rejected:
            # int64 is a decimal string in proto3 JSON.
            payload["partialSuccess"] = {"rejectedSpans": str(rejected), "errorMessage": message}
        return web.Response(body=json.dumps(payload).encode(), content_type=JSON_TYPE)
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTracePartialSuccess,
        ExportTraceServiceResponse,
    )

    response = ExportTraceServiceResponse()
    if rejected:
        response.partial_success.CopyFrom(
            ExportTracePartialSuccess(rejected_spans=rejected, error_message=message)
        )
    return web.Response(body=response.SerializeToString(), content_type="application/x-protobuf")


async def handle_traces(request: web.Request) -> web.Response:
    """OTLP/HTTP traces: protobuf or JSON, answered in the same encoding."""
    state = request.app[STATE_KEY]
    encoding = _encoding_of(request)
    if encoding is None:
        state.sink.rejected(UNSUPPORTED_MEDIA_TYPE, 1)
        return _status_response(
            415,
            f"unsupported Content-Type {request.content_type!r}: "
            "use application/x-protobuf or application/json",
            "protobuf",
        )
    decoder = decode_otlp_protobuf if encoding == "protobuf" else decode_otlp_json
    try:
        result, _accepted, _late = await _ingest(request, decoder)
    except _Refused as exc:
        state.sink.rejected(exc.reason, 1)
        return _status_response(exc.status, exc.message, encoding)
    except Exception:
        log.exception("span sink failed")
        return _status_response(500, "internal error", encoding, _GRPC_INTERNAL)
    return _trace_response(result, encoding)


def _json_error(status: int, reason: str, message: str) -> web.Response:
    return web.json_response({"error": reason, "message": message}, status=status)


async def handle_spans(request: web.Request) -> web.Response:
    """jouled's JSON batch; answers counts so that scripts can see what happened."""
    state = request.app[STATE_KEY]
    if request.content_type != JSON_TYPE:
        state.sink.rejected(UNSUPPORTED_MEDIA_TYPE, 1)
        return _json_error(
            415,
            UNSUPPORTED_MEDIA_TYPE,
            f"unsupported Content-Type {request.content_type!r}: use application/json",
        )
    try:
        result, accepted, late = await _ingest(request, decode_spans_json)
    except _Refused as exc:
        state.sink.rejected(exc.reason, 1)
        return _json_error(exc.status, exc.reason, exc.message)
    except Exception:
        log.exception("span sink failed")
        return _json_error(500, "internal", "internal error")
    return web.json_response(
        {
            "accepted": accepted,
            "rejected": result.rejected_total,
            "late": late,
            "errors": dict(result.rejected),
            "first_error": result.first_error,
        }
    )


async def handle_healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def request_bucket(max_requests_per_second: float, clock: Clock) -> TokenBucket | None:
    """The ingest rate limit: bursts of twice the rate (at least 10); None when 0."""
    if max_requests_per_second <= 0:
        return None
    return TokenBucket(max_requests_per_second, max(10.0, 2 * max_requests_per_second), clock)


def build_ingest_app(
    sink: SpanSink,
    *,
    clock: Clock,
    known_workloads: Callable[[], set[str]] | None,
    gflops_per_token: Mapping[str, float],
    max_body_bytes: int = 64 * MIB,
    model_cap: int = 50,
    max_future_s: float = 300.0,
    max_age_s: float = 3600.0,
    token: str | None = None,
    max_requests_per_second: float = 0.0,
    bucket: TokenBucket | None = None,
    names: AttributeNames = DEFAULT_NAMES,
    default_models: Callable[[], Mapping[str, str]] | None = None,
    senders: SenderLookup | None = None,
    verify_sender: bool = False,
    token_costs: Mapping[str, TokenCostFn] | None = None,
) -> web.Application:
    """The ingest listener's application; all state lives under ``STATE_KEY``.

    ``token``: require ``Authorization: Bearer <token>`` on /v1/*. ``max_requests_per_second``:
    a token bucket (bursts of twice the rate, at least 10); 0 disables it. ``bucket``: one
    made by ``request_bucket`` and shared with the gRPC listener (wins over the rate).
    ``senders``: finds the workload whose process sent a body (spans of an unknown
    service.name go to it); ``verify_sender`` rejects spans naming another workload.
    ``token_costs``: per model, GFLOPs of a request from its (input, output) tokens
    (``spans.model_configs``), before ``gflops_per_token``.
    """
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be >= 1")
    if bucket is None:
        bucket = request_bucket(max_requests_per_second, clock)
    # client_max_size only guards request.read()/post(); _read_body enforces the limit itself.
    app = web.Application(
        client_max_size=max_body_bytes,
        middlewares=[guard_middleware(token=token, bucket=bucket, rejected=sink.rejected)],
    )
    app[STATE_KEY] = IngestState(
        sink=sink,
        clock=clock,
        known_workloads=known_workloads,
        gflops_per_token=dict(gflops_per_token),
        max_body_bytes=max_body_bytes,
        model_cap=ModelCap(model_cap),
        max_future_s=max_future_s,
        max_age_s=max_age_s,
        names=names,
        default_models=default_models,
        senders=senders,
        verify_sender=verify_sender,
        unknown_warning=UnknownServiceWarning(clock),
        token_costs=dict(token_costs or {}),
    )
    app.router.add_post("/v1/traces", handle_traces)
    app.router.add_post("/v1/spans", handle_spans)
    app.router.add_get("/healthz", handle_healthz)
    return app
