"""One tick: the energy spent during one interval, as the sampler hands it to the stages."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0
