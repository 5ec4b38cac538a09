"""The ingest HTTP app: OTLP/HTTP ``POST /v1/traces``, jouled's ``POST /v1/spans``, health.

Decoded spans go to a ``SpanSink`` (the daemon's span splitter); rejected spans are counted
there by reason. Answers follow the OTLP/HTTP spec: 200 with an ExportTraceServiceResponse in
the request's encoding (``partial_success`` when spans were rejected), 4xx with a
google.rpc.Status. No input crashes a handler: every failure becomes a 4xx with a reason.

Over 400 lines because the OTLP/HTTP answers (status bodies, partial success), the body path
and the middlewares share one state and must answer as the gRPC listener does; limits, rules
and the request book are in limits.py, rules.py and requests.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, Literal, Protocol

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError
from aiohttp.typedefs import Middleware

from jouled.attribution.spans import Span
from jouled.clock import Clock
from jouled.ingest.attributes import DEFAULT_NAMES, AttributeNames
from jouled.ingest.decode import decode_otlp_json, decode_otlp_protobuf, decode_spans_json
from jouled.ingest.guard import (
    REASON_KEY,
    UNAUTHORIZED,
    Handler,
    TokenBucket,
    authorized,
    guard_middleware,
    unauthorized,
)
from jouled.ingest.limits import (
    DEFAULT_MAX_BODY_BYTES,
    IDENTITY,
    TOO_LARGE,
    BytesInFlight,
    LimitError,
    OffLoop,
    check_declared,
    check_encoding,
    decompress,
)
from jouled.ingest.limits import (
    DEFAULT_MAX_BYTES_IN_FLIGHT as DEFAULT_IN_FLIGHT,
)
from jouled.ingest.modelcap import ModelCap, apply_model_cap
from jouled.ingest.requests import LISTENER_HTTP, REASON_BY_STATUS, IngestRequests
from jouled.ingest.rules import MALFORMED, DecodeResult, MalformedBody, Rules, TokenCostFn
from jouled.ingest.sender import SenderLookup, UnknownServiceWarning, needs_search

log = logging.getLogger(__name__)

MIB: Final = 1024 * 1024
PROTOBUF_TYPES: Final = frozenset({"application/x-protobuf", "application/protobuf"})
JSON_TYPE: Final = "application/json"
# Reasons of refused bodies (requests; the spans inside them are unknown).
UNSUPPORTED_MEDIA_TYPE: Final = "unsupported_media_type"
TIMEOUT: Final = "timeout"  # the body did not arrive within the body timeout
DISCONNECTED: Final = "disconnected"  # the client went away mid-body
# Spans the sink could not queue (pending spans full, the workload over its share).
PENDING_FULL: Final = "pending_full"
# Bodies up to this are decoded inline (well under a millisecond); larger ones on the
# ingest thread pool so that the tick loop keeps its pace.
_INLINE_DECODE_BYTES: Final = 16 * 1024
# Decoded spans are queued this many at a time, yielding to the loop in between: a large
# batch never holds the tick.
_SUBMIT_CHUNK: Final = 2000
_GRPC_INVALID_ARGUMENT: Final = 3
_GRPC_INTERNAL: Final = 13

Encoding = Literal["protobuf", "json"]


class SpanSink(Protocol):
    """Where decoded spans go; the daemon implements it over its ``SpanSplitter``."""

    def submit(self, spans: Sequence[Span]) -> tuple[int, int]:
        """Take valid spans; return (accepted, late). Counts them as received."""
        ...

    def rejected(self, reason: str, n: int) -> None:
        """Count ``n`` spans rejected for ``reason`` (a refused body is a request, counted
        in ``IngestState.requests``, not here)."""
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
    # Shared with every receiver (HTTP, gRPC): jouled.ingest.limits.
    budget: BytesInFlight = field(default_factory=lambda: BytesInFlight(DEFAULT_IN_FLIGHT))
    off_loop: OffLoop = field(default_factory=OffLoop)
    queue_lock: threading.Lock = field(default_factory=threading.Lock)
    body_timeout_s: float = 30.0
    requests: IngestRequests = field(default_factory=IngestRequests)

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


class _Refused(LimitError):
    """A request refused with an HTTP status, a counter reason and a message."""


class _Disconnected(Exception):
    """The client closed the connection before its body arrived: nobody to answer."""


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
    http_status: int,
    message: str,
    encoding: Encoding,
    code: int = _GRPC_INVALID_ARGUMENT,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    body, content_type = _status_body(code, message, encoding)
    return web.Response(status=http_status, body=body, content_type=content_type, headers=headers)


def _reservation(request: web.Request, encoding: str, limit: int) -> int:
    """Bytes a request may hold: its declared length, or the limit when compressed or of
    unknown length (its decompressed size is unknown until inflated)."""
    declared = request.content_length
    if encoding == IDENTITY and declared is not None:
        return min(declared, limit)
    return limit


async def _read_wire(request: web.Request, limit: int, timeout_s: float) -> bytes:
    """The body as sent, refused past ``limit`` bytes or ``timeout_s`` seconds."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > limit:
                    raise _Refused(413, TOO_LARGE, f"body exceeds {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise _Refused(
            408, TIMEOUT, f"body not received within {timeout_s:g} s (ingest.body_timeout)"
        ) from None
    except web.RequestPayloadError as exc:
        if isinstance(exc.__cause__, ContentEncodingError):
            # aiohttp inflating itself (auto_decompress) met a corrupt body.
            raise _Refused(400, MALFORMED, f"cannot read body: {exc.__cause__}") from None
        raise _Disconnected(str(exc)) from None
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        raise _Disconnected(str(exc)) from None
    identity = check_encoding(request.headers.get("Content-Encoding")) == IDENTITY
    if identity and request.content_length is not None and size < request.content_length:
        raise _Disconnected(f"{size} of {request.content_length} bytes")
    return b"".join(chunks)


