"""RaplCollector against the fake powercap tree: discovery, unfolding, failures, check()."""

from __future__ import annotations

import errno
import itertools
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jouled.clock import FakeClock
from jouled.collectors.base import CollectorError, HardwareAbsent, Kind, Sample, Source
from jouled.collectors.rapl import RaplCollector, check_rapl, parse_zone_name
from jouled.testing.fake_powercap import FakePowercap, zone_dirname


def collector(fake: FakePowercap, clock: FakeClock, rediscover_every: int = 60) -> RaplCollector:
    return RaplCollector(
        fake.class_dir, clock, read_text=fake.read_text, rediscover_every=rediscover_every
    )


def tick(fake: FakePowercap, clock: FakeClock, seconds: float = 1.0) -> None:
    fake.advance(seconds)
    clock.advance(seconds)


def energies(sample: Sample) -> dict[str, float]:
    return {r.domain: r.energy_j for r in sample.readings}


# -- the fake itself --------------------------------------------------------------------


def test_fake_tree_has_the_kernels_layout(tmp_path: Path) -> None:
    fake = FakePowercap.typical_server(tmp_path, sockets=2)
    cls = tmp_path / "class" / "powercap"
    assert sorted(os.listdir(cls)) == [
        "intel-rapl",
        "intel-rapl:0",
        "intel-rapl:0:0",
        "intel-rapl:0:1",
        "intel-rapl:1",
        "intel-rapl:1:0",
        "intel-rapl:1:1",
    ]
    assert (
        os.readlink(cls / "intel-rapl:0")
        == "../../devices/virtual/powercap/intel-rapl/intel-rapl:0"
    )
    assert os.readlink(cls / "intel-rapl:1:1") == (
        "../../devices/virtual/powercap/intel-rapl/intel-rapl:1/intel-rapl:1:1"
    )
    zone_dir = tmp_path / "devices/virtual/powercap/intel-rapl/intel-rapl:0/intel-rapl:0:1"
    assert (zone_dir / "name").read_text() == "dram\n"
    assert (zone_dir / "max_energy_range_uj").read_text() == "262143328850\n"
    assert (zone_dir / "energy_uj").read_text() == "0\n"
    assert (zone_dir / "energy_uj").stat().st_mode & 0o777 == 0o400
    for fname in ("enabled", "constraint_0_name", "constraint_0_max_power_uw"):
        assert (zone_dir / fname).read_text().endswith("\n")
    fake.advance(2.5)
    assert (cls / "intel-rapl:0:1" / "energy_uj").read_text() == "50000000\n"  # 20 W x 2.5 s


def test_fake_wraps_modulo_the_range_and_keeps_the_truth(tmp_path: Path) -> None:
    fake = FakePowercap(tmp_path)
    zone = fake.add_zone("0", "package-0", 60.0, max_energy_range_uj=180_000_000)
    fake.advance(3.5)
    assert zone.energy_uj == 30_000_000
    assert zone.true_energy_uj == 210_000_000
    zone.reset()
    fake.advance(0.5)
    assert zone.energy_uj == 30_000_000
    assert zone.true_energy_j == pytest.approx(240.0)


def test_fake_names_zones_in_hex(tmp_path: Path) -> None:
    fake = FakePowercap(tmp_path)
    for n in range(11):
        fake.add_zone(f"{n:x}", f"package-{n}", 10.0)
    fake.add_zone("a:0", "core", 5.0)
    assert zone_dirname((10,)) == "intel-rapl:a"
    assert (fake.class_dir / "intel-rapl:a" / "name").read_text() == "package-10\n"
    assert (fake.class_dir / "intel-rapl:a:0").is_dir()
    assert fake.zone((10, 0)).name == "core"


# -- discovery --------------------------------------------------------------------------


