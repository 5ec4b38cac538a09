"""benchmarks.wakeup: each figure is a real hand-off between threads, measured, not assumed."""

import threading

from benchmarks.wakeup import measure


def test_each_figure_is_measured_and_a_round_trip_costs_more_than_a_bare_system_call() -> None:
    before = threading.active_count()
    got = measure(rounds=30, pause_s=0.001)
    assert set(got) == {
        "hot_syscall_us",
        "syscall_us",
        "pipe_wake_us",
        "pool_submit_us",
        "round_trip_us",
    }
    for name, q in got.items():
        assert 0 < q["p50"] <= q["p90"], name
    # Two wake-ups, both sides counted, against one system call that wakes no one.
    assert got["round_trip_us"]["p50"] > got["hot_syscall_us"]["p50"]
    # Every thread it started has ended (the pool's, the reader, the echo peer).
    assert threading.active_count() == before
