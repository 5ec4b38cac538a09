"""Cost of one tick: the sampler alone (RAPL, 2 sockets), then with attribution (10 workloads
over 1,000 host processes), then with 1,000 open (unsettled) request spans.

Time is a FakeClock moved 1 s per tick, with the fake RAPL tree advanced to match, so the
tick does exactly what the daemon's 1 s tick does minus the sleep. CPU time is this
process's (``time.process_time``: all threads, collector threads included).

    .venv/bin/python -m benchmarks.tick [--ticks 300] [--processes 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._util import exit_on_sigterm, percentiles, save, sleepers, workload_configs
from jouled.attribution.spans import Span
from jouled.attribution.stage import AttributionStage
from jouled.clock import FakeClock
from jouled.collectors.rapl import RaplCollector
from jouled.config import validate
from jouled.pipeline.sampler import Sampler
from jouled.testing.fake_powercap import FakePowercap

SETTLE_S = 5.0
BURN = """
import time
while True:
    t = time.perf_counter() + 0.02
    while time.perf_counter() < t:
        pass
    time.sleep(0.08)
"""


async def _ticks(
    sampler: Sampler,
    clock: FakeClock,
    fake: FakePowercap,
    n: int,
    *,
    stage: AttributionStage | None = None,
    spans_per_tick: int = 0,
) -> dict[str, Any]:
    wall: list[float] = []
    cpu: list[float] = []
    pending: list[int] = []
    rng = random.Random(1)
    for i in range(n):
        clock.advance(1.0)
        fake.advance(1.0)
        if stage is not None and spans_per_tick:
            # Spans of the tick that just ended arrive now: with settle 5 s, about
            # 5 x spans_per_tick stay open at any time.
            w1 = clock.time()
            spans = []
            for k in range(spans_per_tick):
                a = w1 - rng.random()
                spans.append(
                    Span("w0", f"m{k % 50}", a, min(w1, a + 0.05), gflops=97.1, span_id=f"{i}-{k}")
                )
            stage.submit(spans)
        c0, t0 = time.process_time(), time.perf_counter()
        await sampler.tick()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if stage is not None:
            pending.append(stage.splitter.stats.pending_spans)
    out = {"wall": percentiles(wall[5:]), "cpu": percentiles(cpu[5:])}
    if pending:
        out["open_spans_mean"] = sum(pending[5:]) / len(pending[5:])
    return out


async def bench(ticks: int, processes: int) -> dict[str, Any]:
    results: dict[str, Any] = {"ticks": ticks, "host_processes": processes}
    with tempfile.TemporaryDirectory() as tmp:
        fake = FakePowercap.typical_server(Path(tmp), sockets=2)
        clock = FakeClock()
        rapl = RaplCollector(fake.class_dir, clock=clock)
        sampler = Sampler([rapl], clock, timeout_s=0.5)
        await sampler.tick()
        results["sampler_only"] = await _ticks(sampler, clock, fake, ticks)

        # w0 is a separate process that burns a little CPU, so that ticks carry workload
        # energy to split; not this process, whose children (the sleepers) it would inherit.
        burner = subprocess.Popen([sys.executable, "-c", BURN])  # noqa: ASYNC220 - set-up
        with sleepers(processes, groups=10, per_group=20):
            workloads = workload_configs(10)
            workloads[0] = {"name": "w0", "match": {"pid": burner.pid}}
            cfg = validate(
                {
                    "workloads": workloads,
                    "spans": {"settle_seconds": SETTLE_S},
                    "attribution": {"idle_power_watts": {"cpu": 100, "dram": 10}},
                },
                "<bench>",
            )
            stage = AttributionStage(cfg)
            sampler.set_stages([stage])
            await sampler.tick()
            results["with_attribution"] = await _ticks(sampler, clock, fake, ticks, stage=stage)
            results["with_1000_open_spans"] = await _ticks(
                sampler, clock, fake, ticks, stage=stage, spans_per_tick=int(1000 / SETTLE_S)
            )
        burner.kill()
        burner.wait()
        sampler.close()
    base = results["with_attribution"]["cpu"]["mean_ms"]
    results["added_by_1000_open_spans_cpu_ms"] = (
        results["with_1000_open_spans"]["cpu"]["mean_ms"] - base
    )
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ticks", type=int, default=300)
    p.add_argument("--processes", type=int, default=1000)
    args = p.parse_args()
    results = asyncio.run(bench(args.ticks, args.processes))
    for name in ("sampler_only", "with_attribution", "with_1000_open_spans"):
        r = results[name]
        print(
            f"{name:22} wall p50 {r['wall']['p50_ms']:7.3f} ms p99 {r['wall']['p99_ms']:7.3f} ms"
            f" | cpu mean {r['cpu']['mean_ms']:7.3f} ms"
            + (f" | open spans {r['open_spans_mean']:.0f}" if "open_spans_mean" in r else "")
        )
    print(f"added by 1000 open spans: {results['added_by_1000_open_spans_cpu_ms']:.3f} ms CPU/tick")
    print("saved", save("tick", results))


if __name__ == "__main__":
    exit_on_sigterm()
    main()
