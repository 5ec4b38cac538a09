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
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from aiohttp import ClientSession, web
from prometheus_client import CollectorRegistry, generate_latest

from benchmarks._util import free_port, percentiles, save
from jouled.collectors.base import Component, Source
from jouled.config import DEFAULT_BUCKETS
from jouled.exporter.attribution import AttributionCollector, RequestCollector
from jouled.exporter.http import TextExposition, build_metrics_app
from jouled.exporter.metrics import SnapshotCollector
from jouled.pipeline.attribution import AttributionSnapshot, RequestStats
from jouled.pipeline.snapshot import CollectorStatus, Snapshot, frozen


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
            spans_settled=10**6 - 103,
            spans_duplicate=0,
            spans_dropped=0,
        )
    return Snapshot(
        seq=100,
        wall_time=time.time(),
        monotonic_time=time.monotonic(),
        domain_energy_j=frozen(domains),
        host_energy_j=frozen(host),
        counter_resets=frozen({}),
        collectors=frozen({"rapl": CollectorStatus(True, 0.001)}),
        attribution=section,
    )


def registry_for(snap: Snapshot, *, requests: bool = True) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=True)
    reg.register(SnapshotCollector(lambda: snap))
    reg.register(AttributionCollector(lambda: snap))
    if requests:
        reg.register(RequestCollector(lambda: snap))
    return reg


def fresh_snapshots(w: int, m: int) -> Iterator[Snapshot]:
    """A new snapshot object each time: every scrape renders (no per-tick cache hit)."""
    base = snapshot(w, m)
    while True:
        yield replace(base)


async def over_http(
    reg: CollectorRegistry, scrapes: int, text: TextExposition | None = None
) -> tuple[dict[str, float], int]:
    snap_now = time.monotonic
    app = build_metrics_app(reg, lambda: (True, "ok"), text=text)
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
        snaps = fresh_snapshots(w, m)
        current = [next(snaps)]
        reg = registry_for(current[0])
        light = CollectorRegistry(auto_describe=True)

        def now(current: list[Snapshot] = current) -> Snapshot:
            return current[0]

        light.register(SnapshotCollector(now))
        light.register(AttributionCollector(now))
        exposition = TextExposition(light, now)
        client_times, served_times = [], []
        for _ in range(scrapes):
            t0 = time.perf_counter()
            body = generate_latest(reg)  # prometheus-client alone (the OpenMetrics path)
            client_times.append(time.perf_counter() - t0)
            current[0] = next(snaps)  # a new tick: the served path cannot reuse its cache
            t0 = time.perf_counter()
            served = exposition()
            served_times.append(time.perf_counter() - t0)
        assert served == body, "the served text must equal prometheus-client's"
        http, size = asyncio.run(over_http(reg, scrapes, exposition))
        out[name] = {
            "render_prometheus_client": percentiles(client_times[10:]),
            "render": percentiles(served_times[10:]),
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
            f"{name:26} {r['lines']:6} lines | served render p50 {r['render']['p50_ms']:6.2f} "
            f"p99 {r['render']['p99_ms']:6.2f} ms | prometheus-client p99 "
            f"{r['render_prometheus_client']['p99_ms']:6.2f} ms | "
            f"http p50 {r['http']['p50_ms']:6.2f} p99 {r['http']['p99_ms']:6.2f} ms"
        )
    print("saved", save("scrape", results))


if __name__ == "__main__":
    main()
