"""The compiled clock loop of ``ProcessTracker.tick`` (jouled/attribution/_proctick.c): the
processes it hands back are the ones the Python loop must look at, with the readings
``process_cpu_ns`` gives. The tracker on real processes, with it and without it:
tests/attribution/test_tracker_clock.py (the ``clock_loop`` fixture)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import pytest

from jouled.attribution.workloads import process_cpu_ns

_proctick = pytest.importorskip("jouled.attribution._proctick")


@dataclass
class P:
    pid: Any
    workload: str | None = "api"
    by_stat: bool = False
    clock_ns: int | None = None
    last_cpu_s: float | None = 1.0


def _idle_child(procs: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    procs.append(p)
    time.sleep(0.5)  # past its start-up: its clock stands still while it sleeps
    return p


def _dead_pid() -> int:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(10)
    return dead.pid


def test_cpu_ns_is_the_process_clock_that_process_cpu_ns_reads(
    procs: list[subprocess.Popen[bytes]],
) -> None:
    child = _idle_child(procs)
    assert _proctick.cpu_ns(child.pid) == process_cpu_ns(child.pid) > 0
    mine = _proctick.cpu_ns(os.getpid())
    assert mine is not None and abs(mine - time.process_time_ns()) < 5_000_000
    for pid in (0, -1, 2**22 + 1, 2**31, 2**70):
        assert _proctick.cpu_ns(pid) is None
    dead = _dead_pid()
    assert _proctick.cpu_ns(dead) is None or process_cpu_ns(dead) is not None  # (reused)


def test_to_read_leaves_out_only_the_idle_baselined_unsampled_processes(
    procs: list[subprocess.Popen[bytes]],
) -> None:
    child = _idle_child(procs)
    ns = process_cpu_ns(child.pid)
    assert ns
    idle = P(child.pid, clock_ns=ns)
    no_baseline = P(child.pid, clock_ns=ns, last_cpu_s=None)
    moved = P(child.pid, clock_ns=ns - 1)
    never_read = P(child.pid, clock_ns=None)
    by_stat = P(child.pid, clock_ns=ns, by_stat=True)
    released = P(child.pid, clock_ns=ns, workload=None)
    running = P(os.getpid(), clock_ns=1)
    dead = _dead_pid()
    gone = P(dead, clock_ns=ns)
    given = [idle, no_baseline, moved, never_read, by_stat, released, running, gone]
    out = _proctick.to_read(given, {})
    assert [p for p, _ in out] == [no_baseline, moved, never_read, by_stat, running, gone]
    readings = [v for _, v in out]
    assert readings[:3] == [ns, ns, ns]
    assert readings[3] is None  # read by its stat file: no clock reading
    assert readings[4] is not None and readings[4] > ns
    if process_cpu_ns(dead) is None:  # (not reused since)
        assert readings[5] is None
    # A sub-sampled process (in the tracker's active dict) is always handed back.
    assert _proctick.to_read([idle, idle], {child.pid: 3}) == [(idle, ns), (idle, ns)]
    assert _proctick.to_read([idle], {}) == []


def test_to_read_refuses_what_is_not_a_list_of_processes(
    procs: list[subprocess.Popen[bytes]],
) -> None:
    with pytest.raises(TypeError):
        _proctick.to_read((P(1),), {})
    with pytest.raises(TypeError):
        _proctick.to_read([P("1")], {})
    with pytest.raises(AttributeError):
        _proctick.to_read([object()], {})
    child = _idle_child(procs)
    with pytest.raises(TypeError):  # `in` on an int, asked of an idle baselined process
        _proctick.to_read([P(child.pid, clock_ns=process_cpu_ns(child.pid))], 5)
