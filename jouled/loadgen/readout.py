"""Reading jouled: its counters before and after a run, turned into joules per request."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MetricKey = tuple[str, tuple[tuple[str, str], ...]]


def parse_metrics(text: str) -> dict[MetricKey, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[MetricKey, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def _sum(m: Mapping[MetricKey, float], name: str, where: Callable[[dict[str, str]], bool]) -> float:
    return math.fsum(v for (n, lab), v in m.items() if n == name and where(dict(lab)))


ALL_WORKLOADS = "(all)"  # EnergyReport.workload without --workload (and in the JSON)


@dataclass(frozen=True, slots=True)
class EnergyReport:
    """Energy over a run from jouled's counters (after - before), for one workload or all."""

    workload: str
    requests_settled: float
    # The models' energy (jouled_model_energy_joules_total): the settled spans' energy, or
    # in server-metrics mode the workload's energy split by the work its server reported.
    request_energy_j: float
    request_gflops: float
    workload_energy_j: float  # all the workload's active energy over the run (thesis Eq. 4.3)
    sources: tuple[str, ...]  # rapl, nvml, estimate: what the joules rest on
    texts: int
    spans_late: float = 0.0  # arrived after their energy settled: never counted

    @property
    def joules_per_request(self) -> float:
        return self.request_energy_j / self.requests_settled if self.requests_settled else math.nan

    @property
    def joules_per_text(self) -> float:
        return self.request_energy_j / self.texts if self.texts else math.nan

    @property
    def gflops_per_request(self) -> float:
        """NaN (shown n/a) when no request reported its work: unknown, not 0 GFLOPs."""
        if not self.requests_settled or self.request_gflops <= 0:
            return math.nan
        return self.request_gflops / self.requests_settled

    @property
    def estimated(self) -> bool:
        return "estimate" in self.sources

    @property
    def what(self) -> str:
        """``all workloads`` or ``workload NAME``, for the summary's heading."""
        return "all workloads" if self.workload == ALL_WORKLOADS else f"workload {self.workload}"


def energy_report(
    before: Mapping[MetricKey, float],
    after: Mapping[MetricKey, float],
    *,
    workload: str | None,
    texts: int,
) -> EnergyReport:
    def mine(lab: dict[str, str]) -> bool:
        return workload is None or lab.get("workload") == workload

    def delta(name: str) -> float:
        return _sum(after, name, mine) - _sum(before, name, mine)

    sources = sorted(
        {
            dict(lab).get("source", "")
            for (n, lab), v in after.items()
            if n == "jouled_workload_energy_joules_total"
            and mine(dict(lab))
            and v - before.get((n, lab), 0.0) > 0
        }
        - {""}
    )
    return EnergyReport(
        workload=workload or ALL_WORKLOADS,
        requests_settled=delta("jouled_requests_total"),
        # Not jouled_request_energy_joules_sum: spans only, 0 J in server-metrics mode.
        request_energy_j=delta("jouled_model_energy_joules_total"),
        request_gflops=delta("jouled_request_gflops_total"),
        workload_energy_j=delta("jouled_workload_energy_joules_total"),
        sources=tuple(sources),
        texts=texts,
        spans_late=after.get(("jouled_spans_late_total", ()), 0.0)
        - before.get(("jouled_spans_late_total", ()), 0.0),
    )


async def fetch_metrics(session: Any, base_url: str) -> dict[MetricKey, float]:
    async with session.get(base_url.rstrip("/") + "/metrics") as resp:
        resp.raise_for_status()
        return parse_metrics(await resp.text())


async def wait_settled(
    session: Any,
    base_url: str,
    before: Mapping[MetricKey, float],
    *,
    workload: str | None,
    expected_requests: int,
    timeout_s: float,
    say: Callable[[str], None] | None = None,
) -> dict[MetricKey, float]:
    """Metrics once the run's spans have settled (or at ``timeout_s``, whichever first).

    ``say`` (e.g. a print to stderr) hears what is waited for, and how it ended: the wait
    lasts about ``spans.settle_seconds`` and is never silent.
    """
    if say is not None:
        say(
            f"waiting (up to {timeout_s:g} s) for jouled to settle the run's "
            f"{expected_requests} request(s): a span counts once its energy's ticks close "
            "(spans.settle_seconds) ..."
        )
    started = time.monotonic()
    deadline = started + timeout_s
    while True:
        after = await fetch_metrics(session, base_url)
        settled = energy_report(before, after, workload=workload, texts=0).requests_settled
        pending = after.get(("jouled_spans_pending", ()), 0.0)
        if (settled >= expected_requests and pending == 0) or time.monotonic() >= deadline:
            if say is not None:
                say(
                    f"jouled settled {settled:.0f} of {expected_requests} request(s) in "
                    f"{time.monotonic() - started:.1f} s"
                )
            return after
        await asyncio.sleep(0.25)
