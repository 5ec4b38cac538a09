"""With no workload configured the tracker does not list /proc every tick (the idle daemon),
and still answers whether a PID is visible (the NVML unseen-process check)."""

from __future__ import annotations

from pathlib import Path

from jouled.attribution.workloads import ProcessTracker, ProcFS


class _CountingProc(ProcFS):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.listed = 0

    def pids(self) -> set[int]:
        self.listed += 1
        return super().pids()


def test_no_workloads_no_listing_and_visibility_still_answers(tmp_path: Path) -> None:
    proc = _CountingProc(tmp_path)
    tracker = ProcessTracker([], proc=proc, host_busy_s=lambda: 0.0)
    for t in (1.0, 2.0, 3.0):
        cpu = tracker.tick(t)
    assert proc.listed == 0
    assert cpu.workload_s == {} and cpu.workload_pids == {}
    (tmp_path / "42").mkdir()
    assert tracker.visible(42) and not tracker.visible(43)
