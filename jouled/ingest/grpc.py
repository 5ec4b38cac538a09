"""OTLP/gRPC: ``opentelemetry.proto.collector.trace.v1.TraceService/Export`` on grpcio's
asyncio server, with the HTTP listener's decoding, books, token, rate limit and size limit.

Answers follow the OTLP specification for gRPC: OK with an ``ExportTraceServiceResponse``
(``partial_success`` when spans were rejected; clients must not retry those),
INVALID_ARGUMENT for a message that cannot be decoded, UNAUTHENTICATED without the bearer
token (metadata ``authorization: Bearer <token>``), RESOURCE_EXHAUSTED with a
``google.rpc.RetryInfo`` when rate-limited (in ``grpc-status-details-bin`` as the
specification says, and in ``google.rpc.retryinfo-bin``, which the Python SDK reads), and
RESOURCE_EXHAUSTED without it for a message over the size limit. gzip-compressed requests
are decompressed by grpcio. Decoding runs through ``app.ingest_body``, off the event loop for
large messages.

Bounds (grpcio holds a message in memory before a handler sees it, outside
``ingest.max_bytes_in_flight``): at most ``MAX_CONCURRENT_RPCS`` calls read at once (past it,
RESOURCE_EXHAUSTED with RetryInfo before the message is read, counted as ``busy``: without
RetryInfo the OTLP specification tells exporters not to retry, and the batch would be lost),
so messages held are at most ``MAX_CONCURRENT_RPCS x (spans.max_body_bytes + 1 MiB)``;
grpcio's own limit (``_GRPCIO_MAX_RPCS``, uncounted, no RetryInfo) only backs it up; the
token and the rate limit are checked from the metadata before the message is read, so an
unauthenticated or rate-limited flood neither holds memory nor keeps a slot; a message must
arrive within ``ingest.body_timeout`` (DEADLINE_EXCEEDED); a connection must finish its
HTTP/2 handshake within ``HANDSHAKE_TIMEOUT_MS`` and is closed after ``IDLE_TIMEOUT_MS``
without a call; at most ``MAX_CONNECTIONS`` connections are open at once.

grpcio starts when the first gRPC client connects (``jouled.ingest.handover``): until then
a plain socket holds the port, so a daemon no gRPC sender talks to does not pay for grpcio's
threads (8-10 wake-ups and ~2 ms of CPU a second, measured) or its ~10 MB.

``Http2Hint`` turns the traceback aiohttp logs when a gRPC client reaches the HTTP port into
one line a minute saying where gRPC is served.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote

from jouled.clock import Clock
from jouled.ingest.app import TIMEOUT, IngestState, _Refused, ingest_body
from jouled.ingest.decode import decode_otlp_protobuf
from jouled.ingest.guard import RATE_LIMITED, UNAUTHORIZED, TokenBucket, authorized
from jouled.ingest.handover import HandOver, is_ip, plain_peer
from jouled.ingest.limits import BUSY, MALFORMED, TOO_LARGE
from jouled.ingest.requests import INTERNAL, LISTENER_GRPC, OK
from jouled.ingest.rules import DecodeResult
from jouled.ingest.sender import Peer
from jouled.throttle import Throttle

if TYPE_CHECKING:
    from grpc import aio

log = logging.getLogger(__name__)

SERVICE: Final = "opentelemetry.proto.collector.trace.v1.TraceService"
METHOD: Final = "Export"
# grpcio refuses larger messages itself, uncounted; below it jouled's own limit answers.
_GRPC_LIMIT_SLACK: Final = 1024 * 1024
# Calls served at once (an exporter has one export in flight; a host has a few exporters).
MAX_CONCURRENT_RPCS: Final = 16
_GRPCIO_MAX_RPCS: Final = 4 * MAX_CONCURRENT_RPCS  # handlers at all, refused ones included
# HTTP/2 connections open at once, and streams per connection; the HTTP listener has its own
# cap, so a gRPC flood cannot take every descriptor (/metrics, /healthz need some).
MAX_CONNECTIONS: Final = 256
MAX_STREAMS_PER_CONNECTION: Final = 100  # RFC 9113 section 6.5.2 recommends >= 100
HANDSHAKE_TIMEOUT_MS: Final = 10_000  # grpcio's default is 120 s
IDLE_TIMEOUT_MS: Final = 5 * 60_000  # exporters reconnect on their own


def parse_peer(peer: str) -> Peer | None:
    """``ipv4:127.0.0.1:5000`` or ``ipv6:[::1]:5000`` (as ``context.peer()`` says) -> (ip, port)."""
    kind, _, rest = unquote(peer).partition(":")
    if kind not in ("ipv4", "ipv6"):
        return None
    host, _, port = rest.rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        return None


def _retry_trailers(wait_s: float, message: str) -> tuple[tuple[str, bytes], ...]:
    from google.protobuf import any_pb2, duration_pb2
    from google.rpc import code_pb2, error_details_pb2, status_pb2

    seconds = max(1, math.ceil(wait_s))
    info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=seconds))
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=message, details=[detail])
    return (
        ("grpc-status-details-bin", status.SerializeToString()),
        ("google.rpc.retryinfo-bin", info.SerializeToString()),
    )


def _response(result: DecodeResult) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTracePartialSuccess,
        ExportTraceServiceResponse,
    )

    response = ExportTraceServiceResponse()
    rejected = result.rejected_total
    if rejected:
        message = f"{rejected} span(s) rejected; first: {result.first_error}"
        response.partial_success.CopyFrom(
            ExportTracePartialSuccess(rejected_spans=rejected, error_message=message)
        )
    return bytes(response.SerializeToString())


class GrpcIngest:
    """The OTLP/gRPC listener over an ``IngestState`` shared with the HTTP listener."""

    def __init__(
        self,
        state: IngestState,
        *,
        token: str | None = None,
        bucket: TokenBucket | None = None,
        max_connections: int = MAX_CONNECTIONS,
        handshake_timeout_ms: int = HANDSHAKE_TIMEOUT_MS,
        lazy: bool = True,
    ) -> None:
        """``lazy``: start grpcio at the first gRPC connection (an IP address to listen on)
        rather than in ``start``."""
        self.state = state
        self._lazy = lazy
        self._handover: HandOver | None = None  # the port until grpcio has it
        self._max_connections = max_connections
        self._handshake_timeout_ms = handshake_timeout_ms
        self._token = token
        self._bucket = bucket
        self._server: aio.Server | None = None
        self._reading = 0  # calls between admission and their answer (on the loop's thread)
        self.address: Peer | None = None

    @property
    def started(self) -> bool:
        """Whether grpcio serves the port (else a placeholder socket holds it)."""
        return self._server is not None

    async def start(self, listen: str) -> tuple[str, int]:
        """Bind ``HOST:PORT`` (port 0: any free one) and serve; returns the bound address.
        Raises OSError when the address cannot be bound."""
        host, _, port = listen.rpartition(":")
        bare = host.strip("[]")
        if not (self._lazy and is_ip(bare)):  # a name: grpcio resolves it its own way
            return await self._start_grpcio(listen)
        self._handover = HandOver(self._start_grpcio, "OTLP/gRPC", max_relays=self._max_connections)
        bound = await self._handover.listen(bare, int(port))
        self.address = (bare or "0.0.0.0", bound)
        return self.address

    async def _start_grpcio(
        self, listen: str, release: Callable[[], None] | None = None
    ) -> tuple[str, int]:
        """grpcio's server on ``listen``; ``release`` frees the port just before it binds."""
        import grpc
        from grpc import aio

        limit = self.state.max_body_bytes + _GRPC_LIMIT_SLACK
        server = aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                # Without this a second jouled would bind the same port and share its traffic.
                ("grpc.so_reuseport", 0),
                ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
                ("grpc.max_allowed_incoming_connections", self._max_connections),
                ("grpc.server_handshake_timeout_ms", self._handshake_timeout_ms),
                ("grpc.max_connection_idle_ms", IDLE_TIMEOUT_MS),
                # Stream windows stay at 64 KiB until a message is read: without it grpcio grew
                # them and took in refused callers' messages (200 x 4 MiB: 386 MB, now 131 MB).
                ("grpc.http2.bdp_probe", 0),
            ],
            maximum_concurrent_rpcs=_GRPCIO_MAX_RPCS,
        )
        # Request-streaming on our side (the wire is the same for a unary call): the
        # metadata is checked before the message is read (_export).
        handler = grpc.method_handlers_generic_handler(
            SERVICE, {METHOD: grpc.stream_unary_rpc_method_handler(self._export)}
        )
        server.add_generic_rpc_handlers((handler,))
        host = listen.rpartition(":")[0]
        if release is not None:
            release()  # the port is free from here until grpcio listens (~1.5 ms measured)
        try:
            bound = server.add_insecure_port(listen)
        except RuntimeError as exc:  # grpcio >= 1.53 raises instead of returning 0
            raise OSError(str(exc)) from None
        if not bound:
            raise OSError(f"cannot bind {listen}")
        await server.start()
        self._server = server
        self.address = (host.strip("[]") or "0.0.0.0", bound)
        return self.address

    async def stop(self, grace_s: float = 1.0) -> None:
        """Stop listening; calls in flight get ``grace_s`` to finish (relayed ones too: the
        relays pass on grpcio's GOAWAY and end with its connections)."""
        if self._handover is not None:
            self._handover.release_without_relaying()
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None
        if self._handover is not None:
            await self._handover.close()

    def _sender(self, context: aio.ServicerContext[Any, Any]) -> Any:
        senders = self.state.senders
        if senders is None:
            return None
        peer = parse_peer(context.peer())
        relayed = self._handover.relayed if self._handover is not None else None
        if peer is not None and relayed:
            peer = relayed.get(plain_peer(peer), peer)  # a connection grpcio got through a relay
        return senders.for_tcp(peer, self.address)

    async def _read(self, context: aio.ServicerContext[Any, Any]) -> bytes:
        """The call's one message, within ``ingest.body_timeout``."""
        import grpc

        book = self.state.requests
        timeout_s = self.state.body_timeout_s
        try:
            # A timeout scope, not wait_for: no task of its own for each call.
            async with asyncio.timeout(timeout_s):
                message = await context.read()
        except TimeoutError:
            book.count(LISTENER_GRPC, "DEADLINE_EXCEEDED", TIMEOUT)
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"message not received within {timeout_s:g} s (ingest.body_timeout)",
            )
        if not isinstance(message, bytes):  # EOF: the client half-closed without a message
            book.count(LISTENER_GRPC, "INVALID_ARGUMENT", MALFORMED)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no request message")
        return message

    async def _export(self, _requests: Any, context: aio.ServicerContext[Any, Any]) -> bytes:
        import grpc

        book = self.state.requests
        if self._token is not None:
            given = dict(context.invocation_metadata() or ()).get("authorization", "")
            if isinstance(given, bytes):
                given = given.decode("utf-8", "surrogateescape")
            if not authorized(given, self._token):
                book.count(LISTENER_GRPC, "UNAUTHENTICATED", UNAUTHORIZED)
                await context.abort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "missing or wrong bearer token: send metadata authorization: Bearer <token>",
                )
        if self._bucket is not None:
            wait = self._bucket.take()
            if wait > 0:
                book.count(LISTENER_GRPC, "RESOURCE_EXHAUSTED", RATE_LIMITED)
                message = f"over {self._bucket.rate:g} requests/s; retry later"
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED, message, _retry_trailers(wait, message)
                )
        # The message lives only in _answer's frame, which returns normally: an abort raised
        # with it in scope tied it to a traceback cycle that only the cyclic GC freed (a flood
        # of refused 4 MiB messages held ~330 MB until then).
        if self._reading >= MAX_CONCURRENT_RPCS:
            book.count(LISTENER_GRPC, "RESOURCE_EXHAUSTED", BUSY)
            message = f"over {MAX_CONCURRENT_RPCS} export calls at once; retry later"
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, message, _retry_trailers(1.0, message)
            )
        self._reading += 1
        try:
            outcome = await self._answer(await self._read(context), context)
        finally:
            self._reading -= 1
        if isinstance(outcome, bytes):
            book.count(LISTENER_GRPC, "OK", OK)
            return outcome
        book.count(LISTENER_GRPC, outcome.code.name, outcome.reason)
        await context.abort(outcome.code, outcome.message, outcome.trailers)
        raise AssertionError("unreachable: abort raises")

    async def _answer(self, request: bytes, context: aio.ServicerContext[Any, Any]) -> Any:
        """The response message, or the ``_Abort`` to answer with; raises nothing."""
        import grpc

        limit = self.state.max_body_bytes
        if len(request) > limit:
            return _Abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                TOO_LARGE,
                f"message of {len(request)} bytes exceeds {limit} bytes (spans.max_body_bytes)",
            )
        # The message is in memory already (grpcio read it); its decoding is what the budget
        # bounds, as for an HTTP body (jouled.ingest.limits).
        reserved = self.state.budget.try_reserve(len(request))
        if not reserved:
            message = "too many request bytes in flight (ingest.max_bytes_in_flight); retry later"
            return _Abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, BUSY, message, _retry_trailers(1.0, message)
            )
        try:
            result, _accepted, _late = await ingest_body(
                self.state, decode_otlp_protobuf, request, self._sender(context)
            )
        except _Refused as exc:
            return _Abort(grpc.StatusCode.INVALID_ARGUMENT, exc.reason, exc.message)
        except Exception:
            log.exception("span sink failed")
            return _Abort(grpc.StatusCode.INTERNAL, INTERNAL, "internal error")
        finally:
            self.state.budget.release(reserved)
        return _response(result)


