"""Frozen RAPL counters on a busy host (Kepler's VM report): marked, and the estimate takes
over in ``auto`` mode, labelled ``source="estimate"``; it stands by again when RAPL moves."""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from jouled.clock import FakeClock
from jouled.config import validate
from jouled.daemon.service import build_collectors
from jouled.exporter.metrics import SnapshotCollector
from jouled.pipeline.sampler import Sampler
from jouled.pipeline.snapshot import Snapshot
from jouled.testing.fake_powercap import FakePowercap

HZ = os.sysconf("SC_CLK_TCK")


def write_proc_stat(proc: Path, busy_s: float) -> None:
    """A /proc/stat whose cpu line says the host was busy ``busy_s`` CPU seconds."""
    ticks = int(busy_s * HZ)
    (proc / "stat").write_text(f"cpu  {ticks} 0 0 {10 * ticks} 0 0 0 0 0 0\n")


async def test_frozen_rapl_hands_the_host_to_the_estimate(tmp_path: Path) -> None:
    fake = FakePowercap.typical_server(tmp_path / "sys", sockets=1)
    proc = tmp_path / "proc"
    proc.mkdir()
    write_proc_stat(proc, 0.0)
    cfg = validate(
        {
            "collectors": {"rapl": {"path": str(fake.class_dir)}, "nvml": {"enabled": False}},
            "attribution": {"proc_path": str(proc)},
        },
        "test",
    )
    clock = FakeClock()
    plan = build_collectors(cfg, clock)
    assert [c.name for c in plan.collectors] == ["rapl", "estimate"]
    sampler = Sampler(plan.collectors, clock)
    busy = 0.0

    async def second() -> Snapshot:
        nonlocal busy
        fake.advance(1.0)
        clock.advance(1.0)
        busy += 1.5  # a busy host: 1.5 CPU-seconds a second
        write_proc_stat(proc, busy)
        return await sampler.tick()

    for _ in range(3):
        snap = await second()
    # RAPL measures; the estimate stands by, with no series at all.
    assert snap.host_energy_j[("cpu", "rapl")] == 240.0  # 120 W x 2 s after the baseline
    assert ("cpu", "estimate") not in snap.host_energy_j
    assert "estimate" not in snap.collectors
    for zone in fake.zones:
        zone.freeze()
    for _ in range(8):
        snap = await second()
    assert snap.counter_frozen[("package-0", "rapl")] is True
    assert snap.counter_frozen[("dram-0", "rapl")] is True
    assert snap.counter_frozen[("core-0", "rapl")] is False  # inside package, not judged
    # The frozen meters cover nothing: the CPU and DRAM components are estimated now.
    assert snap.host_energy_j[("cpu", "rapl")] == 240.0  # no more since it froze
    assert snap.host_energy_j[("cpu", "estimate")] > 0.0
    assert snap.host_energy_j[("dram", "estimate")] >= 0.0
    assert snap.collectors["estimate"].up
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(lambda: snap))
    text = generate_latest(registry).decode()
    assert 'jouled_domain_frozen{domain="package-0",source="rapl"} 1.0' in text
    assert 'jouled_host_energy_joules_total{component="cpu",source="estimate"}' in text
    # RAPL moves again: it measures, and the estimate stands by (its totals stay).
    for zone in fake.zones:
        zone.thaw()
    for _ in range(2):  # moving on two reads is not yet trusted (no flapping)
        snap = await second()
        assert snap.counter_frozen[("package-0", "rapl")] is True
    # The catch-up jump covers seconds the estimate already counted: not counted twice.
    assert snap.host_energy_j[("cpu", "rapl")] == 240.0
    cpu_estimate = snap.host_energy_j[("cpu", "estimate")]
    snap = await second()  # the third read in a row that moves: a measurement again
    assert snap.counter_frozen[("package-0", "rapl")] is False
    assert snap.host_energy_j[("cpu", "rapl")] == 360.0
    snap = await second()  # and the estimate stands by from the next tick
    assert "estimate" not in snap.collectors
    assert snap.host_energy_j[("cpu", "estimate")] == cpu_estimate
    sampler.close()


def test_check_shows_frozen_zones_and_the_estimate_that_covers_them(tmp_path: Path) -> None:
    from jouled.daemon.check import collect_rows

    fake = FakePowercap.typical_server(tmp_path / "sys", sockets=1)  # nothing moves it
    cfg = validate(
        {"collectors": {"rapl": {"path": str(fake.class_dir)}, "nvml": {"enabled": False}}},
        "test",
    )
    rows = collect_rows(cfg, FakeClock(), motion_probe_s=0.2)
    rapl = {Path(r.target).name: r for r in rows if r.collector == "rapl"}
    for zone in ("intel-rapl:0", "intel-rapl:0:1"):  # package and dram
        assert not rapl[zone].readable
        assert "did not move in 0.2 s" in rapl[zone].detail
        assert "estimate" in rapl[zone].fix
    estimate = [r for r in rows if r.collector == "estimate"]
    assert [r.target for r in estimate] == ["cpu", "memory"]
    assert all(r.readable for r in estimate)
