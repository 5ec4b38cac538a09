"""A benchmark stopped by SIGTERM stops what it started (benchmarks._util.exit_on_sigterm):
a killed soak left its busy workload and fake RAPL tree running, skewing later runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.procs import wait_for

_SCRIPT = """
import subprocess, sys, time
from benchmarks._util import exit_on_sigterm
exit_on_sigterm()
child = subprocess.Popen(["sleep", "60"])
try:
    open(sys.argv[1], "w").write(str(child.pid))
    time.sleep(60)
finally:
    child.kill()
    child.wait()
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is not running
        return fh.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_sigterm_runs_the_benchmarks_cleanup(tmp_path: Path) -> None:
    pid_file = tmp_path / "child"
    root = Path(__file__).resolve().parents[2]
    bench = subprocess.Popen([sys.executable, "-c", _SCRIPT, str(pid_file)], cwd=root)
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text() != "", 10, "the child")
        child = int(pid_file.read_text())
        assert _alive(child)
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(10) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 5
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "the benchmark's child outlived it"
    finally:
        bench.kill()
