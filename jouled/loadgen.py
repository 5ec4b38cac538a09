"""``jouled loadgen``: the thesis's request scenarios, and open- and closed-loop load.

A *scenario* is one of the thesis's three request patterns (its Appendix A script): (1) 500
requests of one text, each followed by a pause of 1-1000 ms; (2) 10 requests of 10 texts,
2 s apart; (3) one request of 500 texts. A request body is ``{"instances": [{"text": ...}]}``
and texts are drawn with a seeded generator. *Open loop* sends at Poisson arrival times
whatever the server's latency; *closed loop* keeps N requests in flight. With ``--jouled``
the run ends with joules per request and per text, read from jouled's own counters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import math
import random
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

# Short news items, as the thesis's scenarios classify news; Appendix A drew from four texts.
DEFAULT_TEXTS: tuple[str, ...] = (
    "Central bank holds interest rates steady as inflation cools for a third month.",
    "Striker scores twice in stoppage time to send the champions into the semi-final.",
    "Chipmaker unveils a low-power processor aimed at data-centre inference workloads.",
    "Parliament passes the budget after a late-night vote on energy subsidies.",
    "Storm warnings issued for the coast as heavy rain and strong winds approach.",
    "Quarterly earnings beat forecasts, sending the retailer's shares up nine percent.",
    "Researchers report a battery chemistry that charges in under ten minutes.",
    "Film festival opens with a documentary about the last glaciers of the Alps.",
)

SCENARIO_REQUESTS = {1: 500, 2: 10, 3: 1}
SCENARIO_TEXTS_PER_REQUEST = {1: 1, 2: 10, 3: 500}
SCENARIO2_PAUSE_S = 2.0
DEFAULT_URL = "http://127.0.0.1:8080/predict"


class LoadgenError(Exception):
    """A problem with the arguments or the target; ``str()`` is shown to the user."""


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    texts: tuple[str, ...]
    pause_after_s: float  # scenario mode: sleep after the response, as the thesis's script


def body_of(texts: Sequence[str]) -> dict[str, Any]:
    return {"instances": [{"text": t} for t in texts]}


def plan_scenario(
    scenario: int,
    seed: int = 42,
    texts: Sequence[str] = DEFAULT_TEXTS,
    *,
    pause_scale: float = 1.0,
) -> list[PlannedRequest]:
    """The thesis's scenario as a list of requests, drawn deterministically from ``seed``.

    Scenario 1's pause is ``(RANDOM % 1000 + 1)`` ms as in Appendix A (1 to 1000 ms).
    ``pause_scale`` shrinks the pauses for quick runs (the demo); 1.0 is the thesis.
    """
    if scenario not in SCENARIO_REQUESTS:
        raise LoadgenError(f"unknown scenario {scenario!r}: choose 1, 2 or 3")
    if not texts:
        raise LoadgenError("no texts to send")
    if pause_scale < 0:
        raise LoadgenError("pause scale must be >= 0")
    rng = random.Random(seed)
    per = SCENARIO_TEXTS_PER_REQUEST[scenario]
    out = []
    for _ in range(SCENARIO_REQUESTS[scenario]):
        batch = tuple(rng.choice(texts) for _ in range(per))
        if scenario == 1:
            pause = (rng.randrange(1000) + 1) / 1000.0
        elif scenario == 2:
            pause = SCENARIO2_PAUSE_S
        else:
            pause = 0.0
        out.append(PlannedRequest(batch, pause * pause_scale))
    return out


def poisson_arrivals(rate_per_s: float, seed: int, limit_s: float) -> Iterable[float]:
    """Arrival offsets (seconds from start) of a Poisson process, up to ``limit_s``."""
    if rate_per_s <= 0:
        raise LoadgenError("rate must be > 0 requests per second")
    rng = random.Random(seed)
    t = 0.0
    while True:
        t += rng.expovariate(rate_per_s)
        if t > limit_s:
            return
        yield t


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
    """A one-line progress bar on a terminal; silent when the stream is not a tty."""

    def __init__(self, total: int | None, stream: TextIO, *, enabled: bool = True) -> None:
        self.total = total
        self.stream = stream
        self.enabled = enabled and stream.isatty()
        self._last = 0.0
        self._t0 = time.monotonic()

    def update(self, done: int, errors: int, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        elapsed = now - self._t0
        if self.total:
            width = 30
            filled = min(width, int(width * done / self.total))
            bar = "#" * filled + "." * (width - filled)
            line = f"\r[{bar}] {done}/{self.total} err {errors} {elapsed:6.1f}s"
        else:
            line = f"\r{done} requests, err {errors} {elapsed:6.1f}s"
        self.stream.write(line)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
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


async def _timed(
    send: Sender, texts: Sequence[str], t0: float, records: list[RequestRecord]
) -> None:
    start = time.monotonic()
    try:
        await send(texts)
    except Exception as exc:  # every failure is a counted error, never a crash of the run
        msg = f"{type(exc).__name__}: {exc}"[:200]
        records.append(RequestRecord(start - t0, time.monotonic() - start, len(texts), False, msg))
        return
    records.append(RequestRecord(start - t0, time.monotonic() - start, len(texts), True))


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
        await _timed(send, item.texts, t0, result.records)
        if progress:
            progress.update(len(result.records), sum(not r.ok for r in result.records))
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
        task = asyncio.create_task(
            _timed(send, _draw(rng, texts, texts_per_request), t0, result.records)
        )
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        if progress:
            progress.update(len(result.records), sum(not r.ok for r in result.records))
    else:
        limits.stopped_by = limits.stopped_by or "duration"
    if tasks:
        # In-flight requests get a bounded grace period; the rest count as errors.
        _done, pending = await asyncio.wait(set(tasks), timeout=drain_s)
        for task in pending:
            task.cancel()
        for _ in pending:
            result.records.append(RequestRecord(0.0, drain_s, texts_per_request, False, "drain"))
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
            await _timed(send, _draw(rng, texts, texts_per_request), t0, result.records)
            if progress:
                progress.update(len(result.records), sum(not r.ok for r in result.records))

    await asyncio.gather(*(user() for _ in range(concurrency)))
    result.wall_s = time.monotonic() - t0
    result.stopped_by = limits.stopped_by
    return result


# --- jouled's counters ----------------------------------------------------------------------

MetricKey = tuple[str, tuple[tuple[str, str], ...]]


def parse_metrics(text: str) -> dict[MetricKey, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[MetricKey, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def _sum(m: Mapping[MetricKey, float], name: str, where: Callable[[dict[str, str]], bool]) -> float:
    return math.fsum(v for (n, lab), v in m.items() if n == name and where(dict(lab)))


@dataclass(frozen=True, slots=True)
class EnergyReport:
    """Energy over a run from jouled's counters (after - before), for one workload or all."""

    workload: str
    requests_settled: float
    request_energy_j: float  # energy of the requests' spans
    request_gflops: float
    workload_energy_j: float  # all the workload's active energy over the run (thesis Eq. 4.3)
    sources: tuple[str, ...]  # rapl, nvml, estimate: what the joules rest on
    texts: int
    spans_late: float = 0.0  # arrived after their energy settled: never counted

    @property
    def joules_per_request(self) -> float:
        return self.request_energy_j / self.requests_settled if self.requests_settled else math.nan

    @property
    def joules_per_text(self) -> float:
        return self.request_energy_j / self.texts if self.texts else math.nan

    @property
    def gflops_per_request(self) -> float:
        return self.request_gflops / self.requests_settled if self.requests_settled else math.nan

    @property
    def estimated(self) -> bool:
        return "estimate" in self.sources


