"""The README's first command, ``make run``, on a fresh clone as a non-root user: the
daemon's dependencies only, pip's progress shown, the XDG ledger, and /metrics answering."""

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.fresh_clone import make_run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_on_a_fresh_clone_as_a_newcomer_serves_metrics() -> None:
    with make_run(REPO, timeout=300) as run:
        assert "jouled_host_energy_joules_total" in run.metrics
        assert 'source="estimate"' in run.metrics or 'source="rapl"' in run.metrics
        out = run.output()
        # Only the daemon's dependencies, and pip's own lines show the progress.
        assert "Collecting aiohttp" in out and "Successfully installed" in out
        for dev_tool in ("mypy", "pytest", "pandas", "scipy", "matplotlib", "ruff"):
            assert f"Collecting {dev_tool}" not in out, dev_tool
        # Not root: the ledger is in the XDG state directory, and start-up says so.
        ledger = run.home / ".local/state/jouled/ledger.db"
        assert f"ledger in use: {ledger}" in out, out[-3000:]
        assert "not root: the XDG state directory" in out
        assert ledger.exists()
        # The offline model is an extra: one line says what to install, no traceback.
        fit = subprocess.run(
            [str(run.clone / ".venv/bin/jouled"), "model", "fit", "--csv", "thesis:inference"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert (fit.returncode, fit.stderr) == (
            2,
            "jouled model fit: needs numpy, pandas and scipy, not installed here: "
            "pip install 'jouled[model]'\n",
        )
        print(f"\nfresh clone: /metrics after {run.seconds:.1f} s, venv {run.venv_bytes()} B")
