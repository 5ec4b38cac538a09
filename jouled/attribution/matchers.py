"""Workload rules from the config, and the process tracker built from them.

Apart from the attribution stage so that ``jouled check`` can find workloads' processes
without loading the pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence

from jouled.attribution.workloads import Matcher, ProcessTracker, ProcFS
from jouled.config import Config, WorkloadConfig
from jouled.regex import compile_linear


def matchers_from(workloads: Sequence[WorkloadConfig]) -> list[Matcher]:
    """One ``Matcher`` per configured workload, in config order (the first match wins)."""
    out = []
    for w in workloads:
        m = w.match
        out.append(
            Matcher(
                name=w.name,
                pids=frozenset([m.pid]) if m.pid is not None else frozenset(),
                pidfile=m.pidfile,
                cmdline=compile_linear(m.cmdline) if m.cmdline is not None else None,
                cgroup=m.cgroup,
                systemd_unit=m.systemd_unit,
            )
        )
    return out


def tracker_for(cfg: Config) -> ProcessTracker:
    """The tracker of ``cfg``'s workloads, reading ``attribution.proc_path``."""
    return ProcessTracker(matchers_from(cfg.workloads), proc=ProcFS(cfg.attribution.proc_path))
