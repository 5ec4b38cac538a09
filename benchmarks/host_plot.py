"""The daemon's CPU at a span rate against the host's speed, from ``daemon_cpu`` results.

    .venv/bin/python -m benchmarks.host_plot benchmarks/results/daemon_cpu.json [more.json ...]

Each ``daemon_cpu`` row records the host's speed in its window (``host_python_us``: µs of
the measuring thread's CPU for 1,000 steps of plain Python, ``_util.host_speed``). On the
shared VMs these benchmarks run on, that speed moves twofold within an hour, and the
daemon's CPU with it; this plots each row's CPU (% of one core) against it, one colour per
transport and one marker per results file (named with its date and the host's CPU), with a
least-squares line per transport over all the files and the 1 % target, and prints the host
speed at which each line crosses the target. A results file without host speeds (before the
eighteenth pass of issue 18) is skipped with a note. Writes
``docs/img/daemon_cpu_host_speed.png`` (``--out``) and prints its path.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "daemon_cpu.json"
DEFAULT_OUT = ROOT / "docs" / "img" / "daemon_cpu_host_speed.png"
TARGET_PERCENT = 1.0

Point = tuple[float, float]  # (host µs per 1,000 Python steps, CPU % of one core)


def points(results: Iterable[dict[str, Any]], rate: int) -> dict[str, list[Point]]:
    """Per row name (``http``, ``grpc``, ``no spans``) the (host µs, CPU %) of each run's row
    at ``rate`` spans/s (the no-span rows whatever the rate); rows without a host speed are
    left out."""
    out: dict[str, list[Point]] = {}
    for payload in results:
        for run in payload.get("results", {}).get("runs", []):
            for key, row in run.items():
                if not isinstance(row, dict) or "host_python_us" not in row:
                    continue
                if key == "no_spans":
                    name = "no spans"
                elif key.endswith(f"_{rate}"):
                    name = key.removesuffix(f"_{rate}")
                else:
                    continue
                point = (float(row["host_python_us"]), float(row["cpu_percent_of_one_core"]))
                if all(math.isfinite(v) for v in point):
                    out.setdefault(name, []).append(point)
    return out


def fit(pts: Sequence[Point]) -> tuple[float, float] | None:
    """Least squares ``cpu = a + b * host``: (a, b); None for fewer than 2 distinct hosts."""
    n = len(pts)
    if n < 2:
        return None
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    if sxx == 0:
        return None
    b = sum((x - mx) * (y - my) for x, y in pts) / sxx
    return my - b * mx, b


def crossing(line: tuple[float, float], target: float = TARGET_PERCENT) -> float | None:
    """The host speed (µs per 1,000 steps) at which ``line`` reaches ``target`` %."""
    a, b = line
    return (target - a) / b if b > 0 else None


Sources = Sequence[tuple[str, dict[str, list[Point]]]]  # (label, points()) per results file


def merged(per_source: Sources) -> dict[str, list[Point]]:
    """All sources' rows together, per row name."""
    out: dict[str, list[Point]] = {}
    for _label, got in per_source:
        for name, pts in got.items():
            out.setdefault(name, []).extend(pts)
    return out


def plot(per_source: Sources, rate: int, out: Path) -> None:
    """Each source's rows with a marker of its own, one colour per transport; the lines fit
    all sources' rows together."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"http": "tab:blue", "grpc": "tab:orange", "no spans": "tab:gray"}
    labels = {"http": "OTLP/HTTP", "grpc": "OTLP/gRPC", "no spans": "no spans"}
    markers = "os^Dv"
    fig, ax = plt.subplots(figsize=(11, 5), dpi=110)
    for k, (source, got) in enumerate(per_source):
        for name, pts in sorted(got.items()):
            ax.scatter(
                [x for x, _ in pts],
                [y for _, y in pts],
                color=colours.get(name, "tab:green"),
                marker=markers[k % len(markers)],
                label=f"{labels.get(name, name)}, {source}",
                s=36,
            )
    series = merged(per_source)
    xs = [x for pts in series.values() for x, _ in pts]
    lo, hi = min([*xs, 400.0]), max(xs) * 1.05
    for name, pts in sorted(series.items()):
        colour = colours.get(name, "tab:green")
        line = fit(pts)
        if line is not None and name != "no spans":
            a, b = line
            ax.plot([lo, hi], [a + b * lo, a + b * hi], color=colour, linewidth=1, alpha=0.7)
    ax.axhline(TARGET_PERCENT, color="tab:red", linestyle="--", linewidth=1)
    ax.text(
        hi,
        TARGET_PERCENT * 0.97,
        "target: 1 % of a core",
        color="tab:red",
        fontsize=9,
        ha="right",
        va="top",
    )
    lo -= 0.03 * (hi - lo)  # the fastest windows' markers whole, off the axis
    ax.set_xlim(lo, hi)
    ax.set_ylim(0, None)
    ax.set_xlabel(
        "host speed in the window: µs of CPU per 1,000 plain Python steps (lower = faster)"
    )
    ax.set_ylabel("daemon CPU, % of one core")
    ax.set_title(f"jouled at {rate:,} spans/s against the host's speed ({len(xs)} windows)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, default=[RESULTS])
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    per_source = []
    for path in args.files:
        payload = json.loads(path.read_text())
        got = points([payload], args.rate)
        if not got:
            print(f"{path}: no rows with a host speed (before the eighteenth pass): skipped")
            continue
        cpu = str(payload.get("machine", {}).get("cpu", "?"))
        host = cpu.split(" Processor", maxsplit=1)[0].replace("(R)", "").replace("(TM)", "")
        per_source.append((f"{path.name} ({payload.get('date', '?')[:10]}, {host})", got))
    series = merged(per_source)
    if not series:
        sys.exit("no daemon_cpu rows with a host speed in these files")
    for name, pts in sorted(series.items()):
        line = fit(pts)
        at = crossing(line) if line is not None and name != "no spans" else None
        span = f"{min(x for x, _ in pts):.0f}-{max(x for x, _ in pts):.0f} µs"
        cpu = f"{min(y for _, y in pts):.2f}-{max(y for _, y in pts):.2f} %"
        where = f"; 1 % at a host of {at:.0f} µs" if at is not None else ""
        print(f"{name:8s} {len(pts)} rows, host {span}, CPU {cpu}{where}")
    plot(per_source, args.rate, args.out)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
