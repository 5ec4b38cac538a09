"""The bytes a ``/metrics`` scrape gets: rendered once per tick per format, off the event loop.

A real Prometheus asks for OpenMetrics first (``Accept: application/openmetrics-text;
version=1.0.0,...;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1``) and for gzip
(``Accept-Encoding: gzip``). The format is negotiated by prometheus-client's own
``choose_encoder`` and the small families are rendered by its encoders; the per-model
request families (the bulk: ~16,000 lines at 10 workloads x 50 models) by ``RequestText``,
byte-identical to prometheus-client (property-tested). Each (content type, gzip) body is
kept until the next tick, so an HA Prometheus pair and repeated scrapes share one rendering,
and rendering and compressing run on one worker thread: a concurrent ``/healthz`` never
waits behind a scrape. Scrapers are regular: after each tick, ``prefetch`` renders the
formats whose next scrape is due before the following tick, so that scrape finds its body
ready (about one rendering per scrape, none while nobody scrapes).
"""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

from jouled.exporter.attribution import predicted_of, section_of
from jouled.exporter.server import server_requests
from jouled.exporter.text import RequestText
from jouled.pipeline.snapshot import Snapshot
from jouled.threads import named_pool

OPENMETRICS_EOF: Final = b"# EOF\n"
# zlib level 1 compresses a 1.4 MB exposition ~20x in ~4 ms; level 6 (~26x) takes 3x as long,
# on the scrape's critical path.
GZIP_LEVEL: Final = 1

Key = tuple[str, bool]  # (content type, gzip)


class Exposition:
    """Renders the registry (``light``: every family but the request ones) plus the request
    families of ``snapshot()``; caches per snapshot object. ``snapshot=None``: no request
    families and no cache (every call renders)."""

    def __init__(
        self,
        light: CollectorRegistry,
        snapshot: Callable[[], Snapshot] | None = None,
        *,
        gzip_level: int = GZIP_LEVEL,
    ) -> None:
        self._light = light
        self._snapshot = snapshot
        self._requests = RequestText()
        self._gzip_level = gzip_level
        self._lock = threading.Lock()  # RequestText's label caches: one renderer at a time
        self._cache_of: Snapshot | None = None
        self._cache: dict[Key, bytes] = {}
        self._inflight: dict[Key, asyncio.Future[bytes]] = {}
        self._executor: ThreadPoolExecutor | None = None
        self.renders = 0  # bodies rendered (cache misses); a scrape served from cache adds 0
        # key -> (Accept header, last scrape, gap before it): when the next one is due.
        self._scrapes: dict[Key, tuple[str, float, float]] = {}
        self._now = time.monotonic

    @staticmethod
    def negotiate(accept: str, accept_encoding: str) -> Key:
        """The content type prometheus-client's ``choose_encoder`` picks for ``accept``,
        and whether to gzip (``Accept-Encoding`` names gzip)."""
        _encoder, content_type = choose_encoder(accept)
        return content_type, gzip_accepted(accept_encoding)

    def render(self, accept: str, accept_encoding: str = "") -> tuple[bytes, str, bool]:
        """(body, content type, gzipped) for a scrape, from the cache where it holds this
        tick's body; synchronous (call it off the loop, or use ``serve``)."""
        snap = self._snapshot() if self._snapshot is not None else None
        key = self.negotiate(accept, accept_encoding)
        body = self._cached(snap, key)
        if body is None:
            body = self._render(snap, accept, key)
            self._store(snap, key, body)
        return body, key[0], key[1]

    async def serve(self, accept: str, accept_encoding: str = "") -> tuple[bytes, str, bool]:
        """As ``render``, but a miss renders on the worker thread and concurrent scrapes of
        one tick and format wait for that one rendering."""
        snap = self._snapshot() if self._snapshot is not None else None
        key = self.negotiate(accept, accept_encoding)
        self._note_scrape(key, accept)
        body = self._cached(snap, key)
        if body is not None:
            return body, key[0], key[1]
        body = await asyncio.shield(self._start(snap, accept, key))
        return body, key[0], key[1]

    def prefetch(self, interval_s: float) -> int:
        """Call on the loop after a tick: start rendering, off the loop, each format whose
        next scrape is due before the next tick. Returns how many were started."""
        snap = self._snapshot() if self._snapshot is not None else None
        if snap is None:
            return 0
        now = self._now()
        started = 0
        for key, (accept, last, gap) in list(self._scrapes.items()):
            if now - last > 3 * gap + 60.0:
                del self._scrapes[key]  # that scraper is gone
            elif gap > 0 and last + gap - now < interval_s + 0.05 and not self._has(snap, key):
                self._start(snap, accept, key)
                started += 1
        return started

    def _note_scrape(self, key: Key, accept: str) -> None:
        now = self._now()
        prev = self._scrapes.get(key)
        gap = now - prev[1] if prev is not None else 0.0
        if prev is not None and gap < 0.2 * prev[2]:
            gap = prev[2]  # a second scraper (HA pair) of the same tick: keep the period
        self._scrapes[key] = (accept, now, gap)

    def _has(self, snap: Snapshot, key: Key) -> bool:
        return self._cache_of is snap and (key in self._cache or key in self._inflight)

    def _start(self, snap: Snapshot | None, accept: str, key: Key) -> asyncio.Future[bytes]:
        """The rendering of (snap, key): one already under way, or a new one on the worker."""
        if snap is not None and self._cache_of is snap and key in self._inflight:
            return self._inflight[key]
        loop = asyncio.get_running_loop()
        if self._executor is None:
            self._executor = named_pool(1, "jouled-metrics")
        pending = loop.run_in_executor(self._executor, self._render, snap, accept, key)
        if snap is None:
            return pending
        self._reset_for(snap)
        self._inflight[key] = pending

        def done(fut: asyncio.Future[bytes]) -> None:
            if self._inflight.get(key) is fut:
                del self._inflight[key]
            ok = not fut.cancelled() and fut.exception() is None
            if ok and self._cache_of is snap:
                self._cache[key] = fut.result()

        pending.add_done_callback(done)
        return pending

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _reset_for(self, snap: Snapshot) -> None:
        if self._cache_of is not snap:
            self._cache_of = snap
            self._cache = {}
            self._inflight = {}

    def _cached(self, snap: Snapshot | None, key: Key) -> bytes | None:
        if snap is None or snap is not self._cache_of:
            return None
        return self._cache.get(key)

    def _store(self, snap: Snapshot | None, key: Key, body: bytes) -> None:
        if snap is None:
            return
        self._reset_for(snap)
        self._cache[key] = body

    def _render(self, snap: Snapshot | None, accept: str, key: Key) -> bytes:
        content_type, gzipped = key
        encoder, _ = choose_encoder(accept)
        openmetrics = content_type.startswith("application/openmetrics-text")
        with self._lock:
            self.renders += 1
            head = encoder(self._light)
            section = section_of(snap) if snap is not None else None
            tail = b""
            if section is not None:
                predicted = predicted_of(snap) if snap is not None else {}
                tail = self._requests.render(
                    section,
                    predicted,
                    openmetrics=openmetrics,
                    server_requests=server_requests(snap) if snap is not None else None,
                ).encode()
        if openmetrics:
            # The request families go before the light registry's closing "# EOF".
            body = head.removesuffix(OPENMETRICS_EOF) + tail + OPENMETRICS_EOF
        else:
            body = head + tail
        if gzipped:
            body = gzip.compress(body, compresslevel=self._gzip_level, mtime=0)
        return body
