"""The real daemon's CPU and memory: idle, then at a 1 s tick with 10 workloads over 1,000
host processes and 1,000 spans/s (OTLP protobuf) arriving.

CPU is utime + stime of the daemon process (all threads) over the window, from
/proc/<pid>/stat, as a percentage of one core; memory is its VmRSS at the end.

    .venv/bin/python -m benchmarks.daemon_cpu [--window 30] [--processes 1000] [--rate 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import ClientSession

from benchmarks._util import (
    cpu_seconds,
    daemon,
    otlp_batch,
    rss_mb,
    save,
    sleepers,
    workload_configs,
)

GROUPS = 10
MODELS = [f"model-{i}" for i in range(5)]


async def _send_spans(url: str, rate: int, seconds: float) -> int:
    """``rate`` spans/s as 4 batches a second, each span ending just before it is sent."""
    sent = 0
    per_batch = max(1, rate // 4)
    workloads = [f"w{g}" for g in range(GROUPS)]
    async with ClientSession() as session:
        t_end = time.monotonic() + seconds
        next_t = time.monotonic()
        while next_t < t_end:
            body = otlp_batch(
                per_batch, workloads=workloads, models=MODELS, end_ns=time.time_ns() - 1_000_000
            )
            async with session.post(
                url, data=body, headers={"Content-Type": "application/x-protobuf"}
            ) as r:
                await r.read()
            sent += per_batch
            next_t += 0.25
            await asyncio.sleep(max(0.0, next_t - time.monotonic()))
    return sent


def _measure(pid: int, window: float, load: Any = None) -> dict[str, float]:
    c0, t0 = cpu_seconds(pid), time.monotonic()
    sent = load(window) if load is not None else 0
    if load is None:
        time.sleep(window)
    cpu, wall = cpu_seconds(pid) - c0, time.monotonic() - t0
    return {
        "window_s": wall,
        "cpu_s": cpu,
        "cpu_percent_of_one_core": 100 * cpu / wall,
        "rss_mb": rss_mb(pid),
        "spans_sent": sent,
    }


def bench(window: float, processes: int, rate: int) -> dict[str, Any]:
    out: dict[str, Any] = {"window_s": window, "host_processes": processes, "spans_per_s": rate}
    base = {"interval": 1.0, "collectors": {"nvml": {"enabled": False}}}
    with tempfile.TemporaryDirectory() as tmp:
        with daemon(Path(tmp), base) as d:
            time.sleep(3)  # start-up imports and first ticks are not the steady state
            out["idle"] = _measure(d.pid, window)
        with sleepers(processes, groups=GROUPS, per_group=20):
            cfg = {**base, "workloads": workload_configs(GROUPS)}
            with daemon(Path(tmp), cfg) as d:
                time.sleep(3)
                out["loaded_no_spans"] = _measure(d.pid, window)
                url = d.ingest_url + "/v1/traces"
                out["loaded"] = _measure(
                    d.pid, window, lambda w: asyncio.run(_send_spans(url, rate, w))
                )
                out["loaded"]["metrics_sample"] = [
                    line
                    for line in d.metrics().decode().splitlines()
                    if line.startswith(("jouled_spans_received_total", "jouled_spans_late"))
                ]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--window", type=float, default=30.0)
    p.add_argument("--processes", type=int, default=1000)
    p.add_argument("--rate", type=int, default=1000)
    args = p.parse_args()
    results = bench(args.window, args.processes, args.rate)
    for name in ("idle", "loaded_no_spans", "loaded"):
        r = results[name]
        print(
            f"{name:16} CPU {r['cpu_percent_of_one_core']:6.2f} % of one core over "
            f"{r['window_s']:.0f} s, RSS {r['rss_mb']:.1f} MB, spans sent {r['spans_sent']}"
        )
    print("saved", save("daemon_cpu", results))


if __name__ == "__main__":
    main()
