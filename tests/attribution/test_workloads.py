"""The process tracker against real processes on this machine."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jouled.attribution.workloads import Matcher, ProcessTracker, ProcFS

BURN = "import sys, time\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end: pass\n"
PARENT = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2], sys.argv[3]])\n"
    "child.wait()\n"
)


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


def test_a_pidfile_that_starts_naming_a_process_already_seen_claims_it(
    tmp_path: Path, marker: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    p = spawn(procs, "-c", BURN, "5", marker)
    pidfile = tmp_path / "api.pid"
    tracker = ProcessTracker([Matcher("api", pidfile=pidfile)])
    tracker.scan()  # p is seen first as a process of no workload
    assert tracker.workload_of(p.pid) is None
    pidfile.write_text(f"{p.pid}\n")
    tracker.scan()
    assert tracker.workload_of(p.pid) == "api"


@pytest.mark.timeout(20)
def test_a_pidfile_replaced_by_a_fifo_or_a_huge_file_never_blocks_the_scan(
    tmp_path: Path, marker: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    # The pidfile is written by the workload's own user: it may put a FIFO there (a plain
    # read would block the tick until a writer came) or a file of gigabytes.
    p = spawn(procs, "-c", BURN, "5", marker)
    pidfile = tmp_path / "api.pid"
    tracker = ProcessTracker([Matcher("api", pidfile=pidfile)])
    os.mkfifo(pidfile)
    t0 = time.monotonic()
    tracker.scan()
    assert time.monotonic() - t0 < 5
    assert tracker.workload_of(p.pid) is None
    pidfile.unlink()
    with pidfile.open("wb") as fh:  # sparse: 1 GiB that starts with a real pid
        fh.write(f"{p.pid}\n".encode())
        fh.truncate(1 << 30)
    tracker.scan()
    assert tracker.workload_of(p.pid) is None  # over 4 KiB: not a pidfile, never read whole
    pidfile.write_text(f"{p.pid}\n")
    tracker.scan()
    assert tracker.workload_of(p.pid) == "api"


class FakeProc(ProcFS):
    """A /proc whose processes the test writes: pid -> (ppid, start_ticks, cpu ticks)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.root.mkdir(exist_ok=True)
        (root / "stat").write_text("cpu  100 0 50 1000 0 0 0 0 0 0\n")

    def put(self, pid: int, ppid: int, start: int, cpu_ticks: int, comm: str, cmd: str) -> None:
        d = self.root / str(pid)
        d.mkdir(exist_ok=True)
        rest = " ".join(["0"] * 9)  # fields 5-13, as the kernel writes them
        (d / "stat").write_text(
            f"{pid} ({comm}) S {ppid} {rest} {cpu_ticks} 0 0 0 0 0 0 0 {start} 0 0\n"
        )
        (d / "cmdline").write_bytes(cmd.replace(" ", "\0").encode() + b"\0")
        (d / "cgroup").write_text("0::/system.slice/x.service\n")

    def kill(self, pid: int) -> None:
        for f in (self.root / str(pid)).iterdir():
            f.unlink()
        (self.root / str(pid)).rmdir()


def test_stat_parsing_survives_hostile_command_names(tmp_path: Path) -> None:
    fs = FakeProc(tmp_path / "proc")
    fs.put(42, 1, 777, 250, "evil) S 9 9 (name", "python serve.py")
    st = fs.stat(42)
    assert st is not None
    assert (st.ppid, st.start_ticks) == (1, 777)
    assert st.cpu_s == pytest.approx(250 / os.sysconf("SC_CLK_TCK"))
    assert fs.cmdline(42) == "python serve.py"
    assert fs.cgroup(42) == "/system.slice/x.service"
    assert fs.pids() == {42}
    assert fs.stat(43) is None


def test_pid_reuse_is_a_new_process(tmp_path: Path) -> None:
    fs = FakeProc(tmp_path / "proc")
    fs.put(100, 1, 5000, 0, "python", "python serve.py --api")
    fs.put(101, 100, 5001, 0, "python", "python worker.py")  # a worker: inherits
    tracker = ProcessTracker([Matcher("api", cmdline=re.compile("serve.py"))], proc=fs)
    tracker.tick()
    assert tracker.pids_of("api") == {100, 101}
    fs.put(101, 100, 5001, 100, "python", "python worker.py")
    assert tracker.tick().workload_s["api"] == pytest.approx(100 / os.sysconf("SC_CLK_TCK"))
    # The server exits; an unrelated process gets its pid.
    fs.kill(100)
    fs.put(100, 1, 9999, 5000, "bash", "bash")
    tick = tracker.tick()
    assert tick.workload_pids["api"] == frozenset({101})
    assert tracker.workload_of(100) is None  # reclassified on its own merits
    assert tick.workload_s["api"] == 0.0  # the stranger's CPU time is not the workload's


