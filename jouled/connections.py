"""Connection limits for jouled's HTTP listeners, and logging that a flood cannot inflate.

Each listener (metrics, ingest) has its own cap on open connections: past it a new
connection is answered ``503`` with ``Retry-After`` and closed at once, so idle or slow
sockets on the ingest port cannot take the descriptors ``/metrics`` and ``/healthz`` need.
A connection must complete a request's headers within ``header_timeout`` seconds of
opening, and may idle between requests for ``idle_timeout`` seconds (aiohttp's keep-alive
timer, which also closes a connection whose next request's headers are still partial).
Bodies have their own timeout in the ingest app. The systemd unit sets ``LimitNOFILE`` well
above the sum of the caps.
Repeated errors are rate-limited in the log by ``jouled.logs.RepeatFilter``.

On stop, a request whose head has arrived is read to its end and answered with
``Connection: close`` (within ``STOP_GRACE_S``), a kept-alive connection between requests is
closed, and a connection that has not sent a request head yet is answered ``503`` with
``Retry-After`` and closed. Upstream aiohttp ignores what arrives once it stops (a body on
its way waits for the ingest body timeout, 30 s, and is answered 408), and aiohttp and
asyncio leave a connection accepted in the moment of the stop unanswered until the runner's
shutdown timeout (60 s) or the garbage collector.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)


def _retry_later(text: bytes) -> bytes:
    """A whole ``503`` answer with ``Retry-After: 1`` that closes its connection."""
    return (
        b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n"
        b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(text), text)
    )


_REFUSE: Final = _retry_later(b"too many connections; retry later\n")
_STOPPING: Final = _retry_later(b"jouled is stopping; retry later\n")
# On stop: how long a request already started may take to arrive and be answered, and then
# how long aiohttp waits for a handler still running before it cancels it.
STOP_GRACE_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """``max_connections``: open connections on one listener; ``header_timeout``: seconds
    from connect to a complete first request head; ``idle_timeout``: seconds a keep-alive
    connection may wait for its next request (partial headers included)."""

    max_connections: int = 1024
    header_timeout: float = 10.0
    idle_timeout: float = 60.0


class ConnectionStats:
    """What a listener's guard counted; read by tests and the hostile benchmark."""

    def __init__(self) -> None:
        self.open = 0
        self.high_water = 0
        self.refused = 0  # over the cap
        self.timed_out = 0  # no complete request head in time
        self.closed_on_stop = 0  # answered 503 as the listener stopped, before any request


def _turn_away(handler: RequestHandler, transport: asyncio.Transport, answer: bytes) -> None:
    """Answer ``answer`` and close, reading no request from the connection."""
    transport.write(answer)
    handler.force_close()
    transport.close()


class _CappedServer(web.Server):
    def __init__(
        self,
        handler: Any,
        *,
        limits: ConnectionLimits,
        stats: ConnectionStats,
        on_refused: Callable[[], None] | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._limits = limits
        self.stats = stats
        self._on_refused = on_refused
        self._deadlines: dict[RequestHandler, asyncio.TimerHandle] = {}
        self._open: set[RequestHandler] = set()
        self._stopping = False
        self._draining: set[RequestHandler] = set()  # a request under way at the stop

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        stats = self.stats
        if self._stopping:
            # Accepted just before the listener stopped and made later than the runner's
            # pause allows for (another event loop): no request is read from it.
            stats.closed_on_stop += 1
            _turn_away(handler, transport, _STOPPING)
            return
        if stats.open >= self._limits.max_connections:
            stats.refused += 1
            if self._on_refused is not None:
                self._on_refused()
            # The handler never runs: it is closed before its first byte is read.
            _turn_away(handler, transport, _REFUSE)
            return
        super().connection_made(handler, transport)
        self._open.add(handler)
        stats.open += 1
        stats.high_water = max(stats.high_water, stats.open)
        loop = asyncio.get_running_loop()
        self._deadlines[handler] = loop.call_later(
            self._limits.header_timeout, self._header_deadline, handler, transport
        )

    def _header_deadline(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        self._deadlines.pop(handler, None)
        # No request started on this connection: its headers never completed.
        if getattr(handler, "_request_count", 1) == 0 and not getattr(handler, "_messages", ()):
            self.stats.timed_out += 1
            handler.force_close()
            transport.close()

    @property
    def stopping(self) -> bool:
        return self._stopping

    @staticmethod
    def _in_flight(handler: RequestHandler) -> bool:
        """A request of this connection is being read, queued or handled (its head has
        arrived), or its handler task is between steps."""
        return bool(handler._request_in_progress or handler._messages or handler._waiter is None)

    def pre_shutdown(self) -> None:
        """The listener has stopped. A connection that has not sent a request head yet is
        answered ``503`` and closed; one between requests is marked to close (aiohttp closes
        it in ``shutdown``); one with a request under way keeps reading it (``shutdown``
        waits for it). aiohttp's own ``pre_shutdown`` would mark them all, and from then on
        ignore what arrives: a body still on its way, or a request head of a new connection.
        """
        self._stopping = True
        for handler in list(self._open):
            if handler.transport is None:
                continue
            if handler._request_count == 0:
                self.stats.closed_on_stop += 1
                _turn_away(handler, handler.transport, _STOPPING)
            elif self._in_flight(handler):
                self._draining.add(handler)
            else:
                handler.close()

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (aiohttp's)
        """Let the requests under way at the stop finish (``STOP_GRACE_S`` at most; their
        answers say ``Connection: close``), then aiohttp's shutdown: it waits ``timeout``
        for a handler still running, then cancels it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_GRACE_S
        draining = self._draining
        # Polled (once at stop, STOP_GRACE_S at most): aiohttp signals a handler's end, not
        # that of a request still queued or a body still on its way.
        while loop.time() < deadline and any(  # noqa: ASYNC110
            h.transport is not None and self._in_flight(h) for h in draining
        ):
            await asyncio.sleep(0.01)
        for handler in draining:
            handler.close()
        draining.clear()
        await super().shutdown(timeout)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        deadline = self._deadlines.pop(handler, None)
        if deadline is not None:
            deadline.cancel()
        if handler in self._open:
            self._open.discard(handler)
            self.stats.open -= 1
        super().connection_lost(handler, exc)


class GuardedRunner(web.AppRunner):
    """An ``AppRunner`` whose server caps connections and times out slow request heads."""

    def __init__(
        self,
        app: web.Application,
        limits: ConnectionLimits,
        *,
        on_refused: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("keepalive_timeout", limits.idle_timeout)
        super().__init__(app, shutdown_timeout=STOP_GRACE_S, **kwargs)
        # An answer given after the listener stopped closes its connection.
        app.on_response_prepare.append(self._close_after_stop)
        self._limits = limits
        self._server_kwargs = kwargs
        self._on_refused = on_refused
        self.stats = ConnectionStats()

    async def _close_after_stop(self, _request: web.Request, response: web.StreamResponse) -> None:
        server = self.server
        if isinstance(server, _CappedServer) and server.stopping:
            response.force_close()
            # aiohttp runs this hook after it wrote the Connection header into the headers
            # (not yet sent): say it to the client too.
            response.headers["Connection"] = "close"

    async def cleanup(self) -> None:
        """Stop accepting, let the connections already accepted reach the server, then
        aiohttp's graceful shutdown.

        ``asyncio.Server.close()`` between accepting a socket and building its transport
        (one or two loop iterations) leaves that socket with no transport and no reader
        until the garbage collector finds it (CPython gh-109564, open): its client waits for
        an answer. Removing the listening sockets' readers first, and yielding the two
        iterations the selector loop takes from accept to ``connection_made``, closes that
        window: every accepted connection is the server's to answer or close.
        """
        loop = asyncio.get_running_loop()
        paused = 0
        for site in self.sites:
            server = getattr(site, "_server", None)
            for sock in getattr(server, "sockets", None) or ():
                paused += loop.remove_reader(sock.fileno())
        for _ in range(3 if paused else 0):
            await asyncio.sleep(0)
        await super().cleanup()

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()
        kwargs = {k: v for k, v in self._server_kwargs.items() if k != "handle_signals"}
        return _CappedServer(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            loop=asyncio.get_running_loop(),
            limits=self._limits,
            stats=self.stats,
            on_refused=self._on_refused,
            **kwargs,
        )
