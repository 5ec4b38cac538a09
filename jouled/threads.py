"""Worker thread pools whose threads carry their names into the kernel.

CPython 3.11 names a thread only for Python (``threading``): ``top -H``, ``ps -T`` and
``/proc/<pid>/task/<tid>/comm`` all show ``python``. Each pool's threads here set their
kernel name (``prctl(PR_SET_NAME)``, at most 15 bytes) to their Python name when they start,
so an operator sees which part of jouled uses the CPU (``jouled-ingest_0``,
``jouled-tick_0``...) and ``benchmarks.daemon_cpu`` reads each part's CPU time from /proc.
Where ``prctl`` is not there (not Linux, no libc), threads keep the name they had.
"""

from __future__ import annotations

import ctypes
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Final

_PR_SET_NAME: Final = 15  # linux/prctl.h
_MAX_NAME_BYTES: Final = 15  # TASK_COMM_LEN 16, with the terminating NUL


def _prctl() -> object | None:
    try:
        # The process's own symbols, libc's among them (as daemon/malloc_tuning.py finds
        # mallopt): no ``ctypes.util.find_library`` search at start-up.
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()


def name_native_thread() -> None:
    """Give the calling thread its Python name (cut to 15 bytes) in the kernel."""
    if _PRCTL is None:
        return
    name = threading.current_thread().name.encode("utf-8", "replace")[:_MAX_NAME_BYTES]
    _PRCTL(_PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)  # type: ignore[operator]


def named_pool(max_workers: int, prefix: str) -> ThreadPoolExecutor:
    """A ``ThreadPoolExecutor`` whose threads (``prefix_0``, ``prefix_1``...) carry their
    names into the kernel."""
    return ThreadPoolExecutor(
        max_workers, thread_name_prefix=prefix, initializer=name_native_thread
    )
