"""NvmlCollector against the fake pynvml, and the fake against the real pynvml module."""

from __future__ import annotations

import inspect
import itertools
import threading
from collections.abc import Iterator

import pynvml
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jouled.clock import FakeClock
from jouled.collectors import nvml as nvml_mod
from jouled.collectors.base import CollectorError, HardwareAbsent, Kind, Sample, Source
from jouled.collectors.nvml import GPU_LOST_FIX, Method, NvmlCollector, check_nvml
from jouled.testing.fake_pynvml import FUNCTIONS, FakeGpu, FakeNvml

VOLTA = FakeGpu(name="NVIDIA H100 80GB HBM3", energy_counter=True)
OLD = FakeGpu(name="Tesla P100-PCIE-16GB", energy_counter=False, mig_enabled=None)


def energy(sample: Sample) -> dict[str, float]:
    return {r.domain: r.energy_j for r in sample.readings}


@pytest.fixture
def closing() -> Iterator[list[NvmlCollector]]:
    made: list[NvmlCollector] = []
    yield made
    for c in made:
        c.close()


def make(
    fake: FakeNvml,
    closing: list[NvmlCollector],
    *,
    poll_interval_s: float = 0.1,
    max_power_w: float = 3000.0,
) -> NvmlCollector:
    c = NvmlCollector(
        fake, fake.clock, poll_interval_s, max_power_w=max_power_w, start_poller=False
    )
    closing.append(c)
    return c


# ----- energy counter -----------------------------------------------------------------------


def test_energy_counter_gives_exact_watts(closing: list[NvmlCollector]) -> None:
    fake = FakeNvml([VOLTA, VOLTA])
    fake.set_power_w(0, 250.0)
    fake.set_power_w(1, 100.0)
    c = make(fake, closing)
    first = c.read()
    # The counter held ~988 kJ from before jouled started: none of it is ours.
    assert energy(first) == {"gpu-0": 0.0, "gpu-1": 0.0}
    fake.advance(2.0)
    second = c.read()
    watts = {d: (e - energy(first)[d]) / 2.0 for d, e in energy(second).items()}
    assert watts == {"gpu-0": 250.0, "gpu-1": 100.0}
    r0 = second.readings[0]
    assert (r0.kind, r0.source, r0.device) == (Kind.GPU, Source.NVML, "0")
    assert second.problems == {}
    assert second.resets == {"gpu-0": 0, "gpu-1": 0}
    assert [g.method for g in c.gpus()] == [Method.ENERGY_COUNTER] * 2


def test_counter_reset_is_counted_without_negative_or_spike(
    closing: list[NvmlCollector],
) -> None:
    fake = FakeNvml([VOLTA])
    fake.set_power_w(0, 200.0)
    c = make(fake, closing)
    fake.advance(1.0)
    assert energy(c.read())["gpu-0"] == 200.0
    fake.advance(0.5)
    fake.reset_energy_counter(0)  # driver reload: the counter restarts at 0
    fake.advance(1.0)
    after = c.read()
    # One read cannot tell a reset from a glitch: the energy is held, not invented.
    assert energy(after)["gpu-0"] == 200.0
    assert after.resets == {"gpu-0": 0}
    fake.advance(1.0)
    later = c.read()
    # The next read continues from the low value: a confirmed reset. Only the energy since
    # the reset is known; the 0.5 s before it is lost, never invented.
    assert energy(later)["gpu-0"] == 600.0
    assert later.resets == {"gpu-0": 1}
    assert later.glitches == {"gpu-0": 0}


def test_energy_counter_follows_a_power_ramp(closing: list[NvmlCollector]) -> None:
    fake = FakeNvml([VOLTA])
    fake.set_power_w(0, 100.0)
    c = make(fake, closing)
    fake.ramp_power_w(0, 400.0, over_s=3.0)
    fake.advance(1.0)
    assert energy(c.read())["gpu-0"] == pytest.approx((100.0 + 200.0) / 2)
    fake.advance(3.0)
    assert energy(c.read())["gpu-0"] == pytest.approx(750.0 + 400.0)


