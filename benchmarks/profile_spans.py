"""Where the daemon's CPU goes, per stage of the span path: py-spy on a real ``jouled run``.

The daemon and the senders are those of ``benchmarks.daemon_cpu`` (10 workloads, 50 models,
the OpenTelemetry SDK's BatchSpanProcessor); after the warm-up (settle delay + 10 s) py-spy
samples every thread of the daemon for ``--window`` s (``--nonblocking``, ``--hz`` samples a
second, 200 by default; idle threads left out). Each sample is put in the stage of its
innermost frame that a rule below names; the table gives each stage's share of the samples
and its CPU per span (the share of the daemon's CPU-seconds over the window, per span
received).

    .venv/bin/python -m benchmarks.profile_spans --rate 1000 --transport http --window 30

Needs py-spy (``pip install py-spy``) and ptrace permission on the daemon.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._util import cpu_seconds, daemon, exit_on_sigterm, sleepers
from benchmarks.daemon_cpu import GROUPS, _received, _sender, loaded_config

# (stage, substrings of "function (file)" frames): the innermost frame matching wins.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    (
        "protobuf decode",
        ("jouled/ingest/wire.py", "otlpscan.py", "FromString", "MergeFromString"),
    ),
    ("validation", ("jouled/ingest/rules.py", "_select", "_request_ancestor", "modelcap.py")),
    (
        "attribute reading",
        ("decode_otlp", "any_value", "_OtlpSpan", "attributes.py", "decode.py"),
    ),
    ("queueing", ("submit (jouled/attribution/stage.py", "requests.py", "add_span", "_queue")),
    (
        "settling",
        (
            "_settle_tick",
            "split_fractions",
            "_budget",
            "SpanSplitter._complete",
            "_finish",
            "sub_ticks",
            "_TimeQueue",
            "_RangeSum",
            "_exact_rates",
            "SpanSplitter.settle",
        ),
    ),
    ("booking", ("_absorb", "observe", "_Window")),
    ("snapshot", ("_freeze", "freeze", "jouled/pipeline/", "jouled/exporter/")),
    ("gRPC receive", ("jouled/ingest/grpc.py", "grpc/", "grpc_")),
    ("HTTP receive", ("jouled/ingest/app.py", "guard.py", "limits.py", "aiohttp/")),
    ("tick (no spans)", ("jouled/",)),
    ("event loop, GC, other", ("",)),
]


def classify(stack: str) -> str:
    frames = stack.split(";")
    for frame in reversed(frames):
        for stage, keys in STAGES[:-1]:
            if any(k in frame for k in keys):
                return stage
    return STAGES[-1][0]


def shares(raw: Path) -> dict[str, float]:
    """Each stage's share of the samples in a py-spy ``--format raw`` file."""
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, num = line.rpartition(" ")
        counts[classify(stack)] += int(num)
    total = sum(counts.values()) or 1
    return {stage: counts[stage] / total for stage, _ in STAGES}


def profile(
    rate: int, transport: str, window: float, settle: float | None, hz: int = 200
) -> dict[str, Any]:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    cfg = loaded_config(settle, rate)
    grpc = cfg["ingest"]["grpc_listen"]
    warm = (30.0 if settle is None else settle) + 10
    with (
        tempfile.TemporaryDirectory() as tmp,
        sleepers(1000, groups=GROUPS, per_group=20),
        daemon(Path(tmp), cfg) as d,
    ):
        endpoint = grpc if transport == "grpc" else d.cfg["ingest"]["listen"]
        raw = Path(tempfile.gettempdir()) / f"jouled-profile-{transport}-{rate}.txt"
        with _sender(endpoint, transport, rate, warm + window + 15) if rate else _null():
            time.sleep(warm if rate else 5)
            n0, c0 = _received(d), cpu_seconds(d.pid)
            subprocess.run(
                [py_spy, "record", "--pid", str(d.pid), "--duration", str(int(window)),
                 "--rate", str(hz), "--nonblocking", "--format", "raw",
                 "--output", str(raw)],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            cpu, n = cpu_seconds(d.pid) - c0, _received(d) - n0
    share = shares(raw)
    return {
        "rate": rate,
        "transport": transport,
        "spans": n,
        "cpu_s": cpu,
        "cpu_percent_of_one_core": 100 * cpu / window,
        "raw": str(raw),
        "stages": {
            stage: {"share": part, "us_per_span": 1e6 * cpu * part / n if n else None}
            for stage, part in share.items()
        },
    }


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=int, default=1000)
    p.add_argument("--transport", choices=("http", "grpc"), default="http")
    p.add_argument("--window", type=float, default=30.0)
    p.add_argument("--settle-seconds", type=float, default=None)
    p.add_argument("--hz", type=int, default=200, help="py-spy's samples a second")
    p.add_argument("--classify", type=Path, help="only print the stages of a raw py-spy file")
    args = p.parse_args()
    if args.classify is not None:
        for stage, part in shares(args.classify).items():
            print(f"  {stage:24} {100 * part:5.1f} %")
        return
    r = profile(args.rate, args.transport, min(args.window, 300), args.settle_seconds, args.hz)
    print(
        f"{r['transport']} {r['rate']} spans/s: {r['spans']:.0f} spans, CPU "
        f"{r['cpu_percent_of_one_core']:.2f} % of one core (py-spy stacks: {r['raw']})"
    )
    for stage, v in r["stages"].items():
        per = f"{v['us_per_span']:6.1f} us/span" if v["us_per_span"] is not None else ""
        print(f"  {stage:24} {100 * v['share']:5.1f} %  {per}")


if __name__ == "__main__":
    exit_on_sigterm()
    main()
