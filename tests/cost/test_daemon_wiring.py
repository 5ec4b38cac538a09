"""The cost stage, grid poller and ledger inside the real daemon (one process, fake clock,
fake powercap tree, a loopback provider): by-hand numbers, reload, and the SIGTERM flush."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from jouled import config
from jouled.clock import FakeClock
from jouled.daemon.service import Daemon
from jouled.daemon.systemd import Notifier
from jouled.ledger import connect
from jouled.report import totals
from jouled.testing.fake_powercap import FakePowercap
from tests.support.procs import free_port

LOC = {"method": "location"}


async def test_daemon_books_at_the_provider_value_reloads_and_flushes(tmp_path: Path) -> None:
    async def intensity(request: web.Request) -> web.Response:
        return web.json_response({"data": [{"intensity": {"forecast": 90, "actual": 100}}]})

    app = web.Application()
    app.router.add_get("/intensity", intensity)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]

    clock = FakeClock()
    powercap = FakePowercap.typical_server(tmp_path, sockets=1, package_w=100, dram_w=20)
    ledger_path = tmp_path / "state" / "ledger.db"
    raw = {
        "listen": f"127.0.0.1:{free_port()}",
        "ingest": {"enabled": False},
        "collectors": {"rapl": {"enabled": True, "path": str(powercap.class_dir)}},
        "cost": {
            "pue": 1.5,
            "grid_intensity": {
                "provider": "uk_national_grid",
                "url": f"http://{host}:{port}",
                "interval": 3600,
                "fallback": 999,
            },
        },
        "ledger": {"path": str(ledger_path), "flush_interval": 3600},
    }
    path = tmp_path / "j.yaml"
    path.write_text(yaml.safe_dump(raw))
    daemon = Daemon(config.load(path), config_path=path, clock=clock, notifier=Notifier({}))
    await daemon.start()
    try:
        assert daemon.grid is not None and daemon.sampler is not None
        for _ in range(200):  # the first poll runs on the loop, not on a timer
            if daemon.grid.status().up or daemon.grid.status().errors:
                break
            await asyncio.sleep(0.01)
        assert daemon.grid.status().up
        for _ in range(10):
            powercap.advance(1.0)
            clock.advance(1.0)
            await daemon.sampler.tick()
        reg = daemon.registry
        assert reg.get_sample_value("jouled_grid_intensity_grams_per_kwh") == 100.0
        # 120 W for 10 s = 1200 J; x 1.5 / 3.6e6 kWh x 100 g/kWh = 0.05 g.
        assert reg.get_sample_value("jouled_host_emissions_grams_total", LOC) == pytest.approx(0.05)
        # 120 W x 1.5 x 100 g/kWh = 18 g/h.
        assert reg.get_sample_value("jouled_host_emissions_grams_per_hour", LOC) == pytest.approx(
            18.0
        )
        assert reg.get_sample_value("jouled_ledger_up") == 1.0
        assert reg.get_sample_value("jouled_grid_provider_up", {"provider": "uk_national_grid"})

        raw["cost"] = {"pue": 1.2, "grid_intensity": 200}
        path.write_text(yaml.safe_dump(raw))
        assert daemon.reload()
        assert daemon.grid is None and "grid" not in daemon._tasks
        powercap.advance(1.0)
        clock.advance(1.0)
        await daemon.sampler.tick()
        assert reg.get_sample_value("jouled_pue") == 1.2
        # The old ticks keep their factors; the new one is at 1.2 and 200 g/kWh.
        expected = 0.05 + 120 * 1.2 / 3.6e6 * 200
        assert reg.get_sample_value("jouled_host_emissions_grams_total", LOC) == pytest.approx(
            expected
        )
    finally:
        await daemon.shutdown()
        await runner.cleanup()
    conn = connect(ledger_path, readonly=True)
    try:
        doc = totals(conn, None, float("inf"))
    finally:
        conn.close()
    assert doc["host"]["energy_joules"] == pytest.approx(11 * 120.0)
    assert doc["host"]["emissions_grams"] == pytest.approx(expected)
