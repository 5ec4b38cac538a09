"""Sending the load: one scenario, open loop or closed loop, bounded by count and time; the
latency summary and the progress line."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from jouled.loadgen.scenarios import (
    DEFAULT_TEXTS,
    LoadgenError,
    PlannedRequest,
    body_of,
    plan_scenario,
    poisson_arrivals,
)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    start_s: float  # offset from the run's start
    latency_s: float
    texts: int
    ok: bool
    error: str = ""


@dataclass
class LoadResult:
    mode: str
    records: list[RequestRecord] = field(default_factory=list)
    wall_s: float = 0.0
    stopped_by: str = ""  # "", "max-requests", "duration"
    errors: int = 0  # records with ok False, kept as they are added (progress reads it)

    def add(self, record: RequestRecord) -> None:
        """Append ``record``, counting it in ``errors`` when it failed."""
        self.records.append(record)
        self.errors += not record.ok

    def report(self, progress: Progress | None) -> None:
        """Show the requests done and failed so far on ``progress``, if any."""
        if progress:
            progress.update(len(self.records), self.errors)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN when empty."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass(frozen=True, slots=True)
class Summary:
    mode: str
    requests: int
    errors: int
    texts: int
    wall_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    requests_per_s: float
    texts_per_s: float
    stopped_by: str
    first_error: str


def summarize(result: LoadResult) -> Summary:
    ok = [r for r in result.records if r.ok]
    lat = [r.latency_s * 1000 for r in ok]
    wall = result.wall_s
    texts = sum(r.texts for r in ok)
    first_error = next((r.error for r in result.records if not r.ok), "")
    return Summary(
        mode=result.mode,
        requests=len(result.records),
        errors=len(result.records) - len(ok),
        texts=texts,
        wall_s=wall,
        p50_ms=percentile(lat, 50),
        p95_ms=percentile(lat, 95),
        p99_ms=percentile(lat, 99),
        requests_per_s=len(ok) / wall if wall > 0 else 0.0,
        texts_per_s=texts / wall if wall > 0 else 0.0,
        stopped_by=result.stopped_by,
        first_error=first_error,
    )


class Progress:
    """Progress of a run on ``stream``: a one-line bar redrawn in place on a terminal, and
    one plain line every ``every_s`` seconds elsewhere (a log file, CI, a pipe), so a long
    run is never silent. ``enabled=False`` (``--no-progress``) prints nothing."""

    def __init__(
        self, total: int | None, stream: TextIO, *, enabled: bool = True, every_s: float = 5.0
    ) -> None:
        self.total = total
        self.stream = stream
        self.enabled = enabled
        self.tty = stream.isatty()
        self._every_s = 0.1 if self.tty else every_s
        self._t0 = time.monotonic()
        self._last = self._t0  # a line's worth of time before the first plain line
        self._shown: tuple[int, int] | None = None

    def update(self, done: int, errors: int, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self._every_s:
            return
        if not self.tty and self._shown == (done, errors):
            return  # a plain line says each count once
        self._last, self._shown = now, (done, errors)
        elapsed = now - self._t0
        if self.tty and self.total:
            width = 30
            filled = min(width, int(width * done / self.total))
            bar = "#" * filled + "." * (width - filled)
            line = f"\r[{bar}] {done}/{self.total} err {errors} {elapsed:6.1f}s"
        elif self.tty:
            line = f"\r{done} requests, err {errors} {elapsed:6.1f}s"
        else:
            of = f"/{self.total}" if self.total else ""
            line = f"loadgen: {done}{of} requests, {errors} errors, {elapsed:.1f} s\n"
        self.stream.write(line)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


# A request sender: (texts) -> raises on failure. Injected so tests can count calls.
Sender = Callable[[Sequence[str]], Any]


class _Limits:
    def __init__(self, max_requests: int, duration_s: float, clock: Callable[[], float]):
        self.max_requests = max_requests
        self.deadline = clock() + duration_s
        self.clock = clock
        self.sent = 0
        self.stopped_by = ""

    def may_send(self) -> bool:
        if self.sent >= self.max_requests:
            self.stopped_by = self.stopped_by or "max-requests"
            return False
        if self.clock() >= self.deadline:
            self.stopped_by = self.stopped_by or "duration"
            return False
        return True

    def remaining_s(self) -> float:
        return max(0.0, self.deadline - self.clock())


async def _timed(send: Sender, texts: Sequence[str], t0: float, result: LoadResult) -> None:
    start = time.monotonic()
    try:
        await send(texts)
    except Exception as exc:  # every failure is a counted error, never a crash of the run
        msg = f"{type(exc).__name__}: {exc}"[:200]
        result.add(RequestRecord(start - t0, time.monotonic() - start, len(texts), False, msg))
        return
    result.add(RequestRecord(start - t0, time.monotonic() - start, len(texts), True))


async def _sleep_within(seconds: float, limits: _Limits) -> None:
    await asyncio.sleep(min(seconds, limits.remaining_s()))


async def run_scenario(
    plan: Sequence[PlannedRequest],
    send: Sender,
    *,
    max_requests: int,
    duration_s: float,
    progress: Progress | None = None,
    mode: str = "scenario",
) -> LoadResult:
    """One request at a time, each followed by its pause (the thesis's curl-then-sleep)."""
    limits = _Limits(max_requests, duration_s, time.monotonic)
    result = LoadResult(mode)
    t0 = time.monotonic()
    for item in plan:
        if not limits.may_send():
            break
        limits.sent += 1
        await _timed(send, item.texts, t0, result)
        result.report(progress)
        if item.pause_after_s > 0 and limits.sent < min(len(plan), max_requests):
            await _sleep_within(item.pause_after_s, limits)
    result.wall_s = time.monotonic() - t0
    result.stopped_by = limits.stopped_by
    return result


def _draw(rng: random.Random, texts: Sequence[str], n: int) -> tuple[str, ...]:
    return tuple(rng.choice(texts) for _ in range(n))


async def run_open_loop(
    rate_per_s: float,
    send: Sender,
    *,
    seed: int,
    texts: Sequence[str],
    texts_per_request: int,
    max_requests: int,
    duration_s: float,
    progress: Progress | None = None,
    drain_s: float = 30.0,
) -> LoadResult:
    """Poisson arrivals at ``rate_per_s``; a slow server does not slow the arrivals."""
    limits = _Limits(max_requests, duration_s, time.monotonic)
    result = LoadResult("poisson")
    rng = random.Random(seed + 1)
    t0 = time.monotonic()
    tasks: set[asyncio.Task[None]] = set()
    for offset in poisson_arrivals(rate_per_s, seed, duration_s):
        delay = t0 + offset - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if not limits.may_send():
            break
        limits.sent += 1
        task = asyncio.create_task(_timed(send, _draw(rng, texts, texts_per_request), t0, result))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        result.report(progress)
    else:
        limits.stopped_by = limits.stopped_by or "duration"
    if tasks:
        # In-flight requests get a bounded grace period; the rest count as errors.
        _done, pending = await asyncio.wait(set(tasks), timeout=drain_s)
        for task in pending:
            task.cancel()
        for _ in pending:
            result.add(RequestRecord(0.0, drain_s, texts_per_request, False, "drain"))
    result.wall_s = time.monotonic() - t0
    result.stopped_by = limits.stopped_by
    return result


async def run_closed_loop(
    concurrency: int,
    send: Sender,
    *,
    seed: int,
    texts: Sequence[str],
    texts_per_request: int,
    max_requests: int,
    duration_s: float,
    progress: Progress | None = None,
) -> LoadResult:
    """``concurrency`` users, each sending its next request as soon as the last returns."""
    if concurrency < 1:
        raise LoadgenError("concurrency must be >= 1")
    limits = _Limits(max_requests, duration_s, time.monotonic)
    result = LoadResult("closed")
    rng = random.Random(seed)
    t0 = time.monotonic()

    async def user() -> None:
        while limits.may_send():
            limits.sent += 1
            await _timed(send, _draw(rng, texts, texts_per_request), t0, result)
            result.report(progress)

    await asyncio.gather(*(user() for _ in range(concurrency)))
    result.wall_s = time.monotonic() - t0
    result.stopped_by = limits.stopped_by
    return result


@dataclass(frozen=True, slots=True)
class RunOptions:
    url: str
    seed: int = 42
    scenario: int | None = None
    rate: float | None = None
    concurrency: int | None = None
    texts: tuple[str, ...] = DEFAULT_TEXTS
    texts_per_request: int = 1
    max_requests: int = 10_000
    duration_s: float = 900.0
    pause_scale: float = 1.0
    timeout_s: float = 120.0


@contextlib.asynccontextmanager
async def http_sender(url: str, timeout_s: float, limit: int = 100) -> AsyncIterator[Sender]:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=timeout_s)
    connector = aiohttp.TCPConnector(limit=limit)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def send(texts: Sequence[str]) -> None:
            async with session.post(url, json=body_of(texts)) as resp:
                await resp.read()
                if resp.status >= 400:
                    raise LoadgenError(f"HTTP {resp.status}")

        yield send


async def run(opts: RunOptions, progress: Progress | None = None) -> LoadResult:
    """Run one load as configured; the building block of the command and the demo."""
    conc = opts.concurrency or 1
    async with http_sender(opts.url, opts.timeout_s, limit=max(100, conc)) as send:
        if opts.scenario is not None:
            plan = plan_scenario(opts.scenario, opts.seed, opts.texts, pause_scale=opts.pause_scale)
            if progress:
                progress.total = min(len(plan), opts.max_requests)
            return await run_scenario(
                plan,
                send,
                max_requests=opts.max_requests,
                duration_s=opts.duration_s,
                progress=progress,
                mode=f"scenario {opts.scenario}",
            )
        if opts.rate is not None:
            return await run_open_loop(
                opts.rate,
                send,
                seed=opts.seed,
                texts=opts.texts,
                texts_per_request=opts.texts_per_request,
                max_requests=opts.max_requests,
                duration_s=opts.duration_s,
                progress=progress,
                drain_s=opts.timeout_s,
            )
        return await run_closed_loop(
            conc,
            send,
            seed=opts.seed,
            texts=opts.texts,
            texts_per_request=opts.texts_per_request,
            max_requests=opts.max_requests,
            duration_s=opts.duration_s,
            progress=progress,
        )
