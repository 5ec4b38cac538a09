"""/metrics in both formats, gzip when asked, from the per-tick cache: byte-identical to
prometheus-client's encoders over the same families, for the headers real scrapers send."""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from dataclasses import replace

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from jouled.exporter.attribution import AttributionCollector, RequestCollector
from jouled.exporter.exposition import Exposition
from jouled.exporter.http import build_metrics_app
from jouled.exporter.metrics import SnapshotCollector
from jouled.pipeline.attribution import RequestStats
from jouled.pipeline.snapshot import EMPTY, CollectorStatus, Snapshot, frozen
from tests.exporter.test_text import cost, keys, request_maps, section, values
from tests.support.procs import free_port
from tests.support.prometheus import run_prometheus

# What Prometheus 2.x/3.x sends (scrape.go, scrapeAcceptHeader with OpenMetrics enabled).
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
ACCEPTS = (
    PROMETHEUS_ACCEPT,
    "",
    "text/plain;version=0.0.4",
    "application/openmetrics-text; version=1.0.0",
    "application/openmetrics-text",
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "*/*",
)


def snapshot_with(a: object, seq: int = 1, predicted: dict | None = None) -> Snapshot:
    return replace(
        EMPTY,
        seq=seq,
        wall_time=1.7e9,
        domain_energy_j=frozen({("package-0", "rapl"): 1234.5}),
        collectors=frozen({"rapl": CollectorStatus(True, 0.001)}),
        attribution=a,
        cost=cost(predicted or {}),
    )


def registries(get: object) -> tuple[CollectorRegistry, CollectorRegistry]:
    """(light, full): what the daemon's Exposition renders from, and the reference."""
    light, full = CollectorRegistry(), CollectorRegistry()
    for collector in (SnapshotCollector(get), AttributionCollector(get)):  # type: ignore[arg-type]
        light.register(collector)
        full.register(collector)
    full.register(RequestCollector(get))  # type: ignore[arg-type]
    return light, full


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    requests=request_maps(5),
    per_gflop=st.dictionaries(keys, values, max_size=3),
    predicted=st.dictionaries(keys, values, max_size=3),
    accept=st.sampled_from(ACCEPTS),
    gzipped=st.booleans(),
)
def test_served_bytes_equal_prometheus_clients_encoder(
    requests: dict, per_gflop: dict, predicted: dict, accept: str, gzipped: bool
) -> None:
    reqs = requests
    snap = snapshot_with(section(reqs, per_gflop), predicted=predicted)
    light, full = registries(lambda: snap)
    exposition = Exposition(light, lambda: snap)
    body, content_type, was_gzipped = exposition.render(accept, "gzip" if gzipped else "")
    encoder, expected_type = choose_encoder(accept)
    assert content_type == expected_type
    assert was_gzipped is gzipped
    plain = gzip.decompress(body) if gzipped else body
    assert plain == encoder(full)
    # The same tick and format again: served from the cache, not rendered anew.
    renders = exposition.renders
    assert exposition.render(accept, "gzip" if gzipped else "")[0] == body
    assert exposition.renders == renders


def big_snapshot(workloads: int = 10, models: int = 50, seq: int = 1) -> Snapshot:
    reqs = {
        (f"workload-{w}", f"model-{m}"): RequestStats(1000, 1234.5, tuple(range(10, 17)), 97.1)
        for w in range(workloads)
        for m in range(models)
    }
    return snapshot_with(section(reqs, {k: 0.01 for k in reqs}), seq)


def test_prometheus_headers_get_gzipped_openmetrics_cached_per_tick() -> None:
    snaps = [big_snapshot()]
    light, _full = registries(lambda: snaps[0])
    exposition = Exposition(light, lambda: snaps[0])
    body, content_type, gzipped = exposition.render(PROMETHEUS_ACCEPT, "gzip")
    assert content_type == "application/openmetrics-text; version=1.0.0; charset=utf-8; " + (
        "escaping=underscores"
    )
    assert gzipped
    plain = gzip.decompress(body)
    assert plain.endswith(b"# EOF\n") and plain.count(b"# EOF") == 1
    assert len(body) * 5 < len(plain)  # ~14x smaller on the wire
    families = {f.name: f for f in text_string_to_metric_families(plain.decode())}
    assert len(families["jouled_requests"].samples) == 500
    # A text scrape of the same tick renders once more; a new tick invalidates both.
    exposition.render("", "")
    assert exposition.renders == 2
    exposition.render(PROMETHEUS_ACCEPT, "gzip")
    assert exposition.renders == 2
    snaps[0] = big_snapshot(seq=2)
    exposition.render(PROMETHEUS_ACCEPT, "gzip")
    assert exposition.renders == 3


