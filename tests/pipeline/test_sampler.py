import threading
from dataclasses import dataclass, field

import pytest

from jouled.clock import FakeClock
from jouled.collectors.base import (
    CheckRow,
    CollectorError,
    DomainReading,
    Kind,
    Sample,
    Source,
)
from jouled.pipeline.sampler import Sampler, host_components
from jouled.pipeline.snapshot import Snapshot
from jouled.pipeline.tick import Tick


@dataclass
class Scripted:
    """A collector whose cumulative readings the test sets directly."""

    name: str
    readings: dict[str, tuple[Kind, Source, float]] = field(default_factory=dict)
    fail: str = ""
    block: threading.Event | None = None
    resets: dict[str, int] = field(default_factory=dict)
    calls: int = 0

    def read(self) -> Sample:
        self.calls += 1
        if self.block is not None:
            self.block.wait(5)
        if self.fail:
            raise CollectorError(self.fail, fix="do the thing")
        return Sample(
            readings=tuple(
                DomainReading(d, k, s, e, device=d.rsplit("-", 1)[-1])
                for d, (k, s, e) in self.readings.items()
            ),
            resets=dict(self.resets),
        )

    def check(self) -> list[CheckRow]:
        return []

    def close(self) -> None:
        if self.block is not None:
            self.block.set()


def rapl_server(pkg: float = 0.0, core: float = 0.0, dram: float = 0.0) -> Scripted:
    return Scripted(
        "rapl",
        {
            "package-0": (Kind.PACKAGE, Source.RAPL, pkg),
            "core-0": (Kind.CORE, Source.RAPL, core),
            "dram-0": (Kind.DRAM, Source.RAPL, dram),
        },
    )


def set_energy(c: Scripted, domain: str, joules: float) -> None:
    kind, source, _ = c.readings[domain]
    c.readings[domain] = (kind, source, joules)


async def test_first_tick_is_a_baseline_then_deltas_accumulate() -> None:
    clock = FakeClock()
    rapl = rapl_server(pkg=1000.0, core=600.0, dram=200.0)
    sampler = Sampler([rapl], clock)
    snap = await sampler.tick()
    # A baseline: every series exists, at zero, so increase() sees the first interval.
    assert dict(snap.domain_energy_j) == {
        ("package-0", "rapl"): 0.0,
        ("core-0", "rapl"): 0.0,
        ("dram-0", "rapl"): 0.0,
    }
    assert dict(snap.host_energy_j) == {("cpu", "rapl"): 0.0, ("dram", "rapl"): 0.0}
    clock.advance(1.0)
    set_energy(rapl, "package-0", 1060.0)
    set_energy(rapl, "core-0", 640.0)
    set_energy(rapl, "dram-0", 210.0)
    snap = await sampler.tick()
    assert snap.domain_energy_j[("package-0", "rapl")] == pytest.approx(60.0)
    assert snap.domain_energy_j[("core-0", "rapl")] == pytest.approx(40.0)
    # core is inside package: host components never count it again.
    assert snap.host_energy_j == {("cpu", "rapl"): 60.0, ("dram", "rapl"): 10.0}
    assert snap.collectors["rapl"].up
    sampler.close()


def test_host_components_do_not_double_count_psys() -> None:
    r = [
        (DomainReading("package-0", Kind.PACKAGE, Source.RAPL, 0), 30.0),
        (DomainReading("package-1", Kind.PACKAGE, Source.RAPL, 0), 20.0),
        (DomainReading("core-0", Kind.CORE, Source.RAPL, 0), 25.0),
        (DomainReading("dram-0", Kind.DRAM, Source.RAPL, 0), 5.0),
        (DomainReading("psys", Kind.PSYS, Source.RAPL, 0), 70.0),
        (DomainReading("gpu-0", Kind.GPU, Source.NVML, 0), 300.0),
        (DomainReading("gpu-1", Kind.GPU, Source.NVML, 0), 100.0),
        # An estimate beside measurements never enters the host total.
        (DomainReading("cpu", Kind.CPU, Source.ESTIMATE, 0), 44.0),
    ]
    out = host_components(r)
    assert out == {
        ("cpu", "rapl"): 50.0,
        ("dram", "rapl"): 5.0,
        ("other", "rapl"): 15.0,
        ("gpu", "nvml"): 400.0,
    }
    assert sum(out.values()) == 70.0 + 400.0  # psys + GPUs: the host's IT energy


