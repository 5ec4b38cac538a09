"""Report request spans to jouled's ingest listener from an inference server.

A *span* is one request the server handled: wall-clock [start, end) in unix seconds, the
model that served it and its work (GFLOPs, or tokens that jouled converts). ``record()``
queues a span in memory (O(1), no I/O on the caller's thread); a daemon thread posts batches
to ``POST /v1/spans``. When jouled is down or slow, spans are dropped and counted, never
waited for: the server's requests must not pay for its telemetry.

Over 400 lines because the client library's reporter (bounded queue, batching, retries,
stats) is one thread-safe object an instrumented app imports alone.
"""

from __future__ import annotations

import atexit
import functools
import http.client
import json
import logging
import math
import os
import random
import threading
import weakref
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, NamedTuple
from urllib.parse import urlsplit

from jouled import __version__
from jouled.client.work import Work, pop_work, push_work
from jouled.clock import Clock, SystemClock
from jouled.throttle import Throttle

log = logging.getLogger(__name__)

DEFAULT_URL: Final = "http://127.0.0.1:9878/v1/spans"
LOG_PERIOD_S: Final = 60.0  # failures are counted always, logged at most this often
_MAX_RESPONSE_BYTES: Final = 1024 * 1024
# Errors of a keep-alive connection the server closed while idle; one fresh retry is safe
# because every span carries ids that jouled deduplicates.
_STALE_CONNECTION: Final = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class _Item(NamedTuple):
    model: str
    start: float
    end: float
    gflops: float | None
    input_tokens: int | None
    output_tokens: int | None
    route: str
    trace_id: str
    span_id: str


@dataclass(frozen=True, slots=True)
class ReporterStats:
    """Counters since the reporter started (or since a fork, in the child).

    Every recorded span ends up in exactly one of ``sent``, ``failed`` or ``dropped`` (or is
    still ``queued``/in flight). ``rejected`` and ``late`` are parts of ``sent``: jouled
    answered but refused the span (see its ``jouled_spans_rejected_total{reason}``) or took
    it after its energy had settled.
    """

    queued: int  # waiting in memory now
    sent: int  # in batches jouled answered with 2xx
    rejected: int  # of sent: invalid per jouled's validation
    late: int  # of sent: arrived after their ticks settled
    dropped: int  # evicted from a full queue, recorded after close, or left at close timeout
    failed: int  # in batches that got no 2xx: refused connection, timeout, 4xx, 5xx
    batches: int  # HTTP requests answered with 2xx
    failed_batches: int  # HTTP requests that failed


class _Poster:
    """One keep-alive HTTP/1.1 connection to jouled, used by the sender thread only."""

    def __init__(self, url: str, timeout_s: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"jouled URL must be http(s)://host[:port]/path, got {url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout_s = timeout_s
        self._conn: http.client.HTTPConnection | None = None
        self._headers = {
            "Content-Type": "application/json",
            "User-Agent": f"jouled-client/{__version__}",
        }

    def _connect(self) -> http.client.HTTPConnection:
        # http.client, not urllib: urllib would route loopback through $HTTP_PROXY and opens
        # a new connection per request.
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout_s)
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout_s)

    def post(self, body: bytes) -> tuple[int, bytes]:
        """(status, response body); raises OSError or http.client.HTTPException."""
        for attempt in range(2):
            reused = self._conn is not None
            conn = self._conn if self._conn is not None else self._connect()
            self._conn = conn
            try:
                conn.request("POST", self._path, body, self._headers)
                response = conn.getresponse()
                data = response.read(_MAX_RESPONSE_BYTES)
                if response.will_close or not response.isclosed():
                    self.close()
                return response.status, data
            except _STALE_CONNECTION:
                self.close()
                if not reused or attempt:
                    raise
            except BaseException:
                self.close()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _number(value: float) -> float | str:
    # JSON has no NaN/Infinity; a string lets jouled reject the span with its own reason
    # (bad_gflops, bad_time), visible in its metrics, instead of failing the whole batch.
    return value if math.isfinite(value) else repr(value)


