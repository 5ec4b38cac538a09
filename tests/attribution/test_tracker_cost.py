"""The tracker's per-tick economies keep its answers: kept-open ``stat`` files follow their
process (and only it), stay bounded, and /proc is listed only when a PID was allocated."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from jouled.attribution.workloads import Matcher, ProcessTracker, ProcFS

BURN = "import time\nend = time.time() + 5\nwhile time.time() < end: pass\n"


@pytest.fixture
def sleepers() -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    marker = f"jouled-cost-{uuid.uuid4().hex[:8]}"
    procs = [
        subprocess.Popen([sys.executable, "-c", "import sys, time; time.sleep(30)", marker])
        for _ in range(3)
    ]
    for p in procs:
        _wait_for_argv(p.pid, marker)
    yield marker, procs
    for p in procs:
        p.kill()
        p.wait(5)


def test_a_kept_stat_file_is_read_afresh_and_fails_once_its_process_exits() -> None:
    proc = ProcFS()
    burner = subprocess.Popen([sys.executable, "-c", BURN])
    try:
        first = proc.cpu(burner.pid)
        assert first is not None and proc.open_files == 1
        time.sleep(0.3)
        second = proc.cpu(burner.pid)
        assert second is not None and proc.open_files == 1
        assert second[0] == first[0]  # the same process
        assert second[1] > first[1]  # and a fresh reading, not the first one again
        st = proc.stat(burner.pid)
        assert st is not None and st.start_ticks == first[0]
    finally:
        burner.kill()
        burner.wait(5)
    # Reaped: the open file answers ESRCH and is dropped, never a later owner of the pid.
    assert proc.cpu(burner.pid) is None
    assert proc.open_files == 0


def test_kept_files_are_bounded_and_released_with_their_processes(
    sleepers: tuple[str, list[subprocess.Popen[bytes]]],
) -> None:
    marker, procs = sleepers
    fs = ProcFS(max_open=2, clock=False)  # the stat files alone (idle ones are read too)
    tracker = ProcessTracker([Matcher("api", cmdline=re.compile(re.escape(marker)))], proc=fs)
    tracker.tick()
    cpu = tracker.tick()
    # All three are read every tick; only two files stay open, the third opens each time.
    assert cpu.workload_pids["api"] == frozenset(p.pid for p in procs)
    assert fs.open_files == 2
    for p in procs[:2]:
        p.kill()
        p.wait(5)
    cpu = tracker.tick()
    assert cpu.workload_pids["api"] == frozenset({procs[2].pid})
    assert fs.open_files <= 1
    fs.close()
    assert fs.open_files == 0
    assert tracker.tick().workload_pids["api"] == frozenset({procs[2].pid})  # reads go on


def test_a_directory_standing_in_for_proc_never_keeps_files_open(tmp_path: Path) -> None:
    # An unlinked regular file keeps its old content: PID reuse would go unseen.
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "stat").write_text("7 (x) S 1 0 0 0 0 0 0 0 0 0 5 5 0 0 0 0 0 0 99 0 0\n")
    fs = ProcFS(tmp_path)
    assert fs.cpu(7) == (99, 10 / os.sysconf("SC_CLK_TCK"), b"x")
    assert fs.open_files == 0
    assert fs.last_pid() is None  # not this process's /proc: always list


class _Listed(ProcFS):
    """/proc as files the test writes, with a last-PID mark the test moves."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        (root / "stat").write_text("cpu  100 0 50 1000 0 0 0 0 0 0\n")
        self.mark = 1
        self.listed = 0

    def put(self, pid: int, cmd: str) -> None:
        d = self.root / str(pid)
        d.mkdir()
        rest = " ".join(["0"] * 9)
        (d / "stat").write_text(f"{pid} (p) S 1 {rest} 0 0 0 0 0 0 0 0 {pid} 0 0\n")
        (d / "cmdline").write_bytes(cmd.encode() + b"\0")

    def last_pid(self) -> int | None:
        return self.mark

    def pids(self) -> set[int]:
        self.listed += 1
        return super().pids()


