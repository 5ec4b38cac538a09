"""Run the quick benchmarks one after another (``make bench``); each also runs alone.

Quick: tick, scrape, ingest (in-process and a real daemon), accuracy. ``--all`` adds the
long ones: daemon_cpu (1,000 processes; 100, 1,000 and 5,000 spans/s over HTTP and gRPC, 3
runs), daemon_memory (the same daemon's RSS over 12 minutes at 1,000 spans/s) and compare
(node_exporter, CodeCarbon). Results land in benchmarks/results/*.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

QUICK = [
    ["tick", "--ticks", "150"],
    ["scrape", "--scrapes", "60"],
    ["ingest", "--batches", "100"],
    ["accuracy", "--seconds", "10"],
    ["split"],
]
LONG = [["daemon_cpu"], ["daemon_memory"], ["compare"]]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--all", action="store_true", help="also the long benchmarks")
    args = p.parse_args()
    failed = []
    for name, *extra in QUICK + (LONG if args.all else []):
        print(f"== benchmarks.{name} {' '.join(extra)}", flush=True)
        code = subprocess.call([sys.executable, "-m", f"benchmarks.{name}", *extra])
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
