"""Numbers for people: one unit and one number format per table column.

A column's unit is chosen for the largest magnitude it shows (Wh, kWh or MWh; g, kg or t;
...), so every cell of the column is the same fixed-point format in the same unit, named in
the header once: ``IT energy [kWh]`` over ``0.0113`` and ``1.1002``, rather than
``1.1343e-05 kWh`` beside ``0.00110021 kWh``. Machine outputs (CSV, JSON) keep base units.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# (unit, its size in the values' unit), smallest first; the first entry of size 1 (or the
# one named by ``default``) is used for an all-zero column.
JOULES_PER_WH = 3600.0
ENERGY_IN_JOULES: tuple[tuple[str, float], ...] = (
    ("µWh", 1e-6 * JOULES_PER_WH),
    ("mWh", 1e-3 * JOULES_PER_WH),
    ("Wh", JOULES_PER_WH),
    ("kWh", 1e3 * JOULES_PER_WH),
    ("MWh", 1e6 * JOULES_PER_WH),
    ("GWh", 1e9 * JOULES_PER_WH),
)
JOULES: tuple[tuple[str, float], ...] = (
    ("µJ", 1e-6),
    ("mJ", 1e-3),
    ("J", 1.0),
    ("kJ", 1e3),
    ("MJ", 1e6),
    ("GJ", 1e9),
)
GRAMS: tuple[tuple[str, float], ...] = (
    ("µg", 1e-6),
    ("mg", 1e-3),
    ("g", 1.0),
    ("kg", 1e3),
    ("t", 1e6),
)
LITRES: tuple[tuple[str, float], ...] = (
    ("µL", 1e-6),
    ("mL", 1e-3),
    ("L", 1.0),
    ("m³", 1e3),
)
GFLOPS: tuple[tuple[str, float], ...] = (
    ("GFLOP", 1.0),
    ("TFLOP", 1e3),
    ("PFLOP", 1e6),
    ("EFLOP", 1e9),
)


@dataclass(frozen=True, slots=True)
class ColumnFormat:
    """Formats one column: values in the base unit, shown in ``unit`` with ``decimals``."""

    unit: str
    size: float  # of ``unit``, in the unit of the values
    decimals: int

    def __call__(self, value: float | None) -> str:
        """``value`` as ``1,234.5`` in ``unit``; ``-`` for None or a non-finite value;
        ``<0.001`` for a positive value too small for the column's decimals (not ``0.000``,
        which would read as nothing at all)."""
        if value is None or not math.isfinite(value):
            return "-"
        text = f"{value / self.size:,.{self.decimals}f}"
        if float(text.replace(",", "")) == 0:
            if value > 0:
                return f"<{10.0**-self.decimals:.{self.decimals}f}"
            return text.lstrip("-")  # no "-0.00"
        return text


def _finite(values: Iterable[float | None]) -> list[float]:
    return [abs(v) for v in values if v is not None and math.isfinite(v)]


def column_format(
    values: Sequence[float | None],
    units: Sequence[tuple[str, float]],
    *,
    default: str | None = None,
    digits: int = 4,
) -> ColumnFormat:
    """The unit of ``units`` that shows the column's largest value between 1 and 1000 (or
    the nearest end of the list), with decimals for ``digits`` significant digits there.

    An all-zero or empty column uses ``default`` (else the unit of size 1, else the first).
    """
    biggest = max(_finite(values), default=0.0)
    if biggest == 0:
        unit, size = next(
            (u for u in units if u[0] == default or (default is None and u[1] == 1.0)),
            units[0],
        )
    else:
        unit, size = units[0]
        for name, factor in units:
            if factor <= biggest:
                unit, size = name, factor
    scaled = biggest / size
    whole_digits = math.floor(math.log10(scaled)) + 1 if scaled >= 1 else 1
    decimals = max(0, digits - whole_digits)
    return ColumnFormat(unit, size, _small_enough(values, size, decimals))


def _small_enough(values: Sequence[float | None], size: float, decimals: int) -> int:
    """More decimals (3 at most) where the column's smallest non-zero value would read 0:
    it gets 2 significant digits, so no non-zero cell shows as 0.00."""
    smallest = min((v / size for v in _finite(values) if v > 0), default=0.0)
    if smallest <= 0:
        return decimals
    needed = 1 - math.floor(math.log10(smallest))
    return max(decimals, min(needed, decimals + 3))


def money_format(values: Sequence[float | None], currency: str) -> ColumnFormat:
    """Amounts of ``currency``: at least 2 decimals (3 more where a small amount would read
    0.00); below a cent, SI-prefixed (m, µ, n) like the other columns."""
    biggest = max(_finite(values), default=0.0)
    if 0 < biggest < 0.01:
        prefixed = tuple((f"{p}{currency}", f) for p, f in (("n", 1e-9), ("µ", 1e-6), ("m", 1e-3)))
        return column_format(values, prefixed, digits=3)
    return ColumnFormat(currency, 1.0, _small_enough(values, 1.0, 2))
