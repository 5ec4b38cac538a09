"""NVIDIA GPU energy through NVML (the ``pynvml`` module of nvidia-ml-py).

A GPU *domain* is one board, ``gpu-N`` by NVML index (PCI bus order; CUDA numbers GPUs the
same way only with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``). Volta and newer boards keep a 64-bit
*total energy counter* in mJ since the driver loaded: jouled prefers it, because the power
reading of A100/H100 boards samples only part of the time. Older boards have no counter;
their *power* (mW) is polled by a background thread and integrated by the trapezoid rule
over the injected monotonic clock.

MIG: energy is board-level only. A MIG instance has no energy counter of its own, so jouled
reports the board (``mig_enabled`` says which boards are partitioned). NVML has no
per-process utilization in MIG mode either, so ``gpu_processes`` then gives every process
weight 0: attribution falls back to the board as a whole, exact only when one process
uses it. Every NVML error is translated here into jouled's own problems and exceptions, each
with its fix; no ``pynvml`` exception escapes ``read()``.

Over 400 lines because it is one collector over NVML (devices, the energy counter or sampled
power, MIG, lost GPUs, process lists, its check); the counter arithmetic is in counter.py.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jouled.clock import Clock, SystemClock
from jouled.collectors.base import (
    CheckRow,
    CollectorError,
    DomainReading,
    HardwareAbsent,
    Kind,
    Sample,
    Source,
)
from jouled.collectors.counter import CounterTrack, Event, FrozenWatch
from jouled.collectors.procstat import busy_or_none

log = logging.getLogger(__name__)

# NVML return codes (nvml.h; a stable C ABI, equal to pynvml.NVML_ERROR_*).
_SUCCESS = 0
_UNINITIALIZED = 1
_NOT_SUPPORTED = 3
_NO_PERMISSION = 4
_NOT_FOUND = 6
_DRIVER_NOT_LOADED = 9
_TIMEOUT = 10
_LIBRARY_NOT_FOUND = 12
_GPU_IS_LOST = 15
_RESET_REQUIRED = 16
_LIB_RM_VERSION_MISMATCH = 18
_UNKNOWN = 999

GPU_LOST_FIX = "GPU fell off the bus: check dmesg/Xid, reset the GPU or reboot"
_DEFAULT_FIX = "check nvidia-smi and dmesg (Xid errors)"

# code -> (what failed, how to fix it)
_TRANSLATIONS: dict[int, tuple[str, str]] = {
    _UNINITIALIZED: ("NVML is not initialised", "restart jouled"),
    _NOT_SUPPORTED: (
        "not supported by this GPU or driver",
        "upgrade the NVIDIA driver; energy counters need a Volta or newer GPU",
    ),
    _NO_PERMISSION: (
        "no permission to query the GPU",
        "run jouled as root or give its user read-write access to /dev/nvidia* "
        "(e.g. the video group)",
    ),
    _NOT_FOUND: ("no data", _DEFAULT_FIX),
    _DRIVER_NOT_LOADED: (
        "NVIDIA kernel driver not loaded",
        "load it (modprobe nvidia; see dmesg) or set collectors.nvml.enabled: false",
    ),
    _TIMEOUT: ("NVML timed out", "the GPU may be hung: " + _DEFAULT_FIX),
    _LIBRARY_NOT_FOUND: (
        "NVIDIA driver library libnvidia-ml.so not found: no NVIDIA GPU on this host",
        "install the NVIDIA driver (it ships libnvidia-ml.so.1) "
        "or set collectors.nvml.enabled: false",
    ),
    _GPU_IS_LOST: ("GPU is lost", GPU_LOST_FIX),
    _RESET_REQUIRED: (
        "GPU requires a reset",
        "nvidia-smi --gpu-reset -i <index> (no process may use it) or reboot",
    ),
    _LIB_RM_VERSION_MISMATCH: (
        "NVML library and kernel driver versions differ",
        "the driver was upgraded without reloading: reboot or reload the nvidia module",
    ),
    _UNKNOWN: ("unknown NVML error", _DEFAULT_FIX),
}

# Slack added to the elapsed time when bounding a plausible counter step: the counter
# updates every 20-100 ms and a read can be delayed.
_COUNTER_SLACK_S = 1.0


def translate(exc: BaseException) -> tuple[str, str]:
    """(problem, fix) for an NVML exception; the one place NVML errors are interpreted."""
    code = getattr(exc, "value", None)
    if isinstance(code, int) and code in _TRANSLATIONS:
        return _TRANSLATIONS[code]
    try:
        text = str(exc)
    except Exception:  # str() of an NVMLError may call into the library
        text = type(exc).__name__
    return (f"NVML error {code}: {text}" if code is not None else text), _DEFAULT_FIX


def _code(exc: BaseException) -> int | None:
    code = getattr(exc, "value", None)
    return code if isinstance(code, int) else None


class Method(enum.StrEnum):
    ENERGY_COUNTER = "energy counter"
    POWER_POLLING = "power polling"
    UNKNOWN = "unknown"  # not probed yet: the GPU failed before jouled could tell


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """What jouled knows of one board."""

    index: int
    domain: str
    name: str
    uuid: str
    method: Method
    mig_enabled: bool


class _Gpu:
    """Mutable per-board state; guarded by the collector's lock."""

    def __init__(self, index: int, bound_mj: Callable[[float], int]) -> None:
        self.index = index
        self.domain = f"gpu-{index}"
        self.handle: Any = None
        self.name = "unknown"
        self.uuid = "unknown"
        self.mig_enabled = False
        self.method = Method.UNKNOWN
        self.energy_j = 0.0  # cumulative since the collector started; never decreases
        self.problem: str | None = None  # what failed at the last attempt, None when readable
        self.fix = ""
        self.lost = False
        # The energy counter (64-bit mJ, never wraps): resets confirmed, glitches dropped.
        self.track = CounterTrack(None, bound_mj)
        self.frozen = FrozenWatch()
        self.power_w: float | None = None
        self.power_t = 0.0
        self.last_seen_us = 0  # lastSeenTimeStamp for nvmlDeviceGetProcessUtilization

    def info(self) -> GpuInfo:
        return GpuInfo(self.index, self.domain, self.name, self.uuid, self.method, self.mig_enabled)


