"""``benchmarks.ab``: two builds of jouled side by side (what it runs, and how it reads)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks._util import ROOT, daemon, http_get
from benchmarks.ab import _imports_from, summary, tree, unbuilt


def _row(a: float, b: float) -> dict[str, object]:
    return {
        "window_s": 20.0,
        "a": {"cpu_ms_per_s": a, "rss_mb": 70.0},
        "b": {"cpu_ms_per_s": b, "rss_mb": 71.0},
    }


def test_an_order_is_read_as_bs_mean_against_as_and_the_windows_b_won() -> None:
    s = summary({"order": ["b", "a"], "windows": [_row(10, 9), _row(12, 12.5), _row(11, 10)]})
    assert s["order"] == "b then a"
    assert s["a"]["cpu_ms_per_s_mean"] == 11.0
    assert s["b"]["cpu_ms_per_s_mean"] == pytest.approx(10.5)
    assert s["b_vs_a_percent"] == pytest.approx(-4.55, abs=0.01)
    assert s["b_lower_in"] == 2  # a tie or a higher window is not a win
    assert s["windows"] == 3
    assert s["b"]["rss_mb_max"] == 71.0


def test_a_revision_is_exported_and_built_and_the_daemon_runs_from_it(tmp_path: Path) -> None:
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    with tree("HEAD", sys.executable) as (root, what):
        assert root != ROOT
        assert what.startswith("HEAD (") and head.startswith(what[6:-1])
        assert unbuilt(root) == []
        assert sorted(p.stem for p in root.joinpath("jouled").rglob("_*.c")) == sorted(
            p.name.split(".")[0] for p in root.joinpath("jouled").rglob("_*.so")
        )
        # Not this checkout's jouled, which an editable install would offer first.
        assert _imports_from(sys.executable, root) == root
        with daemon(tmp_path, {}, root=root) as d:
            assert http_get(d.metrics_url + "/healthz")[0] == 200
            pid_cwd = Path(f"/proc/{d.pid}/cwd").resolve()
            assert pid_cwd == root
    assert not root.exists()  # the export is removed on exit


def test_a_checkout_missing_an_extension_is_named(tmp_path: Path) -> None:
    (tmp_path / "jouled" / "ingest").mkdir(parents=True)
    (tmp_path / "jouled" / "ingest" / "_otlpscan.c").write_text("")
    (tmp_path / "jouled" / "ingest" / "_roots.c").write_text("")
    (tmp_path / "jouled" / "ingest" / "_roots.cpython-311-x86_64-linux-gnu.so").write_text("")
    assert unbuilt(tmp_path) == ["jouled/ingest/_otlpscan.c"]


def test_what_is_neither_a_checkout_nor_a_revision_is_refused() -> None:
    with (
        pytest.raises(RuntimeError, match="neither a checkout"),
        tree("no-such-rev~3", sys.executable),
    ):
        pass
