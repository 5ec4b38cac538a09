"""systemd's notify protocol (sd_notify): READY=1, WATCHDOG=1, RELOADING=1, STOPPING=1.

A datagram to the socket named by ``$NOTIFY_SOCKET`` (abstract when it starts with '@').
Written here rather than depending on an unmaintained wrapper: it is one sendto call.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        self._addr = "\0" + addr[1:] if addr.startswith("@") else addr
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watchdog = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        # Ping at half the timeout, as sd_watchdog_enabled(3) advises.
        self.watchdog_interval_s: float | None = int(usec) / 2e6 if watchdog else None

    @property
    def enabled(self) -> bool:
        return bool(self._addr)

    def notify(self, *states: str) -> bool:
        if not self._addr:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto("\n".join(states).encode(), self._addr)
        except OSError as exc:
            log.warning("sd_notify to %s failed: %s", self._addr.lstrip("\0"), exc)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets Type=notify-reload units (systemd 253+) match the reload.
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")
