"""Soak: spans at 2,000/s and a scrape every second against the real daemon, for minutes.

Checks, at every scrape: conservation (host energy = idle + workloads + unattributed, per
component and source) and the span books (received = settled + late + rejected + duplicate
+ dropped + pending); over the run: resident memory grows under 5 % after warm-up; after
SIGTERM: the final books balance with nothing pending.

    .venv/bin/python -m benchmarks.soak --minutes 30        # the full soak
    .venv/bin/python -m benchmarks.soak --minutes 2         # what CI runs (tests/e2e/test_soak.py)
"""

from __future__ import annotations

import argparse
import json
import math
import re
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.openmetrics.parser import text_string_to_metric_families

from benchmarks._util import exit_on_sigterm, scrape_like_prometheus
from tests.support.procs import fake_powercap, jouled, start_busy

BALANCE = re.compile(
    r"spans: received (\d+) = settled (\d+) \+ late (\d+) \+ rejected (\d+) \+ "
    r"duplicate (\d+) \+ dropped (\d+) \+ pending (\d+) \(balance (-?\d+)\)"
)


@dataclass
class SoakResult:
    seconds: float
    spans_sent: int = 0
    spans_accepted: int = 0
    scrapes: int = 0
    conservation_worst_rel: float = 0.0
    books_unbalanced: int = 0
    rss_kb: list[tuple[float, int]] = field(default_factory=list)
    final: dict[str, int] = field(default_factory=dict)

    @property
    def rss_growth(self) -> float:
        """Growth from the end of warm-up (a quarter of the run) to the end, peak to peak:
        the highest of five samples at each end (the garbage collector's sawtooth made a
        single sample against the highest of five read as growth)."""
        q = len(self.rss_kb) // 4
        start = max(r for _, r in self.rss_kb[max(0, q - 2) : q + 3])
        end = max(r for _, r in self.rss_kb[-5:])
        return end / start - 1

    def ok(self) -> bool:
        return (
            self.conservation_worst_rel < 1e-9
            and self.books_unbalanced == 0
            and self.rss_growth < 0.05
            and self.final.get("balance") == 0
            and self.final.get("pending") == 0
            and self.final.get("settled") == self.spans_accepted
        )


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def check_scrape(text: str) -> tuple[float, bool]:
    host: dict[tuple[str, str], float] = {}
    idle: dict[str, float] = defaultdict(float)
    parts: dict[tuple[str, str], float] = defaultdict(float)
    spans: dict[str, float] = defaultdict(float)
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            lab = s.labels
            if s.name == "jouled_host_energy_joules_total":
                host[(lab["component"], lab["source"])] = s.value
            elif s.name == "jouled_host_idle_energy_joules_total":
                idle[lab["component"]] += s.value
            elif s.name in (
                "jouled_workload_energy_joules_total",
                "jouled_unattributed_energy_joules_total",
            ):
                parts[(lab["component"], lab["source"])] += s.value
            elif s.name.startswith("jouled_spans_") and s.name.endswith(("_total", "_pending")):
                spans[s.name.removeprefix("jouled_spans_").removesuffix("_total")] += s.value
    worst = 0.0
    for key, measured in host.items():
        total = idle[key[0]] + parts[key]
        worst = max(worst, abs(total - measured) / max(measured, 1e-9))
    booked = sum(spans[k] for k in ("settled", "late", "rejected", "duplicate", "dropped"))
    balanced = spans["received"] == booked + spans["pending"]
    return worst, balanced


