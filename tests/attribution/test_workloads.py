"""The process tracker against real processes on this machine."""

import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from jouled.attribution.workloads import Matcher, ProcessTracker

BURN = "import sys, time\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end: pass\n"
PARENT = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2], sys.argv[3]])\n"
    "child.wait()\n"
)


@pytest.fixture
def marker() -> str:
    return f"jouled-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        p.kill()
        p.wait(5)


def spawn(procs: list[subprocess.Popen[bytes]], *args: str) -> subprocess.Popen[bytes]:
    p = subprocess.Popen([sys.executable, *args])
    procs.append(p)
    return p


def until(tracker: ProcessTracker, workload: str, n: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tracker.scan()
        if len(tracker.pids_of(workload)) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{workload}: {tracker.pids_of(workload)}")


def test_cmdline_match_includes_worker_children_and_measures_their_cpu(
    marker: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    parent = spawn(procs, "-c", PARENT, BURN, "1.5", marker)
    tracker = ProcessTracker([Matcher("api", cmdline=re.compile(re.escape(marker)))])
    until(tracker, "api", 2)
    pids = tracker.pids_of("api")
    assert parent.pid in pids and len(pids) == 2
    tracker.tick()  # baseline
    time.sleep(0.6)
    tick = tracker.tick()
    # The child burns a whole core (the parent only waits): ~0.6 CPU-s of ~0.6 s.
    assert 0.3 < tick.workload_s["api"] <= 0.6 * 2 + 0.1
    assert tick.host_busy_s >= tick.workload_s["api"] * 0.9
    assert tick.workload_pids["api"] == frozenset(pids)


def test_pid_and_pidfile_rules_and_first_match_wins(
    tmp_path: Path, marker: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    a = spawn(procs, "-c", BURN, "5", marker)
    b = spawn(procs, "-c", BURN, "5", marker)
    pidfile = tmp_path / "b.pid"
    pidfile.write_text(f"{b.pid}\n")
    tracker = ProcessTracker(
        [
            Matcher("by-pid", pids=frozenset([a.pid])),
            Matcher("by-pidfile", pidfile=pidfile),
            Matcher("by-cmdline", cmdline=re.compile(re.escape(marker))),
        ]
    )
    tracker.scan()
    assert tracker.workload_of(a.pid) == "by-pid"
    assert tracker.workload_of(b.pid) == "by-pidfile"
    assert tracker.pids_of("by-cmdline") == set()  # nothing is counted twice


def test_exited_processes_leave_the_workload_empty(
    marker: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    p = spawn(procs, "-c", BURN, "0.3", marker)
    tracker = ProcessTracker([Matcher("short", cmdline=re.compile(re.escape(marker)))])
    until(tracker, "short", 1)
    p.wait(10)
    tick = tracker.tick()
    assert tick.workload_pids["short"] == frozenset()
    assert tick.workload_s["short"] == 0.0
    assert tracker.workload_of(p.pid) is None


def test_cgroup_and_systemd_unit_rules_use_the_injected_reader(
    marker: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    p = spawn(procs, "-c", BURN, "5", marker)
    q = spawn(procs, "-c", BURN, "5", marker)
    cgroups = {
        p.pid: "/system.slice/inference.service",
        q.pid: "/kubepods.slice/kubepods-pod1.slice/cri-containerd-abc.scope",
    }
    tracker = ProcessTracker(
        [
            Matcher("unit", systemd_unit="inference.service"),
            Matcher("pod", cgroup="/kubepods.slice/kubepods-pod1.slice"),
        ],
        read_cgroup=lambda pid: cgroups.get(pid, "/user.slice"),
    )
    tracker.scan()
    assert tracker.workload_of(p.pid) == "unit"
    assert tracker.workload_of(q.pid) == "pod"
