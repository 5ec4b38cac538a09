"""A collector held in reserve: read only while another one cannot be trusted.

In ``estimate: auto`` the estimate runs where RAPL is absent; where RAPL is present but its
counters turn out frozen (a VM exposing RAPL files it never updates), the same estimate
must take over. ``Standby`` wraps it and asks, every read, why it is needed: while the
answer is ``None`` it returns no readings (the sampler then forgets its domains, so the
first reading after a takeover is a baseline, not a spike).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from jouled.collectors.base import CheckRow, EnergyCollector, Sample

log = logging.getLogger(__name__)


class Standby:
    """``inner`` read only while ``needed()`` returns a reason (``None``: not needed)."""

    def __init__(self, inner: EnergyCollector, needed: Callable[[], str | None]) -> None:
        self.inner = inner
        self.name = inner.name
        self._needed = needed
        self.reason: str | None = None

    def read(self) -> Sample:
        reason = self._needed()
        if reason != self.reason:
            if reason is not None:
                log.warning(
                    '%s takes over: %s; its series are labelled source="%s"',
                    self.name,
                    reason,
                    self.name,
                )
            else:
                log.info("%s stands by again: the measurement it replaced is back", self.name)
            self.reason = reason
        if reason is None:
            return Sample(readings=(), standby=True)
        return self.inner.read()

    def check(self) -> list[CheckRow]:
        return self.inner.check()

    def close(self) -> None:
        self.inner.close()
