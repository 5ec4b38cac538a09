"""The server-metrics stage's books under hostile page sequences (hypothesis): whatever the
server sends (restarts of one model or all, duplicated series, garbage, counts past 2^53,
outages, more models than the cap), the workload's energy = models + unserved + pending
after every tick, every total stays finite and >= 0, and the models stay under the cap."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jouled.attribution.server_stage import ServerMetricsStage
from jouled.clock import FakeClock
from jouled.config import ServerMetricsConfig
from tests.attribution.test_server_stage import Driver, books, config

TYPE = "# TYPE vllm:prompt_tokens_total counter\n"

Op = tuple[str, int, int]  # (what, model index, amount)
OPS = st.one_of(
    st.tuples(st.just("serve"), st.integers(0, 7), st.sampled_from([0, 1, 7, 1000, 2**50])),
    st.tuples(st.just("back"), st.integers(0, 7), st.integers(0, 5)),  # one model restarts
    st.tuples(
        st.sampled_from(["restart", "down", "garbage", "dup", "huge"]), st.just(0), st.just(0)
    ),
)


def page(counts: dict[str, int]) -> str:
    return TYPE + "".join(
        f'vllm:prompt_tokens_total{{model_name="{m}"}} {v}\n' for m, v in counts.items()
    )


async def scenario(ops: list[Op], joules: list[float], cap: int, carry: float) -> None:
    counts: dict[str, int] = {"m0": 0}
    queue = list(ops)
    served = 0  # every token the server counted: jouled never counts more

    async def fetch(_cfg: ServerMetricsConfig) -> str:
        nonlocal served
        what, i, n = queue.pop(0) if queue else ("serve", 0, 1)
        m = f"m{i}"
        if what in ("serve", "dup"):
            counts[m] = counts.get(m, 0) + n
            served += n
        elif what == "back":
            counts[m] = n
            served += n
        elif what == "restart":
            counts.clear()
            counts["m0"] = 0
        elif what == "down":
            raise ConnectionResetError("the server went away")
        elif what == "garbage":
            return "\x00\xff not a page {{{"
        elif what == "dup":
            return page(counts) + page(counts)
        elif what == "huge":
            return page({**counts, "m8": 1.7e308, "m9": 1.7e308})
        return page(counts)

    clock = FakeClock()
    cfg: Any = config("http://127.0.0.1:1/metrics", carry_seconds=carry)
    spans = cfg.spans.model_copy(update={"max_models_per_workload": cap})
    stage = ServerMetricsStage(cfg.model_copy(update={"spans": spans}), clock, fetch=fetch)
    d = Driver(stage, clock, "chat")
    try:
        for j in joules:
            s = await d.tick(j)
            assert math.isclose(books(s, "chat"), d.given, rel_tol=1e-9, abs_tol=1e-9)
            for table in (s.model_energy_j, s.tokens, s.requests):
                assert all(math.isfinite(v) and v >= 0 for v in table.values())
            assert len({m for (_w, m) in s.model_energy_j}) <= cap + 1  # + "other"
            assert len({m for (_w, m, _k) in s.tokens}) <= cap + 1
            assert math.fsum(s.tokens.values()) <= served
    finally:
        await stage.close()


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    ops=st.lists(OPS, min_size=1, max_size=25),
    joules=st.lists(st.sampled_from([0.0, 1e-9, 1.0, 37.5, 1e6]), min_size=2, max_size=25),
    cap=st.sampled_from([1, 3, 50]),
    carry=st.sampled_from([0.0, 3.0, 60.0]),
)
def test_books_balance_whatever_the_server_sends(
    ops: list[Op], joules: list[float], cap: int, carry: float
) -> None:
    asyncio.run(scenario(ops, joules, cap, carry))
