import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jouled.attribution.share import IdleModel, split_tick

COMPONENTS = [("cpu", "rapl"), ("dram", "rapl"), ("other", "rapl"), ("gpu", "nvml")]

energies = st.floats(min_value=0, max_value=1e5, allow_nan=False)
cpu_seconds = st.floats(min_value=0, max_value=64, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(
    host=st.dictionaries(st.sampled_from(COMPONENTS[:3]), energies, min_size=1),
    idle=st.dictionaries(st.sampled_from(COMPONENTS[:3]), st.floats(0, 500)),
    workloads=st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), cpu_seconds, max_size=4),
    busy=cpu_seconds,
    gpus=st.dictionaries(st.sampled_from(["0", "1"]), energies, max_size=2),
    gpu_weights=st.dictionaries(
        st.sampled_from(["0", "1"]),
        st.dictionaries(st.sampled_from(["a", "b", "", "x"]), st.floats(0, 100), max_size=3),
    ),
    mode=st.sampled_from(["exclude", "share"]),
    seconds=st.floats(min_value=0.01, max_value=10),
)
def test_conservation_and_no_negative_share(
    host, idle, workloads, busy, gpus, gpu_weights, mode, seconds
) -> None:
    host = dict(host)
    if gpus:
        host[("gpu", "nvml")] = math.fsum(gpus.values())
    out = split_tick(
        host,
        seconds,
        idle_w=idle,
        cpu_s=workloads,
        host_busy_s=busy,
        gpu_j=gpus,
        gpu_weights=gpu_weights,
        gpu_idle_w={"0": 40.0},
        mode=mode,
    )
    for key, measured in host.items():
        parts = [out.idle_j[key], out.unattributed_j[key]]
        parts += [out.workload_j[w][key] for w in workloads]
        assert all(p >= -1e-9 * max(1.0, measured) for p in parts), (key, parts)
        assert math.fsum(parts) == pytest.approx(measured, rel=1e-9, abs=1e-9)
        if mode == "share":
            assert out.idle_j[key] == 0.0


def test_subnormal_cpu_time_never_produces_nan() -> None:
    out = split_tick(
        {("cpu", "rapl"): 1e5},
        1.0,
        idle_w={},
        cpu_s={"a": 0.0, "b": 5e-324},
        host_busy_s=5e-324,
    )
    parts = [out.workload_j["a"][("cpu", "rapl")], out.workload_j["b"][("cpu", "rapl")]]
    assert parts == [0.0, 1e5]
    assert out.unattributed_j[("cpu", "rapl")] == 0.0


def test_cpu_time_split_with_idle_excluded() -> None:
    out = split_tick(
        {("cpu", "rapl"): 100.0},
        1.0,
        idle_w={("cpu", "rapl"): 20.0},
        cpu_s={"api": 0.6, "batch": 0.2},
        host_busy_s=1.0,
    )
    assert out.idle_j[("cpu", "rapl")] == 20.0
    assert out.workload_j["api"][("cpu", "rapl")] == pytest.approx(48.0)
    assert out.workload_j["batch"][("cpu", "rapl")] == pytest.approx(16.0)
    assert out.unattributed_j[("cpu", "rapl")] == pytest.approx(16.0)


def test_share_mode_gives_all_energy_by_share_of_busy_cpu() -> None:
    out = split_tick(
        {("cpu", "rapl"): 100.0},
        1.0,
        idle_w={("cpu", "rapl"): 20.0},
        cpu_s={"api": 0.5},
        host_busy_s=0.5,
        mode="share",
    )
    assert out.workload_j["api"][("cpu", "rapl")] == pytest.approx(100.0)
    assert out.idle_j[("cpu", "rapl")] == 0.0


def test_over_reported_cpu_time_is_normalized_not_overpaid() -> None:
    out = split_tick(
        {("cpu", "rapl"): 10.0},
        1.0,
        idle_w={},
        cpu_s={"a": 3.0, "b": 1.0},
        host_busy_s=2.0,  # sampled a moment apart: workloads claim more than the host
    )
    assert out.workload_j["a"][("cpu", "rapl")] == pytest.approx(7.5)
    assert out.workload_j["b"][("cpu", "rapl")] == pytest.approx(2.5)
    assert out.unattributed_j[("cpu", "rapl")] == pytest.approx(0.0)


def test_gpu_energy_follows_sm_use_per_board() -> None:
    out = split_tick(
        {("gpu", "nvml"): 500.0},
        1.0,
        idle_w={},
        cpu_s={"llm": 0.0, "vision": 0.0},
        host_busy_s=0.0,
        gpu_j={"0": 300.0, "1": 200.0},
        gpu_weights={"0": {"llm": 30.0, "": 10.0}, "1": {"vision": 0.0}},
        gpu_idle_w={"0": 100.0},
    )
    key = ("gpu", "nvml")
    # Board 0: 100 W idle; 200 J active split 3:1 between llm and a foreign process.
    assert out.workload_j["llm"][key] == pytest.approx(150.0)
    # Board 1: vision is the only process, with no utilization sample yet: it gets it all.
    assert out.workload_j["vision"][key] == pytest.approx(200.0)
    assert out.idle_j[key] == pytest.approx(100.0)
    assert out.unattributed_j[key] == pytest.approx(50.0)


def test_idle_model_learns_the_lowest_sustained_power() -> None:
    m = IdleModel(block=10)
    assert m.power_w == 0.0  # nothing seen: nothing to exclude
    m.observe(60.0 * 0.5, 0.5)
    m.observe(50.0 * 0.5, 0.5)
    # Still learning: the lowest power seen so far, never charged to requests.
    assert m.power_w == pytest.approx(50.0) and not m.learned
    for watts in [50.0] * 8 + [12.0] * 10 + [80.0] * 10:
        m.observe(watts * 0.5, 0.5)
    assert m.power_w == pytest.approx(12.0) and m.learned
    m.observe(0.0, 0.0)  # zero-length ticks are ignored
    assert m.power_w == pytest.approx(12.0)
    assert IdleModel(configured_w=7.0).power_w == 7.0
