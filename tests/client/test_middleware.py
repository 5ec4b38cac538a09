"""The aiohttp and ASGI middlewares: one span per request, with model, work and route."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from jouled.client import JouledASGIMiddleware, SpanReporter, jouled_middleware, set_work
from jouled.client.asgi import Message, Receive, Scope, Send
from tests.client.conftest import IngestServer

WAIT_S = 10.0


@pytest.fixture
async def reporter(ingest: IngestServer) -> AsyncIterator[SpanReporter]:
    # A long interval: spans leave only on aclose(), so the tests count them all at once.
    reporter = SpanReporter(ingest.url, workload="api", flush_interval=3600.0)
    yield reporter
    await reporter.aclose(timeout=1.0)


def tokens_gflops(request: web.Request, response: web.StreamResponse) -> float | None:
    tokens = response.headers.get("X-Tokens")
    return 2.0 * float(tokens) if tokens is not None else None


async def test_aiohttp_middleware_sends_one_span_per_request(
    ingest: IngestServer, reporter: SpanReporter
) -> None:
    async def classify(request: web.Request) -> web.Response:
        set_work(gflops=3.0)  # the handler's own figure: the gflops callable is not consulted
        return web.json_response({"label": "ok"}, headers={"X-Tokens": "1000"})

    async def generate(request: web.Request) -> web.StreamResponse:
        n = int(request.query["n"])
        response = web.StreamResponse(headers={"X-Tokens": str(n)})
        await response.prepare(request)
        for _ in range(n):  # streamed: the span covers it to the last chunk
            await response.write(b"tok ")
        await response.write_eof()
        return response

    async def missing(request: web.Request) -> web.Response:
        raise web.HTTPNotFound()

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("handler bug")

    middleware = jouled_middleware(
        reporter, model=lambda r: r.headers.get("X-Model", "bert-base"), gflops=tokens_gflops
    )
    app = web.Application(middlewares=[middleware])
    app.router.add_post("/v1/classify", classify)
    app.router.add_get("/v1/generate/{session}", generate)
    app.router.add_get("/v1/missing", missing)
    app.router.add_get("/v1/boom", boom)
    before = time.time()
    async with TestClient(TestServer(app)) as client:
        assert (await client.post("/v1/classify")).status == 200
        for session, n in (("a", 4), ("b", 6)):
            answer = await client.get(f"/v1/generate/{session}?n={n}", headers={"X-Model": "gpt2"})
            assert answer.status == 200
        assert (await client.get("/v1/missing")).status == 404
        assert (await client.get("/v1/boom")).status == 500
        assert (await client.get("/no/such/route")).status == 404
    after = time.time()
    assert await reporter.aclose(timeout=WAIT_S)
    spans = ingest.sink.spans
    assert len(spans) == reporter.stats.sent == 6
    got = [(s.model, s.route, s.gflops) for s in spans]
    assert got == [
        ("bert-base", "/v1/classify", 3.0),
        ("gpt2", "/v1/generate/{session}", 8.0),
        ("gpt2", "/v1/generate/{session}", 12.0),
        ("bert-base", "/v1/missing", None),  # raised: timed, no response to read work from
        ("bert-base", "/v1/boom", None),
        ("bert-base", "", None),  # no route matched: no label made from the raw path
    ]
    assert all(s.workload == "api" and before <= s.start <= s.end <= after for s in spans)


async def test_aiohttp_middleware_survives_a_raising_callable(
    ingest: IngestServer, reporter: SpanReporter
) -> None:
    def bad_gflops(request: web.Request, response: web.StreamResponse) -> float | None:
        raise KeyError("no such header")

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app = web.Application(middlewares=[jouled_middleware(reporter, model="m", gflops=bad_gflops)])
    app.router.add_get("/", hello)
    async with TestClient(TestServer(app)) as client:
        for _ in range(3):
            answer = await client.get("/")
            assert (answer.status, await answer.text()) == (200, "hi")
    assert await reporter.aclose(timeout=WAIT_S)
    assert [(s.model, s.gflops) for s in ingest.sink.spans] == [("m", None)] * 3


class _Route:
    path = "/v1/items/{item_id}"


async def _app(scope: Scope, receive: Receive, send: Send) -> None:
    """A minimal ASGI 3 app standing in for a framework: it sets scope["route"] as FastAPI."""
    if scope["type"] == "lifespan":
        scope["seen_lifespan"] = True
        return
    message = await receive()
    assert message["type"] == "http.request"
    path = scope["path"]
    if path == "/boom":
        raise RuntimeError("handler bug")
    scope["route"] = _Route()
    status = 200
    if path == "/state":
        scope["state"]["jouled.gflops"] = 5.0
        scope["state"]["jouled.model"] = "from-state"
    elif path == "/thread":
        # Sync endpoints run in a thread with a *copy* of the context (Starlette's
        # threadpool, asyncio.to_thread): set_work must still reach the middleware.
        assert await asyncio.to_thread(set_work, gflops=9.0, model="from-thread")
    elif path == "/tokens":
        set_work(input_tokens=2, output_tokens=3, model="llama-8b")
    elif path == "/created":
        status = 201
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"ok", "more_body": False})


async def _drive(app: JouledASGIMiddleware, path: str) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "asgi": {"version": "3.0"}, "method": "GET", "path": path,
             "headers": []}  # fmt: skip
    await app(scope, receive, send)
    return sent


async def test_asgi_middleware_reads_work_from_every_source(
    ingest: IngestServer, reporter: SpanReporter
) -> None:
    calls: list[int] = []

    def gflops(scope: Any, status: int) -> float | None:
        calls.append(status)
        return status / 100.0

    app = JouledASGIMiddleware(_app, reporter, model="bert-base", gflops=gflops)
    for path in ("/plain", "/created", "/state", "/thread", "/tokens"):
        sent = await _drive(app, path)
        assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    with pytest.raises(RuntimeError, match="handler bug"):
        await _drive(app, "/boom")
    assert await reporter.aclose(timeout=WAIT_S)
    got = [(s.model, s.gflops, s.route) for s in ingest.sink.spans]
    route = "/v1/items/{item_id}"
    assert got == [
        ("bert-base", 2.0, route),  # gflops(scope, 200)
        ("bert-base", 2.01, route),  # the status reached the callable
        ("from-state", 5.0, route),
        ("from-thread", 9.0, route),
        ("llama-8b", 80.0, route),  # 5 tokens x 16 GFLOPs/token, configured in jouled
        ("bert-base", None, ""),  # raised: still timed, no response to take work from
    ]
    assert calls == [200, 201]  # only for responses whose handler reported no work


async def test_asgi_middleware_passes_other_scopes_through(
    ingest: IngestServer, reporter: SpanReporter
) -> None:
    app = JouledASGIMiddleware(_app, reporter, model=lambda scope: scope["path"].strip("/"))
    scope: Scope = {"type": "lifespan"}

    async def nothing() -> Message:
        return {}

    async def ignore(message: Message) -> None:
        return None

    await app(scope, nothing, ignore)
    assert scope["seen_lifespan"] is True
    await _drive(app, "/by-path")
    assert await reporter.aclose(timeout=WAIT_S)
    assert [s.model for s in ingest.sink.spans] == ["by-path"]


async def test_aiohttp_server_is_unaffected_when_jouled_is_down(refused_url: str) -> None:
    reporter = SpanReporter(refused_url, workload="api", batch_size=5)

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app = web.Application(middlewares=[jouled_middleware(reporter, model="m")])
    app.router.add_get("/", hello)
    async with TestClient(TestServer(app)) as client:
        for _ in range(20):
            answer = await client.get("/")
            assert (answer.status, await answer.text()) == (200, "hi")
    assert await reporter.aclose(timeout=WAIT_S)
    stats = reporter.stats
    assert (stats.sent, stats.failed, stats.dropped) == (0, 20, 0)