class _Young(_Listed):
    """As _Listed, booted a second ago (every process young), a process's files rewritable."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        (root / "uptime").write_text("1.00 1.00\n")

    def put(self, pid: int, cmd: str) -> None:
        d = self.root / str(pid)
        if d.exists():
            (d / "cmdline").write_bytes(cmd.encode() + b"\0" if cmd else b"")
            return
        super().put(pid, cmd)
        if not cmd:
            (d / "cmdline").write_bytes(b"")


def test_proc_is_listed_only_when_a_pid_was_allocated(tmp_path: Path) -> None:
    fs = _Listed(tmp_path)
    fs.put(10, "serve")
    tracker = ProcessTracker([Matcher("api", cmdline=re.compile("serve"))], proc=fs)
    tracker.tick()
    for _ in range(5):
        assert tracker.tick().workload_pids["api"] == frozenset({10})
    assert fs.listed == 2  # a mark is trusted once a second listing, a round on, held it
    fs.put(11, "serve --worker")
    fs.mark = 11  # the fork moved the kernel's last PID: found within the tick
    assert tracker.tick().workload_pids["api"] == frozenset({10, 11})
    assert fs.listed == 3
    tracker.tick()
    assert fs.listed == 4  # the round after a move
    # And every 30 rounds whatever the mark says.
    for _ in range(29):
        tracker.tick()
    assert fs.listed == 5


def _wait_for_argv(pid: int, marker: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while marker.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, f"process {pid} never showed its argv"
        time.sleep(0.005)


def test_a_process_caught_mid_exec_is_matched_the_round_after(tmp_path: Path) -> None:
    """A process listed between the exec's start and its new argv (an empty cmdline, as the
    kernel shows it then) is matched by the young re-check one round later."""
    fs = _Young(tmp_path)
    fs.put(10, "init")
    tracker = ProcessTracker([Matcher("api", cmdline=re.compile("serve"))], proc=fs)
    tracker.tick()
    fs.put(11, "")  # mid-exec: listed, stat readable, no argv yet
    fs.mark = 11
    assert tracker.tick().workload_pids.get("api", frozenset()) == frozenset()
    fs.put(11, "python serve.py")
    assert tracker.tick().workload_pids["api"] == frozenset({11})


def test_a_new_process_is_found_by_the_next_scan_on_the_real_proc(
    sleepers: tuple[str, list[subprocess.Popen[bytes]]],
) -> None:
    marker, procs = sleepers
    fs = ProcFS()
    assert fs.last_pid() is not None  # this process's own /proc: the shortcut is on
    tracker = ProcessTracker([Matcher("api", cmdline=re.compile(re.escape(marker)))], proc=fs)
    tracker.scan()
    assert tracker.pids_of("api") == {p.pid for p in procs}
    late = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", marker])
    try:
        # Popen returns once the exec closed the child's close-on-exec pipe, which the kernel
        # does (begin_new_exec) before it lays out the new argv (create_elf_tables): for that
        # moment /proc/<pid>/cmdline is empty. The tracker catches such a process on its
        # next round (test_a_process_caught_mid_exec_is_matched_the_round_after); this test
        # is about the listing, so it scans once the argv is there.
        _wait_for_argv(late.pid, marker)
        tracker.scan()
        assert late.pid in tracker.pids_of("api")
    finally:
        late.kill()
        late.wait(5)
    tracker.tick()
    assert late.pid not in tracker.pids_of("api")


def test_uptime_on_the_real_proc_is_the_boot_clock_without_a_file() -> None:
    hz = os.sysconf("SC_CLK_TCK")
    before = float(Path("/proc/uptime").read_text().split()[0]) * hz
    ticks = ProcFS().uptime_ticks()
    after = float(Path("/proc/uptime").read_text().split()[0]) * hz
    assert ticks is not None and before - 1 <= ticks <= after + 1  # /proc/uptime: 10 ms steps


_FD_LIMITED = """
import os, resource, threading
from jouled.attribution.workloads import ProcFS
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
stop = threading.Event()
threads = [threading.Thread(target=stop.wait, daemon=True) for _ in range(80)]
for t in threads:
    t.start()
fs = ProcFS()
read = [fs.cpu(t.native_id) is not None for t in threads]  # a thread's stat, like a process's
try:
    os.close(os.open(os.devnull, os.O_RDONLY))  # the daemon's own files and sockets
    spare = 1
