"""An emulated RAPL tree whose power follows the host's CPU load: the demo's and the accuracy
benchmark's known truth."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path


def _host_busy_s() -> float:
    from jouled.collectors.procstat import host_cpu_times

    return host_cpu_times().busy_s


class LoadFollowingRapl:
    """An emulated RAPL tree whose power follows the host's CPU load: a known power model.

    package power = ``package_idle_w`` + ``package_w_per_cpu`` x busy CPUs (from
    /proc/stat), dram likewise. Every CPU-second any process spends thus costs
    ``package_w_per_cpu + dram_w_per_cpu`` joules, which is the truth attribution is
    checked against. Runs in a thread; point jouled at :attr:`class_dir`.
    """

    def __init__(
        self,
        root: Path,
        *,
        package_idle_w: float = 8.0,
        package_w_per_cpu: float = 15.0,
        dram_idle_w: float = 1.5,
        dram_w_per_cpu: float = 1.0,
        step_s: float = 0.02,
        busy_s: Callable[[], float] = _host_busy_s,
    ) -> None:
        from jouled.testing.fake_powercap import FakePowercap

        self.package_idle_w = package_idle_w
        self.package_w_per_cpu = package_w_per_cpu
        self.dram_idle_w = dram_idle_w
        self.dram_w_per_cpu = dram_w_per_cpu
        self.fake = FakePowercap(root)
        self.package = self.fake.add_zone("0", "package-0", package_idle_w)
        self.dram = self.fake.add_zone("0:0", "dram", dram_idle_w)
        self._busy = busy_s
        self._step_s = step_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def class_dir(self) -> Path:
        return self.fake.class_dir

    @property
    def joules_per_cpu_second(self) -> float:
        return self.package_w_per_cpu + self.dram_w_per_cpu

    def _loop(self) -> None:
        last_t, last_busy = time.monotonic(), self._busy()
        while not self._stop.wait(self._step_s):
            now, busy = time.monotonic(), self._busy()
            dt = now - last_t
            if dt <= 0:
                continue
            cpus = max(0.0, busy - last_busy) / dt
            with self.fake.lock:
                self.package.set_power(self.package_idle_w + self.package_w_per_cpu * cpus)
                self.dram.set_power(self.dram_idle_w + self.dram_w_per_cpu * cpus)
                self.fake.advance(dt)
            last_t, last_busy = now, busy

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="fake-rapl", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
