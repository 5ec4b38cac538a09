"""Cost of one scrape of ``/metrics``: the foundation's host series alone, then with
attribution for 10 workloads x 50 models (500 request histograms of 26 buckets).

Rendered in-process (``generate_latest`` over jouled's registry), then served over loopback
HTTP by jouled's own metrics app and fetched with aiohttp, one scrape at a time.

    .venv/bin/python -m benchmarks.scrape [--scrapes 500]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from aiohttp import ClientSession, web
from prometheus_client import CollectorRegistry, generate_latest

from benchmarks._util import free_port, percentiles, save
from jouled.attribution.stage import AttributionSnapshot, RequestStats
from jouled.collectors.base import Component, Source
from jouled.config import DEFAULT_BUCKETS
from jouled.daemon.snapshot import CollectorStatus, Snapshot, frozen
from jouled.exporter.attribution import AttributionCollector
from jouled.exporter.http import build_metrics_app
from jouled.exporter.metrics import SnapshotCollector


def snapshot(workloads: int, models: int) -> Snapshot:
    domains = {(f"{d}-{s}", "rapl"): 1e6 + s for s in range(2) for d in ("package", "core", "dram")}
    host = {(str(c), str(Source.RAPL)): 2e6 for c in (Component.CPU, Component.DRAM)}
    section = None
    if workloads:
        wl = [f"workload-{i}" for i in range(workloads)]
        nb = len(DEFAULT_BUCKETS) + 1
        requests = {
            (w, f"model-{m}"): RequestStats(1000, 1234.5, tuple(range(10, 10 + nb)), 97100.0)
            for w in wl
            for m in range(models)
        }
        section = AttributionSnapshot(
            workload_energy_j=frozen({(w, c, "rapl"): 1e4 for w in wl for c in ("cpu", "dram")}),
            idle_energy_j=frozen({"cpu": 1e5, "dram": 1e4}),
            idle_power_w=frozen({"cpu": 40.0, "dram": 5.0}),
            unattributed_energy_j=frozen({("cpu", "rapl"): 1e3}),
            workload_in_spans_j=frozen({(w, "cpu"): 5e3 for w in wl}),
            workload_outside_spans_j=frozen({(w, "cpu"): 5e3 for w in wl}),
            workload_processes=frozen({w: 4 for w in wl}),
            requests=frozen(requests),
            energy_per_gflop_j=frozen({k: 0.01 for k in requests}),
            buckets=DEFAULT_BUCKETS,
            spans_received=10**6,
            spans_accepted=10**6,
            spans_late=3,
            spans_rejected=frozen({"too_old": 2}),
            spans_pending=100,
        )
    return Snapshot(
        seq=100,
        wall_time=time.time(),
        monotonic_time=time.monotonic(),
        domain_energy_j=frozen(domains),
        host_energy_j=frozen(host),
        counter_resets=frozen({}),
        collectors=frozen({"rapl": CollectorStatus(True, 0.001)}),
        extra=frozen({"attribution": section} if section else {}),
    )


def registry_for(snap: Snapshot) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=True)
    reg.register(SnapshotCollector(lambda: snap))
    reg.register(AttributionCollector(lambda: snap))
    return reg


async def over_http(reg: CollectorRegistry, scrapes: int) -> tuple[dict[str, float], int]:
    snap_now = time.monotonic
    app = build_metrics_app(reg, lambda: (True, "ok"))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    times: list[float] = []
    size = 0
    try:
        async with ClientSession() as session:
            for _ in range(scrapes):
                t0 = snap_now()
                async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                    body = await resp.read()
                times.append(snap_now() - t0)
                size = len(body)
    finally:
        await runner.cleanup()
    return percentiles(times[10:]), size


def bench(scrapes: int) -> dict[str, Any]:
    out: dict[str, Any] = {"scrapes": scrapes}
    for name, w, m in (("foundation", 0, 0), ("10_workloads_x_50_models", 10, 50)):
        reg = registry_for(snapshot(w, m))
        times = []
        for _ in range(scrapes):
            t0 = time.perf_counter()
            body = generate_latest(reg)
            times.append(time.perf_counter() - t0)
        http, size = asyncio.run(over_http(reg, scrapes))
        out[name] = {
            "render": percentiles(times[10:]),
            "http": http,
            "bytes": len(body),
            "lines": body.count(b"\n"),
            "http_bytes": size,
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scrapes", type=int, default=500)
    args = p.parse_args()
    results = bench(args.scrapes)
    for name in ("foundation", "10_workloads_x_50_models"):
        r = results[name]
        print(
            f"{name:26} {r['lines']:6} lines | render p50 {r['render']['p50_ms']:6.2f} ms "
            f"p99 {r['render']['p99_ms']:6.2f} ms | http p50 {r['http']['p50_ms']:6.2f} ms "
            f"p99 {r['http']['p99_ms']:6.2f} ms"
        )
    print("saved", save("scrape", results))


if __name__ == "__main__":
    main()
