"""Logging set-up: plain lines on stderr; under systemd the journal adds the timestamps.

``RepeatFilter`` keeps a repeated log line (same logger, level and format) to a few per
minute and says how many it held back; tracebacks of client disconnects are dropped.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Final


def setup(level: str = "info") -> None:
    under_journal = bool(os.environ.get("JOURNAL_STREAM"))
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not under_journal:
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=fmt,
        stream=sys.stderr,
        force=True,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # A flood of one error (a port scan, a sender retrying in a loop) must not fill the disk.
    for handler in logging.getLogger().handlers:
        handler.addFilter(RepeatFilter())


# Exceptions a client causes by going away; aiohttp logs them with a traceback.
_DISCONNECTS: Final = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class RepeatFilter(logging.Filter):
    """At most ``burst`` records per (logger, level, format) in each ``window_s``; then one
    line saying how many were held back. Client-disconnect tracebacks are dropped (the
    line stays, without its 18 lines of stack)."""

    def __init__(self, burst: int = 5, window_s: float = 60.0, now: Any = time.monotonic):
        super().__init__()
        self._burst = burst
        self._window = window_s
        self._now = now
        self._seen: dict[tuple[str, int, str], list[float]] = {}  # key -> [start, count]

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and isinstance(exc, _DISCONNECTS):
            record.msg = f"{record.msg} (client disconnected: {exc})"
            record.exc_info = None
            record.exc_text = None
        key = (record.name, record.levelno, str(record.msg))
        now = self._now()
        state = self._seen.get(key)
        if state is None or now - state[0] >= self._window:
            held = int(state[1]) - self._burst if state is not None else 0
            if held > 0:
                record.msg = f"{record.msg} [{held} similar held back in {self._window:g} s]"
            self._seen[key] = [now, 1]
            if len(self._seen) > 1000:
                self._seen.clear()  # a flood of distinct formats: start over, stay bounded
            return True
        state[1] += 1
        return state[1] <= self._burst
