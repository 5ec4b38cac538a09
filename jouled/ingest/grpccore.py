"""grpc-core's settings the daemon picks before grpcio is first imported.

grpc-core reads ``GRPC_EXPERIMENTS`` once, at its first use of an experiment
(``src/core/lib/experiments/config.cc``), so the daemon sets it at start-up, before any
thread runs, and only where the operator has not set it: an operator's own value always
wins.

``-event_engine_listener`` serves accepted connections with iomgr's ``grpc_tcp_server`` and
endpoints ("Use EventEngine listeners instead of iomgr's grpc_tcp_server",
``src/core/lib/experiments/experiments.yaml``) instead of the EventEngine's, whose
work-stealing thread pool wakes a worker for each closure and then has it poll for more work
at 15, 19.5, 25 ... ms. Measured on this project's 2-vCPU VM with grpcio 1.85.3 (see
docs/BENCHMARKS_HISTORY.md, the fifteenth pass):

- a bare ``grpc.aio`` server taking 4 calls of 60 KB a second: grpcio's ``event_engine``
  threads 60 wake-ups and 3.0 ms of CPU a second by default, 17-19 and 0.75-1.0 ms with
  this, its completion-queue poller 0.45 then 1.0 ms (it now polls the sockets itself): 6.4
  ms a second in all against 4.7-4.8;
- the daemon at 1,000 spans/s over OTLP/gRPC: grpcio's threads 1.43-1.47 ms a second
  against 0.87-1.00;
- idle after a first connection: no consistent difference (5 rounds alternated, higher in 3,
  lower in 2).

The experiment is applied only to the grpcio releases in ``MEASURED``: grpc-core logs an
error at start-up for an experiment it does not know, and a release may drop this one once
iomgr's listener is gone. grpcio 1.60.0 (pyproject's floor), 1.70.0 and 1.85.3 were checked
to know it (a grpc.aio call under it, no ``Unknown experiment``, which a misspelt name
gets); its effect was measured on 1.85.3. On 1.60.0 it changes nothing: the bare server's
threads woke 47 times a second either way (4.9-6.3 ms of CPU), iomgr's listener being still
that release's default. A newer grpcio keeps its own default until someone measures it again
and moves ``MEASURED``'s upper end.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import MutableMapping
from importlib import metadata
from typing import Final

log = logging.getLogger(__name__)

VARIABLE: Final = "GRPC_EXPERIMENTS"
EXPERIMENTS: Final = "-event_engine_listener"
# grpcio releases (major, minor) it is applied to: pyproject's floor to the newest measured.
MEASURED: Final = ((1, 60), (1, 85))


def grpcio_version() -> tuple[int, int] | None:
    """The installed grpcio's (major, minor), read from its metadata without importing it
    (importing grpc starts nothing but costs ~10 MB); None when grpcio is not installed or
    its version does not parse."""
    try:
        version = metadata.version("grpcio")
    except metadata.PackageNotFoundError:
        return None
    m = re.match(r"(\d+)\.(\d+)", version)
    return (int(m[1]), int(m[2])) if m else None


def choose_experiments(
    environ: MutableMapping[str, str] | None = None,
    version: tuple[int, int] | None = None,
) -> str | None:
    """Set ``GRPC_EXPERIMENTS`` in ``environ`` (``os.environ`` by default) to
    ``EXPERIMENTS`` when it is not set and grpcio's version (``version``, else the installed
    one) is within ``MEASURED``. Returns the value grpc-core will read (the operator's, ours,
    or None for grpc-core's defaults). Call before grpcio is imported and before any thread
    starts: ``os.environ`` changes call ``setenv``, which is not safe beside a concurrent
    ``getenv``."""
    env = os.environ if environ is None else environ
    if VARIABLE in env:
        log.debug("grpc-core experiments: %s=%s (set by the environment)", VARIABLE, env[VARIABLE])
        return env[VARIABLE]
    version = grpcio_version() if version is None else version
    if version is None or not MEASURED[0] <= version <= MEASURED[1]:
        found = "not installed" if version is None else f"{version[0]}.{version[1]}"
        low, high = (f"{major}.{minor}" for major, minor in MEASURED)
        log.debug(
            "grpc-core experiments: its defaults (grpcio %s; applied to %s-%s)", found, low, high
        )
        return None
    env[VARIABLE] = EXPERIMENTS
    log.debug("grpc-core experiments: %s=%s (iomgr's listener)", VARIABLE, EXPERIMENTS)
    return EXPERIMENTS
