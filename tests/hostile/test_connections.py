"""Idle and slow sockets, connection caps per listener, and logging that a flood cannot
inflate (issue 13: ~1,010 idle sockets sending partial headers stopped /metrics, /healthz
and ingest, spun a core and grew the log 722 MB in 90 s)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from urllib.parse import urlsplit

import aiohttp
import pytest

from jouled.logs import RepeatFilter
from tests.hostile.conftest import RunningFactory


async def _open_partial(url: str, n: int) -> list[asyncio.StreamWriter]:
    parts = urlsplit(url)
    writers = []
    for _ in range(n):
        _reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(b"POST /v1/spans HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
        writers.append(writer)
    for w in writers:
        await w.drain()
    return writers


async def test_partial_headers_past_the_cap_leave_metrics_and_healthz_answering(
    daemon_at: RunningFactory,
) -> None:
    async with daemon_at(connections={"max_ingest": 16, "header_timeout": 1.0}) as r:
        stats = r.daemon.connection_stats["ingest"]
        writers = await _open_partial(r.ingest_url, 24)
        for _ in range(100):
            if stats.open + stats.refused >= 24:
                break
            await asyncio.sleep(0.02)
        assert (stats.open, stats.refused) == (16, 8)
        async with aiohttp.ClientSession() as http:
            assert (await r.healthz(http))[0] == 200
            async with http.get(r.metrics_url + "/metrics") as resp:
                assert resp.status == 200
            # The ingest port answers new senders 503 with Retry-After while full.
            async with http.post(r.ingest_url + "/v1/spans", json={"spans": []}) as resp:
                assert resp.status == 503 and resp.headers["Retry-After"] == "1"
            # header_timeout closes the slow ones; the port then takes spans again.
            for _ in range(100):
                if stats.open == 0:
                    break
                await asyncio.sleep(0.05)
            assert stats.timed_out == 16
            async with http.post(r.ingest_url + "/v1/spans", json={"spans": []}) as resp:
                assert resp.status == 200
        for w in writers:
            w.close()


async def test_an_idle_keepalive_connection_is_closed_after_idle_timeout(
    daemon_at: RunningFactory,
) -> None:
    async with daemon_at(connections={"idle_timeout": 0.5}) as r:
        parts = urlsplit(r.metrics_url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        await reader.readexactly(3)  # "ok\n"
        writer.write(b"GET /hea")  # a partial second request, then silence
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        writer.close()


def test_a_repeated_error_is_logged_a_few_times_a_minute_with_a_count() -> None:
    now = [0.0]
    filt = RepeatFilter(burst=3, window_s=60.0, now=lambda: now[0])
    logger = logging.getLogger("test.flood")
    records = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep()
    handler.addFilter(filt)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for _ in range(10_000):
            logger.error("accept failed: %s", "EMFILE")
        now[0] = 61.0
        logger.error("accept failed: %s", "EMFILE")
        try:
            raise ConnectionResetError("peer reset")
        except ConnectionResetError:
            logger.exception("Error handling request")
    finally:
        logger.removeHandler(handler)
    assert len(records) == 5
    assert records[3] == "accept failed: EMFILE [9997 similar held back in 60 s]"
    assert records[4] == "Error handling request (client disconnected: peer reset)"


async def _stop_after(
    yields: int,
    first: bytes,
    then: bytes | None = None,
    *,
    wait_s: float = 0.0,
    then_after_s: float = 0.0,
) -> tuple[bytes, float, int, float]:
    """A GuardedRunner stopped ``yields`` loop iterations (then ``wait_s`` seconds) after a
    client connected and sent ``first``; ``then`` is sent ``then_after_s`` into the stop.
    What the client read (``b"reset"`` for a reset), seconds from the stop to the client's
    answer, connections answered 503 on stop, and seconds the stop took."""
    from aiohttp import web

    from jouled.connections import ConnectionLimits, GuardedRunner

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text=f"got {len(await request.read())}")

    app = web.Application()
    app.router.add_post("/", ok)
    runner = GuardedRunner(app, ConnectionLimits(), handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(10)
    sock.sendall(first)
    for _ in range(yields):
        await asyncio.sleep(0)
    if wait_s:  # (a sleep of 0 would be one more loop iteration)
        await asyncio.sleep(wait_s)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    stopping = asyncio.create_task(runner.cleanup())

    def read() -> bytes:
        if then is not None:
            time.sleep(then_after_s)
            with contextlib.suppress(OSError):
                sock.sendall(then)
        try:
            return sock.recv(4096)
        except ConnectionResetError:
            return b"reset"

    got = await asyncio.to_thread(read)
    answered_s = loop.time() - t0
    await asyncio.wait_for(stopping, 10)
    sock.close()
    return got, answered_s, runner.stats.closed_on_stop, loop.time() - t0


_REQUEST = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"


async def test_a_connection_accepted_as_the_listener_stops_is_answered_at_once() -> None:
    """The stop lands at each point between connect and handler (0-7 loop iterations after
    the client's connect): a request that reached the server is answered 200, one that did
    not gets a reset (never accepted) or 503 "stopping"; none waits. Upstream, a stop one or
    two iterations after the accept left the client unanswered for the shutdown timeout
    (60 s; CPython gh-109564 and aiohttp ignoring bytes after pre_shutdown): CI saw
    test_sigterm_while_spans_stream_in time out that way."""
    for yields in range(8):
        got, answered_s, _, _ = await _stop_after(yields, _REQUEST)
        assert answered_s < 2.0, (yields, got)
        if yields == 0:  # still in the kernel's accept queue: closed with the listener
            assert got in (b"reset", b""), got
        else:  # accepted before the stop: served, not dropped
            assert got.startswith(b"HTTP/1.1 200"), (yields, got)
    stopping = b"jouled is stopping; retry later\n"
    for yields in range(8):
        # Connected, no request yet when the stop comes: told to retry, not left waiting.
        got, answered_s, closed, _ = await _stop_after(yields, b"")
        assert answered_s < 2.0, (yields, got)
        if yields == 0:
            assert got in (b"reset", b""), got
        else:
            assert got.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in got, (yields, got)
            assert got.endswith(stopping) and closed == 1
        # The request sent while the listener stops: served or told to retry, at once.
        got, answered_s, _, _ = await _stop_after(yields, b"", then=_REQUEST)
        assert answered_s < 2.0, (yields, got)
        if yields > 0:
            assert got.startswith(b"HTTP/1.1 200") or got.endswith(stopping), (yields, got)
    # A kept-alive connection between requests is closed, not held for the timeout.
    got, answered_s, closed, _ = await _stop_after(
        8, _REQUEST.replace(b"Host: x", b"Host: x\r\nConnection: keep-alive")
    )
    assert got.startswith(b"HTTP/1.1 200") and answered_s < 2.0 and closed == 0


async def test_a_body_on_its_way_when_the_listener_stops_is_read_and_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aiohttp ignores what arrives once it stops: the rest of a body on its way was dropped,
    and the request waited for the ingest body timeout (30 s) to be answered 408, which OTLP
    exporters do not retry. Now it is read and answered at once, with Connection: close; a
    body that never comes holds the stop for two grace periods at most."""
    from jouled import connections

    half = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello"
    # The head read and the handler waiting for the body (0.2 s) when the stop begins.
    got, _, _, took = await _stop_after(0, half, b"world", wait_s=0.2, then_after_s=0.05)
    assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"got 10"), got
    assert b"Connection: close" in got and took < 2.0
    monkeypatch.setattr(connections, "STOP_GRACE_S", 0.3)
    got, _, _, took = await _stop_after(0, half, wait_s=0.2)
    assert got in (b"", b"reset") and took < 0.3 * 2 + 1.0, (got, took)
