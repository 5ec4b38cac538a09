"""Limits every span receiver shares (OTLP/HTTP, jouled's JSON, OTLP/gRPC): body size,
content encodings, decompression with a cap, and a byte budget across concurrent requests.

Memory for ingest is bounded by ``max_bytes_in_flight``: a request reserves the bytes its
body may take (its declared length; ``max_body_bytes`` when compressed or of unknown length)
before reading it, and gives them back when its spans are queued. Past the budget a request
waits up to ``max_wait_s``, then gets 503 with Retry-After. Decoded spans take about 8x their
JSON and 10x their protobuf size in Python objects while a batch is decoded (measured in
docs/RELIABILITY.md), so the defaults (8 MiB per body, 24 MiB in flight) bound ingest at
~250 MB worst case in theory and ~150 MB measured, inside the unit's ``MemoryMax=256M``
with the pending spans' bound (``SpanSplitter``).

Decompression and decoding are CPU work: receivers run them on a small thread pool, never on
the event loop (``run_off_loop``), so the tick and ``/healthz`` keep their pace.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Final, TypeVar

from jouled.threads import named_pool

MIB: Final = 1024 * 1024
DEFAULT_MAX_BODY_BYTES: Final = 4 * MIB
DEFAULT_MAX_BYTES_IN_FLIGHT: Final = 8 * MIB
DEFAULT_MAX_WAIT_S: Final = 5.0

# Reasons (the ``reason`` label of the ingest counters) for a refused request.
TOO_LARGE: Final = "too_large"
UNSUPPORTED_ENCODING: Final = "unsupported_encoding"
MALFORMED: Final = "malformed"
BUSY: Final = "busy"

IDENTITY: Final = "identity"
# What jouled decompresses itself (zlib); br and zstd need modules jouled does not install.
SUPPORTED_ENCODINGS: Final = ("identity", "gzip", "x-gzip", "deflate")
_CHUNK: Final = 256 * 1024

T = TypeVar("T")


class LimitError(Exception):
    """A request refused by a limit: HTTP ``status``, counter ``reason``, and a message that
    says what to change."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def check_encoding(header: str | None) -> str:
    """The normalized Content-Encoding; ``LimitError`` 415 for one jouled cannot decode
    (stacked encodings such as ``gzip, br`` included)."""
    encoding = (header or IDENTITY).strip().lower() or IDENTITY
    if encoding not in SUPPORTED_ENCODINGS:
        raise LimitError(
            415,
            UNSUPPORTED_ENCODING,
            f"unsupported Content-Encoding {encoding[:40]!r}: send "
            f"{', '.join(SUPPORTED_ENCODINGS)} (OTLP exporters: compression=gzip or none)",
        )
    return encoding


def check_declared(length: int | None, encoding: str, limit: int) -> None:
    """413 before reading when an uncompressed body declares more than ``limit`` bytes."""
    if length is not None and length > limit:
        raise LimitError(
            413,
            TOO_LARGE,
            f"body of {length} bytes exceeds {limit} bytes (spans.max_body_bytes): "
            "send smaller batches (OTLP: max_export_batch_size)",
        )


def is_compressed(data: bytes, encoding: str) -> bool:
    """Does ``data`` start as ``encoding`` says: the gzip magic, or a zlib header (RFC 1950:
    deflate method, header checksum a multiple of 31)?"""
    if encoding == "deflate":
        return len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
    return data[:2] == b"\x1f\x8b"