def test_estimate_fills_only_unmeasured_components() -> None:
    r = [
        (DomainReading("cpu", Kind.CPU, Source.ESTIMATE, 0), 44.0),
        (DomainReading("memory", Kind.MEMORY, Source.ESTIMATE, 0), 4.0),
        (DomainReading("gpu-0", Kind.GPU, Source.NVML, 0), 100.0),
    ]
    assert host_components(r) == {
        ("cpu", "estimate"): 44.0,
        ("dram", "estimate"): 4.0,
        ("gpu", "nvml"): 100.0,
    }


async def test_a_failing_collector_is_reported_and_the_others_go_on() -> None:
    clock = FakeClock()
    good = rapl_server()
    bad = Scripted("nvml", {"gpu-0": (Kind.GPU, Source.NVML, 0.0)})
    sampler = Sampler([good, bad], clock)
    await sampler.tick()
    bad.fail = "GPU is lost"
    clock.advance(1)
    set_energy(good, "package-0", 50.0)
    snap = await sampler.tick()
    assert snap.collectors["rapl"].up
    assert not snap.collectors["nvml"].up
    assert "GPU is lost" in snap.collectors["nvml"].error
    assert "do the thing" in snap.collectors["nvml"].error
    assert snap.domain_energy_j[("package-0", "rapl")] == 50.0
    # Recovery: energy resumes from the counter, counted from the last good read.
    bad.fail = ""
    set_energy(bad, "gpu-0", 500.0)
    clock.advance(1)
    snap = await sampler.tick()
    assert snap.collectors["nvml"].up
    assert snap.domain_energy_j[("gpu-0", "nvml")] == 500.0
    sampler.close()


async def test_a_hung_collector_times_out_without_stalling_the_tick() -> None:
    clock = FakeClock()
    good = rapl_server()
    hung = Scripted("nvml", {"gpu-0": (Kind.GPU, Source.NVML, 0.0)}, block=threading.Event())
    sampler = Sampler([good, hung], clock, timeout_s=0.05)
    snap = await sampler.tick()
    assert snap.collectors["rapl"].up
    assert not snap.collectors["nvml"].up
    assert "timed out" in snap.collectors["nvml"].error
    # The stuck read is not submitted again while it is still running.
    await sampler.tick()
    assert hung.calls == 1
    sampler.close()  # releases the blocked thread


async def test_counters_never_go_backwards_even_if_a_collector_misbehaves() -> None:
    clock = FakeClock()
    rapl = rapl_server(pkg=100.0)
    sampler = Sampler([rapl], clock)
    await sampler.tick()
    set_energy(rapl, "package-0", 90.0)  # a buggy collector rewinds
    clock.advance(1)
    snap = await sampler.tick()
    assert snap.domain_energy_j[("package-0", "rapl")] == 0.0
    sampler.close()


async def test_resets_reported_by_collectors_are_published() -> None:
    clock = FakeClock()
    rapl = rapl_server(pkg=1.0)
    sampler = Sampler([rapl], clock)
    rapl.resets = {"package-0": 2}
    snap = await sampler.tick()
    assert snap.counter_resets[("package-0", "rapl")] == 2
    sampler.close()


async def test_stages_get_ticks_and_a_failing_stage_keeps_its_last_section() -> None:
    clock = FakeClock(start_wall=1_700_000_000.0)
    rapl = rapl_server()
    seen: list[Tick] = []

    class Recorder:
        name = "attribution"
        explode = False

        def on_tick(self, tick: Tick, snapshot: Snapshot) -> object:
            if self.explode:
                raise RuntimeError("boom")
            seen.append(tick)
            return tick.seq

    stage = Recorder()
    sampler = Sampler([rapl], clock, stages=[stage])
    await sampler.tick()
    clock.advance(2.0)
    set_energy(rapl, "package-0", 10.0)
    snap = await sampler.tick()
    assert snap.attribution == 2
    assert seen[-1].seconds == 2.0
    assert seen[-1].w1 - seen[-1].w0 == 2.0
    assert seen[-1].host_j[("cpu", "rapl")] == 10.0
    stage.explode = True
    clock.advance(1)
    snap = await sampler.tick()
    assert snap.seq == 3
    assert snap.attribution == 2
    sampler.close()


async def test_swapping_collectors_keeps_totals_and_rebaselines() -> None:
    clock = FakeClock()
    first = rapl_server(pkg=0.0)
    sampler = Sampler([first], clock)
    await sampler.tick()
    set_energy(first, "package-0", 30.0)
    clock.advance(1)
    await sampler.tick()
    second = rapl_server(pkg=5000.0)  # a new collector instance: its counter origin differs
    sampler.set_collectors([second])
    clock.advance(1)
    snap = await sampler.tick()
    assert snap.domain_energy_j[("package-0", "rapl")] == 30.0
    set_energy(second, "package-0", 5010.0)
    clock.advance(1)
    snap = await sampler.tick()
    assert snap.domain_energy_j[("package-0", "rapl")] == 40.0
    sampler.close()