Decoder = Callable[[bytes, Rules], DecodeResult]


async def _ingest(request: web.Request, decoder: Decoder) -> tuple[DecodeResult, int, int]:
    """Reserve bytes in flight, read, inflate (off the loop), then ``ingest_body``.
    Raises LimitError (_Refused) or _Disconnected."""
    state = request.app[STATE_KEY]
    limit = state.max_body_bytes
    encoding = check_encoding(request.headers.get("Content-Encoding"))
    if encoding == IDENTITY:
        check_declared(request.content_length, encoding, limit)
    async with state.budget.reserve(_reservation(request, encoding, limit)):
        body = await _read_wire(request, limit, state.body_timeout_s)
        if encoding != IDENTITY:
            body = await state.off_loop.run(decompress, body, encoding, limit)
        return await ingest_body(state, decoder, body, request_sender(state, request))


async def ingest_body(
    state: IngestState,
    decoder: Decoder,
    body: bytes,
    sender: Callable[[], str | None] | None,
) -> tuple[DecodeResult, int, int]:
    """Decode a read body (off the loop past 16 KiB), cap models and submit 2,000 spans at a
    time (HTTP and gRPC alike); spans the sink refused are added to ``result.rejected``.
    The caller holds the body's bytes in ``state.budget``. Raises _Refused."""
    rules = state.rules(sender)
    # A new loopback connection's sender may need a /proc search: off the loop too. Off
    # the loop, one call decodes and queues (one hand-off; the spans queued while hot).
    if len(body) > _INLINE_DECODE_BYTES or needs_search(sender):
        result, accepted, late = await state.off_loop.run(
            _decode_and_queue, state, decoder, body, rules
        )
    else:
        decoded = _decode(decoder, body, rules)
        # Off the loop: the sink may wait for a tick that holds the span books (the stages
        # run on a worker thread), and a large batch is Python work of its own.
        accepted, late = await state.off_loop.run(_queue, state, decoded.spans, decoded.rejected)
        result = _without_spans(decoded)
    if result.unknown_services and state.unknown_warning is not None:
        state.unknown_warning.note(result.unknown_services)
    refused = result.taken - accepted - late
    if refused:
        # Counted by the sink itself; the sender is told, so it knows they were not kept.
        rejected = {**result.rejected, PENDING_FULL: result.rejected.get(PENDING_FULL, 0) + refused}
        first = result.first_error or (
            f"{PENDING_FULL}: {refused} span(s) not queued: the pending spans are at their "
            "cap (the daemon's spans.max_pending_spans) and this workload holds its fair "
            "share of them; retry later"
        )
        result = replace(result, rejected=rejected, first_error=first)
    return result, accepted, late


def _without_spans(result: DecodeResult) -> DecodeResult:
    """``result`` once its spans are queued: their count (``taken``) without the spans.

    The queue keeps what it needs of each span; the decoded objects (each span and its id
    strings, a few thousand objects in a 500-span batch) are freed where they were made, on
    the ingest pool while still in cache, not on the event loop when the answer goes out
    (0.24 ms of CPU a second less at 1,000 spans/s over OTLP/gRPC,
    docs/BENCHMARKS_HISTORY.md)."""
    return replace(result, spans=(), taken_count=len(result.spans))