def test_implausible_counter_jump_is_dropped(closing: list[NvmlCollector]) -> None:
    fake = FakeNvml([VOLTA])
    c = make(fake, closing, max_power_w=500.0)
    fake.set_power_w(0, 2000.0)  # beyond max_power_w: a glitch, not a measurement
    fake.advance(1.0)
    assert energy(c.read())["gpu-0"] == 0.0
    fake.set_power_w(0, 300.0)
    fake.advance(1.0)
    assert energy(c.read())["gpu-0"] == 300.0


# ----- power polling ------------------------------------------------------------------------


def test_power_only_gpu_piecewise_constant_trapezoid(closing: list[NvmlCollector]) -> None:
    fake = FakeNvml([OLD])
    fake.set_power_w(0, 100.0)
    c = make(fake, closing, poll_interval_s=0.1)
    assert c.gpus()[0].method is Method.POWER_POLLING
    for _ in range(10):
        fake.advance(0.1)
        c.poll_once()
    fake.set_power_w(0, 300.0)
    for _ in range(10):
        fake.advance(0.1)
        c.poll_once()
    measured = energy(c.read())["gpu-0"]
    analytic = 100.0 * 1.0 + 300.0 * 1.0
    assert fake.true_energy_j(0) == pytest.approx(analytic)
    # The trapezoid averages the one interval holding the step: error = step * dt / 2.
    assert measured == pytest.approx(analytic - 200.0 * 0.1 / 2, abs=1e-6)


def test_power_only_gpu_linear_ramp_is_exact(closing: list[NvmlCollector]) -> None:
    fake = FakeNvml([OLD])
    fake.set_power_w(0, 100.0)
    c = make(fake, closing)
    fake.ramp_power_w(0, 400.0, over_s=3.0)
    for _ in range(12):
        fake.advance(0.25)
        c.poll_once()
    fake.advance(1.0)  # flat at 400 W after the ramp
    measured = energy(c.read())["gpu-0"]  # read() polls too: current at the tick
    analytic = (100.0 + 400.0) / 2 * 3.0 + 400.0 * 1.0
    assert measured == pytest.approx(analytic, abs=1e-6)


@settings(max_examples=200, deadline=None)
@given(
    start_w=st.floats(0, 700),
    end_w=st.floats(0, 700),
    ramp_s=st.floats(0.1, 20),
    steps=st.lists(st.floats(0.001, 2.0), min_size=1, max_size=30),
)
def test_trapezoid_matches_analytic_integral_on_ramps(
    start_w: float, end_w: float, ramp_s: float, steps: list[float]
) -> None:
    fake = FakeNvml([OLD])
    fake.set_power_w(0, start_w)
    c = NvmlCollector(fake, fake.clock, start_poller=False)
    try:
        fake.ramp_power_w(0, end_w, over_s=ramp_s)
        for dt in steps:
            fake.advance(dt)
            c.poll_once()
        fake.advance(ramp_s)  # past the ramp's corner, so the last interval is linear
        c.poll_once()
        fake.advance(1.0)
        measured = energy(c.read())["gpu-0"]
    finally:
        c.close()
    # Linear pieces integrate exactly, except the one interval spanning the ramp's corner
    # and the milliwatt rounding of each reading.
    corner_error = abs(end_w - start_w) / 2 * max([*steps, ramp_s])
    rounding = 0.0005 * (sum(steps) + ramp_s + 1.0)
    assert measured >= 0
    assert abs(measured - fake.true_energy_j(0)) <= corner_error + rounding + 1e-6


def test_poller_thread_integrates_and_close_stops_it() -> None:
    fake = FakeNvml([OLD])
    c = NvmlCollector(fake, fake.clock, poll_interval_s=0.01, start_poller=True)
    try:
        assert c.poller_alive
        polled = threading.Event()
        before = fake.calls["nvmlDeviceGetPowerUsage"]
        for _ in range(500):  # an event wait with a bound, not a timing assertion
            if fake.calls["nvmlDeviceGetPowerUsage"] > before + 2:
                polled.set()
                break
            threading.Event().wait(0.01)
        assert polled.is_set()
    finally:
        c.close()
    assert not c.poller_alive
    assert not fake.initialized  # nvmlShutdown balanced nvmlInit
    c.close()  # idempotent
    with pytest.raises(CollectorError):
        c.read()


def test_no_poller_for_energy_counter_gpus() -> None:
    fake = FakeNvml([VOLTA])
    c = NvmlCollector(fake, fake.clock, start_poller=True)
    try:
        assert not c.poller_alive
    finally:
        c.close()


