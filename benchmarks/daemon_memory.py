"""The real daemon's resident memory over minutes at a steady span rate: what
``benchmarks.daemon_cpu``'s 30 s window (40-70 s after start) cannot see.

Structures that fill over a longer horizon than the settle delay (the per-(workload, model)
energy-per-GFLOP window of ``spans.window``, 300 s by default) and the allocators'
fragmentation keep raising RSS for minutes after that window closes. This runs
``benchmarks.daemon_cpu``'s loaded daemon (1 s tick, 10 workloads, 200 of ~1,000 host
processes, 50 models, the real OpenTelemetry SDK sending) once per transport, side by side,
for ``--minutes``, and reads each daemon's VmRSS every 10 s: the largest value of each minute,
and the largest after the fifth (by then the default ``spans.window`` has filled).

    .venv/bin/python -m benchmarks.daemon_memory                     # 12 minutes (~13 in all)
    .venv/bin/python -m benchmarks.daemon_memory --minutes 3 --transports grpc
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._util import daemon, exit_on_sigterm, rss_mb, save, sleepers
from benchmarks.daemon_cpu import GROUPS, YOUNG_S, _log, _sender, loaded_config

SAMPLE_S = 10.0
FILLED_AFTER_MIN = 5  # spans.window's default (300 s) has filled


def steady(minutes: float, rate: int, transports: list[str]) -> dict[str, Any]:
    """Per transport: the largest RSS (MB) of each minute, and over the minutes after the
    fifth."""
    out: dict[str, Any] = {}
    seconds = minutes * 60
    with sleepers(1000, groups=GROUPS, per_group=20), contextlib.ExitStack() as stack:
        _log(f"letting the host's processes age {YOUNG_S + 5:.0f} s")
        time.sleep(YOUNG_S + 5)
        pids: dict[str, int] = {}
        for transport in transports:
            cfg = loaded_config(None, rate)
            endpoint = cfg["ingest"]["grpc_listen" if transport == "grpc" else "listen"]
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            d = stack.enter_context(daemon(tmp, cfg))
            stack.enter_context(_sender(endpoint, transport, rate, seconds + 30))
            pids[transport] = d.pid
        by_minute: dict[str, list[float]] = {t: [] for t in transports}
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) < seconds:
            minute = int(elapsed // 60)
            for transport, pid in pids.items():
                rows = by_minute[transport]
                while len(rows) <= minute:
                    rows.append(0.0)
                rows[minute] = max(rows[minute], rss_mb(pid))
            if elapsed // 60 != (elapsed + SAMPLE_S) // 60:
                _log(
                    f"minute {minute + 1}: "
                    + ", ".join(f"{t} {by_minute[t][minute]:.1f} MB" for t in transports)
                )
            time.sleep(max(0.0, min(SAMPLE_S, seconds - (time.monotonic() - t0))))
    for transport, rows in by_minute.items():
        later = rows[FILLED_AFTER_MIN:]
        out[transport] = {
            "rss_mb_max_by_minute": [round(r, 1) for r in rows],
            "rss_mb_max_after_minute_5": round(max(later), 1) if later else None,
            "rss_mb_first_minute": round(rows[0], 1) if rows else None,
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=12.0)
    p.add_argument("--rate", type=int, default=1000, help="spans/s")
    p.add_argument("--transports", default="grpc,http", help="grpc and/or http, side by side")
    args = p.parse_args()
    minutes = min(max(args.minutes, 1.0), 120.0)
    transports = [t for t in args.transports.split(",") if t in ("grpc", "http")]
    if not transports:
        sys.exit("--transports: grpc and/or http")
    results = {
        "minutes": minutes,
        "rate": args.rate,
        "transports": steady(minutes, args.rate, transports),
    }
    for transport, r in results["transports"].items():
        print(
            f"{transport}: first minute {r['rss_mb_first_minute']} MB, "
            f"after minute 5 at most {r['rss_mb_max_after_minute_5']} MB; by minute "
            + " ".join(f"{x:.1f}" for x in r["rss_mb_max_by_minute"])
        )
    print("saved", save("daemon_memory", results))


if __name__ == "__main__":
    exit_on_sigterm()
    main()
