"""jouled's client: report request spans from an inference server without OpenTelemetry.

A *span* is one request the server handled (wall-clock start and end, model, work in GFLOPs
or tokens); jouled splits the workload's measured energy among its spans. Stdlib only;
``jouled_middleware`` (aiohttp) loads aiohttp on first use. See docs/CLIENT.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jouled.client.asgi import JouledASGIMiddleware
from jouled.client.reporter import DEFAULT_URL, ReporterStats, SpanReporter, SpanTimer
from jouled.client.work import Work, current_work, set_work

if TYPE_CHECKING:
    from jouled.client.aiohttp_middleware import jouled_middleware

__all__ = [
    "DEFAULT_URL",
    "JouledASGIMiddleware",
    "ReporterStats",
    "SpanReporter",
    "SpanTimer",
    "Work",
    "current_work",
    "jouled_middleware",
    "set_work",
]


def __getattr__(name: str) -> Any:
    if name == "jouled_middleware":
        from jouled.client.aiohttp_middleware import jouled_middleware

        return jouled_middleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
