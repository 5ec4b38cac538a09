"""The cost gauges' window sum: the same as summing the window's ticks each time."""

from __future__ import annotations

import random
from collections import deque

import pytest

from jouled.cost.live import _SlidingSum, _WindowTick


def _tick(t1: float, rng: random.Random, zero: bool = False) -> _WindowTick:
    def j() -> float:
        return 0.0 if zero else rng.choice([0.1, 0.2, 0.3, 1e-9, 123.456, rng.random()])

    workloads = {f"w{k}": {"cpu": j(), "host": j()} for k in range(rng.randint(0, 3))}
    return _WindowTick(t1, 1.0, {"cpu": j(), "dram": j(), "host": j()}, workloads)


def test_the_sliding_sum_matches_summing_the_window_every_tick() -> None:
    rng = random.Random(7)
    window, brute = _SlidingSum(), deque[_WindowTick]()
    for i in range(400):
        tick = _tick(float(i), rng)
        window.append(tick)
        brute.append(tick)
        keep = rng.choice([3, 5, 60])  # the window length changes too (a reload)
        while window and window.oldest().t1 <= i - keep:
            assert window.oldest() is brute[0]
            window.popleft()
            brute.popleft()
        total = window.total()
        assert total.seconds == len(brute)
        for c in ("cpu", "dram", "host"):
            assert total.host_j.get(c, 0.0) == pytest.approx(sum(t.host_j[c] for t in brute))
        names = {w for t in brute for w in t.workload_j}
        assert set(total.workload_j) == names
        for w in names:
            want = sum(t.workload_j[w]["cpu"] for t in brute if w in t.workload_j)
            assert total.workload_j[w]["cpu"] == pytest.approx(want)


def test_a_window_of_zeros_sums_to_exactly_zero_after_any_values() -> None:
    rng = random.Random(3)
    window = _SlidingSum()
    for i in range(50):
        window.append(_tick(float(i), rng))
    for i in range(50, 60):  # ten idle ticks; the window keeps the last five
        window.append(_tick(float(i), rng, zero=True))
        while window.oldest().t1 <= i - 5:
            window.popleft()
    total = window.total()
    assert total.seconds == 5.0
    assert all(v == 0.0 for v in total.host_j.values())  # 0.1 + 0.2 - 0.1 - 0.2 would not be
