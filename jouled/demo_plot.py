"""``jouled demo``'s figure: joules per request and per text by scenario."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jouled.demo import ScenarioRow


def plot(rows: Sequence[ScenarioRow], path: Path, *, title: str, estimated: bool) -> bool:
    """Write the PNG; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig = figure(rows, title=title, estimated=estimated)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def figure(rows: Sequence[ScenarioRow], *, title: str, estimated: bool) -> Any:
    """Joules per request (log) and per text (linear) by scenario: a matplotlib Figure.

    A scenario with no settled request keeps its place with a note instead of a bar: its
    joules are unknown, not 0.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    labels = [
        f"scenario {r.scenario}\n{r.requests} req x {r.texts // max(1, r.requests)} text"
        for r in rows
    ]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    color = "#c0803a" if estimated else "#3a7dc0"
    for ax, raw, ylabel, scale in (
        # Requests span three decades (1 text to 500): log. Per text should be flat: linear
        # from zero, so that equal bars look equal.
        (axes[0], [r.joules_per_request for r in rows], "joules per request", "log"),
        (axes[1], [r.joules_per_text for r in rows], "joules per text", "linear"),
    ):
        # A scenario whose spans all came late has no joules: no bar and says so (not "0").
        shown = [
            v if r.requests_settled and math.isfinite(v) else math.nan
            for v, r in zip(raw, rows, strict=True)
        ]
        bars = ax.bar(labels, shown, color=color)
        ax.bar_label(bars, labels=[f"{v:.3g}" if math.isfinite(v) else "" for v in shown])
        for i, v in enumerate(shown):
            if not math.isfinite(v):
                ax.text(
                    i, 0.03, "no request settled\n(spans late)", ha="center", va="bottom",
                    fontsize=8, color="#a03030", transform=ax.get_xaxis_transform(),
                )  # fmt: skip
        ax.set_xlim(-0.6, len(labels) - 0.4)  # a bar-less scenario keeps its place
        ax.set_ylabel(ylabel)
        ax.set_yscale(scale)
        plain = FuncFormatter(lambda v, _pos: f"{v:g}")  # 0.6, not 6 x 10^-1
        ax.yaxis.set_major_formatter(plain)
        low, high = ax.get_ylim()
        few_decades = scale == "log" and high / max(low, 1e-300) < 30  # else minor labels crowd
        ax.yaxis.set_minor_formatter(plain if few_decades else NullFormatter())
        finite = [v for v in shown if math.isfinite(v)]
        if scale == "linear":
            ax.set_ylim(0, max(finite, default=1.0) * 1.2 or 1.0)
        elif finite:
            ax.set_ylim(top=max(finite) * 2.5)  # room for the tallest bar's label
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
