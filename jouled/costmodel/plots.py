"""Regression figures in the manner of the thesis's Figures 5.1 to 5.7, and a predictor chart.

Each regression plot shows the measured points (labelled by model), the thesis's line through
the origin with its two R² values (Listing C.1's and the centred one), and the intercept fit
with its 95 % confidence band for the mean. Uses matplotlib's object API (no pyplot state).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats

from jouled.costmodel.fit import FitReport

_DPI = 100


def _save(fig: Figure, out: Path) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(out, dpi=_DPI, format="png")


def regression_plot(report: FitReport, out: Path, title: str = "", y_label: str = "") -> None:
    """Points, the anchored line (thesis) and the intercept fit with its 95 % band."""
    fig = Figure(figsize=(7.0, 4.6))
    ax = fig.add_subplot()
    xs = np.array([r.x for r in report.rows])
    ys = np.array([r.measured for r in report.rows])
    top = float(xs.max()) * 1.08
    grid = np.linspace(0.0, top, 200)
    ax.scatter(xs, ys, color="#1f77b4", zorder=3, label="measured")
    for row in report.rows:
        ax.annotate(
            row.model,
            (row.x, row.measured),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=7,
            color="#333333",
        )
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
            label=f"with intercept: {o.slope:.4g}·x {o.intercept:+.4g}",
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
    _save(fig, out)


def cv_plot(report: FitReport, out: Path, title: str = "") -> None:
    """Leave-one-out error of each candidate predictor (lower generalises better)."""
    scored = [r for r in report.cv if math.isfinite(r.loo_mape_percent)]
    fig = Figure(figsize=(7.0, 0.5 + 0.38 * max(len(scored), 1)))
    ax = fig.add_subplot()
    labels = [r.label for r in scored][::-1]
    values = [r.loo_mape_percent for r in scored][::-1]
    colors = ["#1f77b4" if len(r.predictors) == 1 else "#9467bd" for r in scored][::-1]
    ax.barh(labels, values, color=colors)
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.1f} %", va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("leave-one-out mean absolute error (%, log scale)")
    ax.set_title(
        title or f"Which predictor of {report.y} generalises (n = {report.n})", fontsize=10
    )
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    _save(fig, out)
