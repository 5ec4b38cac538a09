"""The whole daemon in one process on fake hardware with a fake clock: RAPL tree, two
NVIDIA GPUs (one with an energy counter, one power-only), real HTTP on loopback."""

import asyncio
import subprocess
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jouled import config
from jouled.clock import FakeClock
from jouled.daemon.service import Daemon, StartupError
from jouled.daemon.systemd import Notifier
from jouled.testing.fake_powercap import FakePowercap
from jouled.testing.fake_pynvml import FakeGpu, FakeNvml
from tests.support.procs import free_port
from tests.support.prometheus import require_tool


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


async def test_rapl_and_gpus_through_the_real_http_listener(tmp_path: Path) -> None:
    clock = FakeClock()
    powercap = FakePowercap.typical_server(tmp_path, sockets=2, package_w=120, dram_w=20)
    nvml = FakeNvml(
        [FakeGpu(power_w=250.0), FakeGpu(name="Tesla P100", energy_counter=False, power_w=100.0)],
        clock=clock,
    )
    cfg = config.validate(
        {
            "listen": f"127.0.0.1:{free_port()}",
            "ingest": {
                "listen": f"127.0.0.1:{free_port()}",
                "grpc_listen": f"127.0.0.1:{free_port()}",
            },
            "ledger": {"path": str(tmp_path / "ledger.db")},
            "collectors": {
                "rapl": {"enabled": True, "path": str(powercap.class_dir)},
                "nvml": {"enabled": True},
            },
        },
        "test",
    )
    daemon = Daemon(cfg, clock=clock, nvml_module=nvml, notifier=Notifier({}))
    await daemon.start()
    try:
        assert daemon.sampler is not None
        for _ in range(10):
            powercap.advance(1.0)
            nvml.advance(1.0)
            await daemon.sampler.tick()
        host, port = daemon.bound["metrics"]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{host}:{port}/metrics") as resp:
                assert resp.status == 200
                m = parse(await resp.text())
            async with http.get(
                f"http://{host}:{port}/metrics",
                headers={"Accept": "application/openmetrics-text; version=1.0.0"},
            ) as resp:
                assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
                assert (await resp.text()).rstrip().endswith("# EOF")
            async with http.get(f"http://{host}:{port}/healthz") as resp:
                assert resp.status == 200
            async with http.get(f"http://{host}:{port}/metrics") as resp:
                full = await resp.text()
        # The whole exposition (host, attribution, cost, ledger) passes promtool's lint.
        promtool = require_tool("promtool", debian_package="prometheus")
        lint = await asyncio.to_thread(
            subprocess.run,
            [promtool, "check", "metrics"],
            input=full,
            capture_output=True,
            text=True,
            check=False,
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr

        def v(name: str, **labels: str) -> float:
            return m[(name, frozenset(labels.items()))]

        # 10 ticks after the baseline tick: but the first tick after start was the
        # baseline, so 10 seconds of energy were counted.
        assert v("jouled_host_energy_joules_total", component="cpu", source="rapl") == (
            pytest.approx(2 * 120 * 10)
        )
        assert v("jouled_host_energy_joules_total", component="dram", source="rapl") == (
            pytest.approx(2 * 20 * 10)
        )
        assert v("jouled_domain_energy_joules_total", domain="gpu-0", source="nvml") == (
            pytest.approx(2500.0)
        )
        # The power-only board is integrated from polls (trapezoid) at each read.
        assert v("jouled_domain_energy_joules_total", domain="gpu-1", source="nvml") == (
            pytest.approx(1000.0, rel=0.01)
        )
        assert v("jouled_host_energy_joules_total", component="gpu", source="nvml") == (
            pytest.approx(3500.0, rel=0.01)
        )
        assert v("jouled_collector_up", collector="rapl") == 1.0
        assert v("jouled_collector_up", collector="nvml") == 1.0
        assert ("jouled_collector_up", frozenset({("collector", "estimate")})) not in m

        # A GPU falls off the bus: reported, the rest goes on, nothing goes backwards.
        nvml.lose_gpu(1)
        powercap.advance(1.0)
        nvml.advance(1.0)
        snap = await daemon.sampler.tick()
        assert snap.collectors["nvml"].up
        assert "gpu-1" in snap.collectors["nvml"].problems
        assert snap.domain_energy_j[("gpu-1", "nvml")] == pytest.approx(1000.0, rel=0.01)
        assert snap.domain_energy_j[("gpu-0", "nvml")] == pytest.approx(2750.0)
    finally:
        await daemon.shutdown()


async def test_an_unusable_fit_file_stops_startup_with_the_key_and_the_file(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "fit.json"
    bad.write_text("{not json")
    cfg = config.validate(
        {
            "listen": f"127.0.0.1:{free_port()}",
            "ingest": {"enabled": False},
            "collectors": {"rapl": {"enabled": False}, "nvml": {"enabled": False}},
            "spans": {"fit_file": str(bad)},
            "ledger": {"path": None},
        },
        "test",
    )
    daemon = Daemon(cfg, clock=FakeClock(), notifier=Notifier({}))
    with pytest.raises(StartupError, match=r"spans\.fit_file: cannot use .*fit\.json"):
        await daemon.start()
    await daemon.shutdown()


@pytest.mark.parametrize("content", [None, "  \n"])
async def test_a_missing_or_empty_token_file_stops_startup(
    tmp_path: Path, content: str | None
) -> None:
    token = tmp_path / "token"
    if content is not None:
        token.write_text(content)
    cfg = config.validate(
        {
            "listen": f"127.0.0.1:{free_port()}",
            "ingest": {
                "listen": f"127.0.0.1:{free_port()}",
                "token_file": str(token),
                "grpc_listen": None,
            },
            "collectors": {"rapl": {"enabled": False}, "nvml": {"enabled": False}},
            "ledger": {"path": None},
        },
        "test",
    )
    daemon = Daemon(cfg, clock=FakeClock(), notifier=Notifier({}))
    with pytest.raises(StartupError, match=r"ingest\.token_file: .*token"):
        await daemon.start()
    assert daemon.bound == {}  # nothing was listening
    await daemon.shutdown()