def test_typical_server_domains_kinds_and_sockets(tmp_path: Path) -> None:
    fake = FakePowercap.typical_server(tmp_path, sockets=2, psys_w=300.0)
    clock = FakeClock()
    rapl = collector(fake, clock)
    first = rapl.read()
    kinds = {r.domain: (r.kind, r.device) for r in first.readings}
    assert kinds == {
        "package-0": (Kind.PACKAGE, "0"),
        "core-0": (Kind.CORE, "0"),
        "dram-0": (Kind.DRAM, "0"),
        "package-1": (Kind.PACKAGE, "1"),
        "core-1": (Kind.CORE, "1"),
        "dram-1": (Kind.DRAM, "1"),
        "psys": (Kind.PSYS, ""),
    }
    assert [r.domain for r in first.readings] == sorted(kinds)
    assert all(r.source is Source.RAPL and r.energy_j == 0.0 for r in first.readings)
    assert rapl.domains["dram-1"] == "intel-rapl:1:1"
    assert rapl.domains["psys"] == "intel-rapl:2"
    tick(fake, clock)
    e = energies(rapl.read())
    assert e == {
        "package-0": 120.0,
        "core-0": 80.0,
        "dram-0": 20.0,
        "package-1": 120.0,
        "core-1": 80.0,
        "dram-1": 20.0,
        "psys": 300.0,
    }


def test_laptop_domains(tmp_path: Path) -> None:
    fake = FakePowercap.laptop(tmp_path)
    rapl = collector(fake, FakeClock())
    kinds = {r.domain: r.kind for r in rapl.read().readings}
    assert kinds == {
        "package-0": Kind.PACKAGE,
        "core-0": Kind.CORE,
        "uncore-0": Kind.UNCORE,
        "psys": Kind.PSYS,
    }


def test_hex_zone_ids_eleven_sockets(tmp_path: Path) -> None:
    fake = FakePowercap(tmp_path)
    for n in range(11):
        fake.add_zone(f"{n:x}", f"package-{n}", 10.0 + n)
        fake.add_zone(f"{n:x}:0", "dram", 1.0)
    clock = FakeClock()
    rapl = collector(fake, clock)
    rapl.read()
    tick(fake, clock)
    e = energies(rapl.read())
    assert rapl.domains["package-10"] == "intel-rapl:a"
    assert rapl.domains["dram-10"] == "intel-rapl:a:0"
    assert e["package-10"] == 20.0
    assert len(e) == 22


@pytest.mark.parametrize(
    ("entry", "parsed"),
    [
        ("intel-rapl:0", (False, (0,))),
        ("intel-rapl:a", (False, (10,))),
        ("intel-rapl:1:f", (False, (1, 15))),
        ("intel-rapl:0:1:1", (False, (0, 1, 1))),
        ("intel-rapl-mmio:0", (True, (0,))),
        ("intel-rapl", None),
        ("intel-rapl-mmio", None),
        ("intel-rapl:", None),
        ("intel-rapl:g", None),
        ("intel-rapl:0:", None),
        ("dtpm", None),
    ],
)
def test_parse_zone_name(entry: str, parsed: tuple[bool, tuple[int, ...]] | None) -> None:
    assert parse_zone_name(entry) == parsed


def test_subzone_socket_comes_from_the_parent_name_not_the_index(tmp_path: Path) -> None:
    # psys first shifts the package to intel-rapl:1; its dram is still socket 0's.
    fake = FakePowercap(tmp_path)
    fake.add_zone("0", "psys", 50.0)
    fake.add_zone("1", "package-0", 30.0)
    fake.add_zone("1:0", "dram", 5.0)
    fake.add_zone("1:1", "Weird Zone!", 1.0)
    sample = collector(fake, FakeClock()).read()
    got = {r.domain: (r.kind, r.device) for r in sample.readings}
    assert got == {
        "psys": (Kind.PSYS, ""),
        "package-0": (Kind.PACKAGE, "0"),
        "dram-0": (Kind.DRAM, "0"),
        "weird-zone-0": (Kind.OTHER, "0"),
    }


def test_several_psys_zones_are_numbered(tmp_path: Path) -> None:
    fake = FakePowercap(tmp_path)
    fake.add_zone("0", "psys", 50.0)
    fake.add_zone("1", "psys", 60.0)
    rapl = collector(fake, FakeClock())
    assert rapl.domains == {"psys-0": "intel-rapl:0", "psys-1": "intel-rapl:1"}