class SpanTimer:
    """Times one request: wall-clock start on enter, start + monotonic duration on exit.

    The duration comes from the monotonic clock so that an NTP step during the request does
    not stretch or invert it. ``work`` is what ``set_work()`` fills in; ``route`` may be set
    before exit. On an exception (cancellation included) the span is still queued: a failed
    request spent energy too.
    """

    __slots__ = ("_mono0", "_reporter", "_token", "error", "route", "start", "work")

    def __init__(self, reporter: SpanReporter, work: Work, route: str) -> None:
        self._reporter = reporter
        self.work = work
        self.route = route
        self.start = 0.0
        self.error = False
        self._mono0 = 0.0
        self._token: Any = None

    def __enter__(self) -> SpanTimer:
        clock = self._reporter.clock
        self.start = clock.time()
        self._mono0 = clock.monotonic()
        self._token = push_work(self.work)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        duration_s = max(0.0, self._reporter.clock.monotonic() - self._mono0)
        pop_work(self._token)
        self.error = exc_type is not None
        work = self.work
        self._reporter.record(
            model=work.model or "",
            start=self.start,
            end=self.start + duration_s,
            gflops=work.gflops,
            input_tokens=work.input_tokens,
            output_tokens=work.output_tokens,
            route=self.route,
        )


def _reset_after_fork(ref: weakref.ReferenceType[SpanReporter]) -> None:
    reporter = ref()
    if reporter is not None:
        reporter._after_fork_in_child()


