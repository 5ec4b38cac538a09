"""Attribution accuracy against a known per-process power model, on the RAPL emulator.

The emulated RAPL tree (``jouled.testing.load_following.LoadFollowingRapl``) draws idle
power plus a fixed number of watts per busy CPU, read from /proc/stat every 20 ms: every
CPU-second any process spends costs exactly ``J_PER_CPU_S`` joules. Three workload processes
burn CPU at different duty cycles; each one's true energy is ``J_PER_CPU_S`` x its CPU
seconds (from /proc/<pid>/stat). jouled (the real daemon, idle power configured to the
emulator's) must attribute each workload that energy: the target is at most 2 % error per
workload (Kepler's own end-to-end check allows 5 %).

    .venv/bin/python -m benchmarks.accuracy [--seconds 20] [--interval 0.5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._util import cpu_seconds, daemon, exit_on_sigterm, save, wait_for
from jouled.loadgen.readout import parse_metrics
from jouled.testing.load_following import LoadFollowingRapl

DUTY = {"light": 0.15, "medium": 0.35, "heavy": 0.6}
BURNER = """
import sys, time
from pathlib import Path
duty, go, stop = float(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
while not go.exists():
    time.sleep(0.01)
while not stop.exists():
    end = time.perf_counter() + 0.05 * duty
    while time.perf_counter() < end:
        pass
    time.sleep(0.05 * (1 - duty))
time.sleep(3600)
"""


def workload_j(metrics: dict[Any, float], workload: str) -> float:
    return sum(
        v
        for (name, labels), v in metrics.items()
        if name == "jouled_workload_energy_joules_total" and dict(labels)["workload"] == workload
    )


def bench(seconds: float, interval: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        emu = LoadFollowingRapl(tmp / "sys")
        emu.start()
        go, stop = tmp / "go", tmp / "stop"
        procs = {
            name: subprocess.Popen([sys.executable, "-c", BURNER, str(d), str(go), str(stop)])
            for name, d in DUTY.items()
        }
        try:
            cfg = {
                "interval": interval,
                "collectors": {
                    "rapl": {"enabled": True, "path": str(emu.class_dir)},
                    "nvml": {"enabled": False},
                    "estimate": {"enabled": False},
                },
                "workloads": [{"name": n, "match": {"pid": p.pid}} for n, p in procs.items()],
                "attribution": {
                    "idle": "exclude",
                    "idle_power_watts": {"cpu": emu.package_idle_w, "dram": emu.dram_idle_w},
                },
            }
            with daemon(tmp, cfg) as d:
                wait_for(
                    lambda: all(
                        f'jouled_workload_processes{{workload="{n}"}} 1.0' in d.metrics().decode()
                        for n in procs
                    ),
                    15,
                    "workloads matched",
                )
                time.sleep(2 * interval)
                before = parse_metrics(d.metrics().decode())
                cpu0 = {n: cpu_seconds(p.pid) for n, p in procs.items()}
                go.touch()
                time.sleep(seconds)
                stop.touch()
                time.sleep(4 * interval + 0.5)  # the last ticks catch the last CPU time
                after = parse_metrics(d.metrics().decode())
                cpu1 = {n: cpu_seconds(p.pid) for n, p in procs.items()}
        finally:
            for p in procs.values():
                p.kill()
                p.wait()
            emu.stop()
    rows = {}
    for name in procs:
        cpu = cpu1[name] - cpu0[name]
        truth = cpu * emu.joules_per_cpu_second
        got = workload_j(after, name) - workload_j(before, name)
        rows[name] = {
            "duty": DUTY[name],
            "cpu_s": cpu,
            "true_j": truth,
            "jouled_j": got,
            "error_percent": 100 * (got - truth) / truth if truth else float("nan"),
        }
    return {
        "seconds": seconds,
        "interval_s": interval,
        "joules_per_cpu_second": emu.joules_per_cpu_second,
        "workloads": rows,
        "max_abs_error_percent": max(abs(r["error_percent"]) for r in rows.values()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--interval", type=float, default=0.5)
    args = p.parse_args()
    results = bench(args.seconds, args.interval)
    for name, r in results["workloads"].items():
        print(
            f"{name:7} duty {r['duty']:.2f}: CPU {r['cpu_s']:6.2f} s, true {r['true_j']:8.2f} J, "
            f"jouled {r['jouled_j']:8.2f} J, error {r['error_percent']:+6.2f} %"
        )
    print(f"max |error| {results['max_abs_error_percent']:.2f} % (target <= 2 %)")
    print("saved", save("accuracy", results))


if __name__ == "__main__":
    exit_on_sigterm()
    main()
