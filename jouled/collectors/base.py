"""Shared types of all collectors.

A *domain* is one energy meter (a RAPL zone such as package-0 or dram-0, a GPU board, an
estimated CPU). Its *kind* says what it covers, so the sampler can build non-overlapping
host components: package contains core and uncore; psys covers the whole platform.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol


class Source(enum.StrEnum):
    RAPL = "rapl"
    NVML = "nvml"
    ESTIMATE = "estimate"


class Kind(enum.StrEnum):
    """What a domain measures. Only PACKAGE, DRAM, PSYS, GPU and CPU feed host components."""

    PACKAGE = "package"  # a CPU socket: cores + uncore (+ on some CPUs more); not DRAM
    CORE = "core"  # inside PACKAGE
    UNCORE = "uncore"  # inside PACKAGE (integrated GPU on client parts)
    DRAM = "dram"  # memory attached to a socket; outside PACKAGE's energy
    PSYS = "psys"  # the platform: package + dram + the rest of the SoC/board
    GPU = "gpu"  # a discrete GPU board (NVML)
    CPU = "cpu"  # an estimated CPU total (no RAPL)
    MEMORY = "memory"  # an estimated memory total (no RAPL)
    OTHER = "other"  # a zone jouled does not know; exported as a domain only


class Component(enum.StrEnum):
    """Non-overlapping parts of a host's IT energy."""

    CPU = "cpu"
    DRAM = "dram"
    GPU = "gpu"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class DomainReading:
    """Cumulative energy of one domain since the collector started, in joules.

    ``energy_j`` never decreases: wraparound and resets are unfolded by the collector.
    """

    domain: str
    kind: Kind
    source: Source
    energy_j: float
    device: str = ""  # GPU index or socket, for attribution; "" when not applicable
    # The counter has not moved while the host was busy: not a measurement. Its energy is
    # still exported (flat) but it covers no host component, so an estimate can take over.
    frozen: bool = False


@dataclass(frozen=True, slots=True)
class Sample:
    """What one ``read()`` of a collector returns."""

    readings: tuple[DomainReading, ...]
    # Cumulative count of counter resets detected per domain (driver reloads, GPU resets).
    resets: dict[str, int] = field(default_factory=dict)
    # Domains that could not be read this time, with a reason; the others are still valid.
    problems: dict[str, str] = field(default_factory=dict)
    # Cumulative count of absurd single reads dropped per domain (never a baseline).
    glitches: dict[str, int] = field(default_factory=dict)
    # Per domain: its power at zero load in watts, where the collector knows it (the
    # estimate's model does; a meter must learn it).
    idle_w: dict[str, float] = field(default_factory=dict)
    # A collector held in reserve (collectors.standby) that is not needed now: no readings,
    # and no collector_up series, until it takes over.
    standby: bool = False


@dataclass(frozen=True, slots=True)
class CheckRow:
    """One line of ``jouled check``: a domain (or the collector itself) and what to do."""

    collector: str
    target: str  # zone path, GPU index, or "-" for the collector as a whole
    readable: bool
    detail: str  # what was read (e.g. "package-0, 43.2 W") or what failed
    fix: str = ""  # the exact remedy when not readable: what to do, not the problem again
    # The source does not exist here (no powercap tree, no NVIDIA driver): with
    # ``enabled: auto`` that is no failure, and ``jouled check`` shows it as absent.
    absent: bool = False


class CollectorError(Exception):
    """A collector cannot read at all. The message says what failed; ``fix`` how to fix it."""

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.fix = fix

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base} (fix: {self.fix})" if self.fix else base


class HardwareAbsent(CollectorError):
    """The source does not exist on this host (no powercap tree, no NVIDIA driver).

    Not an error in ``auto`` mode: the collector is simply not used (node_exporter's
    ErrNoData sentinel).
    """


class EnergyCollector(Protocol):
    """What the sampler needs of a collector. ``read`` may block briefly (sysfs, NVML): the
    sampler runs it on a worker thread with a timeout, unless the collector has a true
    ``reads_inline`` attribute (its read never blocks: it runs on the event loop)."""

    name: str

    def read(self) -> Sample:
        """Cumulative readings; raises CollectorError when nothing can be read."""
        ...

    def check(self) -> list[CheckRow]:
        """Probe every domain for ``jouled check``; never raises."""
        ...

    def close(self) -> None: ...
