"""One tick's split among a workload's spans: the compiled ``split_fractions`` against the
Python rule it stands for (``py_split_fractions``), per span, on three shapes of traffic.

- ``lone``: 100 requests of 5 ms in a 1 s tick, 10 ms apart (none overlap);
- ``bursts``: the same, arriving 1 to 3 at a time (a sender's late slice, a small server's
  concurrency): clusters of 2-3 overlapping spans;
- ``llm``: 2,000 requests of 0.5-3 s open over the tick (continuous batching), one cluster,
  work rates over 12 orders of magnitude.

Each shape is split ``--repeat`` times by each path (CPU time, ``time.process_time``), after
checking that both give the same doubles.

    .venv/bin/python -m benchmarks.split
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import time
from typing import Any

from benchmarks._util import save
from jouled.attribution import spans as spans_mod

Item = tuple[float, float, float, bool]
BASE = 1_800_000_000.0


def shapes(seed: int = 1) -> dict[str, list[Item]]:
    rng = random.Random(seed)
    lone = [(BASE + k / 100, BASE + k / 100 + 0.005, 16384.0 / 0.005, True) for k in range(100)]
    bursts: list[Item] = []
    t = BASE
    while len(bursts) < 100:
        for _ in range(rng.choice([1, 1, 2, 3])):
            s = t + rng.uniform(0, 0.0005)
            bursts.append((s, s + 0.005, 16384.0 / 0.005, True))
        t += 0.01
    llm = [
        (
            BASE - (k % 97) / 40,
            BASE + 0.2 + (k % 89) / 30,
            10.0 ** ((k % 13) - 6) * (1 + k % 7),
            k % 50 != 0,
        )
        for k in range(2000)
    ]
    return {"lone": lone, "bursts": bursts[:100], "llm": llm}


def _per_span_us(fn: Any, items: list[Item], repeat: int) -> float:
    t0 = time.process_time()
    for _ in range(repeat):
        fn(items, BASE, BASE + 1.0)
    return 1e6 * (time.process_time() - t0) / repeat / len(items)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=300, help="splits per shape and path")
    args = p.parse_args()
    repeat = max(1, min(args.repeat, 10_000))
    compiled = spans_mod._c_split_fractions
    if compiled is None:
        sys.exit("jouled.attribution._split is not built (or JOULED_PURE_PYTHON=1)")
    out: dict[str, Any] = {}
    pack = struct.Struct("<d").pack
    for name, items in shapes().items():
        got, want = (
            compiled(items, BASE, BASE + 1.0),
            spans_mod.py_split_fractions(items, BASE, BASE + 1.0),
        )
        assert got is not None and [pack(x) for x in got[1]] == [pack(x) for x in want[1]]
        n = repeat if name != "llm" else max(1, repeat // 20)
        out[name] = {
            "spans": len(items),
            "python_us_per_span": _per_span_us(spans_mod.py_split_fractions, items, n),
            "c_us_per_span": _per_span_us(compiled, items, n),
        }
        row = out[name]
        print(
            f"{name:7s} {len(items):5d} spans: Python {row['python_us_per_span']:.2f} us a span, "
            f"C {row['c_us_per_span']:.3f} us",
            file=sys.stderr,
        )
    save("split", out)


if __name__ == "__main__":
    main()