def _decode(decoder: Decoder, body: bytes, rules: Rules) -> DecodeResult:
    """``decoder(body, rules)``; raises _Refused (400) on a malformed body."""
    try:
        return decoder(body, rules)
    except MalformedBody as exc:
        raise _Refused(400, MALFORMED, str(exc)) from None
    except Exception as exc:
        # A decoder bug on strange input must not become a 500 loop of client retries.
        log.warning("span decoder failed on a %d-byte body", len(body), exc_info=True)
        raise _Refused(400, MALFORMED, f"cannot decode body: {type(exc).__name__}") from None


def _decode_and_queue(
    state: IngestState, decoder: Decoder, body: bytes, rules: Rules
) -> tuple[DecodeResult, int, int]:
    """``_decode`` then ``_queue``, on the ingest pool: (result without its spans, accepted,
    late)."""
    result = _decode(decoder, body, rules)
    accepted, late = _queue(state, result.spans, result.rejected)
    return _without_spans(result), accepted, late


def _queue(
    state: IngestState, spans: Sequence[Span], rejected: Mapping[str, int]
) -> tuple[int, int]:
    """Cap models and hand spans to the sink, 2,000 at a time (a tick may take the books
    between chunks); count the decoder's rejections. (accepted, late). Runs on the ingest
    pool; one batch at a time, so the model cap stays exact."""
    accepted = late = 0
    with state.queue_lock:
        for i in range(0, len(spans), _SUBMIT_CHUNK):
            chunk = apply_model_cap(spans[i : i + _SUBMIT_CHUNK], state.model_cap)
            a, lt = state.sink.submit(chunk)
            accepted, late = accepted + a, late + lt
        for reason, n in rejected.items():
            state.sink.rejected(reason, n)
    return accepted, late


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
    encoding = _encoding_of(request)
    if encoding is None:
        request[REASON_KEY] = UNSUPPORTED_MEDIA_TYPE
        return _status_response(
            415,
            f"unsupported Content-Type {request.content_type!r}: "
            "use application/x-protobuf or application/json",
            "protobuf",
        )
    decoder = decode_otlp_protobuf if encoding == "protobuf" else decode_otlp_json
    try:
        result, _accepted, _late = await _ingest(request, decoder)
    except LimitError as exc:
        return _status_response(exc.status, _refused(request, exc), encoding, headers=_retry(exc))
    except _Disconnected as exc:
        return _disconnected(request, exc)
    except Exception:
        log.exception("span sink failed")
        return _status_response(500, "internal error", encoding, _GRPC_INTERNAL)
    return _trace_response(result, encoding)


