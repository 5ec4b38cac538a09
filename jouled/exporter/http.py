"""The metrics listener: ``GET /metrics`` (Prometheus text 0.0.4, or OpenMetrics 1.0 when
the Accept header asks; gzip when Accept-Encoding does) and ``GET /healthz``. State lives on
the aiohttp Application under typed keys; bodies come from ``Exposition``'s per-tick cache."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry

from jouled.exporter.exposition import Exposition
from jouled.pipeline.snapshot import Snapshot

EXPOSITION_KEY = web.AppKey("exposition", Exposition)
HealthCheck = Callable[[], tuple[bool, str]]
HEALTH_KEY: web.AppKey[HealthCheck] = web.AppKey("health")


async def metrics(request: web.Request) -> web.Response:
    body, content_type, gzipped = await request.app[EXPOSITION_KEY].serve(
        request.headers.get("Accept", ""), request.headers.get("Accept-Encoding", "")
    )
    resp = web.Response(body=body)
    # content_type carries parameters (version, charset, escaping): set the raw header.
    resp.headers["Content-Type"] = content_type
    resp.headers["Vary"] = "Accept, Accept-Encoding"
    if gzipped:
        resp.headers["Content-Encoding"] = "gzip"
    return resp


async def healthz(request: web.Request) -> web.Response:
    ok, reason = request.app[HEALTH_KEY]()
    return web.Response(status=200 if ok else 503, text=reason + "\n")


async def index(_request: web.Request) -> web.Response:
    return web.Response(
        text="jouled: energy telemetry. See /metrics and /healthz.\n", content_type="text/plain"
    )


def build_metrics_app(
    registry: CollectorRegistry,
    health: Callable[[], tuple[bool, str]],
    *,
    exposition: Exposition | None = None,
) -> web.Application:
    """``exposition``: what /metrics serves; default: all of ``registry``, uncached."""
    app = web.Application()
    app[EXPOSITION_KEY] = exposition if exposition is not None else Exposition(registry)
    app[HEALTH_KEY] = health
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/", index)
    return app


def tick_health(
    snapshot: Callable[[], Snapshot], now: Callable[[], float], interval_s: float
) -> Callable[[], tuple[bool, str]]:
    """Healthy while the tick loop has published within three intervals."""

    def check() -> tuple[bool, str]:
        snap = snapshot()
        if snap.seq == 0:
            return False, "starting: no tick yet"
        age = now() - snap.monotonic_time
        if age > 3 * interval_s + 1.0:
            return False, f"tick loop stalled: last tick {age:.1f}s ago"
        down = sorted(n for n, s in snap.collectors.items() if not s.up)
        return True, "ok" + (f" (collectors down: {', '.join(down)})" if down else "")

    return check
