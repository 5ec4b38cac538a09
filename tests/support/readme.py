"""README.md's metric table, parsed for the tests that hold it to the code."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def metric_rows() -> list[tuple[list[str], str]]:
    """(family names, type cell) of each row of the README's Metrics table."""
    section = README.read_text().split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`jouled_"):
            continue
        # `jouled_spans_rejected_total{reason}`: the family is the name before the labels.
        rows.append((re.findall(r"`(jouled_\w+)", cells[0]), cells[1]))
    return rows