def _json_error(
    status: int, reason: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": reason, "message": message}, status=status, headers=headers)


def _refused(request: web.Request, exc: LimitError) -> str:
    request[REASON_KEY] = exc.reason
    return exc.message


def _retry(exc: LimitError) -> dict[str, str] | None:
    # OTLP exporters retry 503 (and 429) after Retry-After; 4xx are final.
    return {"Retry-After": "1"} if exc.status == 503 else None


def _disconnected(request: web.Request, exc: _Disconnected) -> web.Response:
    # Normal on a network: counted, logged at debug, never a traceback.
    request[REASON_KEY] = DISCONNECTED
    log.debug("client disconnected mid-body: %s", exc)
    return web.Response(status=400, text="incomplete body\n")


async def handle_spans(request: web.Request) -> web.Response:
    """jouled's JSON batch; answers counts so that scripts can see what happened."""
    if request.content_type != JSON_TYPE:
        request[REASON_KEY] = UNSUPPORTED_MEDIA_TYPE
        return _json_error(
            415,
            UNSUPPORTED_MEDIA_TYPE,
            f"unsupported Content-Type {request.content_type!r}: use application/json",
        )
    try:
        result, accepted, late = await _ingest(request, decode_spans_json)
    except LimitError as exc:
        return _json_error(exc.status, exc.reason, _refused(request, exc), headers=_retry(exc))
    except _Disconnected as exc:
        return _disconnected(request, exc)
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


def count_requests(book: IngestRequests) -> Middleware:
    """Counts every ``/v1/*`` request answered, by status and reason (``REASON_KEY`` where a
    handler or the guard named one, else the status's)."""

    @web.middleware
    async def counted(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/v1/"):
            return await handler(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            book.count(LISTENER_HTTP, exc.status, REASON_BY_STATUS.get(exc.status, "other"))
            raise
        except BaseException:
            book.count(LISTENER_HTTP, 500, "internal")
            raise
        status = response.status
        reason = request.get(REASON_KEY) or REASON_BY_STATUS.get(status, "other")
        book.count(LISTENER_HTTP, status, reason)
        return response

    return counted


def request_bucket(max_requests_per_second: float, clock: Clock) -> TokenBucket | None:
    """The ingest rate limit: bursts of twice the rate (at least 10); None when 0."""
    if max_requests_per_second <= 0:
        return None
    return TokenBucket(max_requests_per_second, max(10.0, 2 * max_requests_per_second), clock)


def expect_handler(
    token: str | None, book: IngestRequests, max_body_bytes: int
) -> Callable[[web.Request], Awaitable[web.StreamResponse | None]]:
    """``Expect: 100-continue``: refuse before the client sends its body (401 without the
    token, 415 for an encoding jouled cannot read, 413 past the body limit), else 100.
    aiohttp answers these before the middlewares run, so refusals are counted here."""

    async def handle(request: web.Request) -> web.StreamResponse | None:
        if request.headers.get("Expect", "").strip().lower() != "100-continue":
            raise web.HTTPExpectationFailed(text="only Expect: 100-continue is supported\n")
        if not authorized(request.headers.get("Authorization"), token):
            book.count(LISTENER_HTTP, 401, UNAUTHORIZED)
            return unauthorized()
        try:
            encoding = check_encoding(request.headers.get("Content-Encoding"))
            if encoding == IDENTITY:
                check_declared(request.content_length, encoding, max_body_bytes)
        except LimitError as exc:
            book.count(LISTENER_HTTP, exc.status, exc.reason)
            return _json_error(exc.status, exc.reason, exc.message)
        if request.version >= (1, 1):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return None

    return handle


def build_ingest_app(
    sink: SpanSink,
    *,
    clock: Clock,
    known_workloads: Callable[[], set[str]] | None,
    gflops_per_token: Mapping[str, float],
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
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
    budget: BytesInFlight | None = None,
    off_loop: OffLoop | None = None,
    body_timeout_s: float = 30.0,
    requests: IngestRequests | None = None,
) -> web.Application:
    """The ingest listener's application; all state lives under ``STATE_KEY``.

    ``token``: require ``Authorization: Bearer <token>`` on /v1/*. ``max_requests_per_second``:
    a token bucket (bursts of twice the rate, at least 10); 0 disables it. ``bucket``: one
    made by ``request_bucket`` and shared with the gRPC listener (wins over the rate).
    ``senders``: finds the workload whose process sent a body (spans of an unknown
    service.name go to it); ``verify_sender`` rejects spans naming another workload.
    ``token_costs``: per model, GFLOPs of a request from its (input, output) tokens
    (``spans.model_configs``), before ``gflops_per_token``. ``budget``: the bytes in
    flight shared with other receivers (default: 8 MiB of this app's own); ``off_loop``: the
    thread pool for inflating and decoding (default: the app's own, closed with it). See
    ``jouled.ingest.limits``. ``requests``: the request book (shared with the gRPC
    listener and the exporter).
    """
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be >= 1")
    if bucket is None:
        bucket = request_bucket(max_requests_per_second, clock)
    book = requests if requests is not None else IngestRequests()
    # client_max_size only guards request.read()/post(); _ingest enforces the limit itself.
    app = web.Application(
        client_max_size=max_body_bytes,
        middlewares=[count_requests(book), guard_middleware(token=token, bucket=bucket)],
    )
    pool = off_loop if off_loop is not None else OffLoop()
    if off_loop is None:

        async def close_pool(_app: web.Application) -> None:
            pool.close()

        app.on_cleanup.append(close_pool)
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
        budget=budget if budget is not None else BytesInFlight(DEFAULT_IN_FLIGHT),
        off_loop=pool,
        body_timeout_s=body_timeout_s,
        requests=book,
    )
    expect = expect_handler(token, book, max_body_bytes)
    app.router.add_post("/v1/traces", handle_traces, expect_handler=expect)
    app.router.add_post("/v1/spans", handle_spans, expect_handler=expect)
    app.router.add_get("/healthz", handle_healthz)
    return app
