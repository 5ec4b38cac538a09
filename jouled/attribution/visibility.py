"""Processes jouled is told of but cannot see, and the one warning that says how to fix it.

Two ways to be blind: NVML reports GPU processes whose PIDs are not under
``attribution.proc_path`` (jouled in a container without the host's PID namespace), and a
workload whose rules name PIDs (``pid``, ``pidfile``) that are not there. Either way the
energy stays unattributed; without a word, the operator sees a workload with 0 processes
and cannot tell why. ``Visibility`` counts them each tick (``jouled_unseen_processes``) and
logs a warning at most every ten minutes per target, with the fix.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from jouled.attribution.workloads import ProcessTracker, ProcFS
from jouled.collectors.base import CheckRow

log = logging.getLogger(__name__)

WARN_EVERY_S = 600.0


def blind_fix(proc_path: Path) -> str:
    """The remedy, shared by the log line and ``jouled check``."""
    return (
        "give jouled the host's PIDs: hostPID: true in its Kubernetes pod spec (docker: "
        f"--pid=host), or mount the host's /proc in its container and set "
        f"attribution.proc_path to it (now {proc_path})"
    )


class Visibility:
    """Per tick: ``(source, target) -> count`` of unseen processes, warned about sparingly."""

    def __init__(self, proc_path: Path, every_s: float = WARN_EVERY_S) -> None:
        self.proc_path = proc_path
        self._every_s = every_s
        self._warned_at: dict[tuple[str, str], float] = {}
        self.unseen: dict[tuple[str, str], int] = {}

    def update(
        self,
        now: float,
        workloads: Mapping[str, Iterable[int]],
        gpus: Mapping[str, Iterable[int]],
    ) -> dict[tuple[str, str], int]:
        """``workloads``: workload -> PIDs its rules name that are missing; ``gpus``: GPU index
        -> NVML PIDs missing under the proc root. ``now``: wall seconds, for the rate limit."""
        unseen: dict[tuple[str, str], int] = {}
        for name, pids in sorted(workloads.items()):
            missing = sorted(pids)
            if missing:
                unseen[("workload_rule", name)] = len(missing)
                self._warn(
                    ("workload_rule", name),
                    now,
                    f"workload {name}: its rules name PID {', '.join(map(str, missing))} but "
                    f"there is no such process under {self.proc_path}: jouled sees another "
                    "PID namespace, or the server is not running",
                )
        for index, pids in sorted(gpus.items()):
            missing = sorted(pids)
            if missing:
                unseen[("nvml", f"gpu-{index}")] = len(missing)
                self._warn(
                    ("nvml", f"gpu-{index}"),
                    now,
                    f"GPU {index}: NVML reports processes {', '.join(map(str, missing))} that "
                    f"are not under {self.proc_path}: their GPU energy stays unattributed",
                )
        self.unseen = unseen
        return unseen

    def _warn(self, key: tuple[str, str], now: float, what: str) -> None:
        last = self._warned_at.get(key)
        if last is not None and now - last < self._every_s:
            return
        self._warned_at[key] = now
        log.warning("%s (fix: %s)", what, blind_fix(self.proc_path))


def check_processes(
    tracker: ProcessTracker, proc_path: Path, gpu_pids: Mapping[int, Iterable[int]]
) -> list[CheckRow]:
    """``jouled check`` rows: the proc root itself, every workload's processes, and GPU
    processes (``gpu_pids``: NVML index -> PIDs) that are not under the proc root."""
    proc = ProcFS(proc_path)
    live = proc.pids()
    fix = blind_fix(proc_path)
    if not live:
        return [
            CheckRow(
                "proc",
                str(proc_path),
                False,
                f"no processes under {proc_path}: workloads cannot be found",
                "set attribution.proc_path to a mounted proc filesystem (the host's, for "
                "workloads in other containers)",
            )
        ]
    init = proc.stat(1)
    init_name = init.comm.decode(errors="replace") if init is not None else "absent"
    detail = f"{len(live)} processes; PID 1 is {init_name}"
    if init_name not in _HOST_INITS:
        detail += (
            ": a container's PID namespace? Workloads in other containers are invisible "
            "(hostPID, or the host's /proc as attribution.proc_path)"
        )
    rows = [CheckRow("proc", str(proc_path), True, detail)]
    for index, pids in sorted(gpu_pids.items()):
        missing = sorted(p for p in pids if p not in live)
        if missing:
            rows.append(
                CheckRow(
                    "proc",
                    f"gpu-{index}",
                    False,
                    f"NVML reports GPU processes {', '.join(map(str, missing))} that are not "
                    f"under {proc_path}: their energy would stay unattributed",
                    fix,
                )
            )
    tracker.scan()
    unseen = tracker.unseen()
    for m in tracker.matchers:
        pids = sorted(tracker.pids_of(m.name))
        if m.name in unseen:
            named = ", ".join(map(str, unseen[m.name]))
            rows.append(
                CheckRow(
                    "workload",
                    m.name,
                    False,
                    f"its rules name PID {named}, not under {proc_path} (another PID "
                    "namespace, or not running)",
                    fix,
                )
            )
        elif not pids:
            rows.append(CheckRow("workload", m.name, True, "0 processes match now (not started?)"))
        else:
            shown = ", ".join(map(str, pids[:5])) + (", ..." if len(pids) > 5 else "")
            noun = "process" if len(pids) == 1 else "processes"
            rows.append(CheckRow("workload", m.name, True, f"{len(pids)} {noun} ({shown})"))
    return rows


# Names of PID 1 in a host's PID namespace.
_HOST_INITS = frozenset({"systemd", "init", "openrc-init", "runit", "s6-svscan"})