class SpanReporter:
    """Queues spans and sends them to jouled from a daemon thread.

    One class serves sync and asyncio servers alike: ``record()`` and ``span()`` take a lock
    held only for a deque operation, so they never block an event loop, and the sender's
    blocking HTTP runs on its own thread, so no aiohttp session is tied to one loop (and it
    works under several loops or worker threads at once). Only ``close()`` waits, bounded;
    from a coroutine use ``await aclose()``.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        workload: str,
        batch_size: int = 512,
        flush_interval: float = 1.0,
        max_queue: int = 10_000,
        timeout: float = 2.0,
        close_timeout: float = 5.0,
        clock: Clock | None = None,
    ) -> None:
        if not workload:
            raise ValueError("workload must be a non-empty name (jouled's workload label)")
        if batch_size < 1 or max_queue < 1:
            raise ValueError("batch_size and max_queue must be >= 1")
        if flush_interval <= 0 or timeout <= 0 or close_timeout < 0:
            raise ValueError("flush_interval and timeout must be > 0, close_timeout >= 0")
        self.url = url
        self.workload = workload
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval
        self._max_queue = max_queue
        self._timeout_s = timeout
        self._close_timeout_s = close_timeout
        self._poster = _Poster(url, timeout)  # validates the URL now, not in the thread
        self._rng = random.Random()
        self._fail_log = Throttle(self.clock, LOG_PERIOD_S)
        self._reject_log = Throttle(self.clock, LOG_PERIOD_S)
        self._closed = False
        self._init_process_state()
        # A weak reference: the hook outlives the reporter (hooks cannot be unregistered).
        os.register_at_fork(after_in_child=functools.partial(_reset_after_fork, weakref.ref(self)))
        atexit.register(self._close_at_exit)
        self._ensure_sender()

    def _init_process_state(self) -> None:
        self._lock = threading.Lock()
        self._settled_cond = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._queue: deque[_Item] = deque()
        self._thread: threading.Thread | None = None
        self._enqueued = 0  # ever queued; with _settled, what flush() waits for
        self._settled = 0  # sent, failed or dropped after being queued
        self._sent = self._rejected = self._late = 0
        self._dropped = self._failed = 0
        self._batches = self._failed_batches = 0

    def _after_fork_in_child(self) -> None:
        # The parent's thread does not exist here and its lock may have been held at the
        # fork; the parent still owns (and sends) the spans it had queued.
        self._init_process_state()
        self._rng = random.Random()
        self._poster = _Poster(self.url, self._timeout_s)

    # ------------------------------------------------------------------ request path

    def span(
        self,
        *,
        model: str = "",
        gflops: float | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        route: str = "",
    ) -> SpanTimer:
        """A context manager timing one request; the span is queued on exit.

        Inside it, ``set_work(...)`` (or ``timer.work``) sets the work known only at the end.
        """
        return SpanTimer(self, Work(gflops, input_tokens, output_tokens, model or None), route)

    def record(
        self,
        *,
        model: str,
        start: float,
        end: float,
        gflops: float | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        route: str = "",
        trace_id: str = "",
        span_id: str = "",
    ) -> bool:
        """Queue one span with explicit unix-second times; never blocks, never raises on I/O.

        Returns False when the reporter is closed (the span is counted as dropped). On a full
        queue the oldest span is dropped to make room. Values are validated by jouled.
        """
        item = _Item(model, start, end, gflops, input_tokens, output_tokens, route, trace_id,
                     span_id)  # fmt: skip
        if self._thread is None:
            self._ensure_sender()  # first span in a forked child
        with self._lock:
            if self._closed:
                self._dropped += 1
                return False
            queue = self._queue
            if len(queue) >= self._max_queue:
                queue.popleft()
                self._dropped += 1
                self._settled += 1
            queue.append(item)
            self._enqueued += 1
            full = len(queue) >= self._batch_size
        if full and not self._wake.is_set():
            self._wake.set()
        return True

    # ------------------------------------------------------------------ counters

    @property
    def stats(self) -> ReporterStats:
        with self._lock:
            return ReporterStats(
                queued=len(self._queue),
                sent=self._sent,
                rejected=self._rejected,
                late=self._late,
                dropped=self._dropped,
                failed=self._failed,
                batches=self._batches,
                failed_batches=self._failed_batches,
            )

    @property
    def sent(self) -> int:
        return self._sent

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def failed(self) -> int:
        return self._failed

    # ------------------------------------------------------------------ lifecycle

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every span queued before this call is sent, failed or dropped.

        Blocks for at most ``timeout`` seconds (default: ``close_timeout``); True if done.
        Not for the request path: it waits on the network.
        """
        wait_s = self._close_timeout_s if timeout is None else timeout
        with self._lock:
            target = self._enqueued
        self._wake.set()
        with self._settled_cond:
            return self._settled_cond.wait_for(lambda: self._settled >= target, wait_s)

    def close(self, timeout: float | None = None) -> bool:
        """Send what is queued, stop the sender; waits at most ``timeout`` seconds.

        Spans still queued at the deadline are dropped. True if everything was sent (or
        failed) in time. Later ``record()`` calls drop their span. Idempotent.
        """
        wait_s = self._close_timeout_s if timeout is None else timeout
        with self._lock:
            first = not self._closed
            self._closed = True
            thread = self._thread
        if first:
            atexit.unregister(self._close_at_exit)
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(wait_s)
        with self._settled_cond:
            left = len(self._queue)
            self._queue.clear()
            self._dropped += left
            self._settled += left
            self._settled_cond.notify_all()
        if left:
            log.warning("jouled client closed with %d span(s) unsent: dropped", left)
        return left == 0 and (thread is None or not thread.is_alive())

    # The timeout bounds the sender thread's join, not this coroutine; asyncio.timeout()
    # could not stop a thread, so the parameter is the right tool here.
    async def aclose(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """``close()`` off the event loop, so that the loop keeps serving while it waits."""
        import asyncio

        return await asyncio.to_thread(self.close, timeout)

    def _close_at_exit(self) -> None:
        self.close()

    def __enter__(self) -> SpanReporter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    async def __aenter__(self) -> SpanReporter:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ sender thread

    def _ensure_sender(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(
                target=self._run, name=f"jouled-span-sender[{self.workload}]", daemon=True
            )
        self._thread.start()

    def _take(self) -> tuple[list[_Item], bool]:
        """Up to one batch, and whether the sender is done (closed and nothing left)."""
        with self._lock:
            queue = self._queue
            batch = [queue.popleft() for _ in range(min(self._batch_size, len(queue)))]
            return batch, self._closed and not batch

    def _run(self) -> None:
        poster = self._poster
        try:
            while True:
                self._wake.wait(self._flush_interval_s)
                self._wake.clear()
                while True:
                    batch, done = self._take()
                    if done:
                        return
                    if not batch:
                        break
                    self._send(poster, batch)
        except Exception:  # pragma: no cover - a bug here must not kill silently
            log.exception("jouled client sender stopped")
        finally:
            poster.close()

    def _encode(self, batch: list[_Item]) -> bytes:
        rng = self._rng
        spans: list[dict[str, Any]] = []
        for item in batch:
            span: dict[str, Any] = {
                "workload": self.workload,
                "model": item.model,
                "start": _number(item.start),
                "end": _number(item.end),
                # Ids make a resent batch idempotent: jouled counts each (trace, span) once.
                "trace_id": item.trace_id or f"{rng.getrandbits(128):032x}",
                "span_id": item.span_id or f"{rng.getrandbits(64):016x}",
            }
            if item.gflops is not None:
                span["gflops"] = _number(item.gflops)
            if item.input_tokens is not None:
                span["input_tokens"] = item.input_tokens
            if item.output_tokens is not None:
                span["output_tokens"] = item.output_tokens
            if item.route:
                span["route"] = item.route
            spans.append(span)
        return json.dumps({"spans": spans}, separators=(",", ":")).encode()

    def _send(self, poster: _Poster, batch: list[_Item]) -> None:
        n = len(batch)
        rejected = late = 0
        error: str | None = None
        try:
            status, data = poster.post(self._encode(batch))
        except (OSError, http.client.HTTPException) as exc:
            error = f"cannot send spans to {self.url}: {type(exc).__name__}: {exc}"
        else:
            if 200 <= status < 300:
                rejected, late, first_error = _counts(data)
                if rejected:
                    self._log_rejected(rejected, n, first_error)
            else:
                error = f"jouled at {self.url} answered {status}: {data[:300]!r}"
        if error is not None:
            # Logged before the counters move, so that flush() returns after the log line.
            held = self._fail_log.allow()
            if held is not None:
                log.warning("%s; %d span(s) lost%s", error, n, _held_note(held))
        with self._settled_cond:
            if error is None:
                self._sent += n
                self._rejected += rejected
                self._late += late
                self._batches += 1
            else:
                self._failed += n
                self._failed_batches += 1
            self._settled += n
            self._settled_cond.notify_all()

    def _log_rejected(self, rejected: int, n: int, first_error: str | None) -> None:
        held = self._reject_log.allow()
        if held is not None:
            log.warning(
                "jouled rejected %d of %d span(s); first: %s%s",
                rejected,
                n,
                first_error,
                _held_note(held),
            )


def _counts(data: bytes) -> tuple[int, int, str | None]:
    """(rejected, late, first_error) from jouled's answer; zeros if it is not readable."""
    try:
        answer = json.loads(data)
    except ValueError:
        return 0, 0, None
    if not isinstance(answer, dict):
        return 0, 0, None
    rejected, late, first = answer.get("rejected"), answer.get("late"), answer.get("first_error")
    return (
        rejected if isinstance(rejected, int) else 0,
        late if isinstance(late, int) else 0,
        first if isinstance(first, str) else None,
    )


def _held_note(held: int) -> str:
    if not held:
        return ""
    return f" ({held} similar message(s) held back: at most one per {LOG_PERIOD_S:.0f} s)"