async def test_wall_clock_steps_never_stretch_or_invert_a_tick() -> None:
    clock = FakeClock(start_wall=1_700_000_000.0)
    rapl = rapl_server()
    seen: list[Tick] = []

    class Recorder:
        name = "attribution"

        def on_tick(self, tick: Tick, snapshot: Snapshot) -> object:
            seen.append(tick)
            return None

    sampler = Sampler([rapl], clock, stages=[Recorder()])
    await sampler.tick()
    clock.advance(1.0)
    clock.jump_wall(3600.0)  # NTP steps forward an hour
    await sampler.tick()
    clock.advance(1.0)
    clock.jump_wall(-7200.0)  # and back two hours
    await sampler.tick()
    assert [t.w1 - t.w0 for t in seen[1:]] == [1.0, 1.0]
    assert seen[1].w1 == clock.time() + 7200.0 - 1.0
    assert seen[2].w1 == clock.time()
    assert [t.seconds for t in seen[1:]] == [1.0, 1.0]
    sampler.close()


def test_a_stage_with_no_snapshot_section_is_refused() -> None:
    class Nameless:
        name = "rec"

        def on_tick(self, tick: Tick, snapshot: Snapshot) -> object:
            return None

    with pytest.raises(ValueError, match="'rec' has no snapshot section"):
        Sampler([], FakeClock(), stages=[Nameless()])


@dataclass
class InlineScripted(Scripted):
    """A collector that says its read never blocks (as the estimate collector does)."""

    reads_inline: bool = True
    threads: list[int] = field(default_factory=list)

    def read(self) -> Sample:
        self.threads.append(threading.get_ident())
        return super().read()


async def test_a_collector_that_reads_inline_is_read_on_the_loop_thread() -> None:
    clock = FakeClock()
    est = InlineScripted("estimate", {"cpu": (Kind.CPU, Source.ESTIMATE, 0.0)})
    pooled = rapl_server()
    sampler = Sampler([est, pooled], clock)
    await sampler.tick()
    set_energy(est, "cpu", 30.0)
    clock.advance(1)
    snap = await sampler.tick()
    assert est.threads == [threading.get_ident()] * 2  # no hand-off to the pool
    assert snap.domain_energy_j[("cpu", "estimate")] == 30.0
    assert snap.collectors["estimate"].up and snap.collectors["rapl"].up
    est.fail = "no /proc/stat"
    clock.advance(1)
    snap = await sampler.tick()  # a failing inline read degrades its own status only
    assert not snap.collectors["estimate"].up
    assert "no /proc/stat" in snap.collectors["estimate"].error
    assert snap.collectors["rapl"].up
    sampler.close()


def test_a_tick_of_inline_reads_never_yields_to_the_loop() -> None:
    # An idle daemon's tick (the estimate collector alone, no stage off the loop) runs to
    # its end in one step: no task per read, no gather callbacks (each a loop iteration).
    clock = FakeClock()
    est = InlineScripted("estimate", {"cpu": (Kind.CPU, Source.ESTIMATE, 0.0)})
    sampler = Sampler([est], clock)
    for joules in (0.0, 12.0):
        set_energy(est, "cpu", joules)
        clock.advance(1)
        step = sampler.tick()
        with pytest.raises(StopIteration) as done:
            step.send(None)
        snap = done.value.value
    assert snap.domain_energy_j[("cpu", "estimate")] == 12.0
    assert snap.collectors["estimate"].up
    sampler.close()


async def test_one_pooled_read_among_inline_ones_keeps_the_collector_order() -> None:
    clock = FakeClock()
    first = InlineScripted("estimate", {"cpu": (Kind.CPU, Source.ESTIMATE, 0.0)})
    pooled = rapl_server()
    last = InlineScripted("other", {"memory": (Kind.DRAM, Source.ESTIMATE, 0.0)})
    sampler = Sampler([first, pooled, last], clock)
    await sampler.tick()
    set_energy(first, "cpu", 1.0)
    set_energy(pooled, "package-0", 2.0)
    set_energy(last, "memory", 3.0)
    last.fail = "gone"
    clock.advance(1)
    snap = await sampler.tick()
    assert snap.domain_energy_j[("cpu", "estimate")] == 1.0
    assert snap.domain_energy_j[("package-0", "rapl")] == 2.0
    assert snap.collectors["estimate"].up and snap.collectors["rapl"].up
    assert not snap.collectors["other"].up and "gone" in snap.collectors["other"].error
    sampler.close()


def test_the_estimate_collector_reads_inline() -> None:
    from jouled.collectors.estimate import EstimateCollector

    assert EstimateCollector.reads_inline is True
