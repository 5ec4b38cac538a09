"""The ingest listeners' request book: ``jouled_ingest_requests_total{listener, code, reason}``.

One count per request answered (a body, an RPC), whatever it held: a refused body (too
large, unauthorized, rate-limited, unsupported media type, malformed) is one request here
and no span in the span books, which count spans only.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

LISTENER_HTTP: Final = "http"
LISTENER_GRPC: Final = "grpc"
OK: Final = "ok"
INTERNAL: Final = "internal"

# HTTP status -> reason where a handler did not name one (each refusal maps to one status).
REASON_BY_STATUS: Final = {
    200: OK,
    400: "malformed",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    413: "too_large",
    415: "unsupported_media_type",
    417: "expectation_failed",
    429: "rate_limited",
    500: INTERNAL,
    503: "busy",
}


class IngestRequests:
    """Requests answered per (listener, code, reason); ``code`` is the HTTP status or the
    gRPC status name. Counted on the event loop, read by the exposition (any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], int] = {}

    def count(self, listener: str, code: int | str, reason: str) -> None:
        key = (listener, str(code), reason)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1

    def totals(self) -> Mapping[tuple[str, str, str], int]:
        """A read-only copy: (listener, code, reason) -> requests."""
        with self._lock:
            return MappingProxyType(dict(self._counts))
