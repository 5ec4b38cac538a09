"""The tracker reads a workload process's CPU clock each tick and its ``stat`` file only when
the clock moved: the answers stay those of the ``stat`` files (identity, exec, CPU), and a
process that has not run costs no file read. The same gate spares the PID-reuse re-checks
of the host's other processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jouled.attribution.workloads import Matcher, ProcessTracker, ProcFS, Stat, process_cpu_ns
from tests.attribution.test_workloads import BURN, FakeProc

HZ = os.sysconf("SC_CLK_TCK")


class ClockProc(FakeProc):
    """A fake /proc with a CPU clock the test sets (pid -> ns) and a count of stat reads."""

    def __init__(self, root: Path) -> None:
        self.clock_ns: dict[int, int] = {}
        super().__init__(root)
        self._clock_opt = self.clock_ns.get
        self.reads: list[int] = []

    def stat(self, pid: int, *, keep: bool = False) -> Stat | None:
        self.reads.append(pid)
        return super().stat(pid, keep=keep)

    def cpu(self, pid: int) -> tuple[int, float, bytes] | None:
        self.reads.append(pid)
        return super().cpu(pid)


def test_idle_workload_processes_are_not_read_and_cpu_comes_from_the_clock(
    tmp_path: Path,
) -> None:
    fs = ClockProc(tmp_path / "proc")
    fs.put(100, 1, 5000, 0, "python", "python serve.py")
    fs.put(101, 100, 5001, 0, "python", "python worker.py")
    fs.clock_ns.update({100: 2_000_000_000, 101: 7_000_000})
    tracker = ProcessTracker([Matcher("api", cmdline=re.compile("serve.py"))], proc=fs)
    tracker.tick()
    assert tracker.pids_of("api") == {100, 101}
    fs.reads.clear()
    tick = tracker.tick()
    assert fs.reads == []  # neither ran: no file read
    assert tick.workload_pids["api"] == frozenset({100, 101})
    assert tick.workload_s["api"] == 0.0
    # The worker runs 1.25 s (its stat file says 3 ticks: the clock's ns count, not those).
    fs.clock_ns[101] += 1_250_000_000
    fs.put(101, 100, 5001, 3, "python", "python worker.py")
    tick = tracker.tick()
    assert fs.reads == [101]
    assert tick.workload_s["api"] == pytest.approx(1.25)
    fs.reads.clear()
    assert tracker.tick().workload_s["api"] == 0.0 and fs.reads == []


def test_a_reused_pid_whose_clock_moved_is_a_new_process(tmp_path: Path) -> None:
    fs = ClockProc(tmp_path / "proc")
    fs.put(100, 1, 5000, 0, "python", "python serve.py --api")
    fs.put(101, 100, 5001, 0, "python", "python worker.py")
    fs.clock_ns.update({100: 10**9, 101: 10**9})
    tracker = ProcessTracker([Matcher("api", cmdline=re.compile("serve.py"))], proc=fs)
    tracker.tick()
    # The server exits; a busy stranger gets its pid (its clock is its own CPU time).
    fs.kill(100)
    fs.put(100, 1, 9999, 5000, "bash", "bash")
    fs.clock_ns[100] = 50 * 10**9
    tick = tracker.tick()
    assert tick.workload_pids["api"] == frozenset({101})
    assert tracker.workload_of(100) is None
    assert tick.workload_s["api"] == 0.0  # the stranger's 49 s are not the workload's


def test_an_exited_process_whose_clock_fails_is_forgotten(tmp_path: Path) -> None:
    fs = ClockProc(tmp_path / "proc")
    fs.put(100, 1, 5000, 0, "python", "python serve.py")
    fs.clock_ns[100] = 10**9
    tracker = ProcessTracker([Matcher("api", cmdline=re.compile("serve.py"))], proc=fs)
    tracker.tick()
    fs.kill(100)
    del fs.clock_ns[100]
    assert tracker.tick().workload_pids["api"] == frozenset()


def test_a_workload_process_that_ran_and_execd_is_matched_again(tmp_path: Path) -> None:
    fs = ClockProc(tmp_path / "proc")
    fs.put(100, 1, 5000, 0, "python", "python serve.py")
    fs.clock_ns[100] = 10**9
    tracker = ProcessTracker([Matcher("api", cmdline=re.compile("serve.py"))], proc=fs)
    tracker.tick()
    fs.put(100, 1, 5000, 0, "sleep", "sleep 1000")  # exec'd into something else
    fs.clock_ns[100] += 1_000_000  # which it can only do by running
    tick = tracker.tick()
    assert tick.workload_pids["api"] == frozenset()
    assert tracker.workload_of(100) is None


def test_the_reuse_recheck_reads_only_processes_whose_clock_moved(tmp_path: Path) -> None:
    fs = ClockProc(tmp_path / "proc")
    fs.put(100, 1, 5000, 0, "python", "python serve.py")
    for pid in range(200, 230):
        fs.put(pid, 1, 6000, 0, "sleep", "sleep 999")
        fs.clock_ns[pid] = 10**6
    tracker = ProcessTracker(
        [Matcher("api", cmdline=re.compile("serve.py"))], proc=fs, recheck_every=3
    )
    tracker.tick()
    fs.reads.clear()
    for _ in range(3):  # every slot of the rotation comes round: nothing has run
        tracker.tick()
    assert [p for p in fs.reads if p >= 200] == []
    # 207 runs and exec's into the server: its slot's re-check reads it and claims it.
    fs.put(207, 1, 6000, 0, "python", "python serve.py --port 9")
    fs.clock_ns[207] += 5_000_000
    for _ in range(3):
        tracker.tick()
    assert 207 in fs.reads
    assert tracker.workload_of(207) == "api"
    assert [p for p in fs.reads if p >= 200 and p != 207] == []


def test_without_a_clock_every_process_is_read(tmp_path: Path) -> None:
    fs = ClockProc(tmp_path / "proc")
    fs._clock_opt = False
    assert fs.cpu_clock is None
    fs.put(100, 1, 5000, 0, "python", "python serve.py")
    tracker = ProcessTracker([Matcher("api", cmdline=re.compile("serve.py"))], proc=fs)
    tracker.tick()
    fs.reads.clear()
    tracker.tick()
    assert fs.reads == [100]


def test_a_process_whose_clock_fails_is_counted_by_its_stat_file(tmp_path: Path) -> None:
    fs = ClockProc(tmp_path / "proc")
    fs.put(100, 1, 5000, 0, "python", "python serve.py")  # its clock never answers
    tracker = ProcessTracker([Matcher("api", cmdline=re.compile("serve.py"))], proc=fs)
    tracker.tick()
    tracker.tick()  # the clock fails, the file answers: stat from here on, a new baseline
    fs.put(100, 1, 5000, 40, "python", "python serve.py")
    assert tracker.tick().workload_s["api"] == pytest.approx(40 / HZ)
    fs.put(100, 1, 5000, 100, "python", "python serve.py")
    assert tracker.tick().workload_s["api"] == pytest.approx(60 / HZ)


def test_a_clock_of_zero_proves_nothing(tmp_path: Path) -> None:
    # A process seen before it first ran: a stranger at its pid could show 0 too.
    fs = ClockProc(tmp_path / "proc")
    fs.put(100, 1, 5000, 0, "python", "python serve.py")
    fs.clock_ns[100] = 0
    tracker = ProcessTracker([Matcher("api", cmdline=re.compile("serve.py"))], proc=fs)
    tracker.tick()
    fs.reads.clear()
    fs.kill(100)
    fs.put(100, 1, 9999, 0, "bash", "bash")  # not yet run either
    tick = tracker.tick()
    assert fs.reads == [100]
    assert tick.workload_pids["api"] == frozenset()


def test_losing_the_clock_starts_every_process_from_a_new_baseline(tmp_path: Path) -> None:
    fs = ClockProc(tmp_path / "proc")
    fs.put(100, 1, 5000, 7, "python", "python serve.py")
    fs.clock_ns[100] = 123_456_789_000  # 123 s by the clock, 7 ticks by the file
    tracker = ProcessTracker([Matcher("api", cmdline=re.compile("serve.py"))], proc=fs)
    tracker.tick()
    fs.clock_ns[100] += 10**9
    assert tracker.tick().workload_s["api"] == pytest.approx(1.0)
    fs._clock_opt = False  # e.g. a forked child that cannot read it
    fs._clock = None
    fs.put(100, 1, 5000, 9, "python", "python serve.py")
    assert tracker.tick().workload_s["api"] == 0.0  # not 9 ticks - 124 s, nor the reverse
    fs.put(100, 1, 5000, 30, "python", "python serve.py")
    assert tracker.tick().workload_s["api"] == pytest.approx(21 / HZ)
    fs._clock_opt = fs.clock_ns.get  # and back: not 124 s - 30 ticks either
    fs._clock = None
    assert tracker.tick().workload_s["api"] == 0.0
    fs.clock_ns[100] += 2 * 10**9
    assert tracker.tick().workload_s["api"] == pytest.approx(2.0)


# --- on the real kernel ---

# (the fixtures ``marker`` and ``procs`` come from tests/attribution/conftest.py)


def test_the_process_clock_is_the_kernels_cpu_time() -> None:
    assert ProcFS().cpu_clock is not None  # a procfs of this PID namespace
    assert ProcFS(clock=False).cpu_clock is None
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
    mine = process_cpu_ns(os.getpid())
    assert mine is not None
    assert abs(mine - time.process_time_ns()) < 5_000_000
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(10)
    assert process_cpu_ns(dead.pid) is None or dead.pid in ProcFS().pids()  # (reused)


def test_real_processes_idle_ones_unread_a_busy_ones_cpu_counted(
    clock_loop: str, marker: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    reads: list[int] = []

    class Counting(ProcFS):
        def cpu(self, pid: int) -> tuple[int, float, bytes] | None:
            reads.append(pid)
            return super().cpu(pid)

    idle = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", marker])
        for _ in range(3)
    ]
    procs.extend(idle)
    fs = Counting()
    tracker = ProcessTracker([Matcher("api", cmdline=re.compile(re.escape(marker)))], proc=fs)
    deadline = time.monotonic() + 10
    while len(tracker.pids_of("api")) < 3 and time.monotonic() < deadline:
        tracker.tick()
        time.sleep(0.2)
    time.sleep(0.5)  # past their start-up
    tracker.tick()
    reads.clear()
    assert tracker.tick().workload_pids["api"] == frozenset(p.pid for p in idle)
    assert reads == []
    busy = subprocess.Popen([sys.executable, "-c", BURN, "1.0", marker])
    procs.append(busy)
    total = profiled = 0.0
    deadline = time.monotonic() + 10
    while busy.poll() is None and time.monotonic() < deadline:
        tick = tracker.tick(time.monotonic())
        total += tick.workload_s["api"]
        profiled += sum(tick.profile.get("api", ()))
        time.sleep(0.05)
        tracker.subsample(time.monotonic())  # active processes only: the busy one
        time.sleep(0.05)
    seen_before_exit = total
    busy.wait(10)
    assert busy.pid in reads
    # Its first tick only learns where its clock stood; about 1 s of CPU follows.
    assert 0.5 < seen_before_exit < 1.3
    # Active from its first CPU on, it is sub-sampled: the profile cuts what followed.
    assert 0.0 < profiled <= total + 1e-9
    assert set(reads) - {busy.pid} <= {p.pid for p in idle}
    idle[0].kill()
    idle[0].wait(5)
    assert tracker.tick().workload_pids["api"] == frozenset(p.pid for p in idle[1:])


def test_a_real_workload_process_that_execs_away_is_released(
    clock_loop: str, marker: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    code = "import os, time\ntime.sleep(1.0)\nos.execvp('sleep', ['sleep', '30'])\n"
    p = subprocess.Popen([sys.executable, "-c", code, marker])
    procs.append(p)
    tracker = ProcessTracker([Matcher("api", cmdline=re.compile(re.escape(marker)))])
    tracker.tick()
    deadline = time.monotonic() + 5
    while tracker.workload_of(p.pid) != "api" and time.monotonic() < deadline:
        time.sleep(0.05)
        tracker.tick()
    assert tracker.workload_of(p.pid) == "api"
    deadline = time.monotonic() + 10
    while tracker.workload_of(p.pid) == "api" and time.monotonic() < deadline:
        time.sleep(0.1)
        tracker.tick()
    assert tracker.workload_of(p.pid) is None
    assert p.poll() is None  # released while alive, as `sleep 30`