async def test_over_http_with_prometheus_headers_and_healthz_never_waits() -> None:
    snap = big_snapshot()
    light, _full = registries(lambda: snap)
    exposition = Exposition(light, lambda: snap)
    app = build_metrics_app(light, lambda: (True, "ok"), exposition=exposition)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}"
    headers = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}
    try:
        async with aiohttp.ClientSession(auto_decompress=False) as http:

            async def scrape() -> tuple[int, bytes, str]:
                async with http.get(f"{url}/metrics", headers=headers) as resp:
                    return resp.status, await resp.read(), resp.headers["Content-Encoding"]

            async def health() -> float:
                t0 = time.perf_counter()
                async with http.get(f"{url}/healthz") as resp:
                    assert resp.status == 200
                return time.perf_counter() - t0

            # Four concurrent scrapes of one tick (an HA pair, twice) and a health probe.
            results = await asyncio.gather(*(scrape() for _ in range(4)), health())
            scrapes = results[:4]
            assert {s[0] for s in scrapes} == {200} and {s[2] for s in scrapes} == {"gzip"}
            assert len({s[1] for s in scrapes}) == 1
            assert exposition.renders == 1  # one rendering shared by the four scrapes
            assert gzip.decompress(scrapes[0][1]).endswith(b"# EOF\n")
    finally:
        await runner.cleanup()
        exposition.close()


@pytest.mark.slow
def test_a_real_prometheus_scrapes_the_openmetrics_gzip_path(tmp_path) -> None:
    """Prometheus sends its own Accept/Accept-Encoding; what it stores is what we serve."""
    snap = big_snapshot(workloads=2, models=3)
    light, _full = registries(lambda: snap)
    exposition = Exposition(light, lambda: snap)
    seen: list[tuple[str, str]] = []

    @web.middleware
    async def record(request: web.Request, handler):  # type: ignore[no-untyped-def]
        if request.path == "/metrics":
            seen.append(
                (request.headers.get("Accept", ""), request.headers.get("Accept-Encoding", ""))
            )
        return await handler(request)

    app = build_metrics_app(light, lambda: (True, "ok"), exposition=exposition)
    app.middlewares.append(record)
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        with run_prometheus(tmp_path / "prom", [f"127.0.0.1:{port}"], rule_files=()) as prom:
            prom.wait_for_targets_up()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                result = prom.result("count(jouled_request_energy_joules_bucket)")
                if result:
                    break
                time.sleep(0.3)
            assert float(result[0]["value"][1]) == 6 * 7  # 6 series x (6 bounds + +Inf)
            assert prom.value('jouled_requests_total{workload="workload-1",model="model-2"}') == (
                1000
            )
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
        exposition.close()
    accept, encoding = seen[0]
    assert accept.startswith("application/openmetrics-text;version=1.0.0")
    assert "gzip" in encoding


async def test_prefetch_renders_ahead_of_a_regular_scraper_and_idles_without_one() -> None:
    snaps = [big_snapshot(workloads=2, models=2)]
    light, _full = registries(lambda: snaps[0])
    exposition = Exposition(light, lambda: snaps[0])
    clock = [1000.0]
    exposition._now = lambda: clock[0]
    try:
        assert exposition.prefetch(1.0) == 0  # nobody scrapes: nothing rendered
        # A scraper every 15 s; ticks every second.
        for t in (1000.0, 1015.0):
            clock[0] = t
            await exposition.serve(PROMETHEUS_ACCEPT, "gzip")
        renders = exposition.renders
        started = []
        for t in range(1016, 1031):  # the ticks until the next scrape at 1030
            clock[0] = float(t)
            snaps[0] = big_snapshot(workloads=2, models=2, seq=t)
            started.append(exposition.prefetch(1.0))
        assert started == [0] * 13 + [1, 1]  # at 1029 (due within a tick) and 1030
        await asyncio.sleep(0.5)
        clock[0] = 1030.0
        await exposition.serve(PROMETHEUS_ACCEPT, "gzip")
        assert exposition.renders == renders + 2  # the scrape at 1030 rendered nothing
    finally:
        exposition.close()
