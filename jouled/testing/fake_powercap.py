"""A faithful fake of the Linux powercap sysfs tree, driven by an emulator.

A *zone* is one RAPL meter (``intel-rapl:0`` is socket 0's package, ``intel-rapl:0:1`` a
subzone of it, such as dram). Its ``energy_uj`` counts microjoules and wraps at
``max_energy_range_uj``. This module lays those files out under a temporary root exactly as
the kernel does, and advances the counters at a known power so readers can be tested.

Layout built under ``root`` (which plays the part of ``/sys``)::

    devices/virtual/powercap/intel-rapl/                  control type (``enabled``)
    devices/virtual/powercap/intel-rapl/intel-rapl:0/     zone: name, energy_uj, ...
    devices/virtual/powercap/intel-rapl/intel-rapl:0/intel-rapl:0:0/   subzone
    class/powercap/intel-rapl -> ../../devices/virtual/powercap/intel-rapl
    class/powercap/intel-rapl:0 -> ../../devices/virtual/powercap/intel-rapl/intel-rapl:0
    class/powercap/intel-rapl:0:0 -> ../../devices/.../intel-rapl:0/intel-rapl:0:0

Point a reader at :attr:`FakePowercap.class_dir` (the fake ``/sys/class/powercap``).

Failure injection. Tests usually run as root here, and root ignores file modes, so
``chmod 000`` alone cannot make a read fail. Rather than patching ``open`` or replacing
``energy_uj`` with something that is not a file (a FIFO would hang a reader, a directory
fails with the wrong errno), readers in jouled take one injectable ``read_text(path)``
function. :meth:`FakePowercap.read_text` is that function: it raises the injected
``PermissionError`` / ``OSError(EIO)`` or returns injected garbage for a zone's files and
otherwise reads the real file. :meth:`FakeZone.deny` also really ``chmod``s the file to 000,
so an unprivileged reader using plain file reads sees the genuine EACCES too.

Run as a program it keeps a tree advancing at wall-clock speed until killed, for
end-to-end tests of the daemon::

    python -m jouled.testing.fake_powercap --root DIR --package-watts 60 \\
        --max-range-uj 180000000 --tick 0.05

Over 400 lines because it emulates the kernel's powercap tree (layout, counters, wraps,
permissions, faults) with its command line, in one module users run.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import shutil
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from jouled.clock import Clock, SystemClock

# Typical of a Xeon/Core package: 32-bit counter x 61.04 µJ energy unit.
DEFAULT_MAX_RANGE_UJ = 262_143_328_850

_MSR_TYPE = "intel-rapl"
_MMIO_TYPE = "intel-rapl-mmio"
_ENERGY_FILE = "energy_uj"
_MODE_ENERGY = 0o400  # root-only since Linux 5.10 (CVE-2020-8694)
_MODE_OTHER = 0o444


@dataclass(frozen=True, slots=True)
class _Fault:
    """What a read of one file returns instead of its content: an errno or a text."""

    errno_code: int | None = None
    text: str | None = None
    once: bool = False  # a single bad read, then the file is read again


def parse_zone_id(path_id: str | Sequence[int]) -> tuple[int, ...]:
    """``"0:a"`` (the kernel's hex suffix) or ``(0, 10)`` → ``(0, 10)``."""
    if isinstance(path_id, str):
        try:
            ids = tuple(int(part, 16) for part in path_id.split(":"))
        except ValueError:
            raise ValueError(f"zone id {path_id!r} is not hex numbers joined by ':'") from None
    else:
        ids = tuple(path_id)
    if not ids or any(i < 0 for i in ids):
        raise ValueError(f"zone id {path_id!r} must be non-negative numbers")
    return ids


def zone_dirname(ids: Sequence[int], mmio: bool = False) -> str:
    """The kernel's name for a zone: ids printed with ``%x``, so the 11th is ``intel-rapl:a``."""
    prefix = _MMIO_TYPE if mmio else _MSR_TYPE
    return prefix + "".join(f":{i:x}" for i in ids)


def _write_atomic(path: Path, text: str, mode: int) -> None:
    # Replace rather than truncate-and-write, so a reader in another process never sees
    # an empty or half-written energy_uj (sysfs reads are atomic; the fake must be too).
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="ascii")
    os.chmod(tmp, mode)
    os.replace(tmp, path)


