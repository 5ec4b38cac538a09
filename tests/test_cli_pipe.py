"""`jouled report | head`: a reader that quits early ends the command quietly (status 1),
with no BrokenPipeError traceback on the terminal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.cost.test_report import build_ledger


def test_a_closed_pipe_ends_the_report_without_a_traceback(tmp_path: Path) -> None:
    ledger = tmp_path / "l.db"
    build_ledger(ledger, days=2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "jouled", "report", "--ledger", str(ledger), "--since", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the report writes a byte: EPIPE for sure
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1
    assert err == ""
