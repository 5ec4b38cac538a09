"""A real daemon in-process (real clock, real HTTP on loopback, fake RAPL tree) whose tick
loop runs, so an attack that blocks the event loop shows as a stalled /healthz."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from jouled import config
from jouled.daemon.service import Daemon
from jouled.daemon.systemd import Notifier
from jouled.testing.fake_powercap import FakePowercap
from tests.support.procs import free_port


@dataclass
class Running:
    daemon: Daemon
    metrics_url: str
    ingest_url: str
    lags: list[float] = field(default_factory=list)  # event-loop lag samples, seconds

    @property
    def worst_lag_s(self) -> float:
        return max(self.lags, default=0.0)

    async def healthz(self, http: aiohttp.ClientSession) -> tuple[int, float]:
        t0 = time.perf_counter()
        async with http.get(self.metrics_url + "/healthz") as resp:
            await resp.read()
            return resp.status, time.perf_counter() - t0


async def _lag_probe(out: list[float], period: float = 0.01) -> None:
    loop = asyncio.get_running_loop()
    while True:
        t0 = loop.time()
        await asyncio.sleep(period)
        out.append(loop.time() - t0 - period)


@contextlib.asynccontextmanager
async def running(tmp: Path, **overrides: Any) -> AsyncIterator[Running]:
    powercap = FakePowercap.typical_server(tmp / "sys", sockets=1)
    raw: dict[str, Any] = {
        "interval": 0.2,
        "listen": f"127.0.0.1:{free_port()}",
        "ingest": {"listen": f"127.0.0.1:{free_port()}", "grpc_listen": None},
        "ledger": {"path": str(tmp / "ledger.db")},
        "collectors": {
            "rapl": {"enabled": True, "path": str(powercap.class_dir)},
            "nvml": {"enabled": False},
        },
        "workloads": [{"name": "api", "match": {"pid": 1}}],
    }
    for key, value in overrides.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    daemon = Daemon(config.load(path), config_path=path, notifier=Notifier({}))
    await daemon.start()
    run = asyncio.ensure_future(daemon.run())
    r = Running(
        daemon,
        "http://{}:{}".format(*daemon.bound["metrics"]),
        "http://{}:{}".format(*daemon.bound["ingest"]),
    )
    probe = asyncio.ensure_future(_lag_probe(r.lags))
    await asyncio.sleep(0.6)  # spans "ending 0.1 s ago" now fall after the first tick
    try:
        yield r
    finally:
        probe.cancel()
        daemon.request_stop()
        await run
        await daemon.shutdown()


RunningFactory = Callable[..., contextlib.AbstractAsyncContextManager[Running]]


@pytest.fixture
def daemon_at(tmp_path: Path) -> RunningFactory:
    def make(**overrides: Any) -> contextlib.AbstractAsyncContextManager[Running]:
        return running(tmp_path, **overrides)

    return make
