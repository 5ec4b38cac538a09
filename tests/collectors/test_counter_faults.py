"""Counter faults from public bug reports, replayed on the fakes with the right joules.

Each test is one situation of issue 14: a glitched read, a reset, a frozen counter, a
mirrored die zone, a zone whose max_energy_range_uj reads 0. docs/MEASUREMENT.md lists them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from jouled.clock import FakeClock
from jouled.collectors.base import Sample
from jouled.collectors.counter import CounterTrack, Event, FrozenWatch
from jouled.collectors.nvml import NvmlCollector
from jouled.collectors.rapl import (
    ASSUMED_RANGES_UJ,
    FROZEN_FIX,
    RaplCollector,
    check_rapl,
)
from jouled.testing.fake_powercap import FakePowercap
from jouled.testing.fake_pynvml import FakeGpu, FakeNvml

ABSURD_UJ = "18446744073447456768\n"  # the read reported on a 100 W zone (2^64 - 262 kJ)
INTEL_RANGE_UJ = 262_143_328_850  # the kernel's range at ESU 14 (61 µJ unit)
AMD_RANGE_UJ = 65_532_610_987  # the kernel's range at ESU 16 (15.3 µJ unit)


class Busy:
    """Cumulative busy CPU seconds of a host that works ``per_s`` CPU-seconds a second."""

    def __init__(self, clock: FakeClock, per_s: float) -> None:
        self.clock, self.per_s = clock, per_s

    def __call__(self) -> float:
        return self.clock.monotonic() * self.per_s


def rapl_for(fake: FakePowercap, clock: FakeClock, busy: Busy | None = None) -> RaplCollector:
    return RaplCollector(fake.class_dir, clock, read_text=fake.read_text, host_busy_s=busy)


def tick(fake: FakePowercap, clock: FakeClock, seconds: float = 1.0) -> None:
    fake.advance(seconds)
    clock.advance(seconds)


def energies(sample: Sample) -> dict[str, float]:
    return {r.domain: r.energy_j for r in sample.readings}


# -- glitch vs reset ---------------------------------------------------------------------


@pytest.mark.parametrize("bad", [ABSURD_UJ, "0\n", "123\n"], ids=["absurd", "zero", "small"])
def test_one_bad_read_on_a_100_watt_zone_costs_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, bad: str
) -> None:
    # Issue 14: 20 s at 100 W came out as 3,000 J (or 1,800 J) with resets_total 1, because
    # the rejected read became the comparison point. Right: 2,000 J, one glitch, no reset.
    fake = FakePowercap(tmp_path)
    zone = fake.add_zone("0", "package-0", 100.0)
    fake.advance(1234.5)  # the counter sits mid-range, as on a host up for a while
    clock = FakeClock()
    rapl = rapl_for(fake, clock)
    start = energies(rapl.read())["package-0"]
    with caplog.at_level(logging.INFO, logger="jouled.collectors.rapl"):
        for i in range(20):
            tick(fake, clock)
            if i == 7:
                zone.glitch_once(bad)
            sample = rapl.read()
    assert energies(sample)["package-0"] - start == 2000.0
    assert sample.resets == {"package-0": 0}
    assert sample.glitches == {"package-0": 1}
    messages = [r.getMessage() for r in caplog.records]
    assert any("glitch" in m and bad.strip() in m for m in messages)
    assert not any("counter reset" in m for m in messages)


def test_nvml_one_bad_counter_read_5000_joules_not_4500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Issue 14: 10 s at 500 W with one bad energy-counter read gave 4,500 J and a log line
    # blaming a GPU reset. Right: 5,000 J, the read dropped and counted, no reset.
    for bad in (0, 2**63):
        fake = FakeNvml([FakeGpu(power_w=500.0)])
        c = NvmlCollector(fake, clock=fake.clock, start_poller=False)
        try:
            with caplog.at_level(logging.INFO, logger="jouled.collectors.nvml"):
                for i in range(10):
                    fake.advance(1.0)
                    if i == 4:
                        fake.glitch_energy_once(0, bad)
                    sample = c.read()
        finally:
            c.close()
        assert sample.readings[0].energy_j == 5000.0
        assert sample.resets == {"gpu-0": 0}
        assert sample.glitches == {"gpu-0": 1}
        assert not any("driver reload or GPU reset" in r.getMessage() for r in caplog.records)
        caplog.clear()


def test_a_real_nvml_reset_is_confirmed_by_the_next_read() -> None:
    fake = FakeNvml([FakeGpu(power_w=300.0)])
    c = NvmlCollector(fake, clock=fake.clock, start_poller=False)
    try:
        fake.advance(1.0)
        c.read()
        fake.reset_energy_counter(0)
        fake.advance(1.0)
        held = c.read()
        fake.advance(1.0)
        confirmed = c.read()
    finally:
        c.close()
    assert held.readings[0].energy_j == 300.0 and held.resets == {"gpu-0": 0}
    assert confirmed.readings[0].energy_j == 900.0  # all of it: the reset came at a read
    assert confirmed.resets == {"gpu-0": 1} and confirmed.glitches == {"gpu-0": 0}


def test_counter_track_worked_example() -> None:
    # Bound: 10 units a second. 100, 110, [absurd 10**9], 130: the absurd read is dropped.
    track = CounterTrack(None, lambda s: int(10 * s) + 1)
    steps = [track.feed(raw, float(t)) for t, raw in enumerate([100, 110, 10**9, 130])]
    assert [s.event for s in steps] == [Event.NONE, Event.NONE, Event.PENDING, Event.GLITCH]
    assert sum(s.delta for s in steps) == 30
    assert steps[3].dropped == 10**9
    # Two absurd reads that disagree: both dropped, the good read after them still counts.
    track = CounterTrack(None, lambda s: int(10 * s) + 1)
    steps = [track.feed(raw, float(t)) for t, raw in enumerate([100, 5, 10**9, 125])]
    assert sum(s.delta for s in steps) == 25 and track.glitches == 2 and track.resets == 0
    # A restart: 100, 110, 3, 13: confirmed at the fourth read, 3 + 10 counted after it.
    track = CounterTrack(None, lambda s: int(10 * s) + 1)
    steps = [track.feed(raw, float(t)) for t, raw in enumerate([100, 110, 3, 13])]
    assert steps[3].event is Event.RESET and steps[3].delta == 13
    assert track.resets == 1 and track.glitches == 0


# -- max_energy_range_uj reads 0 -------------------------------------------------------------


@pytest.mark.parametrize(
    ("true_range", "power_w"), [(INTEL_RANGE_UJ, 100.0), (AMD_RANGE_UJ, 60.0)], ids=["intel", "amd"]
)
def test_zero_range_zone_is_kept_and_its_wrap_unfolded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, true_range: int, power_w: float
) -> None:
    assert true_range in ASSUMED_RANGES_UJ
    fake = FakePowercap(tmp_path)
    zone = fake.add_zone(
        "0", "package-0", power_w, max_energy_range_uj=true_range, published_range_uj=0
    )
    # 10 s before the counter's top: the run below crosses the wrap.
    fake.advance((true_range / 1e6 - 10 * power_w) / power_w)
    clock = FakeClock()
    with caplog.at_level(logging.INFO, logger="jouled.collectors.rapl"):
        rapl = rapl_for(fake, clock)
        start = energies(rapl.read())["package-0"]
        before = zone.energy_uj
        for _ in range(30):
            tick(fake, clock)
            sample = rapl.read()
    assert zone.energy_uj < before  # the counter really wrapped
    assert sample.problems == {}
    assert energies(sample)["package-0"] - start == pytest.approx(30 * power_w, abs=1e-6)
    assert sample.resets == {"package-0": 0}
    messages = [r.getMessage() for r in caplog.records]
    assert any("max_energy_range_uj reads 0" in m and "32-bit" in m for m in messages)
    assert any(f"unpublished range is {true_range} uJ" in m for m in messages)
    rows = check_rapl(fake.class_dir, fake.read_text)
    assert rows[0].readable and "reads 0" in rows[0].detail


# -- frozen counters -----------------------------------------------------------------------


def test_frozen_counter_on_a_busy_host_is_marked_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Kepler's VM report: RAPL files whose counters never move, read as 0 W "measured".
    fake = FakePowercap.typical_server(tmp_path, sockets=1)
    for zone in fake.zones:
        zone.freeze()
    clock = FakeClock()
    rapl = rapl_for(fake, clock, Busy(clock, per_s=2.0))
    with caplog.at_level(logging.WARNING, logger="jouled.collectors.rapl"):
        frozen_after = None
        for second in range(1, 9):
            tick(fake, clock)
            sample = rapl.read()
            if frozen_after is None and any(r.frozen for r in sample.readings):
                frozen_after = second
    assert frozen_after == 6  # first read at 1 s, unchanged for 5 s of a busy host
    flags = {r.domain: r.frozen for r in sample.readings}
    assert flags == {"package-0": True, "dram-0": True, "core-0": False}  # core: inside package
    assert rapl.frozen_domains == {"package-0", "dram-0"}
    warned = [r.getMessage() for r in caplog.records if "frozen" in r.getMessage()]
    assert len(warned) == 2 and all("not a measurement" in m for m in warned)
    # It moves again: a measurement again once it has moved on three reads in a row.
    fake.zone("0").thaw()
    for moving in (1, 2, 3):
        tick(fake, clock)
        frozen = {r.domain: r.frozen for r in rapl.read().readings}["package-0"]
        assert frozen is (moving < 3)


def test_a_still_counter_on_an_idle_host_is_not_judged(tmp_path: Path) -> None:
    fake = FakePowercap(tmp_path)
    fake.add_zone("0", "package-0", 50.0).freeze()
    clock = FakeClock()
    rapl = rapl_for(fake, clock, Busy(clock, per_s=0.01))  # 0.08 CPU-s in 8 s: idle
    for _ in range(8):
        tick(fake, clock)
        sample = rapl.read()
    assert not sample.readings[0].frozen


def test_frozen_watch_needs_time_and_work() -> None:
    watch = FrozenWatch(after_s=5.0, busy_s=0.5)
    assert not watch.observe(7, 0.0, 0.0)
    assert not watch.observe(7, 4.0, 10.0)  # busy, but not long enough
    assert watch.observe(7, 5.0, 10.0)
    assert watch.observe(8, 6.0, 12.0)  # moved once: not yet trusted
    assert watch.observe(8, 7.0, 13.0)  # and still again: the count of moves starts over
    assert watch.observe(9, 8.0, 14.0)
    assert watch.observe(10, 9.0, 15.0)
    assert not watch.observe(11, 10.0, 16.0)  # three reads in a row moved: measuring
    assert not watch.observe(11, 20.0, None)  # host busy unknown: never judged


def test_a_counter_that_moves_only_every_few_seconds_stays_marked_without_flapping(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A meter that catches up once every 7 s on a busy host: it flipped frozen/measuring
    # 16 times a minute (a warning each), and each catch-up, covering seconds the estimate
    # had counted, was counted again.
    fake = FakePowercap(tmp_path)
    zone = fake.add_zone("0", "package-0", 100.0)
    zone.freeze()
    clock = FakeClock()
    rapl = rapl_for(fake, clock, Busy(clock, per_s=2.0))
    flags = []
    with caplog.at_level(logging.INFO, logger="jouled.collectors.rapl"):
        for second in range(1, 61):
            tick(fake, clock)
            if second % 7 == 0:
                zone.thaw()
                zone.freeze()
            flags.append(rapl.read().readings[0].frozen)
    assert flags.index(True) == 5 and all(flags[5:])  # judged at 6 s, marked from then on
    said = [r.getMessage() for r in caplog.records if "package-0" in r.getMessage()]
    assert len(said) == 1 and "not a measurement" in said[0]


def test_nvml_frozen_counter_is_marked() -> None:
    fake = FakeNvml([FakeGpu(power_w=250.0)])
    busy = Busy(fake.clock, per_s=1.0)
    c = NvmlCollector(fake, clock=fake.clock, start_poller=False, host_busy_s=busy)
    try:
        fake.freeze_energy_counter(0)
        for _ in range(6):
            fake.advance(1.0)
            sample = c.read()
    finally:
        c.close()
    assert sample.readings[0].frozen
    assert sample.readings[0].energy_j == 0.0


def test_check_flags_a_frozen_zone(tmp_path: Path) -> None:
    fake = FakePowercap.typical_server(tmp_path, sockets=1)
    fake.zone("0").freeze()
    rows = check_rapl(fake.class_dir, fake.read_text, wait_s=0.5, sleep=fake.advance)
    by_zone = {Path(r.target).name: r for r in rows}
    assert not by_zone["intel-rapl:0"].readable
    assert "did not move in 0.5 s" in by_zone["intel-rapl:0"].detail
    assert by_zone["intel-rapl:0"].fix == FROZEN_FIX
    assert by_zone["intel-rapl:0:1"].readable  # dram moves


# -- mirrored die zones ----------------------------------------------------------------------


def test_amd_mirrored_die_zones_count_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # CodeCarbon's AMD report: package-0-die-0 and package-0-die-1 expose one counter, and
    # 68 W were read as 136 W. Right: 68 W, one meter.
    fake = FakePowercap(tmp_path)
    die0 = fake.add_zone("0", "package-0-die-0", 68.0)
    fake.add_zone("1", "package-0-die-1", 68.0, mirror_of=die0)
    fake.advance(5000.0)
    clock = FakeClock()
    rapl = rapl_for(fake, clock)
    with caplog.at_level(logging.WARNING, logger="jouled.collectors.rapl"):
        rapl.read()
        for _ in range(20):
            tick(fake, clock)
            sample = rapl.read()
    package_j = sum(r.energy_j for r in sample.readings if r.kind == "package")
    assert package_j == pytest.approx(68.0 * 20)
    assert energies(sample) == {"package-0-die-0": pytest.approx(1360.0)}
    assert rapl.mirrors == {"package-0-die-1": "package-0-die-0"}
    assert any("same counter" in r.getMessage() for r in caplog.records)
    rows = check_rapl(fake.class_dir, fake.read_text, wait_s=1.0, sleep=fake.advance)
    assert "same counter as package-0-die-0" in rows[1].detail


def test_cascade_lake_ap_dies_with_their_own_counters_are_kept(tmp_path: Path) -> None:
    fake = FakePowercap(tmp_path)
    fake.add_zone("0", "package-0-die-0", 200.0)
    fake.add_zone("1", "package-0-die-1", 190.0)
    fake.advance(100.0)
    clock = FakeClock()
    rapl = rapl_for(fake, clock)
    rapl.read()
    for _ in range(10):
        tick(fake, clock)
        sample = rapl.read()
    assert energies(sample) == {
        "package-0-die-0": pytest.approx(2000.0),
        "package-0-die-1": pytest.approx(1900.0),
    }
    assert rapl.mirrors == {}


def test_dies_that_agree_briefly_then_part_lose_nothing(tmp_path: Path) -> None:
    # Two real dies at one power from one start agree until their power differs: the
    # energy held while they looked alike is released, none lost.
    fake = FakePowercap(tmp_path)
    fake.add_zone("0", "package-0-die-0", 100.0)
    die1 = fake.add_zone("1", "package-0-die-1", 100.0)
    clock = FakeClock()
    rapl = rapl_for(fake, clock)
    rapl.read()
    tick(fake, clock)
    rapl.read()  # alike once: held
    die1.set_power(150.0)
    for _ in range(4):
        tick(fake, clock)
        sample = rapl.read()
    assert energies(sample) == {
        "package-0-die-0": pytest.approx(500.0),
        "package-0-die-1": pytest.approx(700.0),
    }
    assert rapl.mirrors == {}


def test_a_mirror_whose_counter_parts_is_counted_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Firmware shows die-1 the same counter as die-0 for a few reads, then its own: after
    # three reads alike it was dropped for the daemon's life, silently (0 J of 2,850).
    fake = FakePowercap(tmp_path)
    die0 = fake.add_zone("0", "package-0-die-0", 200.0)
    die1 = fake.add_zone("1", "package-0-die-1", 190.0, mirror_of=die0)
    fake.advance(100.0)
    clock = FakeClock()
    rapl = rapl_for(fake, clock)
    rapl.read()
    with caplog.at_level(logging.WARNING, logger="jouled.collectors.rapl"):
        for second in range(1, 21):
            if second == 6:
                die1.mirror_of = None  # its own counter from now on
            tick(fake, clock)
            sample = rapl.read()
    assert rapl.mirrors == {}
    # 15 s at 190 W after parting, but for the read of the jump from its twin's value to
    # its own (implausible, then a confirmed reset): 14 s counted.
    assert energies(sample) == {
        "package-0-die-0": pytest.approx(4000.0),
        "package-0-die-1": pytest.approx(190.0 * 14),
    }
    assert any("two meters after all" in r.getMessage() for r in caplog.records)