def test_procfs_agrees_with_psutil_on_the_real_kernel() -> None:
    import psutil

    me = psutil.Process()
    st = ProcFS().stat(os.getpid())
    assert st is not None
    assert st.ppid == me.ppid()
    times = me.cpu_times()
    assert abs(st.cpu_s - (times.user + times.system)) < 0.05
    assert ProcFS().host_busy_s() > 0
    assert os.getpid() in ProcFS().pids()


def test_sub_tick_samples_say_when_the_cpu_was_spent(tmp_path: Path) -> None:
    hz = os.sysconf("SC_CLK_TCK")
    fs = FakeProc(tmp_path / "proc")
    fs.put(100, 1, 5000, 0, "python", "python serve.py")
    fs.put(200, 1, 6000, 0, "sleep", "sleep 1000")  # matched but never runs
    tracker = ProcessTracker([Matcher("api", cmdline=re.compile("serve.py|sleep 1000"))], proc=fs)
    tracker.tick(0.0)
    fs.put(100, 1, 5000, hz // 10, "python", "python serve.py")  # became active
    tracker.tick(1.0)
    # Tick 2: 30 ticks of CPU between 1.25 and 1.5, nothing else.
    tracker.subsample(1.25)
    fs.put(100, 1, 5000, hz // 10 + 30, "python", "python serve.py")
    tracker.subsample(1.5)
    tracker.subsample(1.75)
    cpu = tracker.tick(2.0)
    assert cpu.profile_t == (1.0, 1.25, 1.5, 1.75, 2.0)
    assert cpu.profile["api"] == pytest.approx((0.0, 30 / hz, 0.0, 0.0))
    assert sum(cpu.profile["api"]) == pytest.approx(cpu.workload_s["api"])
    # A tick without samples has no profile: its energy is split evenly in time.
    assert tracker.tick(3.0).profile_t == ()


# Run by sh as "sh entrypoint.sh": the marker is only in the exec'd command line.
ENTRYPOINT = "sleep 0.5\nexec {python} -c '{burn}' 4 {marker}\n"
# A Python wrapper that execs Python (the command name stays "python"): only the command
# line changes. The marker is built at run time, so the wrapper's own command line lacks it.
PY_WRAPPER = (
    "import os, sys, time\n"
    "time.sleep(0.5)\n"
    "os.execv(sys.executable, [sys.executable, '-c', sys.argv[1], '4', sys.argv[2][::-1]])\n"
)


@pytest.mark.parametrize("young", [True, False], ids=["young", "old"])
def test_a_server_started_through_an_exec_wrapper_is_matched(
    tmp_path: Path, marker: str, procs: list[subprocess.Popen[bytes]], young: bool
) -> None:
    # Issue 14: "sh entrypoint.sh" then exec into the server, the normal container
    # entrypoint, was never matched: a process was classified once, by PID and start time,
    # and exec changes neither.
    script = tmp_path / "entrypoint.sh"
    script.write_text(ENTRYPOINT.format(python=sys.executable, burn=BURN, marker=marker))
    wrapper = subprocess.Popen(["sh", str(script)])
    procs.append(wrapper)
    tracker = ProcessTracker(
        [Matcher("api", cmdline=re.compile(re.escape(marker)))], recheck_every=1
    )
    if not young:
        tracker.YOUNG_S = 0.0  # every process counts as old: only the comm change tells
    tracker.scan()
    assert tracker.workload_of(wrapper.pid) is None  # still "sh entrypoint.sh"
    until(tracker, "api", 1)
    time.sleep(0.1)
    tracker.scan()  # the wrapper's "sleep" child may have been caught exiting; gone now
    assert tracker.pids_of("api") == {wrapper.pid}
    tracker.tick()  # a baseline: the wrapper's CPU before the exec is not the server's
    time.sleep(0.5)
    # The exec'd server burns a core (a fraction of it on a loaded host): its CPU is counted.
    assert tracker.tick().workload_s["api"] > 0.02


def test_a_young_python_wrapper_that_execs_python_is_matched(
    marker: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    wrapper = spawn(procs, "-c", PY_WRAPPER, BURN, marker[::-1])
    tracker = ProcessTracker([Matcher("api", cmdline=re.compile(re.escape(marker)))])
    tracker.scan()
    assert tracker.workload_of(wrapper.pid) is None
    until(tracker, "api", 1)
    assert tracker.pids_of("api") == {wrapper.pid}


def test_pids_a_workload_names_but_jouled_cannot_see_are_reported(tmp_path: Path) -> None:
    absent = 4_000_000  # above the kernel's pid_max limit: never a live process
    pidfile = tmp_path / "server.pid"
    pidfile.write_text(f"{absent - 1}\n")
    tracker = ProcessTracker(
        [
            Matcher("by-pid", pids=frozenset([absent])),
            Matcher("by-pidfile", pidfile=pidfile),
            Matcher("me", pids=frozenset([os.getpid()])),
        ]
    )
    tracker.tick()
    assert tracker.unseen() == {"by-pid": [absent], "by-pidfile": [absent - 1]}
    assert tracker.visible(os.getpid()) and not tracker.visible(absent)