# ----- failures -----------------------------------------------------------------------------


def test_gpu_lost_mid_run(closing: list[NvmlCollector]) -> None:
    fake = FakeNvml([VOLTA, VOLTA, OLD])
    for i in range(3):
        fake.set_power_w(i, 100.0)
    c = make(fake, closing)
    fake.advance(1.0)
    before = energy(c.read())
    fake.lose_gpu(1)
    fake.lose_gpu(2)
    history = [before]
    for _ in range(3):
        fake.advance(1.0)
        s = c.read()
        history.append(energy(s))
        assert set(s.problems) == {"gpu-1", "gpu-2"}
        assert GPU_LOST_FIX in s.problems["gpu-1"]
    assert history[-1]["gpu-0"] == 400.0  # the healthy GPU goes on
    assert history[-1]["gpu-1"] == before["gpu-1"] == 100.0  # keeps its last value
    assert history[-1]["gpu-2"] == before["gpu-2"]
    for a, b in itertools.pairwise(history):
        assert all(b[d] >= a[d] for d in a)
    # A GPU reset brings it back with a fresh counter: a reset, not a negative step.
    fake.recover_gpu(1)
    fake.advance(1.0)
    s = c.read()
    assert "gpu-1" not in s.problems
    assert s.resets["gpu-1"] == 1
    assert energy(s)["gpu-1"] == 200.0
    # The power-polled GPU restarts its integration: the outage is not bridged.
    assert "gpu-2" in s.problems
    fake.recover_gpu(2)
    s = c.read()
    assert energy(s)["gpu-2"] == before["gpu-2"]
    fake.advance(1.0)
    assert energy(c.read())["gpu-2"] == before["gpu-2"] + 100.0


def test_all_gpus_lost_raises_collector_error(closing: list[NvmlCollector]) -> None:
    fake = FakeNvml([VOLTA, OLD])
    c = make(fake, closing)
    fake.lose_gpu(0)
    fake.lose_gpu(1)
    with pytest.raises(CollectorError) as err:
        c.read()
    assert "gpu-0" in str(err.value) and "gpu-1" in str(err.value)
    assert not isinstance(err.value, HardwareAbsent)


def test_not_supported_on_one_call_loses_nothing(closing: list[NvmlCollector]) -> None:
    fake = FakeNvml([VOLTA, VOLTA])
    fake.set_power_w(1, 150.0)
    c = make(fake, closing)
    fake.fail(
        "nvmlDeviceGetTotalEnergyConsumption", pynvml.NVMLError_NotSupported, index=1, times=1
    )
    fake.advance(1.0)
    s = c.read()
    assert set(s.problems) == {"gpu-1"}
    assert "not supported" in s.problems["gpu-1"]
    assert energy(s)["gpu-1"] == 0.0
    fake.advance(1.0)
    s = c.read()
    assert s.problems == {}
    assert energy(s)["gpu-1"] == 300.0  # the cumulative counter covers the failed read
    assert c.gpus()[1].method is Method.ENERGY_COUNTER


@pytest.mark.parametrize(
    "error",
    [
        pynvml.NVMLError_Unknown,
        pynvml.NVMLError_Timeout,
        pynvml.NVMLError_NoPermission,
        pynvml.NVMLError_GpuIsLost,
        pynvml.NVMLError_ResetRequired,
        pynvml.NVMLError_Uninitialized,
        pynvml.NVMLError_NoData,  # a code jouled has no text for
    ],
)
def test_no_pynvml_error_escapes_read(error: type[Exception], closing: list[NvmlCollector]) -> None:
    fake = FakeNvml([VOLTA, OLD])
    c = make(fake, closing)
    fake.fail("nvmlDeviceGetTotalEnergyConsumption", error, times=None)
    fake.fail("nvmlDeviceGetPowerUsage", error, index=1, times=1)
    with pytest.raises(CollectorError) as err:
        c.read()  # both GPUs fail: our exception, not pynvml's
    assert not isinstance(err.value, pynvml.NVMLError)
    assert isinstance(err.value.__context__, pynvml.NVMLError) or err.value.fix
    s = c.read()  # the power GPU is back
    assert set(s.problems) == {"gpu-0"}
    assert "(fix: " in s.problems["gpu-0"]