class FakeZone:
    """One emulated zone. Create it with :meth:`FakePowercap.add_zone`."""

    def __init__(
        self,
        owner: FakePowercap,
        ids: tuple[int, ...],
        *,
        name: str,
        power_w: float,
        max_energy_range_uj: int,
        mmio: bool,
        published_range_uj: int | None = None,
        mirror_of: FakeZone | None = None,
    ) -> None:
        if max_energy_range_uj <= 0:
            raise ValueError("max_energy_range_uj must be positive")
        if power_w < 0:
            raise ValueError("power_w must be non-negative")
        self._owner = owner
        self.ids = ids
        self.name = name
        self.mmio = mmio
        self.max_energy_range_uj = max_energy_range_uj
        self.power_w = power_w
        self._total_uj = 0  # unwrapped truth since creation, integer µJ as the counter
        self._residual_uj = 0.0  # sub-µJ energy not yet counted, so long runs stay exact
        self._counter_origin_uj = 0  # _total_uj at the last reset (counter restarted at 0)
        self.present = True
        # What max_energy_range_uj shows (0 on some kernels); the counter still wraps at
        # max_energy_range_uj, the hardware's real range.
        self.published_range_uj = (
            max_energy_range_uj if published_range_uj is None else published_range_uj
        )
        # Another zone whose counter this one repeats (AMD package-0-die-1 mirroring die-0).
        self.mirror_of = mirror_of
        self.frozen_uj: int | None = None  # freeze(): the counter shows this, whatever is spent

    # -- identity and paths --------------------------------------------------------------
    @property
    def zone_id(self) -> str:
        """The kernel's name, e.g. ``intel-rapl:0:1`` or ``intel-rapl-mmio:0``."""
        return zone_dirname(self.ids, self.mmio)

    @property
    def dir(self) -> Path:
        """The zone's real directory under ``devices/virtual/powercap``."""
        ctype = _MMIO_TYPE if self.mmio else _MSR_TYPE
        path = self._owner.devices_dir / ctype
        for depth in range(1, len(self.ids) + 1):
            path = path / zone_dirname(self.ids[:depth], self.mmio)
        return path

    @property
    def class_path(self) -> Path:
        """The zone's symlink under ``class/powercap``: what readers open."""
        return self._owner.class_dir / self.zone_id

    @property
    def energy_path(self) -> Path:
        return self.class_path / _ENERGY_FILE

    # -- the counter --------------------------------------------------------------------
    @property
    def energy_uj(self) -> int:
        """What ``energy_uj`` holds now: energy since the last reset, modulo the range.

        The real modulus is ``max_energy_range_uj`` plus one energy unit (the MSR counts
        2^32 units and the range is (2^32 - 1) units); like Kepler and node_exporter, the
        fake and the readers use the range itself, so a wrap is exact here and off by one
        unit (about 61 µJ) on hardware.
        """
        if self.frozen_uj is not None:
            return self.frozen_uj
        if self.mirror_of is not None:
            return self.mirror_of.energy_uj
        return (self._total_uj - self._counter_origin_uj) % self.max_energy_range_uj

    @property
    def true_energy_uj(self) -> int:
        """Energy spent since the zone was created: never wraps, survives resets."""
        return self._total_uj

    @property
    def true_energy_j(self) -> float:
        return self._total_uj / 1e6

    def _accrue(self, seconds: float) -> None:
        exact = self.power_w * seconds * 1e6 + self._residual_uj
        whole = math.floor(exact)
        self._residual_uj = exact - whole
        self._total_uj += whole

    # -- what a test does to a zone ------------------------------------------------------
    def set_power(self, power_w: float) -> None:
        if power_w < 0:
            raise ValueError("power_w must be non-negative")
        with self._owner.lock:
            self.power_w = power_w

    def reset(self) -> None:
        """Counter back to 0, as after a driver reload on hardware that clears it."""
        with self._owner.lock:
            self._counter_origin_uj = self._total_uj
            self._owner.sync_energy(self)

    def freeze(self) -> None:
        """The counter stops at its present value while the hardware keeps spending (a VM
        exposing RAPL files that never move). :meth:`thaw` undoes it."""
        with self._owner.lock:
            self.frozen_uj = self.energy_uj

    def thaw(self) -> None:
        with self._owner.lock:
            self.frozen_uj = None
            self._owner.sync_energy(self)

    def glitch_once(self, text: str = "18446744073447456768\n") -> None:
        """The next read of ``energy_uj`` through ``read_text`` returns ``text`` once (a
        driver hiccup: the default is a read reported on a 100 W zone), then reads resume."""
        with self._owner.lock:
            self._owner.set_fault(self, _Fault(text=text, once=True))

    def deny(self) -> None:
        """Reads of ``energy_uj`` fail with EACCES (chmod 000, and via ``read_text``)."""
        with self._owner.lock:
            self._owner.set_fault(self, _Fault(errno_code=errno.EACCES))
            if self.present:
                os.chmod(self.dir / _ENERGY_FILE, 0)

    def fail(self, errno_code: int = errno.EIO) -> None:
        """Reads of ``energy_uj`` through ``read_text`` raise ``OSError(errno_code)``."""
        with self._owner.lock:
            self._owner.set_fault(self, _Fault(errno_code=errno_code))

    def corrupt(self, text: str = "garbage\n") -> None:
        """Reads of ``energy_uj`` through ``read_text`` return ``text``."""
        with self._owner.lock:
            self._owner.set_fault(self, _Fault(text=text))

    def heal(self) -> None:
        """Undo :meth:`deny`, :meth:`fail` and :meth:`corrupt`."""
        with self._owner.lock:
            self._owner.set_fault(self, None)
            if self.present:
                os.chmod(self.dir / _ENERGY_FILE, _MODE_ENERGY)

    def remove(self) -> None:
        """The zone (and its subzones) disappear, as when the driver is unloaded.

        The hardware keeps counting meanwhile: :meth:`FakePowercap.advance` still accrues.
        """
        with self._owner.lock:
            for zone in self._owner.subtree(self):
                zone.present = False
                zone.class_path.unlink(missing_ok=True)
            if self.dir.exists():
                shutil.rmtree(self.dir)

    def restore(self) -> None:
        """The zone (and its subzones) come back with the hardware's current counters."""
        with self._owner.lock:
            for zone in self._owner.subtree(self):
                self._owner.materialize(zone)

    def __repr__(self) -> str:
        return f"FakeZone({self.zone_id}, {self.name!r}, {self.power_w} W)"


