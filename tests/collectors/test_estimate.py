import pytest

from jouled.clock import FakeClock
from jouled.collectors.base import Kind, Source
from jouled.collectors.estimate import EstimateCollector
from jouled.collectors.procstat import CpuTimes


class FakeCpu:
    def __init__(self) -> None:
        self.busy = 0.0
        self.total = 0.0

    def run(self, seconds: float, vcpus: int, utilization: float) -> None:
        self.total += seconds * vcpus
        self.busy += seconds * vcpus * utilization

    def __call__(self) -> CpuTimes:
        return CpuTimes(self.busy, self.total)


def make(clock: FakeClock, cpu: FakeCpu) -> EstimateCollector:
    return EstimateCollector(
        clock,
        cpu_min_watts_per_vcpu=0.74,
        cpu_max_watts_per_vcpu=3.5,
        memory_watts_per_gb=0.392,
        vcpus=4,
        memory_gb=16.0,
        cpu_times=cpu,
    )


def test_power_interpolates_between_idle_and_full_load() -> None:
    clock, cpu = FakeClock(), FakeCpu()
    est = make(clock, cpu)
    assert est.cpu_power_w(0.0) == pytest.approx(4 * 0.74)
    assert est.cpu_power_w(1.0) == pytest.approx(4 * 3.5)
    assert est.cpu_power_w(0.5) == pytest.approx(4 * (0.74 + 0.5 * 2.76))
    assert est.cpu_power_w(7.0) == pytest.approx(4 * 3.5)  # clamped


def test_energy_integrates_utilization_over_time_and_is_labelled_estimate() -> None:
    clock, cpu = FakeClock(), FakeCpu()
    est = make(clock, cpu)
    cpu.run(10, 4, 0.25)
    clock.advance(10)
    first = {r.domain: r for r in est.read().readings}
    cpu.run(10, 4, 1.0)
    clock.advance(10)
    second = {r.domain: r for r in est.read().readings}
    assert all(r.source is Source.ESTIMATE for r in second.values())
    assert second["cpu"].kind is Kind.CPU and second["memory"].kind is Kind.MEMORY
    expected_cpu = 10 * est.cpu_power_w(0.25) + 10 * est.cpu_power_w(1.0)
    assert second["cpu"].energy_j == pytest.approx(expected_cpu)
    # CCF charges memory above what the per-vCPU watts include: 16 GB - 4 x 80.69/96 GB.
    assert second["memory"].energy_j == pytest.approx(20 * (16 - 4 * 80.69 / 96) * 0.392)
    assert first["cpu"].energy_j < second["cpu"].energy_j


def test_no_cpu_time_elapsed_keeps_the_last_utilization() -> None:
    clock, cpu = FakeClock(), FakeCpu()
    est = make(clock, cpu)
    cpu.run(1, 4, 0.5)
    clock.advance(1)
    est.read()
    clock.advance(1)  # the fake CPU did not move: no information, not "idle"
    est.read()
    assert est.last_utilization == pytest.approx(0.5)


def test_real_host_reading_is_plausible() -> None:
    clock = FakeClock()
    est = EstimateCollector(clock)
    assert est.vcpus >= 1
    assert est.memory_gb > 0
    clock.advance(1)
    readings = est.read().readings
    assert all(r.energy_j >= 0 for r in readings)
    assert [r.readable for r in est.check()] == [True, True]


def test_memory_follows_ccf_only_above_what_the_cpu_figure_includes() -> None:
    # Issue 14: 0.392 W/GB on all installed memory. CCF applies it only above the memory in
    # the per-vCPU figure (80.69 GB per 96-vCPU chip): a 2-vCPU, 1 GB VM has none above it.
    clock, cpu = FakeClock(), FakeCpu()
    small = EstimateCollector(clock, vcpus=2, memory_gb=1.0, cpu_times=cpu)
    big = EstimateCollector(clock, vcpus=8, memory_gb=64.0, cpu_times=cpu)
    clock.advance(10)
    assert {r.domain: r.energy_j for r in small.read().readings}["memory"] == 0.0
    sample = big.read()
    memory_w = 0.392 * (64.0 - 8 * 80.69 / 96)
    assert {r.domain: r.energy_j for r in sample.readings}["memory"] == pytest.approx(10 * memory_w)
    # Its zero-load power is known: all of the memory's, and the CPU's at 0 % utilization.
    assert sample.idle_w == pytest.approx({"cpu": 8 * 0.74, "memory": memory_w})
    assert "counted in the per-vCPU watts" in big.check()[1].detail


def write_stat(root, user: int, system: int, idle: int, iowait: int = 0, steal: int = 0) -> None:
    # The kernel's layout: cpu user nice system idle iowait irq softirq steal guest guest_nice
    root.mkdir(exist_ok=True)
    (root / "stat").write_text(
        f"cpu  {user} 0 {system} {idle} {iowait} 0 0 {steal} 0 0\n"
        f"cpu0 {user} 0 {system} {idle} {iowait} 0 0 {steal} 0 0\nintr 0\n"
    )


def test_the_estimate_reads_cpu_times_under_the_configured_proc_root(tmp_path) -> None:
    import os

    hz = os.sysconf("SC_CLK_TCK")
    proc = tmp_path / "host-proc"
    write_stat(proc, user=0, system=0, idle=0)
    clock = FakeClock()
    est = EstimateCollector(clock, vcpus=4, memory_gb=1.0, proc_root=proc)
    # 1 s on 4 vCPUs: 1 CPU-second busy (user), 2 idle, 1 stolen by other guests -> 25 %.
    write_stat(proc, user=hz, system=0, idle=2 * hz, steal=hz)
    clock.advance(1.0)
    est.read()
    assert est.last_utilization == pytest.approx(0.25)
    # The tracker reads the same file through the same reader.
    from jouled.attribution.workloads import ProcFS

    assert ProcFS(proc).host_busy_s() == pytest.approx(1.0)


def test_an_unreadable_proc_root_says_which_setting_to_fix(tmp_path) -> None:
    from jouled.collectors.base import CollectorError

    with pytest.raises(CollectorError, match=r"attribution\.proc_path"):
        EstimateCollector(FakeClock(), vcpus=1, memory_gb=1.0, proc_root=tmp_path / "nope")
