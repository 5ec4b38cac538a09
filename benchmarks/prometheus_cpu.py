"""Daemon CPU while a real Prometheus scrapes it every 2 s, with 10 workloads x 50 models of
request series (issue 13: this raised the daemon from 0.3 % to 9-12 % of a core when every
scrape rendered OpenMetrics uncached on the event loop).

A real ``jouled run`` (fake RAPL tree, 1 s tick) gets one span per (workload, model), so
500 request histograms are exported (~16,000 lines); its CPU (utime + stime from /proc) is
measured over a window without scrapers, then over the same window while Debian's
``prometheus`` scrapes it every 2 s with its own headers (OpenMetrics, gzip).

    .venv/bin/python -m benchmarks.prometheus_cpu [--window 30]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks._util import cpu_seconds, daemon, exit_on_sigterm, rss_mb, save
from jouled.testing.fake_powercap import FakePowercap
from tests.support.prometheus import run_prometheus

WORKLOADS = [f"w{i}" for i in range(10)]
MODELS = [f"model-{i}" for i in range(50)]


def _cpu_percent(pid: int, window: float) -> float:
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(window)
    return 100 * (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def _one_span_each() -> bytes:
    end = time.time() - 0.1
    spans = [
        {"workload": w, "model": m, "start": end - 0.05, "end": end, "gflops": 97.1}
        for w in WORKLOADS
        for m in MODELS
    ]
    return json.dumps({"spans": spans}).encode()


def bench(window: float) -> dict[str, Any]:
    out: dict[str, Any] = {"window_s": window, "scrape_interval_s": 2.0}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        fake = FakePowercap.typical_server(tmp / "sys", sockets=1)
        cfg = {
            "interval": 1.0,
            "collectors": {"rapl": {"enabled": True, "path": str(fake.class_dir)}},
            "workloads": [{"name": w, "match": {"pid": 1}} for w in WORKLOADS],
            "spans": {"settle_seconds": 1.0},
            "ledger": {"path": str(tmp / "ledger.db")},
        }
        with daemon(tmp, cfg) as d:
            time.sleep(2)
            req = urllib.request.Request(
                d.ingest_url + "/v1/spans",
                data=_one_span_each(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=10) as resp:
                out["spans_accepted"] = json.load(resp)["accepted"]
            time.sleep(4)  # settled: 500 request histograms exported
            out["lines"] = d.metrics().count(b"\n")
            out["no_scraper_cpu_percent"] = _cpu_percent(d.pid, window)
            target = d.metrics_url.removeprefix("http://")
            with run_prometheus(tmp / "prom", [target], rule_files=(), scrape_interval="2s") as p:
                p.wait_for_targets_up()
                out["prometheus_cpu_percent"] = _cpu_percent(d.pid, window)
                samples = p.result("scrape_samples_scraped")
                duration = p.result("scrape_duration_seconds")
            out["scrape_samples_scraped"] = float(samples[0]["value"][1])
            out["prometheus_scrape_duration_ms"] = 1000 * float(duration[0]["value"][1])
            out["rss_mb"] = rss_mb(d.pid)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--window", type=float, default=30.0)
    args = p.parse_args()
    r = bench(args.window)
    print(
        f"{r['lines']} lines, {r['spans_accepted']} spans; daemon CPU without scrapers "
        f"{r['no_scraper_cpu_percent']:.2f} % of a core, with a real Prometheus every 2 s "
        f"{r['prometheus_cpu_percent']:.2f} %; Prometheus's scrape_duration_seconds "
        f"{r['prometheus_scrape_duration_ms']:.1f} ms, {r['scrape_samples_scraped']:.0f} samples"
    )
    print("saved", save("prometheus_cpu", r))


if __name__ == "__main__":
    exit_on_sigterm()
    main()
