"""ASGI 3 middleware timing each HTTP request as a jouled span (FastAPI, Starlette, ...).

Pure ASGI: it wraps ``send`` to see the response status and awaits the app, so a streamed
response (tokens sent as they are generated) is timed to its last byte. Handlers report
their work with ``set_work(...)`` or in ``scope["state"]["jouled.gflops"]`` (Starlette:
``setattr(request.state, "jouled.gflops", x)``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from jouled.client.reporter import LOG_PERIOD_S, SpanReporter
from jouled.client.work import Work
from jouled.throttle import Throttle

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

STATE_GFLOPS: Final = "jouled.gflops"
STATE_INPUT_TOKENS: Final = "jouled.input_tokens"
STATE_OUTPUT_TOKENS: Final = "jouled.output_tokens"
STATE_MODEL: Final = "jouled.model"


def route_template(scope: Scope) -> str:
    """The matched route's template (``/v1/items/{id}``), or "" when the router set none.

    FastAPI puts its route object in ``scope["route"]``; raw paths are not used because
    each distinct path would become a label value.
    """
    route = scope.get("route")
    for attr in ("path_format", "path"):
        value = getattr(route, attr, None)
        if isinstance(value, str):
            return value
    return ""


class JouledASGIMiddleware:
    """``app.add_middleware(JouledASGIMiddleware, reporter=r, model="llama-8b")``.

    ``model``: a name, or ``model(scope)``; ``set_work(model=...)`` in the handler wins.
    ``gflops``: ``gflops(scope, status)`` called after a response when the handler reported
    no work (GFLOPs or tokens) itself. ``route``: ``route(scope)`` after the app returns;
    default: the route template. A handler that raises is still timed. A callable that
    raises is logged (at most once a minute) and ignored.
    """

    def __init__(
        self,
        app: ASGIApp,
        reporter: SpanReporter,
        *,
        model: str | Callable[[Scope], str] = "",
        gflops: Callable[[Scope, int], float | None] | None = None,
        route: Callable[[Scope], str] = route_template,
    ) -> None:
        self.app = app
        self._reporter = reporter
        self._model = model
        self._gflops = gflops
        self._route = route
        self._errors = Throttle(reporter.clock, LOG_PERIOD_S)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        # A place for handlers to leave their work, as Starlette's request.state would make.
        scope.setdefault("state", {})
        model = self._model if isinstance(self._model, str) else self._call(self._model, scope)
        with self._reporter.span(model=model or "") as timer:
            try:
                await self.app(scope, receive, send_status)
            finally:
                self._read_state(timer.work, scope)
                timer.route = self._call(self._route, scope) or ""
            if not timer.work.known and self._gflops is not None:
                timer.work.gflops = self._call(self._gflops, scope, status)

    @staticmethod
    def _read_state(work: Work, scope: Scope) -> None:
        state = scope.get("state")
        if isinstance(state, MutableMapping):
            # Values left in the scope state win over set_work() of the same request.
            work.gflops = state.get(STATE_GFLOPS, work.gflops)
            work.input_tokens = state.get(STATE_INPUT_TOKENS, work.input_tokens)
            work.output_tokens = state.get(STATE_OUTPUT_TOKENS, work.output_tokens)
            work.model = state.get(STATE_MODEL, work.model)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception:
            held = self._errors.allow()
            if held is not None:
                log.warning("jouled middleware: %r raised; span sent without it", fn,
                            exc_info=True)  # fmt: skip
            return None
