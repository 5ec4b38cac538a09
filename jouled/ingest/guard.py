"""Who may send spans, and how fast: a bearer token and a request-rate limit.

The ingest listener is bound to loopback by default; on a shared host a token (read from a
file, compared in constant time, never logged) keeps other local users from forging
spans, and a token bucket keeps a runaway client from starving the tick loop. A refusal
names its reason on the request (``REASON_KEY``) for ``jouled_ingest_requests_total``.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Middleware

from jouled.clock import Clock

UNAUTHORIZED: Final = "unauthorized"
RATE_LIMITED: Final = "rate_limited"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Where a refusal leaves its reason for the request counter (a key of the aiohttp request).
REASON_KEY: Final = web.RequestKey("jouled_refusal_reason", str)


class TokenBucket:
    """``rate`` requests per second on average, bursts up to ``burst``; monotonic time."""

    def __init__(self, rate: float, burst: float, clock: Clock) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._t = clock.monotonic()

    def take(self) -> float:
        """0.0 when a request may pass, else the seconds until one may."""
        now = self._clock.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._t) * self.rate)
        self._t = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


def authorized(header: str | None, token: str | None) -> bool:
    """Does an ``Authorization`` header carry ``Bearer <token>``? The scheme is
    case-insensitive (RFC 7235 section 2.1); the token is compared in constant time, as
    bytes, so a header that is not UTF-8 (aiohttp keeps its bytes as surrogates) is simply
    wrong, never an error."""
    if token is None:
        return True
    scheme, _, given = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    given_bytes = given.strip().encode("utf-8", "surrogateescape")
    return hmac.compare_digest(given_bytes, token.encode())


def unauthorized() -> web.Response:
    return web.json_response(
        {"error": UNAUTHORIZED, "message": "missing or wrong bearer token"},
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="jouled ingest"'},
    )


def guard_middleware(
    *,
    token: str | None,
    bucket: TokenBucket | None,
) -> Middleware:
    """Refuses ``/v1/*`` requests without the bearer token (401) or over the rate (429)."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/v1/"):
            return await handler(request)  # health checks stay open
        if not authorized(request.headers.get("Authorization"), token):
            request[REASON_KEY] = UNAUTHORIZED
            return unauthorized()
        if bucket is not None:
            wait = bucket.take()
            if wait > 0:
                request[REASON_KEY] = RATE_LIMITED
                # OTLP clients retry a 429 after Retry-After (whole seconds).
                return web.json_response(
                    {"error": RATE_LIMITED, "message": f"over {bucket.rate:g} requests/s"},
                    status=429,
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
        return await handler(request)

    return guard
