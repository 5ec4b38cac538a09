"""``jouled loadgen``: arguments, the loopback guard, the printed summary and the JSON file."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import math
import sys
import urllib.parse
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from jouled.loadgen.driver import Progress, RunOptions, Summary, run, summarize
from jouled.loadgen.readout import EnergyReport, energy_report, fetch_metrics, wait_settled
from jouled.loadgen.scenarios import DEFAULT_TEXTS, DEFAULT_URL, SCENARIO_REQUESTS, LoadgenError


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
    print(f"jouled, {energy.what} (source: {', '.join(energy.sources) or 'none'}):", file=out)
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


def _say(message: str) -> None:
    print(f"loadgen: {message}", file=sys.stderr, flush=True)


async def _main(args: argparse.Namespace, opts: RunOptions) -> int:
    import aiohttp

    energy: EnergyReport | None = None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        before = await fetch_metrics(session, args.jouled) if args.jouled else {}
        progress = Progress(None, sys.stderr, enabled=not args.no_progress)
        result = await run(opts, progress)
        progress.update(len(result.records), result.errors, force=True)
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
                say=_say,
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