def energy_report(
    before: Mapping[MetricKey, float],
    after: Mapping[MetricKey, float],
    *,
    workload: str | None,
    texts: int,
) -> EnergyReport:
    def mine(lab: dict[str, str]) -> bool:
        return workload is None or lab.get("workload") == workload

    def delta(name: str) -> float:
        return _sum(after, name, mine) - _sum(before, name, mine)

    sources = sorted(
        {
            dict(lab).get("source", "")
            for (n, lab), v in after.items()
            if n == "jouled_workload_energy_joules_total"
            and mine(dict(lab))
            and v - before.get((n, lab), 0.0) > 0
        }
        - {""}
    )
    return EnergyReport(
        workload=workload or "(all)",
        requests_settled=delta("jouled_requests_total"),
        request_energy_j=delta("jouled_request_energy_joules_sum"),
        request_gflops=delta("jouled_request_gflops_total"),
        workload_energy_j=delta("jouled_workload_energy_joules_total"),
        sources=tuple(sources),
        texts=texts,
        spans_late=after.get(("jouled_spans_late_total", ()), 0.0)
        - before.get(("jouled_spans_late_total", ()), 0.0),
    )


async def fetch_metrics(session: Any, base_url: str) -> dict[MetricKey, float]:
    async with session.get(base_url.rstrip("/") + "/metrics") as resp:
        resp.raise_for_status()
        return parse_metrics(await resp.text())


