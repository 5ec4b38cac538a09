"""``jouled check`` rows for /proc and workloads: what jouled can see, and the fix if not."""

from __future__ import annotations

import os
from pathlib import Path

from jouled.clock import FakeClock
from jouled.config import validate
from jouled.daemon.check import collect_rows
from jouled.testing.fake_pynvml import FakeGpu, FakeNvml

ABSENT = 4_000_000  # above the kernel's pid_max limit: never a live process


def test_check_has_proc_and_workload_rows_with_the_fix(tmp_path: Path) -> None:
    pidfile = tmp_path / "srv.pid"
    pidfile.write_text(f"{ABSENT}\n")
    cfg = validate(
        {
            "collectors": {"rapl": {"enabled": False}},
            "workloads": [
                {"name": "me", "match": {"pid": os.getpid()}},
                {"name": "elsewhere", "match": {"pidfile": str(pidfile)}},
                {"name": "later", "match": {"cmdline": "no-such-server-[0-9a-f]{12}"}},
            ],
        },
        "test",
    )
    fake = FakeNvml([FakeGpu()])
    fake.add_process(0, ABSENT + 1, sm_util_pct=50)
    rows = {(r.collector, r.target): r for r in collect_rows(cfg, FakeClock(), fake)}
    proc = rows[("proc", "/proc")]
    assert proc.readable and "processes; PID 1 is" in proc.detail
    me = rows[("workload", "me")]
    assert me.readable and me.detail == f"1 process ({os.getpid()})"
    elsewhere = rows[("workload", "elsewhere")]
    assert not elsewhere.readable
    assert f"name PID {ABSENT}, not under /proc" in elsewhere.detail
    assert "hostPID" in elsewhere.fix and "attribution.proc_path" in elsewhere.fix
    assert rows[("workload", "later")].detail == "0 processes match now (not started?)"
    gpu = rows[("proc", "gpu-0")]
    assert not gpu.readable and str(ABSENT + 1) in gpu.detail and "hostPID" in gpu.fix


def test_an_empty_proc_path_fails_with_what_to_set(tmp_path: Path) -> None:
    cfg = validate(
        {
            "collectors": {"rapl": {"enabled": False}, "nvml": {"enabled": False}},
            "attribution": {"proc_path": str(tmp_path)},
        },
        "test",
    )
    rows = [r for r in collect_rows(cfg, FakeClock()) if r.collector == "proc"]
    assert len(rows) == 1 and not rows[0].readable
    assert "attribution.proc_path" in rows[0].fix
