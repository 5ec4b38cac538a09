"""Fixtures: the real ingest app served on loopback from its own thread, and broken peers.

The ingest runs on a thread of its own so that sync tests can block (``close()``,
``flush()``) while it keeps answering, as the real daemon would from its own process.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from aiohttp import web

from jouled.attribution.spans import Span
from jouled.clock import SystemClock
from jouled.ingest.app import build_ingest_app

GFLOPS_PER_TOKEN = {"llama-8b": 16.0}


class RecordingSink:
    """A SpanSink that keeps every span and counts the POSTs that carried them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.spans: list[Span] = []
        self.posts = 0
        self.rejections: dict[str, int] = {}
        self.fail = False

    def submit(self, spans: Sequence[Span]) -> tuple[int, int]:
        if self.fail:
            raise RuntimeError("sink down")
        with self._lock:
            self.spans.extend(spans)
            self.posts += 1
        return len(spans), 0

    def rejected(self, reason: str, n: int) -> None:
        with self._lock:
            self.rejections[reason] = self.rejections.get(reason, 0) + n


class IngestServer:
    """``build_ingest_app`` behind a real aiohttp runner on 127.0.0.1, on its own loop."""

    def __init__(self, sink: RecordingSink, keepalive_timeout: float = 75.0, **kw: Any) -> None:
        self.sink = sink
        kw.setdefault("clock", SystemClock())
        kw.setdefault("known_workloads", None)
        kw.setdefault("gflops_per_token", GFLOPS_PER_TOKEN)
        self._app = build_ingest_app(sink, **kw)
        self._keepalive_timeout = keepalive_timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/spans"

    def start(self) -> IngestServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(self._app, keepalive_timeout=self._keepalive_timeout)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def ingest(sink: RecordingSink) -> Iterator[IngestServer]:
    server = IngestServer(sink).start()
    yield server
    server.stop()


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A loopback port that is bound but not listening: every connect is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1/spans"
    sock.close()


class HungServer:
    """Accepts connections and reads requests, but answers nothing until released."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}/v1/spans"
        self.got_request = threading.Event()
        self.release = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conns: list[socket.socket] = []
        self._server.settimeout(0.05)
        while not self.release.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            conns.append(conn)
            if conn.recv(65536):
                self.got_request.set()
        for conn in conns:
            conn.close()  # the client sees the connection dropped, never an answer

    def stop(self) -> None:
        self.release.set()
        self._thread.join(10)
        self._server.close()


@pytest.fixture
def hung() -> Iterator[HungServer]:
    server = HungServer()
    yield server
    server.stop()