@dataclass(frozen=True, slots=True)
class _Abort:
    code: Any  # grpc.StatusCode
    reason: str  # jouled_ingest_requests_total's reason
    message: str
    trailers: tuple[tuple[str, bytes], ...] = ()


class Http2Hint(logging.Filter):
    """Attached to the ``aiohttp.server`` logger: a gRPC (HTTP/2) client on an HTTP/1 port
    makes aiohttp log a traceback per attempt; this drops those records and logs instead,
    once a minute at most, where gRPC is served."""

    def __init__(self, grpc_where: str | None, clock: Clock, every_s: float = 60.0) -> None:
        super().__init__("jouled.http2hint")
        self.grpc_where = grpc_where
        self._throttle = Throttle(clock, every_s)
        self.seen = 0

    @staticmethod
    def _is_http2_preface(record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        text = str(exc) if exc is not None else ""
        # aiohttp's parser stops at the HTTP/2 connection preface "PRI * HTTP/2.0".
        return "PRI" in text and type(exc).__name__ in ("BadHttpMessage", "BadStatusLine")

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._is_http2_preface(record):
            return True
        self.seen += 1
        if self._throttle.allow() is not None:
            where = (
                f"OTLP/gRPC is served on {self.grpc_where} (ingest.grpc_listen)"
                if self.grpc_where
                else "the gRPC listener is off (ingest.grpc_listen: null)"
            )
            log.warning(
                "a gRPC (HTTP/2) client connected to an HTTP/1 port and was refused: %s; "
                "point OTLP/gRPC exporters there, or use OTLP/HTTP (http/protobuf) on "
                "this port's /v1/traces",
                where,
            )
        return False