@pytest.mark.parametrize(
    ("error", "absent", "words"),
    [
        (pynvml.NVMLError_LibraryNotFound, True, "libnvidia-ml.so"),
        (pynvml.NVMLError_DriverNotLoaded, True, "driver not loaded"),
        (pynvml.NVMLError_NoPermission, False, "/dev/nvidia"),
        (pynvml.NVMLError_LibRmVersionMismatch, False, "reboot"),
    ],
)
def test_init_errors_are_translated(error: type[Exception], absent: bool, words: str) -> None:
    fake = FakeNvml([VOLTA], init_error=error)
    with pytest.raises(CollectorError) as err:
        NvmlCollector(fake, fake.clock, start_poller=False)
    assert isinstance(err.value, HardwareAbsent) is absent
    assert words in str(err.value)
    assert err.value.fix


def test_no_gpus_is_hardware_absent() -> None:
    fake = FakeNvml([])
    with pytest.raises(HardwareAbsent, match="no NVIDIA GPU"):
        NvmlCollector(fake, fake.clock, start_poller=False)
    assert not fake.initialized  # shut down again on the way out


def test_gpu_lost_before_start_is_attached_later(closing: list[NvmlCollector]) -> None:
    fake = FakeNvml([VOLTA, VOLTA])
    fake.set_power_w(1, 80.0)
    fake.fail("nvmlDeviceGetHandleByIndex", pynvml.NVMLError_GpuIsLost, index=1, times=1)
    c = make(fake, closing)
    assert c.gpus()[1].method is Method.UNKNOWN
    fake.advance(1.0)
    s = c.read()  # attaches now; its baseline starts here
    assert s.problems == {}
    assert c.gpus()[1].method is Method.ENERGY_COUNTER
    fake.advance(1.0)
    assert energy(c.read())["gpu-1"] == 80.0


# ----- MIG, processes -----------------------------------------------------------------------


def test_mig_mode_is_exposed_and_energy_is_board_level(closing: list[NvmlCollector]) -> None:
    fake = FakeNvml([FakeGpu(mig_enabled=True, power_w=300.0), OLD, VOLTA])
    c = make(fake, closing)
    assert c.mig_enabled == {0: True, 1: False, 2: False}
    fake.add_process(0, 4242, sm_util_pct=50)
    fake.advance(1.0)
    assert energy(c.read())["gpu-0"] == 300.0
    # No per-process utilization in MIG mode: present, weight 0 (board-level attribution).
    assert c.gpu_processes()[0] == {4242: 0.0}


def test_gpu_processes_weights_from_sm_utilization(closing: list[NvmlCollector]) -> None:
    fake = FakeNvml([VOLTA, VOLTA], util_sample_period_s=0.5)
    c = make(fake, closing)
    fake.add_process(0, 100, sm_util_pct=30)
    fake.add_process(0, 200, sm_util_pct=10)
    fake.add_process(0, 300)  # holds memory, computes nothing
    fake.advance(2.0)
    assert c.gpu_processes() == {0: {100: 30.0, 200: 10.0, 300: 0.0}, 1: {}}
    # Only samples newer than the last call count (lastSeenTimeStamp per GPU).
    fake.add_process(0, 100, sm_util_pct=60)
    fake.advance(1.0)
    fake.add_process(0, 100, sm_util_pct=20)
    fake.advance(1.0)
    assert c.gpu_processes()[0] == {100: 40.0, 200: 10.0, 300: 0.0}
    # No new sample at all (NVML says NotFound): everyone present with weight 0.
    assert c.gpu_processes()[0] == {100: 0.0, 200: 0.0, 300: 0.0}


def test_gpu_processes_errors_give_empty_for_that_gpu(closing: list[NvmlCollector]) -> None:
    fake = FakeNvml([VOLTA, VOLTA, VOLTA])
    c = make(fake, closing)
    for i in range(3):
        fake.add_process(i, 10 + i, sm_util_pct=50)
    fake.advance(2.0)
    fake.fail("nvmlDeviceGetComputeRunningProcesses", pynvml.NVMLError_NoPermission, index=0)
    fake.fail("nvmlDeviceGetProcessUtilization", pynvml.NVMLError_Unknown, index=1)
    assert c.gpu_processes() == {0: {}, 1: {}, 2: {12: 50.0}}


