"""Cost of one scrape of ``/metrics``: the foundation's host series alone, then with
attribution for 10 workloads x 50 models (500 request histograms of 26 buckets).

Two header profiles side by side: plain text (no Accept header, as curl or an old
Prometheus), and a real Prometheus's (``PROMETHEUS_HEADERS``: OpenMetrics first, gzip).
Rendered in-process (a new tick before every scrape: no cache hit), against
prometheus-client's own encoders over the same registry, then served over loopback HTTP by
jouled's metrics app and fetched with aiohttp, one scrape at a time, again after a new tick
each time (a real Prometheus scrapes slower than jouled ticks, so every scrape renders).

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
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from benchmarks._util import PROMETHEUS_HEADERS, free_port, percentiles, save
from jouled.collectors.base import Component, Source
from jouled.config import DEFAULT_BUCKETS
from jouled.exporter.attribution import AttributionCollector, RequestCollector
from jouled.exporter.exposition import Exposition
from jouled.exporter.http import build_metrics_app
from jouled.exporter.metrics import SnapshotCollector
from jouled.pipeline.attribution import AttributionSnapshot, RequestStats
from jouled.pipeline.cost import CostSnapshot, Factors
from jouled.pipeline.snapshot import CollectorStatus, Snapshot, frozen


def snapshot(workloads: int, models: int) -> Snapshot:
    domains = {(f"{d}-{s}", "rapl"): 1e6 + s for s in range(2) for d in ("package", "core", "dram")}
    host = {(str(c), str(Source.RAPL)): 2e6 for c in (Component.CPU, Component.DRAM)}
    section = cost = None
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
            spans_late=3,
            spans_rejected=frozen({"too_old": 2}),
            spans_pending=100,
            spans_settled=10**6 - 103,
            spans_duplicate=0,
            spans_dropped=0,
        )
        # The cost stage's predictions, rendered with the request families as before.
        cost = CostSnapshot(
            factors=Factors(1.58, 475.0, 0.0, 0.2, "USD"),
            window_s=60.0,
            predicted_request_j=frozen({k: 50.0 for k in requests}),
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
        cost=cost,
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


PROFILES: dict[str, dict[str, str]] = {
    "text": {"Accept-Encoding": "identity"},
    "prometheus": PROMETHEUS_HEADERS,
}


async def over_http(
    exposition: Exposition,
    scrapes: int,
    headers: dict[str, str],
    new_tick: Any,
    *,
    prefetch: bool = False,
) -> tuple[dict[str, float], int]:
    app = build_metrics_app(CollectorRegistry(), lambda: (True, "ok"), exposition=exposition)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    times: list[float] = []
    size = 0
    try:
        async with ClientSession(auto_decompress=False) as session:
            for _ in range(scrapes):
                new_tick()
                if prefetch:
                    # As the daemon does after each tick, for a regular scraper due before
                    # the next tick; the scrape comes later in the tick.
                    exposition.prefetch(1.0)
                    await asyncio.sleep(0.05)
                t0 = time.monotonic()
                async with session.get(f"http://127.0.0.1:{port}/metrics", headers=headers) as r:
                    body = await r.read()
                times.append(time.monotonic() - t0)
                size = len(body)
    finally:
        await runner.cleanup()
    return percentiles(times[10:]), size


def bench(scrapes: int) -> dict[str, Any]:
    out: dict[str, Any] = {"scrapes": scrapes, "headers": PROFILES}
    for name, w, m in (("foundation", 0, 0), ("10_workloads_x_50_models", 10, 50)):
        snaps = fresh_snapshots(w, m)
        current = [next(snaps)]

        def now(current: list[Snapshot] = current) -> Snapshot:
            return current[0]

        def new_tick(current: list[Snapshot] = current, snaps: Iterator[Snapshot] = snaps) -> None:
            current[0] = next(snaps)  # the served path cannot reuse its cache

        reg = registry_for(current[0])
        light = CollectorRegistry(auto_describe=True)
        light.register(SnapshotCollector(now))
        light.register(AttributionCollector(now))
        exposition = Exposition(light, now)
        result: dict[str, Any] = {}
        encoders = (("text", generate_latest), ("openmetrics", generate_openmetrics))
        for encoder_name, encoder in encoders:
            times = []
            for _ in range(max(20, scrapes // 5)):
                t0 = time.perf_counter()
                body = encoder(reg)
                times.append(time.perf_counter() - t0)
            result[f"render_prometheus_client_{encoder_name}"] = percentiles(times[5:])
            result[f"bytes_{encoder_name}"] = len(body)
        result["lines"] = body.count(b"\n")
        for profile, headers in PROFILES.items():
            times = []
            for _ in range(scrapes):
                new_tick()
                t0 = time.perf_counter()
                exposition.render(headers.get("Accept", ""), headers.get("Accept-Encoding", ""))
                times.append(time.perf_counter() - t0)
            http, size = asyncio.run(over_http(exposition, scrapes, headers, new_tick))
            ready, _ = asyncio.run(over_http(exposition, scrapes, headers, new_tick, prefetch=True))
            result[profile] = {
                "render": percentiles(times[10:]),
                "http": http,
                "http_prefetched": ready,
                "http_bytes": size,
            }
        exposition.close()
        out[name] = result
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scrapes", type=int, default=500)
    args = p.parse_args()
    results = bench(args.scrapes)
    for name in ("foundation", "10_workloads_x_50_models"):
        r = results[name]
        print(
            f"{name}: {r['lines']} lines; prometheus-client alone p99: text "
            f"{r['render_prometheus_client_text']['p99_ms']:.2f} ms, OpenMetrics "
            f"{r['render_prometheus_client_openmetrics']['p99_ms']:.2f} ms"
        )
        for profile in PROFILES:
            p = r[profile]
            print(
                f"  {profile:10} render p50 {p['render']['p50_ms']:6.2f} p99 "
                f"{p['render']['p99_ms']:6.2f} ms | http p50 {p['http']['p50_ms']:6.2f} p99 "
                f"{p['http']['p99_ms']:6.2f} ms | prefetched http p50 "
                f"{p['http_prefetched']['p50_ms']:6.2f} p99 {p['http_prefetched']['p99_ms']:6.2f}"
                f" ms | {p['http_bytes']:,} bytes on the wire"
            )
    print("saved", save("scrape", results))


if __name__ == "__main__":
    main()