class NvmlCollector:
    """Cumulative energy of every NVIDIA GPU on the host.

    ``nvml`` is the ``pynvml`` module or ``jouled.testing.fake_pynvml.FakeNvml``;
    ``max_power_w`` bounds a plausible counter step or power reading (anything above is a
    glitch, dropped rather than exported as a spike).
    """

    name = "nvml"

    def __init__(
        self,
        nvml: Any = None,
        clock: Clock | None = None,
        poll_interval_s: float = 0.1,
        max_power_w: float = 3000.0,
        start_poller: bool = True,
        *,
        host_busy_s: Callable[[], float] | None = None,
    ) -> None:
        if poll_interval_s <= 0 or max_power_w <= 0:
            raise ValueError("poll_interval_s and max_power_w must be positive")
        if nvml is None:
            try:
                import pynvml
            except ImportError as exc:
                raise HardwareAbsent(
                    "the pynvml module is not installed", fix="pip install nvidia-ml-py"
                ) from exc
            nvml = pynvml
        self._nvml = nvml
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._poll_interval_s = poll_interval_s
        self._max_power_w = max_power_w
        self._start_poller = start_poller
        self._host_busy_s = host_busy_s
        errors: list[type[BaseException]] = [nvml.NVMLError]
        # Raised instead of an NVMLError when pynvml and libnvidia-ml disagree on a version.
        mismatch = getattr(nvml, "NVMLLibraryMismatchError", None)
        if isinstance(mismatch, type) and issubclass(mismatch, BaseException):
            errors.append(mismatch)
        self._errors: tuple[type[BaseException], ...] = tuple(errors)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._closed = False

        self._init()
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except self._errors as exc:
            self._shutdown()
            problem, fix = translate(exc)
            raise CollectorError(f"NVML cannot count GPUs: {problem}", fix=fix) from exc
        if count == 0:
            self._shutdown()
            raise HardwareAbsent(
                "NVML found no NVIDIA GPU on this host",
                fix="check nvidia-smi -L and the container's GPU access, "
                "or set collectors.nvml.enabled: false",
            )
        try:
            self._driver_version = str(nvml.nvmlSystemGetDriverVersion())
        except self._errors:
            self._driver_version = "unknown"
        self._gpus = [_Gpu(i, self._bound_mj) for i in range(count)]
        with self._lock:
            for gpu in self._gpus:
                self._attach(gpu)
        log.info(
            "nvml: driver %s, %s",
            self._driver_version,
            ", ".join(f"{g.domain} {g.name} ({g.method})" for g in self._gpus),
        )

    # ----- public API ----------------------------------------------------------------------

    @property
    def driver_version(self) -> str:
        return self._driver_version

    @property
    def mig_enabled(self) -> dict[int, bool]:
        """Per NVML index: whether the board is partitioned (energy stays board-level)."""
        with self._lock:
            return {g.index: g.mig_enabled for g in self._gpus}

    @property
    def poller_alive(self) -> bool:
        return self._poller is not None and self._poller.is_alive()

    def gpus(self) -> list[GpuInfo]:
        with self._lock:
            return [g.info() for g in self._gpus]

    def read(self) -> Sample:
        """Cumulative joules per GPU; a failing GPU keeps its last value and is a problem."""
        if self._closed:
            raise CollectorError("the nvml collector is closed", fix="restart jouled")
        with self._lock:
            busy = self._host_busy()
            for gpu in self._gpus:
                self._refresh(gpu, busy)
            readings = tuple(
                DomainReading(
                    domain=g.domain,
                    kind=Kind.GPU,
                    source=Source.NVML,
                    energy_j=g.energy_j,
                    device=str(g.index),
                    frozen=g.frozen.frozen,
                )
                for g in self._gpus
            )
            problems = {
                g.domain: f"{g.problem} (fix: {g.fix})" for g in self._gpus if g.problem is not None
            }
            resets = {g.domain: g.track.resets for g in self._gpus}
            glitches = {g.domain: g.track.glitches for g in self._gpus}
        if len(problems) == len(readings):
            raise CollectorError(
                "no GPU could be read: " + "; ".join(f"{d}: {p}" for d, p in problems.items()),
                fix=_DEFAULT_FIX,
            )
        return Sample(readings=readings, resets=resets, problems=problems, glitches=glitches)

    def poll_once(self) -> None:
        """Read the power of every power-polled GPU and integrate it; never raises."""
        with self._lock:
            for gpu in self._gpus:
                if gpu.method is Method.POWER_POLLING:
                    self._poll_power(gpu)

    def gpu_processes(self) -> dict[int, dict[int, float]]:
        """Per NVML index: PID -> mean SM utilization (%) since the previous call.

        The weight is the mean ``smUtil`` of the PID's utilization samples newer than the
        last one this method saw on that GPU. A compute process without samples (idle, or
        MIG mode, or a board without per-process utilization) has weight 0 but is present;
        a PID with samples that is not a compute process (a graphics client, or one that
        just exited) is present too, since it used the SMs. An NVML error gives ``{}`` for
        that GPU.
        """
        result: dict[int, dict[int, float]] = {}
        with self._lock:
            for gpu in self._gpus:
                result[gpu.index] = self._processes(gpu)
        return result

    def check(self) -> list[CheckRow]:
        """One row per GPU: name, UUID, method, and a fresh read or the problem with its fix."""
        rows: list[CheckRow] = []
        with self._lock:
            for gpu in self._gpus:
                rows.append(self._check_gpu(gpu))
        return rows

    def close(self) -> None:
        """Stop the poller and shut NVML down; idempotent, never raises."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=max(1.0, 10 * self._poll_interval_s))
            if self._poller.is_alive():
                log.warning("nvml: the power poller did not stop in time")
        self._shutdown()

    # ----- setup ---------------------------------------------------------------------------

    def _init(self) -> None:
        try:
            self._nvml.nvmlInit()
        except self._errors as exc:
            problem, fix = translate(exc)
            if _code(exc) in (_LIBRARY_NOT_FOUND, _DRIVER_NOT_LOADED):
                raise HardwareAbsent(problem, fix=fix) from exc
            raise CollectorError(f"NVML initialisation failed: {problem}", fix=fix) from exc

    def _shutdown(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except Exception as exc:  # shutting down: nothing left to protect
            log.debug("nvml: nvmlShutdown failed: %s", exc)

    def _attach(self, gpu: _Gpu) -> bool:
        """Get the handle, identity and method of a GPU; False (with a problem) on failure."""
        nvml = self._nvml
        if gpu.handle is None:
            try:
                gpu.handle = nvml.nvmlDeviceGetHandleByIndex(gpu.index)
            except self._errors as exc:
                self._fail(gpu, exc)
                return False
            for attr, fn in (("name", nvml.nvmlDeviceGetName), ("uuid", nvml.nvmlDeviceGetUUID)):
                try:
                    setattr(gpu, attr, str(fn(gpu.handle)))
                except self._errors as exc:
                    log.debug("nvml: %s of %s unreadable: %s", attr, gpu.domain, exc)
            try:
                gpu.mig_enabled = int(nvml.nvmlDeviceGetMigMode(gpu.handle)[0]) == 1
            except self._errors:
                gpu.mig_enabled = False  # no MIG support on this board or driver
        if gpu.method is Method.UNKNOWN:
            try:
                raw = int(nvml.nvmlDeviceGetTotalEnergyConsumption(gpu.handle))
                gpu.track.feed(raw, self._clock.monotonic())
                gpu.method = Method.ENERGY_COUNTER
            except self._errors as exc:
                if _code(exc) != _NOT_SUPPORTED:
                    self._fail(gpu, exc)
                    return False
                gpu.method = Method.POWER_POLLING
                self._poll_power(gpu)
                self._ensure_poller()
        return True

    def _ensure_poller(self) -> None:
        if not self._start_poller or self._poller is not None or self._closed:
            return
        self._poller = threading.Thread(
            target=self._run_poller, name="jouled-nvml-poller", daemon=True
        )
        self._poller.start()

    def _run_poller(self) -> None:
        while not self._stop.wait(self._poll_interval_s):
            try:
                self.poll_once()
            except Exception:  # the thread must outlive any bug in one poll
                log.exception("nvml: power poll failed")

    # ----- reading -------------------------------------------------------------------------

    def _bound_mj(self, elapsed_s: float) -> int:
        """The most a counter can plausibly advance in ``elapsed_s``, in mJ."""
        return int(self._max_power_w * (max(0.0, elapsed_s) + _COUNTER_SLACK_S) * 1000)

    def _host_busy(self) -> float | None:
        return busy_or_none(self._host_busy_s)

    def _refresh(self, gpu: _Gpu, busy: float | None = None) -> None:
        if (gpu.handle is None or gpu.method is Method.UNKNOWN) and not self._attach(gpu):
            return
        if gpu.method is Method.ENERGY_COUNTER:
            self._read_counter(gpu, busy)
        else:
            # Poll at the read itself, so the reading is current at the tick boundary.
            self._poll_power(gpu)

    def _read_counter(self, gpu: _Gpu, busy: float | None) -> None:
        try:
            cur_mj = int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(gpu.handle))
        except self._errors as exc:
            self._fail(gpu, exc)
            return
        now = self._clock.monotonic()
        was_lost = gpu.lost
        self._ok(gpu)
        base, base_t = gpu.track.base, gpu.track.base_t
        # Back from "GPU is lost": the board was reset, so a lower counter is a restart.
        step = gpu.track.restarted(cur_mj, now) if was_lost else gpu.track.feed(cur_mj, now)
        if step.event is Event.PENDING:
            log.info(
                "nvml: %s energy counter read %d mJ after %s mJ %.3f s earlier, beyond %.0f W: "
                "held until the next read tells a glitch from a reset",
                gpu.domain,
                cur_mj,
                base,
                now - base_t,
                self._max_power_w,
            )
        if step.dropped is not None:
            log.warning(
                "nvml: %s energy counter glitch: one read of %d mJ fits neither the reads "
                "before nor after it; dropped (jouled_domain_glitches_total)",
                gpu.domain,
                step.dropped,
            )
        if step.event is Event.RESET:
            log.warning(
                "nvml: %s energy counter went from %s to %d mJ (driver reload or GPU reset, "
                "confirmed by the read after it or by the board's recovery); counted %d mJ "
                "since the reset",
                gpu.domain,
                base,
                cur_mj,
                step.delta,
            )
        gpu.energy_j += step.delta / 1000
        was = gpu.frozen.frozen
        if gpu.frozen.observe(cur_mj, now, busy) and not was:
            log.warning(
                "nvml: %s energy counter has stayed at %d mJ for %.0f s while the host was "
                "busy: a frozen counter is not a measurement; marked jouled_domain_frozen 1",
                gpu.domain,
                cur_mj,
                now - gpu.frozen.since,
            )

    def _poll_power(self, gpu: _Gpu) -> None:
        try:
            power_mw = int(self._nvml.nvmlDeviceGetPowerUsage(gpu.handle))
        except self._errors as exc:
            self._fail(gpu, exc)
            return
        now = self._clock.monotonic()
        self._ok(gpu)
        power_w = power_mw / 1000
        if not 0 <= power_w <= self._max_power_w:
            log.warning("nvml: %s reported %.1f W: implausible, dropped", gpu.domain, power_w)
            return
        if gpu.power_w is not None and now > gpu.power_t:
            # Trapezoid rule; a transient failure in between is bridged linearly.
            gpu.energy_j += (gpu.power_w + power_w) / 2 * (now - gpu.power_t)
        gpu.power_w, gpu.power_t = power_w, now

    def _fail(self, gpu: _Gpu, exc: BaseException) -> None:
        problem, fix = translate(exc)
        if _code(exc) == _GPU_IS_LOST:
            # After a loss the board restarts from scratch: no bridging across the outage.
            gpu.power_w = None
            if not gpu.lost:
                log.error("nvml: %s (%s) is lost: %s", gpu.domain, gpu.uuid, GPU_LOST_FIX)
            gpu.lost = True
        elif gpu.problem != problem:
            log.warning("nvml: %s: %s (fix: %s)", gpu.domain, problem, fix)
        gpu.problem, gpu.fix = problem, fix

    def _ok(self, gpu: _Gpu) -> None:
        if gpu.problem is not None:
            log.info("nvml: %s readable again", gpu.domain)
        gpu.problem, gpu.fix = None, ""
        gpu.lost = False

    def _processes(self, gpu: _Gpu) -> dict[int, float]:
        if gpu.handle is None or gpu.lost:
            return {}
        try:
            procs = self._nvml.nvmlDeviceGetComputeRunningProcesses(gpu.handle)
        except self._errors as exc:
            log.debug("nvml: %s processes unreadable: %s", gpu.domain, exc)
            return {}
        weights: dict[int, float] = {int(p.pid): 0.0 for p in procs}
        try:
            samples = self._nvml.nvmlDeviceGetProcessUtilization(gpu.handle, gpu.last_seen_us)
        except self._errors as exc:
            # NotFound: no sample since the last call. NotSupported: MIG mode or an old
            # board. pynvml raises NVMLError(0) when NVML returns no samples with success.
            if _code(exc) in (_NOT_FOUND, _NOT_SUPPORTED, _SUCCESS):
                return weights
            log.debug("nvml: %s utilization unreadable: %s", gpu.domain, exc)
            return {}
        sums: dict[int, list[float]] = {}
        for s in samples:
            acc = sums.setdefault(int(s.pid), [0.0, 0.0])
            acc[0] += float(s.smUtil)
            acc[1] += 1
            gpu.last_seen_us = max(gpu.last_seen_us, int(s.timeStamp))
        for pid, (total, n) in sums.items():
            weights[pid] = total / n
        return weights

    def _check_gpu(self, gpu: _Gpu) -> CheckRow:
        target = str(gpu.index)
        if gpu.handle is None or gpu.method is Method.UNKNOWN:
            self._attach(gpu)
        ident = f"{gpu.domain} {gpu.name} {gpu.uuid}"
        if gpu.handle is None or gpu.method is Method.UNKNOWN:
            problem = gpu.problem or "unreadable"
            return CheckRow(self.name, target, False, f"{ident}: {problem}", gpu.fix)
        mig = ", MIG on (board-level energy)" if gpu.mig_enabled else ""
        try:
            if gpu.method is Method.ENERGY_COUNTER:
                energy_mj = int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(gpu.handle))
                value = f"{energy_mj / 1000:.0f} J since the driver loaded"
            else:
                power_mw = int(self._nvml.nvmlDeviceGetPowerUsage(gpu.handle))
                value = f"{power_mw / 1000:.1f} W"
        except self._errors as exc:
            problem, fix = translate(exc)
            return CheckRow(self.name, target, False, f"{ident}, {gpu.method}: {problem}", fix)
        return CheckRow(self.name, target, True, f"{ident}, {gpu.method}, {value}{mig}")


def check_nvml(nvml: Any = None, clock: Clock | None = None) -> list[CheckRow]:
    """``jouled check`` for NVML: one row per GPU, or one row when NVML cannot start."""
    try:
        collector = NvmlCollector(nvml, clock, start_poller=False)
    except CollectorError as exc:
        detail = str(exc.args[0]) if exc.args else type(exc).__name__
        absent = isinstance(exc, HardwareAbsent)
        return [CheckRow("nvml", "-", False, detail, exc.fix, absent=absent)]
    try:
        return collector.check()
    finally:
        collector.close()
