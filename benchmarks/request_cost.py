"""What one OTLP/HTTP request costs each thread of a real daemon, apart from its spans' path.

At 1,000 spans/s from ten OpenTelemetry SDK BatchSpanProcessors the daemon gets ~2 requests a
second of ~500 spans each, and its event loop costs 2-3 ms a second more than idle
(``benchmarks.daemon_cpu``'s per-thread split). This sends ``--requests`` OTLP/HTTP protobuf
requests of ``--spans`` SERVER spans (``_util.otlp_batch``: model, GFLOPs and route
attributes, one workload each, in the benchmark daemon's loaded config) one at a time over one
kept-alive connection, ``--gap`` seconds apart, to a fresh ``jouled run``, and reports the CPU
each thread group spent per request (schedstat ns), net of the same daemon's quiet rate
measured just before over ``--quiet`` seconds:

- ``loop``: the event loop (aiohttp's handler, the ingest middlewares, the sender lookup, the
  limits, hand-offs to the ingest pool and the answer), and the per-tick cost stage and
  ledger rows the new models add;
- ``ingest``: decode, validation and queueing on the ingest pool;
- ``worker``: the tick's work these spans add (their settling comes 30 s later: not in
  the window).

    .venv/bin/python -m benchmarks.request_cost --requests 60 --spans 500
"""

from __future__ import annotations

import argparse
import http.client
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._util import daemon, exit_on_sigterm, otlp_batch, save, thread_cpu
from benchmarks.daemon_cpu import loaded_config

# Output names of thread_cpu's groups: the main thread is the event loop.
GROUPS = {"loop": "main", "ingest": "jouled-ingest", "worker": "jouled-worker"}


def _thread_ns(pid: int) -> dict[str, float]:
    """CPU ns of each of ``GROUPS`` (``_util.thread_cpu``: schedstat per named thread group)."""
    by_group = thread_cpu(pid)
    return {g: 1e9 * by_group.get(name, 0.0) for g, name in GROUPS.items()}


def run(requests: int, spans: int, gap: float, quiet: float) -> dict[str, Any]:
    cfg = loaded_config(None, 0)
    workloads = [w["name"] for w in cfg["workloads"]]
    with tempfile.TemporaryDirectory() as tmp, daemon(Path(tmp), cfg) as d:
        host, port = d.cfg["ingest"]["listen"].rsplit(":", 1)
        time.sleep(3)  # past start-up
        q0, t0 = _thread_ns(d.pid), time.monotonic()
        time.sleep(quiet)
        q1, t1 = _thread_ns(d.pid), time.monotonic()
        rate = {g: (q1[g] - q0[g]) / (t1 - t0) for g in GROUPS}  # ns a second, no requests
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        a, ta = _thread_ns(d.pid), time.monotonic()
        size = 0
        for i in range(requests):
            # Spans that ended 0.1 s ago (made in this process, not the daemon's CPU); the
            # window ends before the 30 s settle delay, so their settling is not in it
            # (daemon_cpu measures that).
            body = otlp_batch(
                spans,
                workloads=[workloads[i % len(workloads)]],
                models=["m0", "m1"],
                end_ns=time.time_ns() - 100_000_000,
            )
            size = len(body)
            conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
            answer = conn.getresponse()
            answer.read()
            if answer.status != 200:
                raise RuntimeError(f"request {i}: HTTP {answer.status}")
            if (i + 1) % 20 == 0:
                print(f"  {i + 1}/{requests} requests", flush=True)
            time.sleep(gap)
        b, tb = _thread_ns(d.pid), time.monotonic()
        conn.close()
    per = {g: ((b[g] - a[g]) - rate[g] * (tb - ta)) / requests / 1e3 for g in GROUPS}
    return {
        "requests": requests,
        "spans_per_request": spans,
        "body_bytes": size,
        "quiet_ms_per_s": {g: v / 1e6 for g, v in rate.items()},
        "us_per_request": per,
        "us_per_span": {g: v / spans for g, v in per.items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=60)
    p.add_argument("--spans", type=int, default=500, help="spans a request")
    p.add_argument("--gap", type=float, default=0.25, help="seconds between requests")
    p.add_argument("--quiet", type=float, default=10.0, help="seconds of the quiet baseline")
    args = p.parse_args()
    requests = max(1, min(args.requests, 10_000))  # bounded: at most 10,000 requests
    r = run(requests, max(1, min(args.spans, 5_000)), max(0.0, args.gap), args.quiet)
    print(
        f"{r['requests']} requests of {r['spans_per_request']} spans ({r['body_bytes']} B): "
        + ", ".join(
            f"{g} {r['us_per_request'][g]:.0f} us a request ({r['us_per_span'][g]:.2f} a span)"
            for g in GROUPS
        )
    )
    print(f"saved {save('request_cost', r)}")


if __name__ == "__main__":
    exit_on_sigterm()
    main()
