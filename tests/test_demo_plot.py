"""``jouled demo``'s figure: a scenario whose spans all came late has no bar and says so,
rather than a bar labelled 0; tick labels are plain numbers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from jouled.demo import ScenarioRow
from jouled.demo_plot import figure, plot


def row(scenario: int, requests: int, texts: int, settled: int, jpr: float) -> ScenarioRow:
    return ScenarioRow(
        scenario=scenario, requests=requests, errors=0, texts=texts, wall_s=1.0, p50_ms=10.0,
        requests_settled=settled, joules_per_request=jpr,
        joules_per_text=jpr * requests / texts if settled else 0.0,
        gflops_per_request=1.0, workload_energy_j=1.0, sources=("rapl (emulated)",),
        spans_late=0.0 if settled else 1.0, truncated=True,
    )  # fmt: skip


def test_an_unsettled_scenario_keeps_its_place_without_a_zero_bar(tmp_path: Path) -> None:
    rows = [row(1, 6, 6, 6, 0.0774), row(2, 10, 100, 10, 0.638), row(3, 1, 500, 0, math.nan)]
    fig = figure(rows, title="t", estimated=False)
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        assert [t.split("\n")[0] for t in ticks] == ["scenario 1", "scenario 2", "scenario 3"]
        notes = [t.get_text() for t in ax.texts]
        assert "no request settled\n(spans late)" in notes
        values = [t.get_text() for t in ax.texts if t.get_text() and t.get_text()[0].isdigit()]
        assert "0" not in values and len(values) == 2  # labels of the two real bars only
        for label in ax.get_yticklabels():
            assert "times" not in label.get_text() and "^" not in label.get_text()
    assert plot(rows, tmp_path / "d.png", title="t", estimated=False)
    assert (tmp_path / "d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
