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

The per-tick cost is what matters on a host with thousands of processes: one CPU-clock read
per *workload* process and a ``stat`` read (its file kept open and re-read) only of those
whose clock moved (a process that has not run has neither spent CPU nor exec'd; the file,
read after the clock, proves whose clock it was), a listing of /proc only when a PID
was allocated since the last one (``/proc/loadavg``'s last PID; at least every thirty
rounds), parsing only the entries that changed, a match only for processes not seen before
(command line and cgroup are read once per process; with command-line rules, six times more
while a process is young), and a re-check of a thirtieth of the other processes' start times
and command names (of those whose CPU clock moved since their last check: a reused PID's
new process has run), so that a reused PID or a late exec is noticed within thirty ticks: the
loops run over the processes due, not over the table. /proc is read directly (one ``stat``
read gives parent, start time and CPU time at once); its root is injectable, e.g.
``/host/proc`` in a container. A process's CPU seconds are its CPU clock's (the scheduler's
run time in ns, which ``stat``'s utime + stime add up to in 10 ms ticks) where the root is
the procfs of jouled's own PID namespace, else ``stat``'s utime + stime.

Over 400 lines because the process tracker's hot path (/proc reads, matching, PID reuse,
exec re-matching, sub-tick samples) is one state machine over one table of processes and
its indexes, and the procfs reader's kept files serve that path alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import resource
import sys
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jouled.collectors.procstat import SHARED_MAX_AGE_S, host_busy_s, is_procfs
from jouled.files import read_small_file
from jouled.native import pure_requested
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
    # Its CPU clock (ns) read just before its stat file was last read: while the clock
    # still says so (and it is not 0: a process not yet run proves nothing), the process has
    # not run since (no exec, no CPU): not read again.
    clock_ns: int | None = None
    by_stat: bool = False  # its clock failed where its stat file did not: stat's CPU only


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