# ----- check --------------------------------------------------------------------------------


def test_check_rows_per_gpu(closing: list[NvmlCollector]) -> None:
    fake = FakeNvml([VOLTA, OLD, VOLTA])
    fake.set_power_w(1, 42.5)
    c = make(fake, closing)
    fake.lose_gpu(2)
    rows = c.check()
    assert [r.target for r in rows] == ["0", "1", "2"]
    assert all(r.collector == "nvml" for r in rows)
    assert rows[0].readable and "energy counter" in rows[0].detail
    assert VOLTA.name in rows[0].detail and "GPU-" in rows[0].detail
    assert rows[1].readable and "power polling" in rows[1].detail and "42.5 W" in rows[1].detail
    assert not rows[2].readable and rows[2].fix == GPU_LOST_FIX


def test_check_nvml_without_library_is_one_row() -> None:
    fake = FakeNvml([VOLTA], init_error=pynvml.NVMLError_LibraryNotFound)
    rows = check_nvml(fake, fake.clock)
    assert len(rows) == 1
    assert rows[0].target == "-" and not rows[0].readable and rows[0].absent
    assert "libnvidia-ml.so" in rows[0].detail and "install the NVIDIA driver" in rows[0].fix


def test_check_nvml_with_gpus_closes_after() -> None:
    fake = FakeNvml([VOLTA, OLD])
    rows = check_nvml(fake, fake.clock)
    assert [r.readable for r in rows] == [True, True]
    assert not fake.initialized


# ----- invariant under random scenarios -----------------------------------------------------

_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.floats(0.0, 5.0)),
        st.tuples(st.just("power"), st.integers(0, 1), st.floats(0.0, 700.0)),
        st.tuples(st.just("reset"), st.integers(0, 1)),
        st.tuples(st.just("lose"), st.integers(0, 1)),
        st.tuples(st.just("recover"), st.integers(0, 1)),
        st.tuples(st.just("fail"), st.integers(0, 1)),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(ops=_OPS)
def test_cumulative_energy_never_decreases(ops: list[tuple[object, ...]]) -> None:
    fake = FakeNvml([VOLTA, OLD])
    c = NvmlCollector(fake, fake.clock, start_poller=False)
    last = {"gpu-0": 0.0, "gpu-1": 0.0}
    fns = ("nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetPowerUsage")
    try:
        for op in ops:
            kind, *args = op
            if kind == "advance":
                fake.advance(float(args[0]))  # type: ignore[arg-type]
            elif kind == "power":
                fake.set_power_w(int(args[0]), float(args[1]))  # type: ignore[call-overload,arg-type]
            elif kind == "reset":
                fake.reset_energy_counter(int(args[0]))  # type: ignore[call-overload]
            elif kind == "lose":
                fake.lose_gpu(int(args[0]))  # type: ignore[call-overload]
            elif kind == "recover":
                fake.recover_gpu(int(args[0]))  # type: ignore[call-overload]
            else:
                i = int(args[0])  # type: ignore[call-overload]
                fake.fail(fns[i], pynvml.NVMLError_Unknown, index=i)
            try:
                now = energy(c.read())
            except CollectorError:
                continue
            assert all(now[d] >= last[d] for d in last)
            # The counter GPU never reports more than it spent.
            assert now["gpu-0"] <= fake.true_energy_j(0) + 1e-6
            last = now
    finally:
        c.close()


# ----- the fake stays faithful to the real module -------------------------------------------


def test_fake_functions_exist_on_real_pynvml_with_same_parameters() -> None:
    fake = FakeNvml([VOLTA])
    for name in FUNCTIONS:
        real = getattr(pynvml, name)  # AttributeError here: the fake drifted
        ours = getattr(fake, name)
        assert callable(real) and callable(ours)
        real_params = list(inspect.signature(real).parameters)
        assert list(inspect.signature(ours).parameters) == real_params, name
    public = {n for n in dir(FakeNvml) if n.startswith("nvml")}
    assert public == set(FUNCTIONS)
    with pytest.raises(AttributeError):
        _ = fake.nvmlDeviceGetTemperature  # a real function the fake lacks fails loudly