def sender(url: str, per_second: int, stop: threading.Event, result: SoakResult) -> None:
    batch = max(1, per_second // 20)
    period = batch / per_second
    next_t = time.monotonic()
    i = 0
    while not stop.is_set():
        now = time.time()
        # Each span with its own trace and span id, as an instrumented server sends them: the
        # request joiner remembers each (15 s) and the splitter indexes it by id.
        spans = [
            {"workload": "api", "model": f"model-{(i + j) % 7}", "start": now - 0.05,
             "end": now, "gflops": 10.0 + j % 5, "trace_id": f"{i + j:032x}",
             "span_id": f"{i + j + 1:016x}"}
            for j in range(batch)
        ]  # fmt: skip
        req = urllib.request.Request(
            url + "/v1/spans",
            data=json.dumps({"spans": spans}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                result.spans_accepted += json.loads(resp.read())["accepted"]
            result.spans_sent += batch
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        i += batch
        next_t += period
        stop.wait(max(0.0, next_t - time.monotonic()))


def soak(seconds: float, per_second: int, tmp: Path, *, progress: bool = True) -> SoakResult:
    result = SoakResult(seconds)
    pidfile = tmp / "api.pid"
    busy = start_busy(pidfile, tmp / "busy.log", busy_s=0.002, idle_s=0.004)
    stop = threading.Event()
    try:
        with (
            fake_powercap(tmp, "--package-watts", "45", "--dram-watts", "5") as powercap,
            jouled(
                tmp,
                {
                    "collectors": {"rapl": {"path": str(powercap)}, "nvml": {"enabled": False}},
                    "workloads": [{"name": "api", "match": {"pidfile": str(pidfile)}}],
                    "spans": {"settle_seconds": 2.0},
                    "ingest": {"max_requests_per_second": 0},
                },
            ) as daemon,
        ):
            pid = daemon.proc.popen.pid
            thread = threading.Thread(
                target=sender, args=(daemon.ingest_url, per_second, stop, result)
            )
            thread.start()
            start = time.monotonic()
            while (elapsed := time.monotonic() - start) < seconds:
                worst, balanced = check_scrape(
                    scrape_like_prometheus(daemon.metrics_url + "/metrics")[0].decode()
                )
                result.scrapes += 1
                result.conservation_worst_rel = max(result.conservation_worst_rel, worst)
                result.books_unbalanced += 0 if balanced else 1
                result.rss_kb.append((elapsed, rss_kb(pid)))
                if progress and result.scrapes % 10 == 0:
                    print(
                        f"\r{elapsed:6.0f}/{seconds:.0f} s  spans {result.spans_sent:>9}  "
                        f"rss {result.rss_kb[-1][1] / 1024:6.1f} MB",
                        end="",
                        file=sys.stderr,
                        flush=True,
                    )
                time.sleep(max(0.0, 1.0 - (time.monotonic() - start - elapsed)))
            daemon.proc.signal(signal.SIGTERM)  # while spans still stream in
            daemon.proc.wait(30)
            stop.set()
            thread.join(10)
            found = BALANCE.search(daemon.proc.output())
            if found:
                keys = ("received", "settled", "late", "rejected", "duplicate", "dropped")
                keys += ("pending", "balance")
                result.final = dict(zip(keys, map(int, found.groups()), strict=True))
    finally:
        stop.set()
        busy.stop()
        if progress:
            print(file=sys.stderr)
    return result


def report(r: SoakResult) -> str:
    rss = [kb for _, kb in r.rss_kb]
    return "\n".join(
        [
            f"duration               {r.seconds:.0f} s, {r.scrapes} scrapes",
            f"spans sent / accepted  {r.spans_sent} / {r.spans_accepted} "
            f"({r.spans_sent / r.seconds:.0f}/s)",
            f"conservation           worst relative error {r.conservation_worst_rel:.1e}",
            f"span books             {r.books_unbalanced} unbalanced scrapes; final {r.final}",
            f"resident memory        {min(rss) / 1024:.1f}-{max(rss) / 1024:.1f} MB, "
            f"growth after warm-up {100 * r.rss_growth:+.2f} %",
            f"verdict                {'PASS' if r.ok() else 'FAIL'}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--spans-per-second", type=int, default=2000)
    args = p.parse_args(argv)
    if not (0 < args.minutes <= 24 * 60):
        p.error("--minutes must be in (0, 1440]")
    with tempfile.TemporaryDirectory(prefix="jouled-soak-") as tmp:
        r = soak(args.minutes * 60, args.spans_per_second, Path(tmp))
    print(report(r))
    return 0 if r.ok() and not math.isnan(r.rss_growth) else 1


if __name__ == "__main__":
    exit_on_sigterm()
    raise SystemExit(main())
