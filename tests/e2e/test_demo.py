"""`jouled demo` end to end: the real daemon, the example server and the scenarios; with the
load-following RAPL emulator every request is settled with measured-like joules, and without
RAPL the output says plainly that the joules are estimates."""

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def demo(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "jouled", "demo", "--out", str(out), "--pause-scale", "0.1", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, json.loads((out / "demo.json").read_text())


def test_demo_on_emulated_rapl_settles_every_request(tmp_path: Path) -> None:
    proc, result = demo(tmp_path, "--fake-rapl", "--scenario1-requests", "6")
    rows = {r["scenario"]: r for r in result["rows"]}
    assert sorted(rows) == [1, 2, 3]
    assert [rows[s]["requests"] for s in (1, 2, 3)] == [6, 10, 1]
    assert [rows[s]["texts"] for s in (1, 2, 3)] == [6, 100, 500]
    for r in rows.values():
        assert r["errors"] == 0
        assert r["requests_settled"] == r["requests"]
        assert r["sources"] == ["rapl (emulated)"]  # never passed off as this host's RAPL
        assert r["joules_per_request"] > 0 and r["gflops_per_request"] > 0
        assert r["workload_energy_j"] > 0
    # One request of 500 texts is the heaviest request and the cheapest per text's overhead.
    assert rows[3]["gflops_per_request"] > rows[2]["gflops_per_request"]
    assert rows[3]["joules_per_request"] > rows[1]["joules_per_request"]
    assert not result["estimated"] and "EMULATED RAPL" in proc.stdout
    table = proc.stdout[proc.stdout.index("model: ") :].splitlines()
    assert all(line.endswith("rapl (emulated)") for line in table[3:6]), table
    assert "NOTE: source=rapl (emulated): jouled's RAPL collector read the emulator" in proc.stdout
    # The settle wait says what it waits for (on stderr, beside the progress lines).
    assert "waiting (up to" in proc.stderr and "for jouled to settle" in proc.stderr
    png = tmp_path / "out" / "demo.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The demo keeps its own books, beside its logs (never the system ledger).
    [ledger] = (tmp_path / "out").glob("run-*/ledger.db")
    with sqlite3.connect(ledger) as db:
        scopes = {row[0] for row in db.execute("SELECT DISTINCT scope FROM minutes")}
    assert scopes >= {"host", "workload", "model"}


def test_demo_without_rapl_says_it_runs_on_estimates(tmp_path: Path) -> None:
    if Path("/sys/class/powercap/intel-rapl:0/energy_uj").exists():
        pytest.skip("this host has RAPL: the demo measures instead of estimating")
    proc, result = demo(tmp_path, "--scenarios", "2")
    assert result["estimated"] and [r["sources"] for r in result["rows"]] == [["estimate"]]
    assert "ESTIMATES" in proc.stdout and "not measured" in proc.stdout