def test_fake_raises_the_real_exception_classes() -> None:
    fake = FakeNvml([VOLTA, OLD], init_error=None)
    assert fake.NVMLError_GpuIsLost is pynvml.NVMLError_GpuIsLost
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetCount()
    fake.nvmlInit()
    old = fake.nvmlDeviceGetHandleByIndex(1)
    with pytest.raises(pynvml.NVMLError_NotSupported) as err:
        fake.nvmlDeviceGetTotalEnergyConsumption(old)
    assert type(err.value) is pynvml.NVMLError_NotSupported
    assert err.value.value == pynvml.NVML_ERROR_NOT_SUPPORTED
    with pytest.raises(pynvml.NVMLError_NotSupported):
        fake.nvmlDeviceGetMigMode(old)
    new = fake.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NotFound):
        fake.nvmlDeviceGetProcessUtilization(new, 0)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        fake.nvmlDeviceGetHandleByIndex(2)
    fake.lose_gpu(0)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        fake.nvmlDeviceGetPowerUsage(new)
    with pytest.raises(pynvml.NVMLError_LibraryNotFound):
        FakeNvml(init_error=pynvml.NVMLError_LibraryNotFound).nvmlInit()


def test_fake_units_and_return_types_match_real() -> None:
    clock = FakeClock()
    fake = FakeNvml([FakeGpu(power_w=123.456, energy_mj_at_start=5000)], clock)
    fake.nvmlInit()
    h = fake.nvmlDeviceGetHandleByIndex(0)
    assert fake.nvmlDeviceGetPowerUsage(h) == 123456  # mW, an int
    fake.advance(1.0)
    assert fake.nvmlDeviceGetTotalEnergyConsumption(h) == 5000 + 123456  # mJ, an int
    assert isinstance(fake.nvmlDeviceGetName(h), str)  # pynvml decodes bytes to str
    assert fake.nvmlDeviceGetMigMode(h) == [0, 0]
    fake.add_process(0, 77, sm_util_pct=25)
    fake.advance(1.0)
    (proc,) = fake.nvmlDeviceGetComputeRunningProcesses(h)
    assert isinstance(proc, pynvml.nvmlFriendlyObject)
    assert (proc.pid, proc.usedGpuMemory) == (77, 1 << 30)
    (sample,) = fake.nvmlDeviceGetProcessUtilization(h, 0)
    assert isinstance(sample, pynvml.c_nvmlProcessUtilizationSample_t)
    assert (sample.pid, sample.smUtil) == (77, 25)
    assert sample.timeStamp == round(clock.time() * 1_000_000)  # CPU time in µs
    fake.nvmlShutdown()
    assert not fake.initialized


def test_error_codes_match_pynvml_constants() -> None:
    for ours, theirs in [
        (nvml_mod._NOT_SUPPORTED, pynvml.NVML_ERROR_NOT_SUPPORTED),
        (nvml_mod._NO_PERMISSION, pynvml.NVML_ERROR_NO_PERMISSION),
        (nvml_mod._NOT_FOUND, pynvml.NVML_ERROR_NOT_FOUND),
        (nvml_mod._DRIVER_NOT_LOADED, pynvml.NVML_ERROR_DRIVER_NOT_LOADED),
        (nvml_mod._LIBRARY_NOT_FOUND, pynvml.NVML_ERROR_LIBRARY_NOT_FOUND),
        (nvml_mod._GPU_IS_LOST, pynvml.NVML_ERROR_GPU_IS_LOST),
        (nvml_mod._RESET_REQUIRED, pynvml.NVML_ERROR_RESET_REQUIRED),
        (nvml_mod._LIB_RM_VERSION_MISMATCH, pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH),
        (nvml_mod._TIMEOUT, pynvml.NVML_ERROR_TIMEOUT),
        (nvml_mod._UNINITIALIZED, pynvml.NVML_ERROR_UNINITIALIZED),
        (nvml_mod._UNKNOWN, pynvml.NVML_ERROR_UNKNOWN),
    ]:
        assert ours == theirs


def test_real_pynvml_without_driver_is_hardware_absent() -> None:
    # Without an NVIDIA driver the real module must give the same answer as the fake.
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this host has an NVIDIA driver")
    with pytest.raises(HardwareAbsent, match=r"libnvidia-ml\.so"):
        NvmlCollector(None, FakeClock(), start_poller=False)
