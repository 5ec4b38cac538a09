"""Real tick, snapshot and attribution objects for the cost stage, built by hand."""

from __future__ import annotations

from collections.abc import Mapping

from jouled.pipeline.attribution import AttributionSnapshot, RequestStats
from jouled.pipeline.snapshot import EMPTY, Snapshot, frozen
from jouled.pipeline.tick import Tick

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def tick(seq: int, host: Mapping[tuple[str, str], float], seconds: float = 1.0) -> Tick:
    return Tick(
        seq=seq,
        t0=(seq - 1) * seconds,
        t1=seq * seconds,
        w0=T0 + (seq - 1) * seconds,
        w1=T0 + seq * seconds,
        domain_j=frozen({}),
        host_j=frozen(host),
        gpu_j=frozen({}),
    )


def attribution(
    workload_j: Mapping[tuple[str, str, str], float],
    requests: Mapping[tuple[str, str], tuple[int, float, float]] | None = None,
) -> AttributionSnapshot:
    return AttributionSnapshot(
        workload_energy_j=frozen(workload_j),
        requests=frozen(
            {k: RequestStats(n, j, (n,), g) for k, (n, j, g) in (requests or {}).items()}
        ),
    )


def snapshot(section: AttributionSnapshot | None) -> Snapshot:
    from dataclasses import replace

    return replace(EMPTY, attribution=section)


def stated_factor(source: str, boundary: str = "operational") -> dict[str, object]:
    """A cost.grid_intensity block of 300 gCO2e/kWh for zone DE with its provenance."""
    return {
        "value": 300,
        "factor_type": "average",
        "boundary": boundary,
        "zone": "DE",
        "source": source,
    }