async def wait_settled(
    session: Any,
    base_url: str,
    before: Mapping[MetricKey, float],
    *,
    workload: str | None,
    expected_requests: int,
    timeout_s: float,
) -> dict[MetricKey, float]:
    """Metrics once the run's spans have settled (or at ``timeout_s``, whichever first)."""
    deadline = time.monotonic() + timeout_s
    while True:
        after = await fetch_metrics(session, base_url)
        settled = energy_report(before, after, workload=workload, texts=0).requests_settled
        pending = after.get(("jouled_spans_pending", ()), 0.0)
        if (settled >= expected_requests and pending == 0) or time.monotonic() >= deadline:
            return after
        await asyncio.sleep(0.25)


# --- the command ----------------------------------------------------------------------------


def check_loopback(url: str, allow_remote: bool) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LoadgenError(f"not an http(s) URL: {url!r}")
    if allow_remote:
        return
    host = parts.hostname
    loopback = host == "localhost"
    with contextlib.suppress(ValueError):
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    if not loopback:
        raise LoadgenError(
            f"{host} is not a loopback address; pass --allow-remote to load a remote server"
        )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jouled loadgen",
        description="Send the thesis's request scenarios (or open/closed-loop load) to an "
        "inference server; with --jouled, report joules per request from jouled's counters.",
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--scenario", type=int, choices=(1, 2, 3), help="the thesis's scenario")
    mode.add_argument("--rate", type=float, help="open loop: Poisson arrivals, requests/s")
    mode.add_argument("--concurrency", type=int, help="closed loop: requests in flight")
    p.add_argument("--url", default=DEFAULT_URL, help=f"POST target (default {DEFAULT_URL})")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--jouled", metavar="URL", help="jouled metrics URL, e.g. http://127.0.0.1:9877")
    p.add_argument("--workload", help="report this jouled workload only (default: all)")
    p.add_argument("--texts-per-request", type=int, default=1, help="open/closed loop only")
    p.add_argument("--texts-file", type=Path, help="one text per line (default: built-in news)")
    p.add_argument("--max-requests", type=int, default=None, help="hard cap on requests sent")
    p.add_argument("--duration", type=float, default=None, help="hard cap in seconds")
    p.add_argument("--pause-scale", type=float, default=1.0, help="scenario pauses x this")
    p.add_argument("--timeout", type=float, default=120.0, help="per request, seconds")
    p.add_argument("--settle-timeout", type=float, default=30.0, help="wait for jouled, seconds")
    p.add_argument("--json", type=Path, help="also write the summary as JSON here")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --url")
    return p


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


def _fmt(x: float, digits: int = 1) -> str:
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}"


