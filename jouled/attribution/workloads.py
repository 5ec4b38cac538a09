"""Finding workloads' processes and measuring their CPU time, every tick.

A *workload* is a named inference server: the processes matched by PID, pidfile,
command-line regex, cgroup path or systemd unit, plus all their descendants (worker
processes). A process is identified by (pid, create time), so a reused PID is a new
process. ``exec`` keeps both, so a process whose command name changed (``sh
entrypoint.sh`` exec'ing the server, the usual container entrypoint) is matched again, and a
young process (under 30 s old) has its command line read again 1, 2, 4, 8, 16 and 30 scans
after it was first seen and is re-matched if it changed (exec only
matters to command-line rules: PIDs, pidfiles and cgroups survive it). Each process belongs
to at most one workload (the first that matches, in config order), so nothing is counted
twice.

The per-tick cost is what matters on a host with thousands of processes: one listing of
/proc, one stat read per *workload* process, a match only for processes not seen before
(command line and cgroup are read once per process; with command-line rules, six times more
while a process is young), and a re-check of a thirtieth of the other processes'
start times and command names, so that a reused PID or a late exec is noticed within thirty
ticks. /proc is
read directly (one ``stat`` read gives parent, start time and CPU time at once); its root
is injectable, e.g. ``/host/proc`` in a container.

Over 400 lines because the process tracker's hot path (/proc reads, matching, PID reuse,
exec re-matching, sub-tick samples) is one state machine over one table of processes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from jouled.collectors.procstat import host_busy_s
from jouled.files import read_small_file
from jouled.regex import Searcher

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Matcher:
    """One workload's rules; any rule that matches claims the process."""

    name: str
    pids: frozenset[int] = frozenset()
    pidfile: Path | None = None
    cmdline: Searcher | None = None  # jouled.regex.compile_linear (RE2)
    cgroup: str | None = None  # a cgroup path prefix, e.g. /system.slice/api.service
    systemd_unit: str | None = None  # e.g. api.service: matched as a cgroup path component

    @property
    def needs_cgroup(self) -> bool:
        return self.cgroup is not None or self.systemd_unit is not None


@dataclass(slots=True)
class _Proc:
    pid: int
    start_ticks: int  # /proc/<pid>/stat field 22: with the pid, identifies the process
    ppid: int
    workload: str | None
    last_cpu_s: float | None = None
    comm: bytes = b""  # /proc/<pid>/stat field 2: changes on exec
    cmdline: str | None = None  # as last matched (None: not read)
    seen_round: int = 0  # the tracker's scan round that first saw it


