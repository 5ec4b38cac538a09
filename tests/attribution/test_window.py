"""The per-(workload, model) energy-per-GFLOP window (``stage._Window``): the same ratios as
the list-of-buckets window it replaced, in a fraction of the memory."""

from __future__ import annotations

import random
import tracemalloc
from collections import deque

import pytest

from jouled.attribution.stage import _Window


class _ListWindow:
    """The window as it was (a deque of [wall, joules, gflops] lists): the reference."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._buckets: deque[list[float]] = deque()
        self._joules = 0.0
        self._gflops = 0.0

    def add(self, wall: float, joules: float, gflops: float) -> None:
        if self._buckets and self._buckets[-1][0] == wall:
            self._buckets[-1][1] += joules
            self._buckets[-1][2] += gflops
        else:
            self._buckets.append([wall, joules, gflops])
        self._joules += joules
        self._gflops += gflops

    def ratio(self, now: float) -> float | None:
        while self._buckets and self._buckets[0][0] < now - self.seconds:
            _, joules, gflops = self._buckets.popleft()
            self._joules -= joules
            self._gflops -= gflops
        if not self._buckets:
            self._joules = self._gflops = 0.0
            return None
        return self._joules / self._gflops if self._gflops > 0 else None


@pytest.mark.parametrize("seed", range(20))
def test_the_window_answers_exactly_as_the_list_of_buckets_did(seed: int) -> None:
    rng = random.Random(seed)
    seconds = rng.choice([1.0, 5.0, 30.0, 300.0])
    mine, ref = _Window(seconds), _ListWindow(seconds)
    now = 1.8e9
    for _ in range(3000):
        step = rng.random()
        if step < 0.5:  # a settle call's bucket; sometimes two adds at the same wall
            joules = rng.choice([0.0, rng.random() * 50, rng.uniform(1e-9, 1e-6)])
            gflops = rng.choice([0.0, rng.random() * 1e3])
            mine.add(now, joules, gflops)
            ref.add(now, joules, gflops)
        elif step < 0.9:
            got, want = mine.ratio(now), ref.ratio(now)
            assert got == want, (got, want)
        else:
            now += rng.choice([0.5, 1.0, 1.0, 7.0, seconds, 2 * seconds])
        now += rng.choice([0.0, 0.0, 1.0])
    assert mine.ratio(now + 10 * seconds) is None is ref.ratio(now + 10 * seconds)


def test_a_full_window_holds_its_buckets_as_doubles() -> None:
    """50 models' 300 s windows at a 1 s tick: ~2.0 MB as lists of floats (~42 KB a
    window), now ~0.4 MB (24 bytes a bucket, at most 32 expired ones kept)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        windows = [_Window(300.0) for _ in range(50)]
        for t in range(1200):
            for i, w in enumerate(windows):
                w.add(1.8e9 + t, 1.0 + i, 10.0)
                assert w.ratio(1.8e9 + t) == pytest.approx((1.0 + i) / 10.0)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 50 * 10_000, f"{held} bytes for 50 windows"
    assert all(len(w._data) <= 3 * (301 + 32) for w in windows)
