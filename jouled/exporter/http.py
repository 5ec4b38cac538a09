"""The metrics listener: ``GET /metrics`` (Prometheus text, OpenMetrics on request) and
``GET /healthz``. State lives on the aiohttp Application under typed keys."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import choose_encoder

from jouled.exporter.attribution import predicted_of, section_of
from jouled.exporter.text import RequestText
from jouled.pipeline.snapshot import Snapshot

REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)
TextRenderer = Callable[[], bytes]
TEXT_KEY: web.AppKey[TextRenderer | None] = web.AppKey("text")
HealthCheck = Callable[[], tuple[bool, str]]
HEALTH_KEY: web.AppKey[HealthCheck] = web.AppKey("health")


async def metrics(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY_KEY]
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    text = request.app[TEXT_KEY]
    if text is not None and content_type.startswith("text/plain"):
        body = text()  # the fast path for Prometheus's default text format
    else:
        body = encoder(registry)
    resp = web.Response(body=body)
    # content_type carries parameters (version, charset): set the raw header.
    resp.headers["Content-Type"] = content_type
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
    text: TextRenderer | None = None,
) -> web.Application:
    app = web.Application()
    app[REGISTRY_KEY] = registry
    app[TEXT_KEY] = text
    app[HEALTH_KEY] = health
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/", index)
    return app


class TextExposition:
    """Prometheus text for a scrape: prometheus-client for the small families, ``RequestText``
    for the per-model ones; kept per snapshot, so concurrent scrapers (an HA Prometheus pair)
    of one tick share one rendering."""

    def __init__(self, light: CollectorRegistry, snapshot: Callable[[], Snapshot]) -> None:
        self._light = light
        self._snapshot = snapshot
        self._requests = RequestText()
        self._last: Snapshot | None = None
        self._body = b""

    def __call__(self) -> bytes:
        snap = self._snapshot()
        if snap is not self._last:
            section = section_of(snap)
            tail = b""
            if section is not None:
                tail = self._requests.render(section, predicted_of(snap)).encode()
            self._body = generate_latest(self._light) + tail
            self._last = snap
        return self._body


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