@dataclass(frozen=True, slots=True)
class CpuTick:
    """CPU seconds spent during one tick, per workload and by the whole host.

    ``profile_t`` are monotonic instants cutting the tick (its start and end included) where
    the workloads' active processes were sampled; ``profile[w][k]`` is the CPU seconds
    workload ``w`` spent between ``profile_t[k]`` and ``profile_t[k + 1]``. Empty when the
    tick was not sub-sampled.
    """

    host_busy_s: float
    workload_s: Mapping[str, float]
    workload_pids: Mapping[str, frozenset[int]] = field(default_factory=dict)
    profile_t: tuple[float, ...] = ()
    profile: Mapping[str, tuple[float, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Stat:
    ppid: int
    start_ticks: int
    cpu_s: float  # utime + stime
    comm: bytes = b""


class ProcFS:
    """The few /proc reads attribution needs, from an injectable root."""

    def __init__(self, root: Path = Path("/proc")) -> None:
        self.root = root
        self._prefix = f"{root}/"
        self._tick_hz = os.sysconf("SC_CLK_TCK")

    def pids(self) -> set[int]:
        try:
            return {int(n) for n in os.listdir(self.root) if n.isdigit()}
        except OSError:
            return set()

    def stat(self, pid: int) -> Stat | None:
        # The hot path (once per workload process per tick): plain os calls on a string
        # path cost a fifth of pathlib + open().
        try:
            fd = os.open(f"{self._prefix}{pid}/stat", os.O_RDONLY)
        except OSError:
            return None
        try:
            raw = os.read(fd, 4096)
        except OSError:
            return None
        finally:
            os.close(fd)
        # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
        fields = raw[raw.rfind(b")") + 2 :].split()
        try:
            utime, stime = int(fields[11]), int(fields[12])
            comm = raw[raw.find(b"(") + 1 : raw.rfind(b")")]
            return Stat(int(fields[1]), int(fields[19]), (utime + stime) / self._tick_hz, comm)
        except (IndexError, ValueError):
            return None

    def uptime_ticks(self) -> float | None:
        """Seconds since boot (/proc/uptime) in clock ticks, the unit of start times."""
        try:
            with open(self.root / "uptime", "rb") as fh:
                return float(fh.read().split()[0]) * self._tick_hz
        except (OSError, ValueError, IndexError):
            return None

    @property
    def tick_hz(self) -> int:
        return self._tick_hz

    def cmdline(self, pid: int) -> str:
        # Read for every new process and every young one each tick: plain os calls.
        try:
            fd = os.open(f"{self._prefix}{pid}/cmdline", os.O_RDONLY)
        except OSError:
            return ""
        try:
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
        except OSError:
            return ""
        finally:
            os.close(fd)
        raw = b"".join(chunks)
        return raw.replace(b"\0", b" ").decode(errors="replace").strip()

    def cgroup(self, pid: int) -> str:
        try:
            text = (self.root / str(pid) / "cgroup").read_text()
        except OSError:
            return ""
        # cgroup v2: "0::/system.slice/x.service"; v1 lines "N:controllers:/path". Prefer v2.
        lines = [line for line in text.splitlines() if line.count(":") >= 2]
        v2 = [line.split(":", 2)[2] for line in lines if line.startswith("0::")]
        return (v2 or [line.split(":", 2)[2] for line in lines] or [""])[0]

    def host_busy_s(self) -> float:
        """Busy CPU seconds of the whole host since boot (/proc/stat's cpu line); 0 when
        it cannot be read."""
        return host_busy_s(self.root)


# Scan rounds after first sight at which a young unmatched process's command line is read
# again (exec follows start-up within seconds; backing off keeps a burst of new processes
# cheap: six reads each, not thirty).
_YOUNG_CHECKS = frozenset({1, 2, 4, 8, 16, 30})
MAX_PIDFILE_BYTES = 4096  # a pid and a newline; anything longer is not a pidfile


class ProcessTracker:
    """Keeps the pid -> workload map current and reports per-tick CPU seconds."""

    def __init__(
        self,
        matchers: Iterable[Matcher],
        *,
        proc: ProcFS | None = None,
        host_busy_s: Callable[[], float] | None = None,
        read_cgroup: Callable[[int], str] | None = None,
        recheck_every: int = 30,
    ) -> None:
        self.matchers = list(matchers)
        self._proc = proc or ProcFS()
        self._host_busy = host_busy_s or self._proc.host_busy_s
        self._read_cgroup = read_cgroup or self._proc.cgroup
        self._recheck_every = max(1, recheck_every)
        self._round = 0
        self._procs: dict[int, _Proc] = {}
        self._pidfile_pids: dict[str, int | None] = {}
        self._pidfile_now: dict[str, int] = {}
        self._live: set[int] = set()
        # exec only matters to command-line rules: PIDs, pidfiles and cgroups survive it.
        self._has_cmdline = any(m.cmdline is not None for m in self.matchers)
        self._last_host_busy: float | None = None
        self._last_t: float | None = None
        # Sub-tick samples: only of processes that used CPU recently (an idle worker pool
        # costs nothing), pid -> ticks left in the active set.
        self._active: dict[int, int] = {}
        self._samples: list[tuple[float, dict[int, float]]] = []

    def _pidfile_pid(self, m: Matcher) -> int | None:
        if m.pidfile is None:
            return None
        # Written by the workload's own user, so read without trusting it: a FIFO there would
        # block the tick, a huge file would be read whole (FileReadError is a ValueError).
        try:
            return int(read_small_file(m.pidfile, MAX_PIDFILE_BYTES, "pidfile").split()[0])
        except (ValueError, IndexError):
            return None

    def _match(
        self, pid: int, ppid: int, pidfile_pids: Mapping[str, int], cmd: str | None = None
    ) -> str | None:
        cgroup: str | None = None
        for m in self.matchers:
            if pid in m.pids or pidfile_pids.get(m.name) == pid:
                return m.name
            if m.cmdline is not None:
                if cmd is None:
                    cmd = self._proc.cmdline(pid)
                if cmd and m.cmdline.search(cmd):
                    return m.name
            if m.needs_cgroup:
                if cgroup is None:
                    cgroup = self._read_cgroup(pid)
                if m.cgroup is not None and (
                    cgroup == m.cgroup or cgroup.startswith(m.cgroup.rstrip("/") + "/")
                ):
                    return m.name
                if m.systemd_unit is not None and m.systemd_unit in cgroup.split("/"):
                    return m.name
        # Descendants (workers) belong to their parent's workload.
        parent = self._procs.get(ppid)
        return parent.workload if parent is not None else None

    def scan(self) -> None:
        """Bring the process map up to date: forget the dead, classify the new."""
        pidfile_pids: dict[str, int] = {}
        for m in self.matchers:
            p = self._pidfile_pid(m)
            if p is not None:
                pidfile_pids[m.name] = p
            old = self._pidfile_pids.get(m.name)
            if m.pidfile is not None and old != p:
                # The pidfile names another process: forget the old owner's processes and
                # the new pid, so both are classified again below.
                self._procs = {k: v for k, v in self._procs.items() if v.workload != m.name}
                if p is not None:
                    self._procs.pop(p, None)
            self._pidfile_pids[m.name] = p
        self._pidfile_now = pidfile_pids
        live = self._live = self._proc.pids()
        for pid in [pid for pid in self._procs if pid not in live]:
            del self._procs[pid]
        # A slice of the non-workload processes is re-checked each round for PID reuse and
        # exec; young ones (exec follows start-up) every round.
        self._round += 1
        young_from = self._young_from()
        for pid, known in list(self._procs.items()):
            if known.workload is not None:
                continue
            rotation = pid % self._recheck_every == self._round % self._recheck_every
            young = (
                young_from is not None
                and known.start_ticks >= young_from
                and self._round - known.seen_round in _YOUNG_CHECKS
            )
            cmd: str | None = None
            if young and not rotation:
                cmd = self._proc.cmdline(pid)  # one read; stat only if it changed
                if cmd == known.cmdline:
                    continue
            elif not rotation:
                continue
            st = self._proc.stat(pid)
            if st is None or st.start_ticks != known.start_ticks:
                del self._procs[pid]
            elif self._has_cmdline and (young or st.comm != known.comm):
                self._recheck_exec(known, st.comm, cmd)
        new: list[tuple[int, int, Stat]] = []
        for pid in live:
            if pid in self._procs:
                continue
            st = self._proc.stat(pid)
            if st is not None:
                new.append((st.start_ticks, pid, st))
        # Parents before children, so workers inherit their server's workload.
        new.sort()
        for start, pid, st in new:
            cmd = self._proc.cmdline(pid) if self._has_cmdline else None
            workload = self._match(pid, st.ppid, pidfile_pids, cmd)
            self._procs[pid] = _Proc(
                pid, start, st.ppid, workload, comm=st.comm, cmdline=cmd, seen_round=self._round
            )

    YOUNG_S = 30.0  # processes younger than this are re-matched when their command changes

    def _young_from(self) -> float | None:
        """The start time (clock ticks since boot) from which a process counts as young."""
        if not self._has_cmdline:
            return None
        uptime = self._proc.uptime_ticks()
        return None if uptime is None else uptime - self.YOUNG_S * self._proc.tick_hz

    def _recheck_exec(self, known: _Proc, comm: bytes, cmd: str | None = None) -> None:
        """Match a process again if it exec'd (its command changed) since it was matched."""
        if cmd is None:
            cmd = self._proc.cmdline(known.pid)
        if comm == known.comm and cmd == known.cmdline:
            return
        known.comm, known.cmdline = comm, cmd
        workload = self._match(known.pid, known.ppid, self._pidfile_now, cmd)
        if workload == known.workload:
            return
        log.info(
            "process %d exec'd into %r: workload %s (was %s)",
            known.pid,
            cmd[:120],
            workload or "none",
            known.workload or "none",
        )
        old, known.workload, known.last_cpu_s = known.workload, workload, None
        # Its descendants that inherited the old answer follow it.
        stack = [known.pid]
        while stack:
            parent = stack.pop()
            for child in self._procs.values():
                if child.ppid == parent and child.workload == old and child.pid != known.pid:
                    child.workload, child.last_cpu_s = workload, None
                    stack.append(child.pid)

    def unseen(self) -> dict[str, list[int]]:
        """Workload -> PIDs its rules name (``pid``, ``pidfile``) that are not under the
        proc root: jouled sees another PID namespace, or the server is not running."""
        out: dict[str, list[int]] = {}
        for m in self.matchers:
            named = set(m.pids)
            if m.name in self._pidfile_now:
                named.add(self._pidfile_now[m.name])
            missing = sorted(p for p in named if p not in self._live)
            if missing:
                out[m.name] = missing
        return out

    def visible(self, pid: int) -> bool:
        """Whether ``pid`` was under the proc root at the last scan (now, when there are no
        workloads and so no scans)."""
        if not self.matchers:
            return os.path.exists(f"{self._proc.root}/{pid}")
        return pid in self._live

    ACTIVE_TICKS = 30  # a process stays sub-sampled this many ticks after it last ran

    @property
    def has_active(self) -> bool:
        """Whether any workload process used CPU recently (so sub-samples are worth taking)."""
        return bool(self._active)

    def subsample(self, t: float) -> None:
        """Record the CPU time of the recently active workload processes at monotonic ``t``.

        Called a few times per tick, it tells *when* within the tick a workload spent its
        CPU, so that its energy goes to the requests running then, not spread evenly.
        """
        point: dict[int, float] = {}
        for pid in self._active:
            proc = self._procs.get(pid)
            if proc is None or proc.workload is None:
                continue
            st = self._proc.stat(pid)
            if st is not None and st.start_ticks == proc.start_ticks:
                point[pid] = st.cpu_s
        self._samples.append((t, point))

    def _profile(
        self, t1: float, cpu_at_t1: Mapping[int, float], base: Mapping[int, float]
    ) -> tuple[tuple[float, ...], dict[str, tuple[float, ...]]]:
        t0 = self._last_t
        samples = [(t, pt) for t, pt in self._samples if t0 is not None and t0 < t < t1]
        self._samples.clear()
        if t0 is None or not samples:
            return (), {}
        times = (t0, *(t for t, _ in samples), t1)
        points = [*(pt for _, pt in samples), cpu_at_t1]
        profile: dict[str, list[float]] = {}
        for pid, start_cpu in base.items():
            proc = self._procs.get(pid)
            if proc is None or proc.workload is None:
                continue
            incs = profile.setdefault(proc.workload, [0.0] * (len(times) - 1))
            last = start_cpu
            for k, pt in enumerate(points):
                now = pt.get(pid, last)  # a missed read carries the last value forward
                incs[k] += max(0.0, now - last)
                last = max(last, now)
        return times, {w: tuple(v) for w, v in profile.items()}

    def tick(self, t: float | None = None) -> CpuTick:
        """Scan, then return CPU seconds since the previous tick (``t``: monotonic now)."""
        if self.matchers:
            self.scan()  # without workloads no process can be claimed: /proc is not listed
        busy = self._host_busy()
        host_delta = 0.0 if self._last_host_busy is None else max(0.0, busy - self._last_host_busy)
        self._last_host_busy = busy
        per: dict[str, float] = {m.name: 0.0 for m in self.matchers}
        pids: dict[str, set[int]] = {m.name: set() for m in self.matchers}
        base: dict[int, float] = {}  # CPU at the previous tick, of the sub-sampled pids
        at_t1: dict[int, float] = {}
        for pid, proc in list(self._procs.items()):
            if proc.workload is None:
                continue
            st = self._proc.stat(pid)
            if st is None or st.start_ticks != proc.start_ticks:
                del self._procs[pid]  # exited, or the pid was reused by another process
                self._active.pop(pid, None)
                continue
            if self._has_cmdline and st.comm != proc.comm:
                self._recheck_exec(proc, st.comm)  # exec'd: is it still this workload's?
                if proc.workload is None:
                    continue
            pids[proc.workload].add(pid)
            if proc.last_cpu_s is not None:
                used = max(0.0, st.cpu_s - proc.last_cpu_s)
                per[proc.workload] += used
                if pid in self._active:
                    base[pid] = proc.last_cpu_s
                    at_t1[pid] = st.cpu_s
                if used > 0:
                    self._active[pid] = self.ACTIVE_TICKS
            proc.last_cpu_s = st.cpu_s
        times: tuple[float, ...] = ()
        profile: dict[str, tuple[float, ...]] = {}
        if t is not None:
            times, profile = self._profile(t, at_t1, base)
            self._last_t = t
        for pid in list(self._active):
            self._active[pid] -= 1
            if self._active[pid] <= 0:
                del self._active[pid]
        return CpuTick(
            host_busy_s=host_delta,
            workload_s=per,
            workload_pids={k: frozenset(v) for k, v in pids.items()},
            profile_t=times,
            profile=profile,
        )

    def workload_of(self, pid: int) -> str | None:
        proc = self._procs.get(pid)
        return proc.workload if proc is not None else None

    def claimed(self) -> dict[int, str]:
        """pid -> workload for every process a workload claims (a copy). Safe to call from
        another thread while a tick runs: ``list()`` copies the table in one step."""
        procs = list(self._procs.values())
        return {p.pid: p.workload for p in procs if p.workload is not None}

    def pids_of(self, workload: str) -> set[int]:
        return {p.pid for p in self._procs.values() if p.workload == workload}
