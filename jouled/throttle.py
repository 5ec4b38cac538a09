"""Rate-limited logging: one line per period, counting what was held back. Stdlib only."""

from __future__ import annotations

import math

from jouled.clock import Clock


class Throttle:
    """Allows one log line per period; counts what it held back."""

    def __init__(self, clock: Clock, period_s: float) -> None:
        self._clock = clock
        self._period_s = period_s
        self._next = -math.inf
        self._held = 0

    def allow(self) -> int | None:
        """None when this line must be held back; else how many were held back before it."""
        now = self._clock.monotonic()
        if now < self._next:
            self._held += 1
            return None
        held, self._held = self._held, 0
        self._next = now + self._period_s
        return held
