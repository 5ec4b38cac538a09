"""``jouled report --plot``: the report's rows as horizontal bars, one panel per quantity.

Each panel's axis is in its table column's unit (``kWh``, ``g``, the currency), so tick
labels are short numbers, never ``0.0000000025``. Needs matplotlib (``jouled[report]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jouled.report_errors import ReportError
from jouled.units import ColumnFormat

_IT = "#3a7dc0"
_FACILITY = "#a9c8e8"


def _label(row: dict[str, Any], by: str) -> str:
    if by == "day":
        return f"{row['day']} {row['party']}"
    if by == "model":
        return f"{row['workload']}/{row['model']}"
    return str(row["workload"])


def plot(
    items: list[dict[str, Any]], by: str, formats: dict[str, ColumnFormat], path: Path
) -> dict[str, list[str]]:
    """Energy (IT and facility), emissions and cost per row, side by side, as a PNG.

    Returns each panel's x tick labels as drawn (by panel title), for the caller to check.

    ``formats`` are the table's column formats (``report.column_formats``): each panel is
    drawn in its column's unit. Raises ReportError when matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, MaxNLocator
    except ImportError:
        raise ReportError("--plot needs matplotlib: pip install 'jouled[report]'") from None
    labels = [_label(r, by) for r in items]
    energy = formats["facility_energy_joules"]  # the larger of the two energy columns

    def scaled(key: str, fmt: ColumnFormat) -> list[float]:
        return [(r.get(key) or 0.0) / fmt.size for r in items]

    panels = (
        ("energy", energy, ["facility_energy_joules", "energy_joules"]),
        ("location-based CO2e", formats["emissions_grams"], ["emissions_grams"]),
        ("cost", formats["cost"], ["cost"]),
    )
    height = max(3.2, 0.4 * len(labels) + 1.8)
    fig, axes = plt.subplots(1, 3, figsize=(13, height), sharey=True)
    for ax, (title, fmt, keys) in zip(axes, panels, strict=True):
        biggest = 0.0
        for key in keys:
            values = scaled(key, fmt)
            biggest = max(biggest, *values)
            if key == "facility_energy_joules":
                ax.barh(labels, values, color=_FACILITY, label="facility (x PUE)")
            else:
                label = "IT" if key == "energy_joules" else None
                bars = ax.barh(labels, values, color=_IT, label=label, height=0.5)
                ax.bar_label(
                    bars,
                    labels=[f"{v:,.{fmt.decimals}f}" for v in values],
                    padding=2,
                    fontsize=8,
                )
        ax.set_title(f"{title} [{fmt.unit}]")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:,.4g}"))
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlim(0, biggest * 1.3 or 1.0)
    axes[0].invert_yaxis()  # shared: first row on top in every panel, as in the table
    # Above the panels, left: never over a bar.
    fig.legend(loc="upper left", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(f"jouled report by {by}: emissions and cost are of facility energy")
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    fig.savefig(path, dpi=110)
    ticks = {ax.get_title(): [t.get_text() for t in ax.get_xticklabels()] for ax in axes}
    plt.close(fig)
    return ticks
