"""The fit figures read well: no point label over another, a legend for the bar colours."""

from __future__ import annotations

import itertools

import pytest

pytest.importorskip("matplotlib")

from matplotlib.text import Annotation, Text

from jouled.costmodel import datasets, fit, plots


@pytest.fixture(scope="module")
def report() -> fit.FitReport:
    frame = fit.read_measurements(datasets.resolve_csv("thesis:inference"), x="gflops")
    return fit.fit_report(frame, "gflops", "joules")


def test_point_labels_are_one_per_model_and_never_overlap(report: fit.FitReport) -> None:
    fig = plots.regression_figure(report)
    fig.canvas.draw()  # annotations find their places when drawn
    renderer = fig.canvas.get_renderer()
    labels = [t for t in fig.axes[0].texts if isinstance(t, Annotation)]
    names = sorted(t.get_text() for t in labels)
    # Table 4.3 + BERT-large: distilbert twice, BERT-base, RoBERTa, ALBERT at ~97 GFLOPs.
    assert names == sorted({r.model for r in report.rows})
    assert len(report.rows) > len(names)  # repeated models get one label
    boxes = [(t.get_text(), Text.get_window_extent(t, renderer)) for t in labels]
    inside = fig.axes[0].get_window_extent(renderer)
    for a, b in itertools.combinations(boxes, 2):
        assert not a[1].overlaps(b[1]), (a[0], b[0])
    for _, box in boxes:
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1  # no name cut at the right edge


def test_label_positions_stack_names_at_one_x() -> None:
    anchors = [("b", 100.0, 200.0), ("a", 101.0, 203.0), ("c", 99.0, 201.0), ("b", 100.0, 210.0)]
    placed = plots.label_positions(anchors, gap=10.0, width=50.0, right_edge=1000.0)
    assert [p[0] for p in placed] == ["c", "a", "b"]  # by height; b once, at its mean (205)
    ys = [p[4] for p in placed]
    assert ys == [201.0, 211.0, 221.0]
    assert all(p[5] == "left" and p[3] == p[1] + 6 for p in placed)
    [right] = plots.label_positions([("x", 990.0, 5.0)], gap=10, width=50, right_edge=1000)
    assert right[5] == "right" and right[3] == 984.0


def test_predictor_figure_has_a_legend_for_its_colours(report: fit.FitReport) -> None:
    fig = plots.cv_figure(report)
    legend = fig.axes[0].get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == ["one predictor", "two predictors"]


def test_the_intercept_line_reads_as_an_equation() -> None:
    """docs/COSTMODEL.md's fit (fast tokenizer, train split, per request of 1,100 texts) has
    a negative intercept: the legend reads 'a·x - b', not 'a·x -b'."""
    frame = fit.read_measurements(
        datasets.resolve_csv("thesis:inference"),
        x="gflops",
        where=[("tokenizer", "fast"), ("split", "train")],
        requests=1100,
    )
    report = fit.fit_report(frame, "gflops", "joules")
    fig = plots.regression_figure(report)
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "with intercept: 0.1781·x - 0.6648" in texts