def test_mmio_duplicate_is_not_counted_twice(tmp_path: Path) -> None:
    fake = FakePowercap.laptop(tmp_path, mmio=True)
    assert (fake.class_dir / "intel-rapl-mmio:0").is_dir()
    clock = FakeClock()
    rapl = collector(fake, clock)
    rapl.read()
    tick(fake, clock)
    e = energies(rapl.read())
    assert rapl.domains["package-0"] == "intel-rapl:0"
    assert e["package-0"] == 15.0
    assert sorted(e) == ["core-0", "package-0", "psys", "uncore-0"]


def test_mmio_is_used_when_the_msr_zone_is_absent(tmp_path: Path) -> None:
    fake = FakePowercap(tmp_path)
    fake.add_zone("0", "package-0", 40.0, mmio=True)
    fake.add_zone("1", "psys", 70.0)
    clock = FakeClock()
    rapl = collector(fake, clock)
    rapl.read()
    tick(fake, clock)
    assert rapl.domains["package-0"] == "intel-rapl-mmio:0"
    assert energies(rapl.read()) == {"package-0": 40.0, "psys": 70.0}


def test_no_powercap_dir_is_hardware_absent(tmp_path: Path) -> None:
    with pytest.raises(HardwareAbsent, match=r"no RAPL powercap zones under .*estimate"):
        RaplCollector(tmp_path / "nope", FakeClock())
    empty = tmp_path / "class" / "powercap"
    empty.mkdir(parents=True)
    (empty / "dtpm").mkdir()  # another powercap driver, no RAPL
    with pytest.raises(HardwareAbsent) as info:
        RaplCollector(empty, FakeClock())
    assert "estimate" in info.value.fix


# -- unfolding --------------------------------------------------------------------------


def test_60_watts_wrapping_every_3_seconds_reads_60_watts(tmp_path: Path) -> None:
    fake = FakePowercap(tmp_path)
    zone = fake.add_zone("0", "package-0", 60.0, max_energy_range_uj=180_000_000)
    clock = FakeClock()
    rapl = collector(fake, clock)
    start = energies(rapl.read())["package-0"]
    last = start
    raw_went_backwards = 0
    prev_raw = zone.energy_uj
    for _ in range(20):
        tick(fake, clock, 1.0)
        raw_went_backwards += zone.energy_uj < prev_raw
        prev_raw = zone.energy_uj
        now = energies(rapl.read())["package-0"]
        assert now >= last
        last = now
    assert raw_went_backwards == 6  # the counter really wrapped at 3, 6, ... 18 s
    assert (last - start) / 20.0 == pytest.approx(60.0, rel=1e-6)
    assert last - start == zone.true_energy_j


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    power_w=st.floats(min_value=0.0, max_value=400.0),
    ticks=st.lists(st.floats(min_value=0.001, max_value=2.0), min_size=1, max_size=25),
)
def test_cumulative_equals_the_truth_for_any_tick_pattern(
    tmp_path_factory: pytest.TempPathFactory, power_w: float, ticks: list[float]
) -> None:
    # Range 1000 J: at up to 400 W x 2 s per tick, wraps are frequent but each < one range.
    fake = FakePowercap(tmp_path_factory.mktemp("pc"))
    zone = fake.add_zone("0", "package-0", power_w, max_energy_range_uj=1_000_000_000)
    clock = FakeClock()
    rapl = collector(fake, clock)
    rapl.read()
    for seconds in ticks:
        tick(fake, clock, seconds)
        sample = rapl.read()
    assert sample.readings[0].energy_j == zone.true_energy_uj / 1e6
    assert sample.resets == {"package-0": 0}


