"""Regression figures in the manner of the thesis's Figures 5.1 to 5.7, and a predictor chart.

Each regression plot shows the measured points (labelled by model), the thesis's line through
the origin with its two R² values (Listing C.1's and the centred one), and the intercept fit
with its 95 % confidence band for the mean. Uses matplotlib's object API (no pyplot state).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from scipy import stats

from jouled.costmodel.fit import FitReport

_DPI = 100
_ONE, _TWO = "#1f77b4", "#9467bd"  # bars of one-predictor and two-predictor models


def _save(fig: Figure, out: Path) -> None:
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    fig.savefig(out, dpi=_DPI, format="png")


def _signed(value: float) -> str:
    """``+ 0.66`` or ``- 0.66`` (spaced, not ``-0.66`` run into ``x``)."""
    return f"{'-' if value < 0 else '+'} {abs(value):.4g}"


def regression_plot(report: FitReport, out: Path, title: str = "", y_label: str = "") -> None:
    """Points, the anchored line (thesis) and the intercept fit with its 95 % band, as PNG."""
    _save(regression_figure(report, title, y_label), out)


def regression_figure(report: FitReport, title: str = "", y_label: str = "") -> Figure:
    """The regression plot's figure; one label per model, none over another."""
    fig = Figure(figsize=(7.0, 4.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs = np.array([r.x for r in report.rows])
    ys = np.array([r.measured for r in report.rows])
    top = float(xs.max()) * 1.08
    grid = np.linspace(0.0, top, 200)
    ax.scatter(xs, ys, color="#1f77b4", zorder=3, label="measured")
    a = report.anchored
    ax.plot(
        grid,
        a.intercept + a.slope * grid,
        color="#d62728",
        label=f"through origin (thesis): {a.slope:.4g}·x",
    )
    if report.ols is not None and report.n > 2:
        o = report.ols
        ax.plot(
            grid,
            o.intercept + o.slope * grid,
            color="#2ca02c",
            linestyle="--",
            label=f"with intercept: {o.slope:.4g}·x {_signed(o.intercept)}",
        )
        dof = report.n - 2
        resid = ys - (o.intercept + o.slope * xs)
        s = math.sqrt(float(np.sum(resid**2)) / dof)
        sxx = float(np.sum((xs - xs.mean()) ** 2))
        half = stats.t.ppf(0.975, dof) * s * np.sqrt(1 / report.n + (grid - xs.mean()) ** 2 / sxx)
        fitted = o.intercept + o.slope * grid
        ax.fill_between(
            grid,
            fitted - half,
            fitted + half,
            color="#2ca02c",
            alpha=0.12,
            label="95 % band (intercept fit)",
        )
    text = (
        f"R² Listing C.1: {a.r2_thesis:.3f}\n"
        f"R² centred (through origin): {a.r2_centered:.3f}\n"
        f"slope 95 % CI: {a.slope_ci95[0]:.4g} to {a.slope_ci95[1]:.4g}, p = {a.p_value:.2g}\n"
        f"n = {report.n}"
    )
    ax.text(
        0.98,
        0.04,
        text,
        transform=ax.transAxes,
        ha="right",
        va="bottom",
        fontsize=8,
        bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85},
    )
    ax.set_xlim(0, top)
    ax.set_ylim(bottom=min(0.0, float(ys.min())))
    ax.set_xlabel(f"{report.x} (GFLOPs per forward pass)" if report.x == "gflops" else report.x)
    ax.set_ylabel(y_label or f"{report.y} (J)")
    ax.set_title(title or f"{report.y} against {report.x}", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _label_points(fig, ax, [(r.model, r.x, r.measured) for r in report.rows])
    return fig


_LABEL_PT = 7.0  # font size of a point's label


def label_positions(
    anchors: list[tuple[str, float, float]], gap: float, width: float, right_edge: float
) -> list[tuple[str, float, float, float, float, str]]:
    """Where each model's label goes, in display units: ``(text, ax, ay, lx, ly, ha)``.

    One label per model, at the mean of its points. Labels sit beside their point (to the
    left near ``right_edge``) and are pushed up until no two labels closer than ``width``
    in x are closer than ``gap`` in y: the points of BERT-base, RoBERTa and ALBERT at the
    same GFLOPs get a readable column of names, each with a leader to its point.
    """
    groups: dict[str, list[tuple[float, float]]] = {}
    for name, x, y in anchors:
        groups.setdefault(name, []).append((x, y))
    means = sorted(
        (
            (name, sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts))
            for name, pts in groups.items()
        ),
        key=lambda t: (t[2], t[1]),
    )
    placed: list[tuple[str, float, float, float, float, str]] = []
    for name, x, y in means:
        left = x > right_edge - width
        lx = x - 6 if left else x + 6
        ly = y
        for _, ox, _, _, oy, _ in placed:
            if abs(ox - x) < width and ly < oy + gap:
                ly = oy + gap
        placed.append((name, x, y, lx, ly, "right" if left else "left"))
    return placed


def _label_points(fig: Figure, ax: Any, anchors: list[tuple[str, float, float]]) -> None:
    to_px = ax.transData.transform
    px_per_pt = fig.dpi / 72.0
    gap = _LABEL_PT * 1.35 * px_per_pt
    width = 150.0 * px_per_pt  # about the longest model name at 7 pt
    right_edge = float(ax.transAxes.transform((1.0, 0.0))[0])
    in_px: list[tuple[str, float, float]] = []
    for name, x, y in anchors:
        px, py = to_px((x, y))
        in_px.append((name, float(px), float(py)))
    for name, x, y, lx, ly, ha in label_positions(in_px, gap, width, right_edge):
        offset = ((lx - x) / px_per_pt, (ly - y) / px_per_pt)
        moved = abs(ly - y) > 1
        at = ax.transData.inverted().transform((x, y))
        ax.annotate(
            name,
            (float(at[0]), float(at[1])),
            textcoords="offset points",
            xytext=offset,
            ha=ha,
            va="center",
            fontsize=_LABEL_PT,
            color="#333333",
            bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none",
                  "alpha": 0.8},
            arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "#999999"} if moved else None,
        )  # fmt: skip


def cv_plot(report: FitReport, out: Path, title: str = "") -> None:
    """Leave-one-out error of each candidate predictor (lower generalises better), as PNG."""
    _save(cv_figure(report, title), out)


def cv_figure(report: FitReport, title: str = "") -> Figure:
    """The predictor comparison's figure; a legend names the two bar colours."""
    scored = [r for r in report.cv if math.isfinite(r.loo_mape_percent)]
    fig = Figure(figsize=(7.0, 0.5 + 0.38 * max(len(scored), 1)))
    ax = fig.add_subplot()
    labels = [r.label for r in scored][::-1]
    values = [r.loo_mape_percent for r in scored][::-1]
    colors = [_ONE if len(r.predictors) == 1 else _TWO for r in scored][::-1]
    ax.barh(labels, values, color=colors)
    ax.legend(
        handles=[
            Patch(color=_ONE, label="one predictor"),
            Patch(color=_TWO, label="two predictors"),
        ],
        loc="upper right",  # beside the best (shortest) bars, sorted to the top
        fontsize=8,
    )
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.1f} %", va="center", fontsize=8)
    ax.set_xscale("log")
    if values:
        ax.set_xlim(right=max(values) * 2.5)  # room for the longest bar's percentage
    ax.set_xlabel("leave-one-out mean absolute error (%, log scale)")
    ax.set_title(
        title or f"Which predictor of {report.y} generalises (n = {report.n})", fontsize=10
    )
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig
