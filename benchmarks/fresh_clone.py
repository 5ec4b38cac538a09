"""The README's first command on a fresh clone: seconds from ``make run`` to the first
/metrics, and the size of the virtualenv it made (docs/BENCHMARKS.md).

Runs as a non-root user with an empty home (no pip cache), so the time includes the
virtualenv and the download of the daemon's dependencies; it depends on the network.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks._util import save
from tests.support.fresh_clone import make_run

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for /metrics")
    args = p.parse_args()
    with make_run(REPO, timeout=args.timeout) as run:
        venv = run.venv_bytes()
        samples = sum(1 for line in run.metrics.splitlines() if line.startswith("jouled_"))
        results = {
            "seconds_to_first_metrics": round(run.seconds, 1),
            "seconds_installing": round(run.install_seconds, 1),
            "seconds_daemon_start": round(run.seconds - run.install_seconds, 1),
            "venv_bytes": venv,
            "venv_mb": round(venv / 1e6, 1),
            "jouled_samples": samples,
            "user": run.user,
        }
    print(
        f"make run on a fresh clone: /metrics after {results['seconds_to_first_metrics']} s "
        f"(installing {results['seconds_installing']} s, daemon start "
        f"{results['seconds_daemon_start']} s), "
        f"virtualenv {results['venv_mb']} MB, {samples} jouled_ samples"
    )
    print(f"saved {save('fresh_clone', results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