def test_reset_mid_run_is_counted_without_a_spike(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakePowercap(tmp_path)
    zone = fake.add_zone("0", "package-0", 100.0)
    fake.advance(1000.0)  # the counter is far from zero when the reset comes
    clock = FakeClock()
    rapl = collector(fake, clock)
    history = [energies(rapl.read())["package-0"]]
    for i in range(10):
        if i == 5:
            zone.reset()
        tick(fake, clock)
        with caplog.at_level(logging.WARNING, logger="jouled.collectors.rapl"):
            sample = rapl.read()
        history.append(energies(sample)["package-0"])
    deltas = [b - a for a, b in itertools.pairwise(history)]
    # The read after the reset is held (a reset or a glitch?); the next read confirms the
    # reset and counts both ticks: no energy lost, none invented.
    assert deltas == [100.0] * 5 + [0.0, 200.0] + [100.0] * 3
    assert history[-1] - history[0] == 1000.0
    assert sample.resets == {"package-0": 1}
    assert sample.glitches == {"package-0": 0}
    resets_logged = [r for r in caplog.records if "counter reset" in r.getMessage()]
    assert len(resets_logged) == 1
    assert "package-0" in resets_logged[0].getMessage()
    assert resets_logged[0].levelno == logging.WARNING


def test_glitch_counts_nothing_and_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakePowercap(tmp_path)
    zone = fake.add_zone("0", "package-0", 50.0)
    clock = FakeClock()
    rapl = collector(fake, clock)
    rapl.read()
    tick(fake, clock)
    zone.glitch_once(f"{zone.energy_uj + 10**11}\n")  # 100 kJ in one second: implausible
    with caplog.at_level(logging.WARNING, logger="jouled.collectors.rapl"):
        e = energies(rapl.read())
        assert e["package-0"] == 0.0  # held: not a spike
        tick(fake, clock)
        sample = rapl.read()
    assert energies(sample)["package-0"] == 100.0  # both seconds, from the last good read
    assert sample.glitches == {"package-0": 1}
    assert sample.resets == {"package-0": 0}
    assert any("glitch" in r.getMessage() and "package-0" in r.getMessage() for r in caplog.records)


# -- failures ---------------------------------------------------------------------------


def test_permission_denied_everywhere_names_the_file_and_the_fix(tmp_path: Path) -> None:
    fake = FakePowercap.typical_server(tmp_path, sockets=1)
    for zone in fake.zones:
        zone.deny()
    assert (fake.zone("0").dir / "energy_uj").stat().st_mode & 0o777 == 0  # really chmod'ed
    rapl = collector(fake, FakeClock())  # discovery reads name/range, world-readable
    with pytest.raises(CollectorError) as info:
        rapl.read()
    err = info.value
    assert "permission denied" in str(err)
    assert "energy_uj" in str(err)
    assert "intel-rapl:0" in str(err)
    assert "root" in err.fix
    assert "g+r" in err.fix  # udev rule granting a group read
    assert "z /sys/class/powercap/intel-rapl*/energy_uj 0440 root jouled -" in err.fix
    rows = rapl.check()
    assert len(rows) == 3
    assert not any(r.readable for r in rows)
    assert all("root" in r.fix for r in rows)


def test_permission_denied_on_one_zone_keeps_the_others_and_catches_up(tmp_path: Path) -> None:
    fake = FakePowercap.typical_server(tmp_path, sockets=1)
    clock = FakeClock()
    rapl = collector(fake, clock)
    rapl.read()
    dram = fake.zone("0:1")
    dram.deny()
    tick(fake, clock)
    sample = rapl.read()
    assert "permission denied" in sample.problems["dram-0"]
    assert energies(sample) == {"package-0": 120.0, "core-0": 80.0, "dram-0": 0.0}
    dram.heal()
    tick(fake, clock)
    sample = rapl.read()
    assert sample.problems == {}
    # The counter's value is trusted again: the denied second is recovered, not lost.
    assert energies(sample)["dram-0"] == 40.0


def test_eio_and_garbage_affect_one_zone_only(tmp_path: Path) -> None:
    fake = FakePowercap.typical_server(tmp_path, sockets=1)
    clock = FakeClock()
    rapl = collector(fake, clock)
    rapl.read()
    fake.zone("0:0").fail(errno.EIO)
    fake.zone("0:1").corrupt("12ab\n")
    tick(fake, clock)
    sample = rapl.read()
    assert "Input/output error" in sample.problems["core-0"]
    assert "EIO" in sample.problems["core-0"]
    assert "unparseable" in sample.problems["dram-0"]
    assert energies(sample)["package-0"] == 120.0
    fake.zone("0:0").heal()
    fake.zone("0:1").heal()
    tick(fake, clock)
    assert energies(rapl.read()) == {"package-0": 240.0, "core-0": 160.0, "dram-0": 40.0}


@pytest.mark.parametrize("code", [errno.EIO, errno.EINVAL, errno.ENODATA, errno.EAGAIN])
def test_any_read_errno_degrades_that_zone_and_recovers(tmp_path: Path, code: int) -> None:
    fake = FakePowercap.typical_server(tmp_path, sockets=1)
    clock = FakeClock()
    rapl = collector(fake, clock)
    rapl.read()
    fake.zone("0").fail(code)
    tick(fake, clock)
    sample = rapl.read()
    assert errno.errorcode[code] in sample.problems["package-0"]
    assert energies(sample)["dram-0"] == 20.0  # the others go on
    fake.zone("0").heal()
    tick(fake, clock)
    # The missed tick's energy is recovered from the counter: nothing lost, no spike.
    assert energies(rapl.read())["package-0"] == 240.0


def test_every_zone_failing_raises(tmp_path: Path) -> None:
    fake = FakePowercap.laptop(tmp_path)
    rapl = collector(fake, FakeClock())
    rapl.read()
    for zone in fake.zones:
        zone.fail(errno.EIO)
    with pytest.raises(CollectorError, match="no RAPL zone could be read"):
        rapl.read()


def test_zone_vanishes_and_returns_without_spike_or_going_backwards(tmp_path: Path) -> None:
    fake = FakePowercap.typical_server(tmp_path, sockets=2)
    clock = FakeClock()
    rapl = collector(fake, clock)
    rapl.read()
    tick(fake, clock)
    before = energies(rapl.read())
    package1 = fake.zone("1")
    package1.remove()  # with its core and dram subzones, as the kernel does
    assert not (fake.class_dir / "intel-rapl:1:0").exists()
    tick(fake, clock)
    gone = rapl.read()
    assert set(gone.problems) == {"package-1", "core-1", "dram-1"}
    assert "vanished" in gone.problems["package-1"]
    assert energies(gone)["package-1"] == before["package-1"]  # held, not dropped
    assert energies(gone)["package-0"] == 240.0
    for _ in range(3):
        tick(fake, clock)
        assert energies(rapl.read())["dram-1"] == before["dram-1"]
    package1.restore()
    tick(fake, clock)
    back = rapl.read()
    assert back.problems == {}
    assert energies(back)["package-1"] == before["package-1"]  # a baseline: no spike
    tick(fake, clock)
    after = energies(rapl.read())
    assert after["package-1"] == before["package-1"] + 120.0
    assert after["dram-1"] == before["dram-1"] + 20.0
    assert rapl.read().resets["package-1"] == 0


def test_msr_zone_vanishing_hands_over_to_mmio(tmp_path: Path) -> None:
    fake = FakePowercap.laptop(tmp_path, mmio=True)
    clock = FakeClock()
    rapl = collector(fake, clock)
    rapl.read()
    tick(fake, clock)
    assert energies(rapl.read())["package-0"] == 15.0
    fake.zone("0").remove()
    tick(fake, clock)
    rapl.read()  # notices the MSR zone is gone
    tick(fake, clock)
    sample = rapl.read()  # rediscovers: MMIO takes over from a new baseline
    assert rapl.domains["package-0"] == "intel-rapl-mmio:0"
    tick(fake, clock)
    e = energies(rapl.read())
    assert e["package-0"] == energies(sample)["package-0"] + 15.0
    assert "core-0" not in rapl.domains or rapl.domains["core-0"] == ""


def test_zone_swapped_between_reads_starts_a_new_baseline(tmp_path: Path) -> None:
    # The scan, not a failed read, notices the swap: the new counter is another origin.
    fake = FakePowercap(tmp_path)
    msr = fake.add_zone("0", "package-0", 15.0)
    fake.advance(100.0)
    fake.add_zone("0", "package-0", 15.0, mmio=True)  # its counter starts far behind
    clock = FakeClock()
    rapl = collector(fake, clock, rediscover_every=1)
    rapl.read()
    tick(fake, clock)
    assert energies(rapl.read())["package-0"] == 15.0
    msr.remove()
    tick(fake, clock)
    sample = rapl.read()
    assert rapl.domains["package-0"] == "intel-rapl-mmio:0"
    assert energies(sample)["package-0"] == 15.0
    assert sample.resets == {"package-0": 0}
    tick(fake, clock)
    assert energies(rapl.read())["package-0"] == 30.0


def test_every_zone_vanishing_raises(tmp_path: Path) -> None:
    fake = FakePowercap(tmp_path)
    zone = fake.add_zone("0", "package-0", 10.0)
    rapl = collector(fake, FakeClock())
    rapl.read()
    zone.remove()
    with pytest.raises(CollectorError):
        rapl.read()


def test_new_zone_is_picked_up_by_periodic_rediscovery(tmp_path: Path) -> None:
    fake = FakePowercap(tmp_path)
    fake.add_zone("0", "package-0", 10.0)
    clock = FakeClock()
    rapl = collector(fake, clock, rediscover_every=3)
    rapl.read()
    fake.add_zone("1", "package-1", 20.0)
    tick(fake, clock)
    assert "package-1" not in energies(rapl.read())  # read 2: no scan, cheap
    tick(fake, clock)
    assert energies(rapl.read())["package-1"] == 0.0  # read 3 scans: a baseline
    tick(fake, clock)
    assert energies(rapl.read())["package-1"] == 20.0


# -- check() ----------------------------------------------------------------------------


def test_check_rows_per_zone(tmp_path: Path) -> None:
    fake = FakePowercap.laptop(tmp_path, mmio=True)
    fake.zone("0:1").deny()
    rows = {r.target: r for r in collector(fake, FakeClock()).check()}
    pkg = rows[str(fake.class_dir / "intel-rapl:0")]
    assert pkg.collector == "rapl"
    assert pkg.readable
    assert pkg.detail == "package-0 (intel-rapl:0), max range 262143 J"
    uncore = rows[str(fake.class_dir / "intel-rapl:0:1")]
    assert not uncore.readable
    assert "permission denied" in uncore.detail
    assert "root" in uncore.fix
    mmio = rows[str(fake.class_dir / "intel-rapl-mmio:0")]
    assert "duplicate of intel-rapl:0" in mmio.detail
    assert len(rows) == 5


def test_check_on_an_absent_tree_says_estimate(tmp_path: Path) -> None:
    rows = check_rapl(tmp_path / "missing")
    assert len(rows) == 1
    assert rows[0].target == "-"
    assert not rows[0].readable and rows[0].absent
    assert "modprobe intel_rapl_msr" in rows[0].fix and "estimate" in rows[0].fix


# -- the realtime driver ----------------------------------------------------------------


def test_cli_keeps_the_tree_advancing_until_killed(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jouled.testing.fake_powercap",
            "--root",
            str(tmp_path / "sys"),
            "--package-watts",
            "60",
            "--dram-watts",
            "5",
            "--max-range-uj",
            "180000000",
            "--tick",
            "0.02",
            "--ready-file",
            str(ready),
        ],
        stderr=subprocess.PIPE,
    )
    try:
        energy = tmp_path / "sys/class/powercap/intel-rapl:0/energy_uj"
        deadline = time.monotonic() + 20
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ready.exists()
        first = energy.read_text()
        while energy.read_text() == first and time.monotonic() < deadline:
            time.sleep(0.02)
        assert energy.read_text() != first  # counting by itself
        assert (tmp_path / "sys/class/powercap/intel-rapl:0:0/name").read_text() == "dram\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
