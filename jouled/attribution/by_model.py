"""A workload's energy for one tick, split among the models it served by their work.

Pure functions, no state: the server-metrics stage calls them once per workload and tick.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Literal

from jouled.collectors.server_metrics import Counts

Basis = Literal["gflops", "tokens", "requests", "none"]
# (model, prompt tokens, generated tokens, requests) of one tick -> GFLOPs, or None where
# the model's config is unknown.
GflopsOf = Callable[[str, float, float, float], float | None]


def split_by_work(energy_j: float, work: Mapping[str, float]) -> dict[str, float]:
    """``energy_j`` shared in proportion to ``work`` (model -> work, >= 0).

    The shares add up to ``energy_j`` (the model with the most work takes the last bit of
    rounding); a model with no work gets 0. With no work at all the result is empty: the
    caller keeps the energy. Raises ``ValueError`` on a negative or non-finite input.
    """
    if not math.isfinite(energy_j) or energy_j < 0:
        raise ValueError(f"energy must be finite and >= 0, got {energy_j!r}")
    for model, w in work.items():
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"work of {model!r} must be finite and >= 0, got {w!r}")
    total = math.fsum(work.values())
    if total <= 0:
        return {}
    biggest = max(sorted(work), key=lambda m: work[m])
    out = {m: energy_j * (w / total) for m, w in work.items() if m != biggest}
    out[biggest] = max(0.0, energy_j - math.fsum(out.values()))
    return out


def work_by_model(
    counts: Mapping[str, Counts], gflops_of: GflopsOf | None = None
) -> tuple[Basis, dict[str, float]]:
    """The work each model did in a tick, in one unit for all of them.

    GFLOPs (prefill of the prompt tokens + decode of the generated ones) when every model
    with tokens has a known config; else tokens (prompt + generated); else, where the server
    counts no tokens (a Triton model without the TensorRT-LLM backend), requests.
    """
    tokens = {m: c.input + c.output for m, c in counts.items()}
    if math.fsum(tokens.values()) > 0:
        if gflops_of is not None:
            gflops: dict[str, float] = {}
            for m, c in counts.items():
                if tokens[m] <= 0:
                    continue
                g = gflops_of(m, c.input, c.output, c.requests)
                if g is None or not math.isfinite(g) or g < 0:
                    break
                gflops[m] = g
            else:
                if math.fsum(gflops.values()) > 0:
                    return "gflops", gflops
        return "tokens", {m: t for m, t in tokens.items() if t > 0}
    requests = {m: c.requests for m, c in counts.items() if c.requests > 0}
    if requests:
        return "requests", requests
    return "none", {}


def tick_gflops(costs: Mapping[str, Callable[[int, int], float]]) -> GflopsOf:
    """GFLOPs of a tick's tokens from per-model request costs (``spans.model_configs``:
    ``RequestWork``, GFLOPs of one request from its prompt and generated tokens).

    A server reports token totals, not requests' shapes: the tick's tokens are costed as
    ``max(requests, 1)`` requests of the mean shape. Exact for the per-token matmuls; the
    attention term (quadratic in a request's context) is that of the mean request.
    """

    def of(model: str, prompt: float, generated: float, requests: float) -> float | None:
        cost = costs.get(model)
        if cost is None:
            return None
        n = max(requests, 1.0)
        return n * cost(round(prompt / n), round(generated / n))

    return of
