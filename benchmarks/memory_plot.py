"""The daemon's resident memory minute by minute, from ``daemon_memory`` results.

    .venv/bin/python -m benchmarks.memory_plot a.json:"label a" b.json:"label b" [--out P]

One line per (results file, transport): the largest VmRSS of each minute
(``rss_mb_max_by_minute``), labelled with the file's label (or its date) and the transport,
against the 80 MB target. Prints, per line, the largest value after minute 5 and the change
from minute 5 to the last minute (MB a minute). Writes ``docs/img/daemon_memory.png``
(``--out``) and prints its path.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "img" / "daemon_memory.png"
TARGET_MB = 80.0
FILLED_AFTER_MIN = 5


def series(payload: dict[str, Any], label: str) -> list[tuple[str, list[float]]]:
    """(``label, transport``, MB by minute) of each transport in a ``daemon_memory`` file."""
    out = []
    for transport, row in payload.get("results", {}).get("transports", {}).items():
        rows = [float(x) for x in row.get("rss_mb_max_by_minute", [])]
        if rows:
            out.append((f"{label}, {'OTLP/gRPC' if transport == 'grpc' else 'OTLP/HTTP'}", rows))
    return out


def summary(rows: list[float]) -> tuple[float | None, float | None]:
    """(largest MB after minute 5, MB a minute from minute 5 to the last); Nones when the
    run was not longer than five minutes."""
    later = rows[FILLED_AFTER_MIN:]
    if not later:
        return None, None
    slope = (rows[-1] - rows[FILLED_AFTER_MIN - 1]) / (len(rows) - FILLED_AFTER_MIN)
    return max(later), slope


def _arg(text: str) -> tuple[Path, str | None]:
    path, sep, label = text.partition(":")
    return Path(path), (label if sep else None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", help="daemon_memory results, each as PATH[:LABEL]")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(9, 4.8))
    drawn = 0
    for text in args.files:
        path, label = _arg(text)
        payload = json.loads(path.read_text())
        name = label or str(payload.get("date", path.name))[:16]
        for line, rows in series(payload, name):
            minutes = list(range(1, len(rows) + 1))
            ax.plot(minutes, rows, marker="o", markersize=3, label=line)
            most, slope = summary(rows)
            if most is not None and slope is not None:
                print(f"{line}: at most {most:.1f} MB after minute 5, {slope:+.2f} MB a minute")
            drawn += 1
    if not drawn:
        p.error("no daemon_memory rows in these files")
    ax.axhline(TARGET_MB, color="black", linestyle="--", linewidth=1, label="target (80 MB)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("minute of the run")
    ax.set_ylabel("largest VmRSS in the minute, MB")
    ax.set_title("jouled at 1,000 spans/s: resident memory over minutes")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