except OSError:
    spare = 0
stop.set()
print(sum(read), fs.open_files, spare)
"""


def test_kept_files_leave_most_of_a_low_descriptor_limit_free() -> None:
    # Outside the unit (LimitNOFILE=8192) the soft limit is often 1,024: kept stat files
    # must not take the descriptors the listeners and collectors need.
    out = subprocess.run(
        [sys.executable, "-c", _FD_LIMITED], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    read, kept, spare = (int(x) for x in out)
    assert read == 80  # every read succeeded: past the budget, files open and close
    assert spare == 1  # and a descriptor is left for everything else
    assert 0 < kept <= 64 // 4


def test_a_process_listed_only_after_its_pid_moved_the_mark_is_found_next_round(
    tmp_path: Path,
) -> None:
    # The kernel allocates a PID (loadavg's last PID moves) before it attaches the task that
    # /proc lists (copy_process: alloc_pid, then cgroup_can_fork, then attach_pid): a scan
    # can read the moved mark and still list /proc without the new process.
    fs = _Listed(tmp_path)
    fs.put(10, "serve")
    tracker = ProcessTracker([Matcher("api", cmdline=re.compile("serve"))], proc=fs)
    tracker.tick()
    tracker.tick()
    fs.mark = 11  # allocated ...
    assert tracker.tick().workload_pids["api"] == frozenset({10})  # ... not listed yet
    fs.put(11, "serve --worker")  # attached; no PID allocated since
    assert tracker.tick().workload_pids["api"] == frozenset({10, 11})


def test_a_loadavg_mounted_over_by_lxcfs_turns_the_listing_shortcut_off(tmp_path: Path) -> None:
    from jouled.attribution import workloads

    mounted = tmp_path / "my loadavg"
    mounted.write_text("0.00 0.01 0.05 1/99 4242\n")
    esc = str(mounted).replace(" ", "\\040")  # proc(5) escapes spaces in mount points
    table = tmp_path / "mountinfo"
    table.write_text(
        "22 1 0:21 / /proc rw,nosuid - proc proc rw\n"
        f"51 22 0:45 /proc/loadavg {esc} rw,nosuid - fuse.lxcfs lxcfs rw,user_id=0\n"
    )
    assert workloads._mounted_over(str(mounted), str(table))
    assert not workloads._mounted_over(str(tmp_path / "stat"), str(table))
    # This machine's own /proc: loadavg is procfs's (the shortcut stays on), /proc a mount.
    assert not workloads._mounted_over("/proc/loadavg")
    assert workloads._mounted_over("/proc")
    assert ProcFS().last_pid() is not None


def test_a_pid_reused_between_listings_is_classified_again_without_a_listing(
    tmp_path: Path,
) -> None:
    # Between listings the tracker trusts that the known processes are the live ones; a
    # process forgotten for a reused PID (its start time changed) stays live, and the next
    # scan must classify the new owner from the last listing, without listing /proc again.
    fs = _Listed(tmp_path)
    fs.put(10, "serve")
    fs.put(12, "bash")
    tracker = ProcessTracker([Matcher("api", cmdline=re.compile("serve"))], proc=fs)
    tracker.tick()
    tracker.tick()
    listed = fs.listed
    assert tracker.pids_of("api") == {10}
    # PID 10 is now another process (start time 77), and it serves too; the mark held.
    rest = " ".join(["0"] * 9)
    (tmp_path / "10" / "stat").write_text(f"10 (p) S 1 {rest} 0 0 0 0 0 0 0 0 77 0 0\n")
    (tmp_path / "10" / "cmdline").write_bytes(b"serve --other\0")
    tick = tracker.tick()  # its stat file read: not the process it knew, forgotten
    assert tick.workload_pids["api"] == frozenset()
    tick = tracker.tick()  # classified again from the last listing
    assert tick.workload_pids["api"] == frozenset({10})
    assert fs.listed == listed
    # A process gone between listings leaves both tables: no listing needed to forget it.
    (tmp_path / "12" / "stat").unlink()
    (tmp_path / "10" / "stat").unlink()
    assert tracker.tick().workload_pids["api"] == frozenset()
    assert tracker.workload_of(10) is None and fs.listed == listed
