"""A fake of the ``pynvml`` module (nvidia-ml-py) for tests and demos without a GPU.

It offers the real function names with the real units (energy in mJ since the driver
loaded, power in mW, utilization timestamps in CPU microseconds) and raises the real
``pynvml.NVMLError_*`` classes, so code is tested against what production raises. Time is
an injected ``FakeClock``: energy accrues exactly as the integral of the set power.

Scenario controls: GPUs with or without the energy counter (Volta+ vs older boards), power
steps and linear ramps, a GPU lost mid-run, an energy counter reset (driver reload), one
absurd counter read, a counter that stops moving (frozen), an
error injected into any call, a missing library or unloaded driver at ``nvmlInit``, zero
GPUs, MIG mode, and compute processes with their SM utilization.

Over 400 lines because it is a faithful fake of every pynvml function jouled calls, with
NVML's units and exceptions, in one module as the real one is.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pynvml

from jouled.clock import FakeClock

# NVML reports "not available" for the MIG instance ids of a process on a non-MIG GPU.
_NOT_AVAILABLE_UINT = 0xFFFFFFFF

# Every NVML function the fake implements; ``fail()`` accepts only these names.
FUNCTIONS: tuple[str, ...] = (
    "nvmlInit",
    "nvmlShutdown",
    "nvmlSystemGetDriverVersion",
    "nvmlDeviceGetCount",
    "nvmlDeviceGetHandleByIndex",
    "nvmlDeviceGetName",
    "nvmlDeviceGetUUID",
    "nvmlDeviceGetTotalEnergyConsumption",
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetComputeRunningProcesses",
    "nvmlDeviceGetProcessUtilization",
    "nvmlDeviceGetMigMode",
)


@dataclass(frozen=True, slots=True)
class FakeGpu:
    """How one fake board is built.

    ``energy_counter=False`` models a pre-Volta board: the total-energy call raises
    ``NVMLError_NotSupported`` and only the power reading works. ``mig_enabled=None`` models
    a board without MIG support (``nvmlDeviceGetMigMode`` raises NotSupported).
    """

    name: str = "NVIDIA A100-SXM4-80GB"
    uuid: str = ""  # generated from the index when empty
    energy_counter: bool = True
    power_w: float = 60.0
    mig_enabled: bool | None = False
    # Energy already counted when the fake starts: the driver loaded long before jouled.
    energy_mj_at_start: int = 987_654_321


@dataclass(frozen=True, slots=True)
class _Handle:
    """Opaque, as the real ``c_nvmlDevice_t`` pointer is."""

    owner_id: int
    index: int


@dataclass(slots=True)
class _Process:
    used_memory_bytes: int
    sm_util_pct: int
    mem_util_pct: int


@dataclass(slots=True)
class _Gpu:
    spec: FakeGpu
    uuid: str
    counter_mj: float
    true_energy_j: float = 0.0
    # Power is piecewise linear: it moves from ramp_from_w at ramp_t0 to ramp_to_w at ramp_t1
    # and stays there; a step is a ramp of zero length.
    ramp_t0: float = 0.0
    ramp_t1: float = 0.0
    ramp_from_w: float = 0.0
    ramp_to_w: float = 0.0
    lost: bool = False
    glitch_mj: list[int] = field(default_factory=list)  # reads returned once each, in order
    frozen_mj: int | None = None  # the counter shows this while frozen
    processes: dict[int, _Process] = field(default_factory=dict)
    util_samples: collections.deque[Any] = field(default_factory=collections.deque)

    def power_at(self, t: float) -> float:
        if t >= self.ramp_t1:
            return self.ramp_to_w
        if t <= self.ramp_t0:
            return self.ramp_from_w
        frac = (t - self.ramp_t0) / (self.ramp_t1 - self.ramp_t0)
        return self.ramp_from_w + (self.ramp_to_w - self.ramp_from_w) * frac

    def energy_between_j(self, a: float, b: float) -> float:
        """Exact integral of the piecewise-linear power over [a, b]."""
        total = 0.0
        for lo, hi in ((a, min(b, self.ramp_t1)), (max(a, self.ramp_t1), b)):
            if hi > lo:
                total += (self.power_at(lo) + self.power_at(hi)) / 2 * (hi - lo)
        return total


@dataclass(slots=True)
class _Fault:
    error: type[BaseException]
    index: int | None
    remaining: int | None  # None: every call


class FakeNvml:
    """Module-like stand-in for ``pynvml``: pass it wherever jouled takes the NVML module.

    Names starting with ``NVML`` (exception classes, constants) are the real module's, so
    ``fake.NVMLError_GpuIsLost is pynvml.NVMLError_GpuIsLost``.
    """

    def __init__(
        self,
        gpus: Sequence[FakeGpu] = (FakeGpu(),),
        clock: FakeClock | None = None,
        *,
        init_error: type[BaseException] | None = None,
        driver_version: str = "550.54.15",
        util_sample_period_s: float = 1.0,
        util_buffer_len: int = 100,
    ) -> None:
        if util_sample_period_s <= 0:
            raise ValueError("util_sample_period_s must be positive")
        self.clock = clock if clock is not None else FakeClock()
        self.driver_version = driver_version
        self.calls: collections.Counter[str] = collections.Counter()
        self._init_error = init_error
        self._util_period_s = util_sample_period_s
        self._util_buffer_len = util_buffer_len
        self._lock = threading.RLock()
        self._init_count = 0
        self._faults: dict[str, list[_Fault]] = {}
        now = self.clock.monotonic()
        self._t = now
        self._gpus = [
            _Gpu(
                spec=spec,
                uuid=spec.uuid or f"GPU-{i:08x}-fake-4e4f-8a1b-{i:012x}",
                counter_mj=float(spec.energy_mj_at_start),
                ramp_t0=now,
                ramp_t1=now,
                ramp_from_w=spec.power_w,
                ramp_to_w=spec.power_w,
            )
            for i, spec in enumerate(gpus)
        ]

    def __getattr__(self, name: str) -> Any:
        # Only exception classes and constants come from the real module: a real function
        # the fake lacks must fail loudly rather than call into a missing libnvidia-ml.
        if name.startswith(("NVML", "c_nvml")):
            return getattr(pynvml, name)
        raise AttributeError(f"FakeNvml does not implement {name!r}")

    # ----- scenario controls ---------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Move the injected clock; energy and utilization samples accrue on the next call."""
        with self._lock:
            self.clock.advance(seconds)
            self._sync()

    def set_power_w(self, index: int, power_w: float) -> None:
        """Step the board's power to ``power_w`` from now on."""
        self.ramp_power_w(index, power_w, 0.0)

    def ramp_power_w(self, index: int, target_w: float, over_s: float) -> None:
        """Move the power linearly from its present value to ``target_w`` over ``over_s``."""
        if target_w < 0 or over_s < 0:
            raise ValueError("power and ramp duration are never negative")
        with self._lock:
            self._sync()
            gpu = self._gpus[index]
            gpu.ramp_from_w = gpu.power_at(self._t)
            gpu.ramp_to_w = target_w
            gpu.ramp_t0 = self._t
            gpu.ramp_t1 = self._t + over_s

    def lose_gpu(self, index: int) -> None:
        """The board falls off the bus: every call on it raises ``NVMLError_GpuIsLost``."""
        with self._lock:
            self._gpus[index].lost = True

    def recover_gpu(self, index: int) -> None:
        """A GPU reset brings the board back; its energy counter restarts at zero."""
        with self._lock:
            self._sync()
            self._gpus[index].lost = False
            self._gpus[index].counter_mj = 0.0

    def reset_energy_counter(self, index: int) -> None:
        """A driver reload: the total-energy counter restarts at zero."""
        with self._lock:
            self._sync()
            self._gpus[index].counter_mj = 0.0

    def glitch_energy_once(self, index: int, value_mj: int) -> None:
        """The next total-energy read of the board returns ``value_mj`` once; the counter
        itself goes on, so the read after it is normal again."""
        with self._lock:
            self._gpus[index].glitch_mj.append(value_mj)

    def freeze_energy_counter(self, index: int, frozen: bool = True) -> None:
        """The total-energy counter stops at its present value (``frozen=False``: moves
        again, showing the energy spent meanwhile) while the board keeps drawing power."""
        with self._lock:
            self._sync()
            gpu = self._gpus[index]
            gpu.frozen_mj = int(gpu.counter_mj) if frozen else None

    def fail(
        self,
        function: str,
        error: type[BaseException],
        *,
        index: int | None = None,
        times: int | None = 1,
    ) -> None:
        """Make ``function`` raise ``error`` (a real ``pynvml.NVMLError_*`` class).

        ``index`` limits the fault to one GPU; ``times=None`` makes it permanent.
        """
        if function not in FUNCTIONS:
            raise ValueError(f"FakeNvml has no function {function!r}")
        with self._lock:
            self._faults.setdefault(function, []).append(_Fault(error, index, times))

    def add_process(
        self,
        index: int,
        pid: int,
        *,
        sm_util_pct: int = 0,
        mem_util_pct: int = 0,
        used_memory_bytes: int = 1 << 30,
    ) -> None:
        """A compute process on the board; a non-zero SM utilization yields samples."""
        with self._lock:
            self._sync()
            self._gpus[index].processes[pid] = _Process(
                used_memory_bytes, sm_util_pct, mem_util_pct
            )

    def remove_process(self, index: int, pid: int) -> None:
        with self._lock:
            self._sync()
            del self._gpus[index].processes[pid]

    def true_energy_j(self, index: int) -> float:
        """Ground truth: energy the board spent since the fake started (resets ignored)."""
        with self._lock:
            self._sync()
            return self._gpus[index].true_energy_j

    @property
    def initialized(self) -> bool:
        return self._init_count > 0

    # ----- the pynvml API ------------------------------------------------------------------

    def nvmlInit(self) -> None:
        with self._lock:
            self._enter("nvmlInit", None)
            if self._init_error is not None:
                raise self._init_error()
            self._init_count += 1

    def nvmlShutdown(self) -> None:
        with self._lock:
            self._enter("nvmlShutdown", None)
            self._require_init()
            self._init_count -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        with self._lock:
            self._enter("nvmlSystemGetDriverVersion", None)
            self._require_init()
            return self.driver_version

    def nvmlDeviceGetCount(self) -> int:
        with self._lock:
            self._enter("nvmlDeviceGetCount", None)
            self._require_init()
            return len(self._gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        with self._lock:
            self._enter("nvmlDeviceGetHandleByIndex", index)
            self._require_init()
            if not 0 <= index < len(self._gpus):
                raise pynvml.NVMLError_InvalidArgument()
            if self._gpus[index].lost:
                raise pynvml.NVMLError_GpuIsLost()
            return _Handle(id(self), index)

    def nvmlDeviceGetName(self, handle: Any) -> str:
        with self._lock:
            return self._device("nvmlDeviceGetName", handle).spec.name

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        with self._lock:
            return self._device("nvmlDeviceGetUUID", handle).uuid

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        """Millijoules since the driver loaded (Volta and newer only)."""
        with self._lock:
            gpu = self._device("nvmlDeviceGetTotalEnergyConsumption", handle)
            if not gpu.spec.energy_counter:
                raise pynvml.NVMLError_NotSupported()
            if gpu.glitch_mj:
                return gpu.glitch_mj.pop(0)
            if gpu.frozen_mj is not None:
                return gpu.frozen_mj
            return int(gpu.counter_mj)

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        """Milliwatts drawn by the whole board now."""
        with self._lock:
            gpu = self._device("nvmlDeviceGetPowerUsage", handle)
            return round(gpu.power_at(self._t) * 1000)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        with self._lock:
            gpu = self._device("nvmlDeviceGetComputeRunningProcesses", handle)
            return [
                pynvml.nvmlStructToFriendlyObject(
                    pynvml.c_nvmlProcessInfo_t(
                        pid=pid,
                        usedGpuMemory=proc.used_memory_bytes,
                        gpuInstanceId=_NOT_AVAILABLE_UINT,
                        computeInstanceId=_NOT_AVAILABLE_UINT,
                    )
                )
                for pid, proc in gpu.processes.items()
            ]

    def nvmlDeviceGetProcessUtilization(self, handle: Any, timeStamp: int) -> list[Any]:
        """Samples newer than ``timeStamp`` (CPU µs); NotFound when there are none."""
        with self._lock:
            gpu = self._device("nvmlDeviceGetProcessUtilization", handle)
            if gpu.spec.mig_enabled:
                # Per-process utilization is not available in MIG mode.
                raise pynvml.NVMLError_NotSupported()
            samples = [s for s in gpu.util_samples if s.timeStamp > timeStamp]
            if not samples:
                raise pynvml.NVMLError_NotFound()
            return samples

    def nvmlDeviceGetMigMode(self, device: Any) -> list[int]:
        """[current, pending] MIG mode; NotSupported on boards without MIG."""
        with self._lock:
            gpu = self._device("nvmlDeviceGetMigMode", device)
            if gpu.spec.mig_enabled is None:
                raise pynvml.NVMLError_NotSupported()
            mode = pynvml.NVML_DEVICE_MIG_ENABLE if gpu.spec.mig_enabled else 0
            return [mode, mode]

    # ----- internals -----------------------------------------------------------------------

    def _sync(self) -> None:
        """Accrue energy and utilization samples up to the clock's present time."""
        now = self.clock.monotonic()
        if now <= self._t:
            return
        wall_offset = self.clock.time() - now
        for gpu in self._gpus:
            energy_j = gpu.energy_between_j(self._t, now)
            gpu.true_energy_j += energy_j
            gpu.counter_mj += energy_j * 1000
            # NVML samples per-process utilization periodically; emit one sample per busy
            # process at each period boundary crossed.
            k = int(self._t // self._util_period_s) + 1
            while k * self._util_period_s <= now:
                stamp_us = round((k * self._util_period_s + wall_offset) * 1_000_000)
                for pid, proc in gpu.processes.items():
                    if proc.sm_util_pct > 0 or proc.mem_util_pct > 0:
                        gpu.util_samples.append(
                            pynvml.c_nvmlProcessUtilizationSample_t(
                                pid=pid,
                                timeStamp=stamp_us,
                                smUtil=proc.sm_util_pct,
                                memUtil=proc.mem_util_pct,
                            )
                        )
                while len(gpu.util_samples) > self._util_buffer_len:
                    gpu.util_samples.popleft()
                k += 1
        self._t = now

    def _enter(self, function: str, index: int | None) -> None:
        self.calls[function] += 1
        self._sync()
        for fault in self._faults.get(function, []):
            if fault.index is not None and fault.index != index:
                continue
            if fault.remaining is not None:
                if fault.remaining <= 0:
                    continue
                fault.remaining -= 1
            raise fault.error()

    def _require_init(self) -> None:
        if self._init_count <= 0:
            raise pynvml.NVMLError_Uninitialized()

    def _device(self, function: str, handle: Any) -> _Gpu:
        index = handle.index if isinstance(handle, _Handle) else None
        self._enter(function, index)
        self._require_init()
        if not isinstance(handle, _Handle) or handle.owner_id != id(self):
            raise pynvml.NVMLError_InvalidArgument()
        gpu = self._gpus[handle.index]
        if gpu.lost:
            raise pynvml.NVMLError_GpuIsLost()
        return gpu