def decompress(data: bytes, encoding: str, limit: int) -> bytes:
    """``data`` decoded from ``encoding``, streaming, never producing more than ``limit``
    bytes: a gzip bomb costs at most ``limit`` bytes and the time to inflate them. gzip may
    hold several members; deflate is zlib-wrapped (RFC 9110).
    Raises ``LimitError`` 413 past the limit, 400 on corrupt or truncated data."""
    if encoding == IDENTITY:
        if len(data) > limit:
            raise LimitError(413, TOO_LARGE, f"body exceeds {limit} bytes")
        return data
    if not is_compressed(data, encoding):
        # Already inflated by an HTTP server that decompresses itself (aiohttp's default
        # auto_decompress; the daemon turns it off so that inflating happens here).
        return decompress(data, IDENTITY, limit)
    wbits = 31 if encoding != "deflate" else 15
    out: list[bytes] = []
    size = 0
    rest = memoryview(data)
    while rest:
        inflater = zlib.decompressobj(wbits=wbits)
        pending: bytes | memoryview = rest
        try:
            while True:
                piece = inflater.decompress(pending, min(_CHUNK, limit + 1 - size))
                size += len(piece)
                if size > limit:
                    raise LimitError(
                        413,
                        TOO_LARGE,
                        f"body exceeds {limit} bytes after decompression (spans.max_body_bytes)",
                    )
                out.append(piece)
                pending = inflater.unconsumed_tail
                if inflater.eof or not (pending or piece):
                    break
        except zlib.error as exc:
            raise LimitError(400, MALFORMED, f"bad {encoding} body: {exc}") from None
        if not inflater.eof:
            raise LimitError(400, MALFORMED, f"truncated {encoding} body")
        unused = inflater.unused_data
        if wbits != 31 or not unused:
            break
        rest = memoryview(unused)  # the next gzip member
    return b"".join(out)


class BytesInFlight:
    """A byte budget shared by concurrent requests of every receiver; thread-safe.

    ``reserve`` (asyncio) waits in FIFO order up to ``max_wait_s``; ``try_reserve`` (threads,
    e.g. gRPC handlers) never waits. A reservation larger than the capacity is cut to it, so
    a body the per-request limit allows always gets through alone.
    """

    def __init__(self, capacity: int, max_wait_s: float = DEFAULT_MAX_WAIT_S) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.max_wait_s = max_wait_s
        self._used = 0
        self._lock = threading.Lock()
        self._waiters: collections.deque[
            tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]
        ] = collections.deque()
        self.high_water = 0  # the most bytes ever reserved at once
        self.refused = 0  # requests that waited max_wait_s in vain

    @property
    def in_flight(self) -> int:
        return self._used

    def try_reserve(self, n: int) -> int:
        """Reserve ``min(n, capacity)`` bytes now if they fit (and nobody waits ahead);
        returns the bytes reserved, 0 when refused."""
        n = min(max(n, 1), self.capacity)
        with self._lock:
            if self._waiters or self._used + n > self.capacity:
                return 0
            self._take(n)
        return n

    def release(self, n: int) -> None:
        with self._lock:
            self._used -= n
            while self._waiters:
                want, loop, fut = self._waiters[0]
                if fut.done():  # timed out or cancelled
                    self._waiters.popleft()
                    continue
                if self._used + want > self.capacity:
                    break
                self._waiters.popleft()
                self._take(want)
                loop.call_soon_threadsafe(_grant, fut, want, self)

    @asynccontextmanager
    async def reserve(self, n: int) -> AsyncIterator[int]:
        """Hold ``min(n, capacity)`` bytes for the block; ``LimitError`` 503 after waiting
        ``max_wait_s`` for them."""
        n = min(max(n, 1), self.capacity)
        with self._lock:
            if not self._waiters and self._used + n <= self.capacity:
                self._take(n)
                fut = None
            else:
                loop = asyncio.get_running_loop()
                fut = loop.create_future()
                self._waiters.append((n, loop, fut))
        if fut is not None:
            try:
                await asyncio.wait_for(asyncio.shield(fut), self.max_wait_s)
            except (TimeoutError, asyncio.CancelledError) as exc:
                if not fut.done():
                    fut.cancel()
                elif not fut.cancelled():
                    self.release(n)  # granted just as we gave up
                if isinstance(exc, asyncio.CancelledError):
                    raise
                self.refused += 1
                raise LimitError(
                    503,
                    BUSY,
                    f"over {self.capacity} bytes of request bodies in flight "
                    "(ingest.max_bytes_in_flight): retry later",
                ) from None
        try:
            yield n
        finally:
            self.release(n)

    def _take(self, n: int) -> None:
        self._used += n
        self.high_water = max(self.high_water, self._used)


def _grant(fut: asyncio.Future[None], n: int, budget: BytesInFlight) -> None:
    if fut.done():
        budget.release(n)  # the waiter gave up meanwhile: hand the bytes back
    else:
        fut.set_result(None)


class OffLoop:
    """A small thread pool for decompression and decoding, so receivers never run them on
    the event loop. Owned by the daemon; ``close`` at shutdown."""

    def __init__(self, workers: int = 2) -> None:
        self._pool = named_pool(workers, "jouled-ingest")

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
