"""The thesis's three request scenarios (Appendix A) and Poisson arrivals, as plans."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# Short news items, as the thesis's scenarios classify news; Appendix A drew from four texts.
DEFAULT_TEXTS: tuple[str, ...] = (
    "Central bank holds interest rates steady as inflation cools for a third month.",
    "Striker scores twice in stoppage time to send the champions into the semi-final.",
    "Chipmaker unveils a low-power processor aimed at data-centre inference workloads.",
    "Parliament passes the budget after a late-night vote on energy subsidies.",
    "Storm warnings issued for the coast as heavy rain and strong winds approach.",
    "Quarterly earnings beat forecasts, sending the retailer's shares up nine percent.",
    "Researchers report a battery chemistry that charges in under ten minutes.",
    "Film festival opens with a documentary about the last glaciers of the Alps.",
)

SCENARIO_REQUESTS = {1: 500, 2: 10, 3: 1}
SCENARIO_TEXTS_PER_REQUEST = {1: 1, 2: 10, 3: 500}
SCENARIO2_PAUSE_S = 2.0
DEFAULT_URL = "http://127.0.0.1:8080/predict"


class LoadgenError(Exception):
    """A problem with the arguments or the target; ``str()`` is shown to the user."""


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    texts: tuple[str, ...]
    pause_after_s: float  # scenario mode: sleep after the response, as the thesis's script


def body_of(texts: Sequence[str]) -> dict[str, Any]:
    return {"instances": [{"text": t} for t in texts]}


def plan_scenario(
    scenario: int,
    seed: int = 42,
    texts: Sequence[str] = DEFAULT_TEXTS,
    *,
    pause_scale: float = 1.0,
) -> list[PlannedRequest]:
    """The thesis's scenario as a list of requests, drawn deterministically from ``seed``.

    Scenario 1's pause is ``(RANDOM % 1000 + 1)`` ms as in Appendix A (1 to 1000 ms).
    ``pause_scale`` shrinks the pauses for quick runs (the demo); 1.0 is the thesis.
    """
    if scenario not in SCENARIO_REQUESTS:
        raise LoadgenError(f"unknown scenario {scenario!r}: choose 1, 2 or 3")
    if not texts:
        raise LoadgenError("no texts to send")
    if pause_scale < 0:
        raise LoadgenError("pause scale must be >= 0")
    rng = random.Random(seed)
    per = SCENARIO_TEXTS_PER_REQUEST[scenario]
    out = []
    for _ in range(SCENARIO_REQUESTS[scenario]):
        batch = tuple(rng.choice(texts) for _ in range(per))
        if scenario == 1:
            pause = (rng.randrange(1000) + 1) / 1000.0
        elif scenario == 2:
            pause = SCENARIO2_PAUSE_S
        else:
            pause = 0.0
        out.append(PlannedRequest(batch, pause * pause_scale))
    return out


def poisson_arrivals(rate_per_s: float, seed: int, limit_s: float) -> Iterable[float]:
    """Arrival offsets (seconds from start) of a Poisson process, up to ``limit_s``."""
    if rate_per_s <= 0:
        raise LoadgenError("rate must be > 0 requests per second")
    rng = random.Random(seed)
    t = 0.0
    while True:
        t += rng.expovariate(rate_per_s)
        if t > limit_s:
            return
        yield t
