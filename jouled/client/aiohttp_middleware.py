"""aiohttp server middleware timing each request as a jouled span.

Kept apart from the reporter so that sync servers and ASGI apps never import aiohttp.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from jouled.client.reporter import LOG_PERIOD_S, SpanReporter
from jouled.throttle import Throttle

log = logging.getLogger(__name__)


def route_template(request: web.Request) -> str:
    """The matched resource's template (``/v1/items/{id}``); "" for no match (a 404).

    Raw paths are not used: each distinct path would become a label value.
    """
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else ""


def jouled_middleware(
    reporter: SpanReporter,
    *,
    model: str | Callable[[web.Request], str] = "",
    gflops: Callable[[web.Request, web.StreamResponse], float | None] | None = None,
    route: Callable[[web.Request], str] = route_template,
) -> Middleware:
    """``web.Application(middlewares=[jouled_middleware(reporter, model="llama-8b")])``.

    ``model``: a name, or ``model(request)``; ``set_work(model=...)`` in the handler wins.
    ``gflops``: ``gflops(request, response)`` after the handler, when it reported no work
    (GFLOPs or tokens) itself with ``set_work``. ``route``: ``route(request)``; default: the
    route template. A handler that raises (``HTTPNotFound`` included) is still timed. A
    callable that raises is logged (at most once a minute) and ignored.
    """
    errors = Throttle(reporter.clock, LOG_PERIOD_S)

    def call(fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception:
            if errors.allow() is not None:
                log.warning("jouled middleware: %r raised; span sent without it", fn,
                            exc_info=True)  # fmt: skip
            return None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        name = model if isinstance(model, str) else call(model, request)
        with reporter.span(model=name or "") as timer:
            try:
                response = await handler(request)
            finally:
                timer.route = call(route, request) or ""
            if not timer.work.known and gflops is not None:
                timer.work.gflops = call(gflops, request, response)
            return response

    return middleware
