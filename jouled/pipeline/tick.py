"""One tick: the energy spent during one interval, as the sampler hands it to the stages."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

DomainKey = tuple[str, str]  # (domain, source)
HostKey = tuple[str, str]  # (component, source)


@dataclass(frozen=True, slots=True)
class Tick:
    """Energy spent during one interval, handed to the stages after the sampler."""

    seq: int
    t0: float  # monotonic start
    t1: float  # monotonic end
    w0: float  # wall-clock start (unix seconds), for matching spans
    w1: float
    domain_j: Mapping[DomainKey, float]
    host_j: Mapping[HostKey, float]
    # GPU index -> joules this tick, for per-GPU attribution.
    gpu_j: Mapping[str, float]
    # Host components whose zero-load power is known without learning it (the estimate's
    # own idle figure), in watts: attribution uses it as idle power from the first tick.
    known_idle_w: Mapping[HostKey, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0