class FakePowercap:
    """An emulated powercap tree under ``root`` (the fake ``/sys``).

    Counters move only on :meth:`advance` (deterministic), or at wall-clock speed under
    :meth:`run_realtime`. All mutations hold :attr:`lock`, so a test thread may change
    power while a realtime thread advances.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.devices_dir = self.root / "devices" / "virtual" / "powercap"
        self.class_dir = self.root / "class" / "powercap"
        self.class_dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self._zones: dict[tuple[bool, tuple[int, ...]], FakeZone] = {}
        self._faults: dict[str, _Fault] = {}

    # -- building ------------------------------------------------------------------------
    @property
    def zones(self) -> list[FakeZone]:
        return list(self._zones.values())

    def zone(self, path_id: str | Sequence[int], mmio: bool = False) -> FakeZone:
        return self._zones[(mmio, parse_zone_id(path_id))]

    def add_zone(
        self,
        path_id: str | Sequence[int],
        name: str,
        power_w: float,
        max_energy_range_uj: int = DEFAULT_MAX_RANGE_UJ,
        mmio: bool = False,
        *,
        published_range_uj: int | None = None,
        mirror_of: FakeZone | None = None,
    ) -> FakeZone:
        """Add a zone; ``path_id`` is the kernel's hex suffix (``"0"``, ``"0:1"``, ``"a"``).

        A subzone's parent must exist already, as its directory nests inside the parent's.
        ``published_range_uj`` is what ``max_energy_range_uj`` shows (``0``: the kernel bug;
        the counter still wraps at ``max_energy_range_uj``). ``mirror_of``: this zone's
        counter is that zone's (one meter exposed twice, as on AMD multi-die parts).
        """
        ids = parse_zone_id(path_id)
        key = (mmio, ids)
        with self.lock:
            if key in self._zones:
                raise ValueError(f"zone {zone_dirname(ids, mmio)} exists already")
            if len(ids) > 1 and (mmio, ids[:-1]) not in self._zones:
                raise ValueError(f"add parent {zone_dirname(ids[:-1], mmio)} first")
            zone = FakeZone(
                self,
                ids,
                name=name,
                power_w=power_w,
                max_energy_range_uj=max_energy_range_uj,
                mmio=mmio,
                published_range_uj=published_range_uj,
                mirror_of=mirror_of,
            )
            self._zones[key] = zone
            self._ensure_control_type(mmio)
            self.materialize(zone)
        return zone

    def _ensure_control_type(self, mmio: bool) -> None:
        ctype = _MMIO_TYPE if mmio else _MSR_TYPE
        ctype_dir = self.devices_dir / ctype
        if not ctype_dir.exists():
            ctype_dir.mkdir(parents=True)
            (ctype_dir / "enabled").write_text("1\n", encoding="ascii")
        link = self.class_dir / ctype
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(ctype_dir, self.class_dir))

    def materialize(self, zone: FakeZone) -> None:
        """Write a zone's directory, files and class symlink (internal; used by restore)."""
        zone_dir = zone.dir
        zone_dir.mkdir(parents=True, exist_ok=True)
        files = {
            "name": zone.name,
            "max_energy_range_uj": str(zone.published_range_uj),
            "enabled": "1",
            "constraint_0_name": "long_term",
            # A plausible TDP-ish limit: the zone's power with headroom, at least 1 W.
            "constraint_0_max_power_uw": str(max(1_000_000, int(zone.power_w * 2e6))),
            "constraint_0_power_limit_uw": str(max(1_000_000, int(zone.power_w * 1.5e6))),
            "constraint_0_time_window_us": "27983872",
        }
        for fname, value in files.items():
            _write_atomic(zone_dir / fname, value + "\n", _MODE_OTHER)
        zone.present = True
        self.sync_energy(zone)
        link = zone.class_path
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(zone_dir, self.class_dir))

    def sync_energy(self, zone: FakeZone) -> None:
        """Write the zone's counter to its ``energy_uj`` (internal)."""
        if not zone.present:
            return
        path = zone.dir / _ENERGY_FILE
        fault = self._faults.get(self._fault_key(zone))
        mode = 0 if fault is not None and fault.errno_code == errno.EACCES else _MODE_ENERGY
        _write_atomic(path, f"{zone.energy_uj}\n", mode)

    def subtree(self, zone: FakeZone) -> list[FakeZone]:
        """The zone and every zone nested below it."""
        n = len(zone.ids)
        return [z for z in self._zones.values() if z.mmio == zone.mmio and z.ids[:n] == zone.ids]

    # -- failure injection ---------------------------------------------------------------
    def _fault_key(self, zone: FakeZone) -> str:
        return os.path.realpath(zone.dir / _ENERGY_FILE)

    def set_fault(self, zone: FakeZone, fault: _Fault | None) -> None:
        key = self._fault_key(zone)
        if fault is None:
            self._faults.pop(key, None)
        else:
            self._faults[key] = fault

    def read_text(self, path: Path) -> str:
        """Read a sysfs file as the kernel would answer, with injected faults applied.

        Pass this as ``read_text`` to a collector. The path is resolved, so the
        ``class/powercap`` symlink and the real directory are the same file.
        """
        with self.lock:
            key = os.path.realpath(path)
            fault = self._faults.get(key)
            if fault is not None and fault.once:
                del self._faults[key]
        if fault is not None:
            if fault.text is not None:
                return fault.text
            code = fault.errno_code if fault.errno_code is not None else errno.EIO
            exc_type = PermissionError if code in (errno.EACCES, errno.EPERM) else OSError
            raise exc_type(code, os.strerror(code), str(path))
        return Path(path).read_text(encoding="ascii")

    # -- time ----------------------------------------------------------------------------
    def advance(self, seconds: float) -> None:
        """Every zone spends ``power_w * seconds``; counters wrap modulo their range.

        Removed zones keep counting (the hardware does), but their files are absent.
        """
        if seconds < 0:
            raise ValueError("time never goes backwards")
        with self.lock:
            for zone in self._zones.values():
                zone._accrue(seconds)
            for zone in self._zones.values():  # after all accrue: mirrors show their source
                self.sync_energy(zone)

    def run_realtime(
        self,
        stop: threading.Event,
        tick_s: float = 0.05,
        clock: Clock | None = None,
    ) -> None:
        """Advance by elapsed monotonic time every ``tick_s`` until ``stop`` is set."""
        clock = clock or SystemClock()
        last = clock.monotonic()
        while not stop.wait(tick_s):
            now = clock.monotonic()
            self.advance(now - last)
            last = now

    # -- presets -------------------------------------------------------------------------
    @classmethod
    def typical_server(
        cls,
        root: Path,
        sockets: int = 2,
        *,
        package_w: float = 120.0,
        core_w: float = 80.0,
        dram_w: float = 20.0,
        psys_w: float | None = None,
        max_energy_range_uj: int = DEFAULT_MAX_RANGE_UJ,
    ) -> FakePowercap:
        """``package-N`` at ``intel-rapl:N`` with ``core`` (``:N:0``) and ``dram`` (``:N:1``).

        ``psys_w`` adds a platform zone after the packages, as on Sapphire Rapids.
        """
        fake = cls(root)
        for socket in range(sockets):
            sid = f"{socket:x}"
            fake.add_zone(sid, f"package-{socket}", package_w, max_energy_range_uj)
            fake.add_zone(f"{sid}:0", "core", core_w, max_energy_range_uj)
            fake.add_zone(f"{sid}:1", "dram", dram_w, max_energy_range_uj)
        if psys_w is not None:
            fake.add_zone(f"{sockets:x}", "psys", psys_w, max_energy_range_uj)
        return fake

    @classmethod
    def laptop(
        cls,
        root: Path,
        *,
        package_w: float = 15.0,
        core_w: float = 8.0,
        uncore_w: float = 2.0,
        psys_w: float = 25.0,
        mmio: bool = False,
        max_energy_range_uj: int = DEFAULT_MAX_RANGE_UJ,
    ) -> FakePowercap:
        """``package-0`` (``core``, ``uncore``) and ``psys`` at ``intel-rapl:1``.

        ``mmio`` adds ``intel-rapl-mmio:0`` (``package-0`` again, as on Tiger Lake and
        later laptops), which a reader must not count twice.
        """
        fake = cls(root)
        fake.add_zone("0", "package-0", package_w, max_energy_range_uj)
        fake.add_zone("0:0", "core", core_w, max_energy_range_uj)
        fake.add_zone("0:1", "uncore", uncore_w, max_energy_range_uj)
        fake.add_zone("1", "psys", psys_w, max_energy_range_uj)
        if mmio:
            fake.add_zone("0", "package-0", package_w, max_energy_range_uj, mmio=True)
        return fake


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jouled.testing.fake_powercap",
        description="Keep a fake powercap tree advancing at wall-clock speed until killed.",
    )
    parser.add_argument("--root", type=Path, required=True, help="fake /sys to build")
    parser.add_argument("--sockets", type=int, default=1)
    parser.add_argument("--package-watts", type=float, default=60.0)
    parser.add_argument("--core-watts", type=float, default=None, help="add core subzones")
    parser.add_argument("--dram-watts", type=float, default=None, help="add dram subzones")
    parser.add_argument("--psys-watts", type=float, default=None, help="add a psys zone")
    parser.add_argument("--max-range-uj", type=int, default=DEFAULT_MAX_RANGE_UJ)
    parser.add_argument("--tick", type=float, default=0.05, help="seconds between updates")
    parser.add_argument("--ready-file", type=Path, default=None, help="touched once built")
    args = parser.parse_args(argv)

    fake = FakePowercap(args.root)
    rng = args.max_range_uj
    for socket in range(args.sockets):
        sid = f"{socket:x}"
        fake.add_zone(sid, f"package-{socket}", args.package_watts, rng)
        sub = 0
        for name, watts in (("core", args.core_watts), ("dram", args.dram_watts)):
            if watts is not None:
                fake.add_zone(f"{sid}:{sub:x}", name, watts, rng)
                sub += 1
    if args.psys_watts is not None:
        fake.add_zone(f"{args.sockets:x}", "psys", args.psys_watts, rng)

    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    if args.ready_file is not None:
        args.ready_file.touch()
    print(f"fake powercap at {fake.class_dir}", file=sys.stderr, flush=True)
    fake.run_realtime(stop, tick_s=args.tick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