def _fd_budget() -> int:
    """A quarter of the soft descriptor limit (``RLIMIT_NOFILE``): what kept files may use."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return sys.maxsize if soft == resource.RLIM_INFINITY else soft // 4


def _close_fds(fds: dict[int, int]) -> None:
    while fds:
        _, fd = fds.popitem()
        with contextlib.suppress(OSError):
            os.close(fd)


def _compiled_to_read() -> Callable[..., list[tuple[Any, int | None]]] | None:
    """The compiled clock loop of ``ProcessTracker.tick``, or None when not built (no compiler
    at install time) or not wanted (JOULED_PURE_PYTHON=1)."""
    if pure_requested():
        return None
    try:
        from jouled.attribution._proctick import to_read
    except ImportError:
        return None
    return to_read


# Tests set it to None to run the Python loop.
_c_to_read = _compiled_to_read()


# clock_getcpuclockid(3) of a process, as glibc makes it (include/linux/posix-timers.h:
# MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)): the scheduler's run time of its thread group.
_CPUCLOCK_SCHED = 2


def process_cpu_ns(pid: int) -> int | None:
    """CPU ns of the process that has ``pid`` in this process's PID namespace (all its
    threads, live and ended), by its CPU clock; None when no process has it (EINVAL) or the
    clock cannot be read (EPERM under some seccomp filters)."""
    try:
        return time.clock_gettime_ns(((~pid) << 3) | _CPUCLOCK_SCHED)
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class Stat:
    ppid: int
    start_ticks: int
    cpu_s: float  # utime + stime
    comm: bytes = b""


def _mounted_over(path: str, mountinfo: str = "/proc/self/mountinfo") -> bool:
    """Whether a file system is mounted at ``path`` itself (as LXCFS mounts its files over
    /proc's); False when the mount table cannot be read."""
    target = os.path.realpath(path)
    try:
        with open(mountinfo, "rb") as fh:
            table = fh.read(4 << 20).decode("utf-8", "replace")
    except OSError:
        return False
    for line in table.splitlines():
        fields = line.split(" ")
        # proc(5): the mount point is the fifth field, with space, tab, newline and
        # backslash written as octal escapes.
        if len(fields) > 4 and _unescape(fields[4]) == target:
            return True
    return False


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


class ProcFS:
    """The few /proc reads attribution needs, from an injectable root.

    On a real procfs the ``stat`` files of the processes read every tick (``keep=True``:
    the workloads' processes) stay open and are re-read with ``pread`` at offset 0, which
    makes the kernel generate them afresh: less than half the cost of open, read and close.
    An open ``stat`` file stays bound to its process: once that process has exited, a read
    fails with ``ESRCH`` and never shows a new process that reused the PID (the file is
    then closed and the PID opened afresh). At most ``max_open`` files are kept, and at most
    a quarter of the soft ``RLIMIT_NOFILE`` (the unit's ``LimitNOFILE`` is 8,192; outside it
    the soft limit is often 1,024, which the listeners' connections need too); past that,
    reads open and close as before. A root that is not
    a procfs (a test's directory of regular files, where an unlinked file would keep its old
    content) never keeps files open.

    ``clock``: how to read a process's CPU time without its ``stat`` file (``cpu_clock``).
    None (the default): the process CPU clock (``clock_getcpuclockid(3)``) where the root is
    the procfs of this process's PID namespace and the clock answers, else none; False:
    never; a callable ``pid -> ns or None``: that one (tests).
    """

    MAX_OPEN = 1024

    def __init__(
        self,
        root: Path = Path("/proc"),
        *,
        keep_open: bool | None = None,
        max_open: int = MAX_OPEN,
        clock: Callable[[int], int | None] | bool | None = None,
    ) -> None:
        self.root = root
        self._prefix = f"{root}/"
        self._tick_hz = os.sysconf("SC_CLK_TCK")
        self._procfs = is_procfs(root)
        self._keep = self._procfs if keep_open is None else keep_open
        self._max_open = max(0, min(max_open, _fd_budget()))
        self._fds: dict[int, int] = {}  # pid -> open fd of <root>/<pid>/stat
        # pid -> (its last stat line, what cpu() made of it), for the kept ones only.
        self._parsed: dict[int, tuple[bytes, tuple[int, float, bytes]]] = {}
        # The fds are closed when this reader is dropped (a reload builds a new tracker).
        self._finalizer = weakref.finalize(self, _close_fds, self._fds)
        self._names: set[str] = set()  # the last listing of the root, as names
        self._pids: set[int] = set()  # its numeric entries
        self._own_ns: tuple[int, bool] | None = None  # (getpid(), last_pid() is trusted)
        self._clock_opt = clock
        # (getpid(), the clock reader or None): decided once per process (a fork re-decides).
        self._clock: tuple[int, Callable[[int], int | None] | None] | None = None

    def pids(self) -> set[int]:
        """The numeric entries of the root (a new set). Only the names that changed since
        the last listing are parsed: set differences in C, not a loop over every entry."""
        try:
            names = set(os.listdir(self.root))
        except OSError:
            self._names, self._pids = set(), set()
            return set()
        old = self._names
        if names != old:
            for gone in old - names:
                if gone.isdigit():
                    self._pids.discard(int(gone))
            self._pids.update(int(n) for n in names - old if n.isdigit())
            self._names = names
        return set(self._pids)

    def stat(self, pid: int, *, keep: bool = False) -> Stat | None:
        """``<root>/<pid>/stat`` of the process that has ``pid`` now; None when there is
        none. ``keep``: leave the file open for the next read (a workload's process)."""
        raw = self.read_stat(pid, keep=keep)
        return None if raw is None else self.parse_stat(raw)

    def cpu(self, pid: int) -> tuple[int, float, bytes] | None:
        """(start time in clock ticks, CPU seconds, command name) of ``pid`` now, its
        ``stat`` file kept open: ``stat(pid, keep=True)`` in one call and no ``Stat``, for
        the per-tick read of every workload process."""
        fd = self._fds.get(pid)
        raw = None
        if fd is not None:
            try:
                raw = os.pread(fd, 4096, 0)
            except OSError:
                raw = None  # ESRCH, exited: read_stat closes it and opens the pid afresh
        if not raw:
            raw = self.read_stat(pid, keep=True)
            if raw is None:
                return None
        last = self._parsed.get(pid)
        if last is not None and last[0] == raw:
            return last[1]  # an idle process's line does not change: nor does its parse
        end = raw.rfind(b")")
        fields = raw[end + 2 :].split(None, 20)
        try:
            cpu = (int(fields[11]) + int(fields[12])) / self._tick_hz
            parsed = int(fields[19]), cpu, raw[raw.find(b"(") + 1 : end]
        except (IndexError, ValueError):
            return None
        if pid in self._fds:
            self._parsed[pid] = (raw, parsed)
        return parsed

    def read_stat(self, pid: int, *, keep: bool = False) -> bytes | None:
        """The raw ``stat`` line of ``pid`` (see ``stat``); None when it cannot be read."""
        fd = self._fds.get(pid)
        if fd is not None:
            try:
                raw = os.pread(fd, 4096, 0)
                if raw:
                    return raw
            except OSError:
                pass  # ESRCH: that process has exited; the pid may be another's now
            del self._fds[pid]
            self._parsed.pop(pid, None)
            os.close(fd)
        # The hot path (once per workload process per tick): plain os calls on a string
        # path cost a fifth of pathlib + open().
        try:
            fd = os.open(f"{self._prefix}{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        kept = keep and self._keep and len(self._fds) < self._max_open
        try:
            raw = os.read(fd, 4096)
        except OSError:
            kept = False
            return None
        finally:
            if kept:
                self._fds[pid] = fd
            else:
                os.close(fd)
        return raw

    def parse_stat(self, raw: bytes) -> Stat | None:
        # The command name (field 2) may hold spaces and parentheses: split after the last
        # ')'. Only the fields up to the start time (22) are split out.
        end = raw.rfind(b")")
        fields = raw[end + 2 :].split(None, 20)
        try:
            utime, stime = int(fields[11]), int(fields[12])
            comm = raw[raw.find(b"(") + 1 : end]
            return Stat(int(fields[1]), int(fields[19]), (utime + stime) / self._tick_hz, comm)
        except (IndexError, ValueError):
            return None

    def release(self, pid: int) -> None:
        """Close ``pid``'s kept ``stat`` file, if any (its process is no longer read)."""
        self._parsed.pop(pid, None)
        fd = self._fds.pop(pid, None)
        if fd is not None:
            os.close(fd)

    def retain(self, pids: AbstractSet[int]) -> None:
        """Close every kept ``stat`` file but those of ``pids``."""
        for pid in self._fds.keys() - pids:
            self.release(pid)

    def last_pid(self) -> int | None:
        """The PID the kernel allocated last (``loadavg``'s last field): it moves whenever a
        process or thread is created. None when it cannot be read, or when the root is not
        the procfs of this process's PID namespace (the kernel reports the *reader's*
        namespace, which then is not the one listed)."""
        if self._own_ns is None or self._own_ns[0] != os.getpid():
            # LXCFS mounts its own loadavg over the procfs one in containers: its last PID
            # is not the kernel's, so it would not move when a process is created.
            own = self._own_namespace() and not _mounted_over(f"{self._prefix}loadavg")
            self._own_ns = (os.getpid(), own)
        if not self._own_ns[1]:
            return None
        try:
            with open(f"{self._prefix}loadavg", "rb") as fh:
                return int(fh.read(256).split()[4])
        except (OSError, ValueError, IndexError):
            return None

    def _own_namespace(self) -> bool:
        """Whether the root is the procfs of this process's PID namespace (its ``self`` is
        this process): then its PIDs are the ones this process's system calls name."""
        try:
            return os.readlink(f"{self._prefix}self") == str(os.getpid())
        except OSError:
            return False

    @property
    def cpu_clock(self) -> Callable[[int], int | None] | None:
        """``pid -> CPU ns`` of the process that has ``pid`` now, by its CPU clock, or None
        when this reader has none (see the class). The clock is the scheduler's run time of
        all the process's threads, live and ended (what ``stat``'s utime + stime add up to,
        in ns instead of clock ticks), read by one ``clock_gettime`` without a file: ~0.4 µs
        against ~1.4 for a kept ``stat`` file (~1.5 and ~2.3 µs on a tick's cold caches).
        It names a PID, not a process: a caller proves which process it read by a read of a
        file bound to it afterwards (``cpu``), or needs no proof because the value has not
        changed since one (a process that has not run has neither exec'd nor spent CPU).
        The reader answers None for a PID no process has."""
        pid = os.getpid()
        if self._clock is None or self._clock[0] != pid:
            opt = self._clock_opt
            if callable(opt):
                reader: Callable[[int], int | None] | None = opt
            elif opt is False or not self._procfs or not self._own_namespace():
                reader = None
            else:
                # Seccomp (gVisor, some sandboxes) may refuse another process's clock.
                reader = process_cpu_ns if process_cpu_ns(pid) is not None else None
            self._clock = (pid, reader)
        return self._clock[1]

    @property
    def open_files(self) -> int:
        """How many ``stat`` files are kept open."""
        return len(self._fds)

    def close(self) -> None:
        """Close every kept file (reads go on working, opening afresh)."""
        _close_fds(self._fds)
        self._parsed.clear()

    def uptime_ticks(self) -> float | None:
        """Seconds since boot (/proc/uptime) in clock ticks, the unit of start times. On a
        real procfs that is CLOCK_BOOTTIME, as this process sees it (both follow the
        reader's time namespace), read without a file."""
        if self._procfs:
            return time.clock_gettime(time.CLOCK_BOOTTIME) * self._tick_hz
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
        return host_busy_s(self.root, max_age_s=SHARED_MAX_AGE_S)


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
        # Indexes over _procs, kept by _add, _forget and _set_workload: the claimed ones
        # (read every tick), pid % recheck_every -> pids (the re-check rotation), and scan
        # round -> pids first seen then (young processes' command-line re-reads).
        self._claimed: dict[int, _Proc] = {}
        # workload -> its claimed PIDs, made again after _claimed changes (None: to be made)
        self._pids_of: dict[str, frozenset[int]] | None = None
        self._slots: dict[int, set[int]] = {}
        self._first_seen: dict[int, list[int]] = {}
        # /proc/loadavg's last PID: at the last listing, and once two listings a round or
        # more apart held it (then no listing is needed while it stays).
        self._listed_mark: int | None = None
        self._last_pid: int | None = None
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
        self._clocked: bool | None = None  # whether the last reads were by the CPU clock

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

    def _add(self, proc: _Proc) -> None:
        self._procs[proc.pid] = proc
        self._slots.setdefault(proc.pid % self._recheck_every, set()).add(proc.pid)
        if proc.workload is not None:
            self._claimed[proc.pid] = proc
            self._pids_of = None
        if self._has_cmdline:
            self._first_seen.setdefault(proc.seen_round, []).append(proc.pid)

    def _forget(self, pid: int) -> None:
        if self._procs.pop(pid, None) is None:
            return
        self._slots[pid % self._recheck_every].discard(pid)
        self._active.pop(pid, None)
        if self._claimed.pop(pid, None) is not None:
            self._pids_of = None
            self._proc.release(pid)

    def _set_workload(self, proc: _Proc, workload: str | None) -> None:
        proc.workload, proc.last_cpu_s = workload, None
        self._pids_of = None
        if workload is not None:
            self._claimed[proc.pid] = proc
        elif self._claimed.pop(proc.pid, None) is not None:
            self._proc.release(proc.pid)

    def _listing(self) -> tuple[set[int], bool]:
        """The PIDs under the proc root, and whether the root was listed this time. Listed
        only when a PID was allocated since the last listing (``/proc/loadavg``'s last PID
        moved: no new process can have appeared otherwise) or the round before, and every
        ``recheck_every`` rounds whatever it says; in between, the last listing less the
        processes found gone. The kernel allocates a
        PID before it attaches the task that /proc lists (``copy_process``: ``alloc_pid``,
        then ``attach_pid``), so a mark is trusted only once a listing a round after it
        was first read has held it too."""
        mark = self._proc.last_pid()  # before the listing: a later fork moves it again
        if mark is None or mark != self._last_pid or self._round % self._recheck_every == 0:
            self._last_pid = mark if mark == self._listed_mark else None
            self._listed_mark = mark
            self._live = self._proc.pids()
            return self._live, True
        return self._live, False

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
                for pid in [k for k, v in self._claimed.items() if v.workload == m.name]:
                    self._forget(pid)
                if p is not None:
                    self._forget(p)
            self._pidfile_pids[m.name] = p
        self._pidfile_now = pidfile_pids
        self._round += 1
        live, listed = self._listing()
        # Between listings the known processes are a subset of the live ones (a process is
        # only added from them, and one found gone leaves both): none to forget, and new ones
        # only where the counts differ (a reused PID, forgotten, is live but not known). Two
        # set differences of ~1,000 PIDs a tick saved (~50-100 µs).
        if listed:
            for pid in self._procs.keys() - live:
                self._forget(pid)
        # A slice of the non-workload processes is re-checked each round for PID reuse and
        # exec; young ones (exec follows start-up) on the rounds of _YOUNG_CHECKS.
        young_from = self._young_from()
        clock = self._clock()
        slot = self._round % self._recheck_every
        due = set(self._slots.get(slot, ()))
        if young_from is not None:
            for k in _YOUNG_CHECKS:
                due.update(self._first_seen.get(self._round - k, ()))
        for r in [r for r in self._first_seen if r <= self._round - max(_YOUNG_CHECKS)]:
            del self._first_seen[r]
        for pid in sorted(due):
            known = self._procs.get(pid)
            if known is None or known.workload is not None:
                continue
            rotation = pid % self._recheck_every == slot
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
            now = clock(pid) if clock is not None else None
            if now and now == known.clock_ns and not young:
                continue  # has not run since its stat was read: the same process, no exec
            st = self._proc.stat(pid)
            if st is None or st.start_ticks != known.start_ticks:
                self._forget(pid)
                if st is None:
                    live.discard(pid)
                continue
            known.clock_ns = now
            if self._has_cmdline and (young or st.comm != known.comm):
                self._recheck_exec(known, st.comm, cmd)
        new: list[tuple[int, int, Stat, int | None]] = []
        for pid in live - self._procs.keys() if len(live) != len(self._procs) else ():
            now = clock(pid) if clock is not None else None  # before the stat read
            st = self._proc.stat(pid)
            if st is not None:
                new.append((st.start_ticks, pid, st, now))
            else:
                live.discard(pid)  # gone already (a set apart from the one iterated)
        # Parents before children, so workers inherit their server's workload.
        new.sort(key=lambda n: n[:2])
        for start, pid, st, now in new:
            cmd = self._proc.cmdline(pid) if self._has_cmdline else None
            workload = self._match(pid, st.ppid, pidfile_pids, cmd)
            self._add(
                _Proc(
                    pid,
                    start,
                    st.ppid,
                    workload,
                    comm=st.comm,
                    cmdline=cmd,
                    seen_round=self._round,
                    clock_ns=now,
                )
            )

    def _clock(self) -> Callable[[int], int | None] | None:
        """The reader's CPU clock (``ProcFS.cpu_clock``). Where it comes or goes (a fork
        decides again), every process's last reading is in the other units: all start from a
        new baseline."""
        clock = self._proc.cpu_clock
        if (clock is not None) != self._clocked:
            if self._clocked is not None:
                for proc in self._procs.values():
                    proc.last_cpu_s = proc.clock_ns = None
                    proc.by_stat = False
            self._clocked = clock is not None
        return clock

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
        old = known.workload
        self._set_workload(known, workload)
        # Its descendants that inherited the old answer follow it.
        stack = [known.pid]
        while stack:
            parent = stack.pop()
            for child in list(self._procs.values()):
                if child.ppid == parent and child.workload == old and child.pid != known.pid:
                    self._set_workload(child, workload)
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
        clock = self._clock()
        for pid in self._active:
            proc = self._procs.get(pid)
            if proc is None or proc.workload is None:
                continue
            if clock is not None and not proc.by_stat:
                # No proof of identity needed: the tick's read proves it or drops the pid,
                # and a dropped pid's samples are not used (``_profile``).
                now = clock(pid)
                if now is not None:
                    point[pid] = now / 1e9
                continue
            st = self._proc.cpu(pid)
            if st is not None and st[0] == proc.start_ticks:
                point[pid] = st[1]
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
        base: dict[int, float] = {}  # CPU at the previous tick, of the sub-sampled pids
        at_t1: dict[int, float] = {}
        read, active, has_cmdline = self._proc.cpu, self._active, self._has_cmdline
        clock = self._clock()
        for proc, now in self._clock_readings(clock):
            if proc.workload is None:
                continue  # released this tick by an exec'd parent (below)
            pid = proc.pid
            if now and now == proc.clock_ns:
                # Not run since the last read: the same process (it was when its kept stat
                # file was read after the clock), the same command, no CPU spent.
                if proc.last_cpu_s is None:
                    proc.last_cpu_s = now / 1e9  # claimed since its stat was read
                elif pid in active:
                    base[pid] = at_t1[pid] = proc.last_cpu_s
                continue
            st = read(pid)
            if st is None or st[0] != proc.start_ticks:
                self._forget(pid)  # exited, or the pid was reused by another process
                if st is None:
                    self._live.discard(pid)
                continue
            _, cpu_s, comm = st
            if now is not None:
                # The stat file, read after the clock, proves the clock read this process.
                cpu_s = now / 1e9
            elif clock is not None and not proc.by_stat:
                # The clock failed where the file, read after it, did not: this process is
                # read by its stat file from now on, from a new baseline (other units).
                proc.by_stat, proc.last_cpu_s = True, None
            proc.clock_ns = now
            if has_cmdline and comm != proc.comm:
                self._recheck_exec(proc, comm)  # exec'd: is it still this workload's?
                if proc.workload is None:
                    continue
            last = proc.last_cpu_s
            if last is not None:
                if pid in active:
                    base[pid] = last
                    at_t1[pid] = cpu_s
                used = cpu_s - last
                if used > 0:  # (CPU time never goes back; a negative step counts 0)
                    per[proc.workload] += used
                    active[pid] = self.ACTIVE_TICKS
            proc.last_cpu_s = cpu_s
        times: tuple[float, ...] = ()
        profile: dict[str, tuple[float, ...]] = {}
        if t is not None:
            times, profile = self._profile(t, at_t1, base)
            self._last_t = t
        for pid in list(self._active):
            self._active[pid] -= 1
            if self._active[pid] <= 0:
                del self._active[pid]
        if self._proc.open_files > len(self._claimed):
            self._proc.retain(self._claimed.keys())
        return CpuTick(
            host_busy_s=host_delta,
            workload_s=per,
            workload_pids=self._workload_pids(),
            profile_t=times,
            profile=profile,
        )

    def _clock_readings(
        self, clock: Callable[[int], int | None] | None
    ) -> Iterable[tuple[_Proc, int | None]]:
        """The claimed processes the tick must look at, each with its CPU clock reading (None:
        read by its stat file), read in this order before their stat files. With the
        compiled loop (``_proctick.to_read``, for the real process clock only) the ones whose
        clock has not moved since their baseline, and that are not sub-sampled, are left out:
        nothing is left to do for them (~200 idle processes: one C loop, not 200 Python
        steps); without it, every claimed process, read here. ``clock``: ``_clock()``'s."""
        procs = list(self._claimed.values())
        if clock is process_cpu_ns and _c_to_read is not None:
            return _c_to_read(procs, self._active)
        if clock is None:
            return [(proc, None) for proc in procs]
        return ((proc, None if proc.by_stat else clock(proc.pid)) for proc in procs)

    def _workload_pids(self) -> dict[str, frozenset[int]]:
        """Workload -> the PIDs it claims now (a new dict; its sets are shared between ticks
        while the claimed table has not changed)."""
        if self._pids_of is None:
            groups: dict[str, set[int]] = {m.name: set() for m in self.matchers}
            for pid, proc in self._claimed.items():
                if proc.workload is not None:
                    groups[proc.workload].add(pid)
            self._pids_of = {k: frozenset(v) for k, v in groups.items()}
        return dict(self._pids_of)

    def workload_of(self, pid: int) -> str | None:
        proc = self._procs.get(pid)
        return proc.workload if proc is not None else None

    def claimed(self) -> dict[int, str]:
        """pid -> workload for every process a workload claims (a copy). Safe to call from
        another thread while a tick runs: ``list()`` copies the table in one step."""
        procs = list(self._claimed.values())
        return {p.pid: p.workload for p in procs if p.workload is not None}

    def pids_of(self, workload: str) -> set[int]:
        return {p.pid for p in list(self._claimed.values()) if p.workload == workload}
