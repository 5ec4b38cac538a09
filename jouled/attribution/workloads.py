"""Finding workloads' processes and measuring their CPU time, every tick.

A *workload* is a named inference server: the processes matched by PID, pidfile,
command-line regex, cgroup path or systemd unit, plus all their descendants (worker
processes). A process is identified by (pid, create time), so a reused PID is a new
process. Each process belongs to at most one workload (the first that matches, in config
order), so nothing is counted twice.

The per-tick cost is what matters on a host with thousands of processes: one listing of
/proc, one stat read per *workload* process, and a match only for processes not seen
before (command line and cgroup are read once per process, never again).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Matcher:
    """One workload's rules; any rule that matches claims the process."""

    name: str
    pids: frozenset[int] = frozenset()
    pidfile: Path | None = None
    cmdline: re.Pattern[str] | None = None
    cgroup: str | None = None  # a cgroup path prefix, e.g. /system.slice/api.service
    systemd_unit: str | None = None  # e.g. api.service: matched as a cgroup path component

    @property
    def needs_cmdline(self) -> bool:
        return self.cmdline is not None

    @property
    def needs_cgroup(self) -> bool:
        return self.cgroup is not None or self.systemd_unit is not None


@dataclass(slots=True)
class _Proc:
    pid: int
    create_time: float
    ppid: int
    workload: str | None
    handle: psutil.Process | None = None
    last_cpu_s: float | None = None


@dataclass(frozen=True, slots=True)
class CpuTick:
    """CPU seconds spent during one tick, per workload and by the whole host."""

    host_busy_s: float
    workload_s: Mapping[str, float]
    workload_pids: Mapping[str, frozenset[int]] = field(default_factory=dict)


def _read_cgroup(pid: int) -> str:
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return ""
    # cgroup v2: "0::/system.slice/x.service"; v1 lines: "N:controllers:/path". Prefer v2.
    paths = [line.split(":", 2)[2] for line in text.splitlines() if line.count(":") >= 2]
    v2 = [line.split(":", 2)[2] for line in text.splitlines() if line.startswith("0::")]
    return (v2 or paths or [""])[0]


def _host_busy_s() -> float:
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0) + getattr(t, "steal", 0.0)
    guest = getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0)
    return float(sum(t) - guest - idle)


class ProcessTracker:
    """Keeps the pid -> workload map current and reports per-tick CPU seconds."""

    def __init__(
        self,
        matchers: Iterable[Matcher],
        *,
        host_busy_s: Callable[[], float] = _host_busy_s,
        read_cgroup: Callable[[int], str] = _read_cgroup,
    ) -> None:
        self.matchers = list(matchers)
        self._host_busy = host_busy_s
        self._read_cgroup = read_cgroup
        self._procs: dict[int, _Proc] = {}
        self._pidfile_pids: dict[str, int | None] = {}
        self._last_host_busy: float | None = None
        self._need_cmdline = any(m.needs_cmdline for m in self.matchers)
        self._need_cgroup = any(m.needs_cgroup for m in self.matchers)

    @property
    def workloads(self) -> list[str]:
        return [m.name for m in self.matchers]

    def _pidfile_pid(self, m: Matcher) -> int | None:
        if m.pidfile is None:
            return None
        try:
            return int(m.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _match(
        self, proc: psutil.Process, ppid: int, pidfile_pids: Mapping[str, int]
    ) -> str | None:
        pid = proc.pid
        cmd: str | None = None
        cgroup: str | None = None
        for m in self.matchers:
            if pid in m.pids or pidfile_pids.get(m.name) == pid:
                return m.name
            if m.cmdline is not None:
                if cmd is None:
                    try:
                        cmd = " ".join(proc.cmdline())
                    except (psutil.Error, OSError):
                        cmd = ""
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
        pidfile_pids = {}
        for m in self.matchers:
            p = self._pidfile_pid(m)
            if p is not None:
                pidfile_pids[m.name] = p
            if self._pidfile_pids.get(m.name) != p and m.pidfile is not None:
                # The pidfile now names another process: reclassify the old and new owners.
                self._procs = {k: v for k, v in self._procs.items() if v.workload != m.name}
            self._pidfile_pids[m.name] = p
        live = set(psutil.pids())
        for pid in list(self._procs):
            if pid not in live:
                del self._procs[pid]
        new: list[tuple[float, psutil.Process, int]] = []
        for pid in live:
            known = self._procs.get(pid)
            if known is not None:
                continue
            try:
                handle = psutil.Process(pid)
                with handle.oneshot():
                    new.append((handle.create_time(), handle, handle.ppid()))
            except (psutil.Error, OSError):
                continue
        # Parents before children, so workers inherit their server's workload.
        new.sort(key=lambda item: item[0])
        for create_time, handle, ppid in new:
            workload = self._match(handle, ppid, pidfile_pids)
            self._procs[handle.pid] = _Proc(
                handle.pid, create_time, ppid, workload, handle if workload else None
            )

    def tick(self) -> CpuTick:
        """Scan, then return CPU seconds since the previous tick."""
        self.scan()
        busy = self._host_busy()
        host_delta = 0.0 if self._last_host_busy is None else max(0.0, busy - self._last_host_busy)
        self._last_host_busy = busy
        per: dict[str, float] = {m.name: 0.0 for m in self.matchers}
        pids: dict[str, set[int]] = {m.name: set() for m in self.matchers}
        for pid, proc in list(self._procs.items()):
            if proc.workload is None or proc.handle is None:
                continue
            try:
                with proc.handle.oneshot():
                    # is_running() compares create times: False after PID reuse.
                    if not proc.handle.is_running():
                        del self._procs[pid]
                        continue
                    t = proc.handle.cpu_times()
            except (psutil.Error, OSError):
                del self._procs[pid]
                continue
            cpu_s = t.user + t.system
            pids[proc.workload].add(pid)
            if proc.last_cpu_s is not None:
                per[proc.workload] += max(0.0, cpu_s - proc.last_cpu_s)
            proc.last_cpu_s = cpu_s
        return CpuTick(
            host_busy_s=host_delta,
            workload_s=per,
            workload_pids={k: frozenset(v) for k, v in pids.items()},
        )

    def workload_of(self, pid: int) -> str | None:
        proc = self._procs.get(pid)
        return proc.workload if proc is not None else None

    def pids_of(self, workload: str) -> set[int]:
        return {p.pid for p in self._procs.values() if p.workload == workload}
