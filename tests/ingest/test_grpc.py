"""OTLP/gRPC over loopback: the real Python SDK exporter (gzip), token, rate limit with
RetryInfo, size limit, bad messages, partial success; and a gRPC client on the HTTP port."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from aiohttp.test_utils import TestServer
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind

from jouled.clock import FakeClock, SystemClock
from jouled.ingest.app import STATE_KEY, build_ingest_app, request_bucket
from jouled.ingest.grpc import GrpcIngest, Http2Hint, parse_peer
from tests.ingest.otlp import pb_span, request
from tests.ingest.test_otel_sdk import ListSink

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


async def serve(sink: ListSink, **kw: Any) -> GrpcIngest:
    clock = kw.pop("clock", SystemClock())
    bucket = kw.pop("bucket", None)
    token = kw.pop("token", None)
    listen = kw.pop("listen", "127.0.0.1:0")
    limits = {k: kw.pop(k) for k in ("max_connections", "handshake_timeout_ms") if k in kw}
    app = build_ingest_app(
        sink, clock=clock, known_workloads=lambda: {"classifier"}, gflops_per_token={"m": 2.0}, **kw
    )
    ingest = GrpcIngest(app[STATE_KEY], token=token, bucket=bucket, **limits)
    await ingest.start(listen)
    return ingest


@pytest.fixture
async def sink() -> AsyncIterator[ListSink]:
    yield ListSink()


async def call(port: int, body: bytes, metadata: Any = None) -> tuple[Any, Any, Any]:
    """(code, response or details, trailing metadata) of one raw Export call."""
    # A local subchannel pool: each call connects anew (no backoff shared between channels).
    options = [("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        export = channel.unary_unary(EXPORT)
        try:
            reply = await export(body, metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError as err:
            return err.code(), err.details(), dict(err.trailing_metadata() or ())
        return grpc.StatusCode.OK, ExportTraceServiceResponse.FromString(reply), {}


def export_with_sdk(port: int, headers: Any = None) -> tuple[SpanExportResult, float, float]:
    results: list[SpanExportResult] = []

    class Recording(OTLPSpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            result = super().export(spans)
            results.append(result)
            return result

    exporter = Recording(
        endpoint=f"http://127.0.0.1:{port}",
        insecure=True,
        compression=grpc.Compression.Gzip,
        headers=headers,
        timeout=10,
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "classifier"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=60_000))
    tracer = provider.get_tracer("jouled-test")
    before = time.time()
    with tracer.start_as_current_span("POST /generate", kind=SpanKind.SERVER) as span:
        span.set_attribute("gen_ai.request.model", "m")
        span.set_attribute("gen_ai.usage.input_tokens", 30)
        span.set_attribute("gen_ai.usage.output_tokens", 12)
    after = time.time()
    provider.shutdown()
    return results[0], before, after


async def test_python_sdk_grpc_exporter_with_gzip_and_token(sink: ListSink) -> None:
    ingest = await serve(sink, token="s3cret")
    port = ingest.address[1] if ingest.address else 0
    try:
        result, before, after = await asyncio.to_thread(
            export_with_sdk, port, (("authorization", "Bearer s3cret"),)
        )
        assert result is SpanExportResult.SUCCESS
        (span,) = sink.spans
        assert (span.workload, span.model, span.gflops) == ("classifier", "m", 84.0)
        assert before <= span.start <= span.end <= after
        code, details, _ = await call(port, b"")
        assert code is grpc.StatusCode.UNAUTHENTICATED and "authorization" in details
        assert ingest.state.requests.totals() == {
            ("grpc", "OK", "ok"): 1,
            ("grpc", "UNAUTHENTICATED", "unauthorized"): 1,
        }
        assert sink.rejections == {}
    finally:
        await ingest.stop()


async def test_rate_limited_answers_resource_exhausted_with_retry_info(sink: ListSink) -> None:
    clock = FakeClock()
    bucket = request_bucket(5, clock)  # bursts of 10
    ingest = await serve(sink, bucket=bucket, clock=clock)
    port = ingest.address[1] if ingest.address else 0
    body = bytes(
        request([pb_span(1, start=clock.time() - 2, end=clock.time() - 1)]).SerializeToString()
    )
    try:
        codes = [(await call(port, body))[0] for _ in range(10)]
        assert codes == [grpc.StatusCode.OK] * 10
        code, details, trailers = await call(port, body)
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED and "requests/s" in details
        status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
        info = error_details_pb2.RetryInfo()
        assert status.details[0].Unpack(info)
        assert info.retry_delay.seconds == 1
        sdk_info = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
        assert sdk_info == info
        assert ingest.state.requests.totals() == {
            ("grpc", "OK", "ok"): 10,
            ("grpc", "RESOURCE_EXHAUSTED", "rate_limited"): 1,
        }
        assert sink.rejections == {}
        clock.advance(1.0)
        assert (await call(port, body))[0] is grpc.StatusCode.OK
    finally:
        await ingest.stop()


async def test_bad_and_large_messages_and_partial_success(sink: ListSink) -> None:
    clock = FakeClock()
    ingest = await serve(sink, clock=clock, max_body_bytes=2048)
    port = ingest.address[1] if ingest.address else 0
    now = clock.time()
    try:
        code, details, _ = await call(port, b"\xff\xff\xff")
        assert code is grpc.StatusCode.INVALID_ARGUMENT and "protobuf" in details
        code, details, _ = await call(port, b"\x0a" + b"\x00" * 4000)
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED and "max_body_bytes" in details
        mixed = request(
            [pb_span(1, start=now - 2, end=now - 1), pb_span(2, start=now, end=now - 1)]
        )
        code, reply, _ = await call(port, mixed.SerializeToString())
        assert code is grpc.StatusCode.OK
        assert reply.partial_success.rejected_spans == 1
        assert "end_before_start" in reply.partial_success.error_message
        # Two refused messages are requests; the one bad span is in the span books.
        assert ingest.state.requests.totals() == {
            ("grpc", "INVALID_ARGUMENT", "malformed"): 1,
            ("grpc", "RESOURCE_EXHAUSTED", "too_large"): 1,
            ("grpc", "OK", "ok"): 1,
        }
        assert sink.rejections == {"end_before_start": 1}
        assert len(sink.spans) == 1
    finally:
        await ingest.stop()


def test_parse_peer() -> None:
    assert parse_peer("ipv4:127.0.0.1:5000") == ("127.0.0.1", 5000)
    assert parse_peer("ipv6:[::1]:5000") == ("::1", 5000)
    assert parse_peer("ipv6:%5B::1%5D:5000") == ("::1", 5000)
    assert parse_peer("unix:/tmp/x") is None


async def test_second_listener_on_the_same_port_fails(sink: ListSink) -> None:
    ingest = await serve(sink)
    port = ingest.address[1] if ingest.address else 0
    app = build_ingest_app(sink, clock=SystemClock(), known_workloads=None, gflops_per_token={})
    other = GrpcIngest(app[STATE_KEY])
    try:
        with pytest.raises(OSError):
            await other.start(f"127.0.0.1:{port}")
    finally:
        await other.stop(0)
        await ingest.stop()


async def test_grpc_client_on_the_http_port_gets_one_line_not_a_traceback(
    sink: ListSink, caplog: pytest.LogCaptureFixture
) -> None:
    app = build_ingest_app(sink, clock=SystemClock(), known_workloads=None, gflops_per_token={})
    hint = Http2Hint("127.0.0.1:4317", SystemClock())
    server_log = logging.getLogger("aiohttp.server")
    server_log.addFilter(hint)
    try:
        async with TestServer(app, host="127.0.0.1") as server:
            for _ in range(3):
                code, _, _ = await call(server.port or 0, b"")
                assert code is grpc.StatusCode.UNAVAILABLE
    finally:
        server_log.removeFilter(hint)
    assert hint.seen >= 3
    warnings = [r for r in caplog.records if r.name == "jouled.ingest.grpc"]
    assert len(warnings) == 1
    assert "OTLP/gRPC is served on 127.0.0.1:4317" in warnings[0].getMessage()
    assert not any(r.name == "aiohttp.server" for r in caplog.records)
    assert not any(r.exc_info for r in caplog.records)


async def test_a_gzip_bomb_is_refused_by_grpcio_before_it_is_inflated_past_the_limit(
    sink: ListSink,
) -> None:
    clock = FakeClock()
    ingest = await serve(sink, clock=clock, max_body_bytes=1024 * 1024)
    target = f"127.0.0.1:{ingest.address[1] if ingest.address else 0}"
    n = 32 * 1024 * 1024  # 32 MiB of zeros in one bytes field: ~32 KiB on the wire gzipped
    bomb = b"\x0a" + _varint(n) + bytes(n)
    now = clock.time()
    good = request([pb_span(1, start=now - 2, end=now - 1)]).SerializeToString()
    options = [("grpc.max_send_message_length", -1), ("grpc.use_local_subchannel_pool", 1)]
    try:
        async with grpc.aio.insecure_channel(target, options=options) as channel:
            export = channel.unary_unary(EXPORT)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await export(bomb, compression=grpc.Compression.Gzip, timeout=30)
            assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "larger than max" in (err.value.details() or "")
            # The receiver goes on: the next, normal message is taken.
            await export(good, compression=grpc.Compression.Gzip, timeout=10)
        assert len(sink.spans) == 1
    finally:
        await ingest.stop()


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


async def test_a_refused_message_is_freed_at_once_not_by_the_cyclic_gc(sink: ListSink) -> None:
    """An abort raised with the message in scope tied it to a traceback cycle: a flood of
    refused messages held their bytes until the cyclic GC ran (~330 MB for 600 x 4 MB)."""
    import gc
    import tracemalloc

    ingest = await serve(sink, max_body_bytes=2 * 1024 * 1024)
    port = ingest.address[1] if ingest.address else 0
    junk = b"\x0a" + _varint(1024 * 1024) + bytes(1024 * 1024)  # field 0 inside: malformed
    options = [("grpc.use_local_subchannel_pool", 1)]
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            export = channel.unary_unary(EXPORT)
            await asyncio.sleep(0)
            base = tracemalloc.get_traced_memory()[0]
            for _ in range(8):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await export(junk, timeout=10)
                assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            held = tracemalloc.get_traced_memory()[0] - base
        assert held < 2 * 1024 * 1024, f"{held} bytes still held after 8 refused 1 MiB messages"
        assert ingest.state.requests.totals() == {("grpc", "INVALID_ARGUMENT", "malformed"): 8}
    finally:
        tracemalloc.stop()
        gc.enable()
        await ingest.stop()


async def _never_sends() -> AsyncIterator[bytes]:
    """A client that opens the call and never sends its message."""
    await asyncio.sleep(3600)
    yield b""


async def test_slow_callers_are_bounded_and_an_authorized_sender_still_gets_through(
    sink: ListSink,
) -> None:
    """Unauthenticated calls are refused from their metadata, before any message (they hold
    no slot); a caller that never sends its message is cut at ingest.body_timeout; callers
    past MAX_CONCURRENT_RPCS get RESOURCE_EXHAUSTED with RetryInfo (counted), and the sender's
    spans arrive once slots free."""
    from jouled.ingest.grpc import MAX_CONCURRENT_RPCS

    clock = FakeClock()
    ingest = await serve(sink, clock=clock, token="s3cret", body_timeout_s=1.0)
    port = ingest.address[1] if ingest.address else 0
    now = clock.time()
    good = request([pb_span(1, start=now - 2, end=now - 1)]).SerializeToString()
    auth = (("authorization", "Bearer s3cret"),)
    options = [("grpc.use_local_subchannel_pool", 1)]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            slow = channel.stream_unary(EXPORT)
            # 40 unauthenticated callers that never send: each refused at once.
            anonymous = [slow(_never_sends(), timeout=10) for _ in range(40)]
            codes = [await asyncio.wait_for(_code(c), 5) for c in anonymous]
            assert set(codes) == {grpc.StatusCode.UNAUTHENTICATED}
            # Authorized callers that never send fill every slot; one more is refused.
            held = [slow(_never_sends(), metadata=auth, timeout=10) for _ in range(40)]
            codes = [await asyncio.wait_for(_code(c), 5) for c in held]
            assert codes.count(grpc.StatusCode.DEADLINE_EXCEEDED) == MAX_CONCURRENT_RPCS
            assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 40 - MAX_CONCURRENT_RPCS
            # Each refusal says when to retry (OTLP: no RetryInfo means do not retry).
            refused = held[codes.index(grpc.StatusCode.RESOURCE_EXHAUSTED)]
            trailers = dict(await refused.trailing_metadata() or ())
            info = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
            assert info.retry_delay.seconds == 1
            # The slots are free again: the real sender's spans are taken.
            reply = await channel.unary_unary(EXPORT)(good, metadata=auth, timeout=10)
            assert ExportTraceServiceResponse.FromString(reply).partial_success.rejected_spans == 0
        assert len(sink.spans) == 1
        assert ingest.state.requests.totals() == {
            ("grpc", "UNAUTHENTICATED", "unauthorized"): 40,
            ("grpc", "DEADLINE_EXCEEDED", "timeout"): MAX_CONCURRENT_RPCS,
            ("grpc", "RESOURCE_EXHAUSTED", "busy"): 40 - MAX_CONCURRENT_RPCS,
            ("grpc", "OK", "ok"): 1,
        }
    finally:
        await ingest.stop()


async def _code(call: Any) -> Any:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def test_idle_connections_are_capped_and_closed_after_the_handshake_timeout(
    sink: ListSink,
) -> None:
    """Sockets that connect and never speak HTTP/2 take at most max_connections descriptors
    (the rest are closed at once) and are closed after the handshake timeout; then an
    exporter connects again."""
    ingest = await serve(sink, max_connections=8, handshake_timeout_ms=500)
    port = ingest.address[1] if ingest.address else 0
    now = time.time()
    good = request([pb_span(1, start=now - 2, end=now - 1)]).SerializeToString()
    idle = []
    try:
        for _ in range(12):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setblocking(False)
            idle.append(sock)
        await asyncio.sleep(0.2)
        assert sum(_is_open(s) for s in idle) == 8
        await asyncio.sleep(1.0)
        assert sum(_is_open(s) for s in idle) == 0
        code, _, _ = await call(port, good)
        assert code is grpc.StatusCode.OK and len(sink.spans) == 1
    finally:
        for sock in idle:
            sock.close()
        await ingest.stop()


def _is_open(sock: socket.socket) -> bool:
    """Drains what the server sent (its SETTINGS); False once it closed the connection."""
    try:
        while sock.recv(65536):
            pass
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False