def render_summary(s: Summary, energy: EnergyReport | None, out: TextIO) -> None:
    print(f"mode:        {s.mode}", file=out)
    stop = f" (stopped by {s.stopped_by})" if s.stopped_by else ""
    print(f"requests:    {s.requests}, errors {s.errors}{stop}", file=out)
    if s.first_error:
        print(f"first error: {s.first_error}", file=out)
    print(f"texts:       {s.texts}", file=out)
    print(
        f"latency:     p50 {_fmt(s.p50_ms)} ms, p95 {_fmt(s.p95_ms)} ms, p99 {_fmt(s.p99_ms)} ms",
        file=out,
    )
    print(
        f"throughput:  {s.requests_per_s:.2f} requests/s, {s.texts_per_s:.2f} texts/s "
        f"over {s.wall_s:.1f} s",
        file=out,
    )
    if energy is None:
        return
    print(f"jouled ({energy.workload}, source: {', '.join(energy.sources) or 'none'}):", file=out)
    print(
        f"  requests settled {energy.requests_settled:.0f}; "
        f"{_fmt(energy.joules_per_request, 3)} J/request, "
        f"{_fmt(energy.joules_per_text, 4)} J/text, "
        f"{_fmt(energy.gflops_per_request, 2)} GFLOPs/request",
        file=out,
    )
    print(
        f"  workload energy over the run (idle excluded, thesis Eq. 4.3): "
        f"{energy.workload_energy_j:.2f} J",
        file=out,
    )
    if energy.spans_late:
        print(
            f"  WARNING: {energy.spans_late:.0f} span(s) arrived after their energy had settled "
            "and were not counted: raise spans.settle_seconds above the longest request",
            file=out,
        )
    if energy.estimated:
        print(
            "  NOTE: these joules are ESTIMATES from CPU utilization (no readable RAPL here), "
            "not measurements.",
            file=out,
        )


def _texts(path: Path | None) -> tuple[str, ...]:
    if path is None:
        return DEFAULT_TEXTS
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    except OSError as exc:
        raise LoadgenError(f"{path}: cannot read: {exc.strerror or exc}") from None
    texts = tuple(ln for ln in lines if ln)
    if not texts:
        raise LoadgenError(f"{path}: no texts (one per line)")
    return texts


def options_from(args: argparse.Namespace) -> RunOptions:
    check_loopback(args.url, args.allow_remote)
    if args.jouled:
        check_loopback(args.jouled, args.allow_remote)
    scenario_mode = args.scenario is not None
    max_requests = args.max_requests
    if max_requests is None:
        max_requests = SCENARIO_REQUESTS[args.scenario] if scenario_mode else 1000
    duration = args.duration if args.duration is not None else (900.0 if scenario_mode else 60.0)
    if max_requests < 1 or duration <= 0:
        raise LoadgenError("--max-requests must be >= 1 and --duration > 0")
    if args.texts_per_request < 1:
        raise LoadgenError("--texts-per-request must be >= 1")
    return RunOptions(
        url=args.url,
        seed=args.seed,
        scenario=args.scenario,
        rate=args.rate,
        concurrency=args.concurrency,
        texts=_texts(args.texts_file),
        texts_per_request=args.texts_per_request,
        max_requests=max_requests,
        duration_s=duration,
        pause_scale=args.pause_scale,
        timeout_s=args.timeout,
    )


async def _main(args: argparse.Namespace, opts: RunOptions) -> int:
    import aiohttp

    energy: EnergyReport | None = None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        before = await fetch_metrics(session, args.jouled) if args.jouled else {}
        progress = Progress(None, sys.stderr, enabled=not args.no_progress)
        result = await run(opts, progress)
        progress.update(len(result.records), sum(not r.ok for r in result.records), force=True)
        progress.close()
        summary = summarize(result)
        if args.jouled:
            after = await wait_settled(
                session,
                args.jouled,
                before,
                workload=args.workload,
                expected_requests=summary.requests - summary.errors,
                timeout_s=args.settle_timeout,
            )
            energy = energy_report(before, after, workload=args.workload, texts=summary.texts)
    render_summary(summary, energy, sys.stdout)
    if args.json:
        payload: dict[str, Any] = {"summary": asdict(summary)}
        if energy is not None:
            payload["jouled"] = {
                **asdict(energy),
                "joules_per_request": energy.joules_per_request,
                "joules_per_text": energy.joules_per_text,
            }
        args.json.write_text(json.dumps(payload, indent=2, allow_nan=True) + "\n")
    return 0 if summary.errors == 0 else 1


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        opts = options_from(args)
        return asyncio.run(_main(args, opts))
    except LoadgenError as exc:
        print(f"jouled loadgen: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        import aiohttp

        if not isinstance(exc, OSError | aiohttp.ClientError):
            raise
        print(f"jouled loadgen: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
