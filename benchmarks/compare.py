"""Side by side, as ratios: jouled's scrape against node_exporter's RAPL collector on the same
fake sysfs, and jouled's CPU overhead against CodeCarbon's tracker at the same 1 s interval.

node_exporter is Debian's ``prometheus-node-exporter`` with only ``--collector.rapl``;
CodeCarbon is PyPI's ``codecarbon`` (``OfflineEmissionsTracker``, ``measure_power_secs=1``)
run in its own process, whose CPU is read from /proc like jouled's. Either side is skipped,
and said so, where it is not installed.

    .venv/bin/python -m benchmarks.compare [--scrapes 300] [--window 30]
        [--codecarbon-python /path/to/python-with-codecarbon]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._util import (
    cpu_seconds,
    daemon,
    exit_on_sigterm,
    free_port,
    http_get,
    percentiles,
    rss_mb,
    save,
    scrape_like_prometheus,
    wait_for,
)
from jouled.testing.fake_powercap import FakePowercap

CODECARBON = """
import logging, sys, time
from codecarbon import OfflineEmissionsTracker
t = OfflineEmissionsTracker(country_iso_code="USA", measure_power_secs=1, save_to_file=False,
                            log_level="error", tracking_mode="machine")
t.start()
print("started", flush=True)
time.sleep(float(sys.argv[1]))
t.stop()
"""


def _scrapes(url: str, pid: int, n: int) -> dict[str, Any]:
    """n scrapes with a real Prometheus's Accept and Accept-Encoding headers."""
    times = []
    c0 = cpu_seconds(pid)
    for _ in range(n):
        t0 = time.perf_counter()
        body, wire = scrape_like_prometheus(url)
        times.append(time.perf_counter() - t0)
    cpu = cpu_seconds(pid) - c0
    return {
        **percentiles(times[5:]),
        "cpu_ms_per_scrape": 1000 * cpu / n,
        "bytes": len(body),
        "bytes_on_the_wire": wire,
        "rss_mb": rss_mb(pid),
    }


def scrape_vs_node_exporter(n: int) -> dict[str, Any]:
    binary = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        fake = FakePowercap.typical_server(tmp / "sys", sockets=2)
        fake.advance(10.0)
        out: dict[str, Any] = {}
        cfg = {
            "interval": 1.0,
            "collectors": {
                "rapl": {"enabled": True, "path": str(fake.class_dir)},
                "nvml": {"enabled": False},
            },
        }
        with daemon(tmp, cfg) as d:
            time.sleep(2)
            out["jouled"] = _scrapes(d.metrics_url + "/metrics", d.pid, n)
        if binary is None:
            out["node_exporter"] = "not installed (apt-get install prometheus-node-exporter)"
            return out
        port = free_port()
        proc = subprocess.Popen(
            [
                binary,
                "--collector.disable-defaults",
                "--collector.rapl",
                f"--path.sysfs={tmp / 'sys'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            wait_for(lambda: http_get(url)[0] == 200, 15, "node_exporter")
            body = http_get(url)[1]
            out["node_exporter_rapl_lines"] = [
                ln for ln in body.splitlines() if ln.startswith("node_rapl_")
            ]
            out["node_exporter"] = _scrapes(url, proc.pid, n)
        finally:
            proc.terminate()
            proc.wait(10)
    j, ne = out["jouled"], out["node_exporter"]
    out["ratio_p50_jouled_over_node_exporter"] = j["p50_ms"] / ne["p50_ms"]
    out["ratio_p99_jouled_over_node_exporter"] = j["p99_ms"] / ne["p99_ms"]
    out["ratio_cpu_per_scrape"] = j["cpu_ms_per_scrape"] / ne["cpu_ms_per_scrape"]
    return out


def _codecarbon_python(given: str | None) -> str | None:
    candidates = [given] if given else [sys.executable, "/tmp/cc-venv/bin/python"]
    for py in candidates:
        if py and Path(py).exists():
            ok = subprocess.run(
                [py, "-c", "import codecarbon"], capture_output=True, check=False
            ).returncode
            if ok == 0:
                return py
    return None


def cpu_vs_codecarbon(window: float, python: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"window_s": window}
    with tempfile.TemporaryDirectory() as tmp_s:
        cfg = {"interval": 1.0, "collectors": {"nvml": {"enabled": False}}}
        with daemon(Path(tmp_s), cfg) as d:
            time.sleep(3)
            c0, t0 = cpu_seconds(d.pid), time.monotonic()
            time.sleep(window)
            cpu = cpu_seconds(d.pid) - c0
            out["jouled"] = {
                "cpu_percent_of_one_core": 100 * cpu / (time.monotonic() - t0),
                "rss_mb": rss_mb(d.pid),
            }
    py = _codecarbon_python(python)
    if py is None:
        out["codecarbon"] = "not installed (pip install codecarbon, or --codecarbon-python)"
        return out
    proc = subprocess.Popen(
        [py, "-c", CODECARBON, str(window + 10)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # "started": imports and start-up are not overhead per tick
        time.sleep(3)
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(window)
        cpu = cpu_seconds(proc.pid) - c0
        out["codecarbon"] = {
            "cpu_percent_of_one_core": 100 * cpu / (time.monotonic() - t0),
            "rss_mb": rss_mb(proc.pid),
            "python": py,
        }
    finally:
        proc.kill()
        proc.wait()
    out["ratio_cpu_jouled_over_codecarbon"] = (
        out["jouled"]["cpu_percent_of_one_core"] / out["codecarbon"]["cpu_percent_of_one_core"]
    )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scrapes", type=int, default=300)
    p.add_argument("--window", type=float, default=30.0)
    p.add_argument("--codecarbon-python", default=None)
    args = p.parse_args()
    results = {
        "scrape": scrape_vs_node_exporter(args.scrapes),
        "overhead": cpu_vs_codecarbon(args.window, args.codecarbon_python),
    }
    s = results["scrape"]
    print(
        f"scrape p50/p99 ms: jouled {s['jouled']['p50_ms']:.2f}/{s['jouled']['p99_ms']:.2f}",
        end="",
    )
    if isinstance(s["node_exporter"], dict):
        ne = s["node_exporter"]
        print(
            f", node_exporter {ne['p50_ms']:.2f}/{ne['p99_ms']:.2f}; ratio p50 "
            f"{s['ratio_p50_jouled_over_node_exporter']:.2f}, p99 "
            f"{s['ratio_p99_jouled_over_node_exporter']:.2f}, CPU/scrape "
            f"{s['ratio_cpu_per_scrape']:.2f}"
        )
    else:
        print(f"; node_exporter {s['node_exporter']}")
    o = results["overhead"]
    print(f"CPU % of one core at 1 s: jouled {o['jouled']['cpu_percent_of_one_core']:.3f}", end="")
    if isinstance(o["codecarbon"], dict):
        print(
            f", codecarbon {o['codecarbon']['cpu_percent_of_one_core']:.3f}; ratio "
            f"{o['ratio_cpu_jouled_over_codecarbon']:.2f}"
        )
    else:
        print(f"; codecarbon {o['codecarbon']}")
    print("saved", save("compare", results))


if __name__ == "__main__":
    exit_on_sigterm()
    main()
