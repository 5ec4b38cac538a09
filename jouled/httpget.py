"""A blocking HTTP GET bounded in all: time for the whole answer and bytes of the body.

urllib's ``timeout`` bounds each socket operation, not the answer: a server that trickles
header lines or body bytes, each within the timeout, holds the caller for ever. ``get``
reads on a daemon thread and stops waiting at the deadline. For command-line paths
(``jouled report --prometheus``, ``jouled check``). On the daemon's event loop aiohttp
reads, its caller bounds the time, and ``read_body`` reads a whole body, bounded in bytes.
Stdlib only.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any


class TooSlow(Exception):
    """The answer did not finish within the time given."""


class TooLarge(Exception):
    """The body is longer than the bytes allowed."""


def get(
    url: str, *, timeout_s: float, max_bytes: int, headers: Mapping[str, str] | None = None
) -> tuple[int, bytes]:
    """``(status, body)`` of a GET of ``url``, the whole answer within ``timeout_s``.

    An HTTP error status comes back with its body (an API's JSON error), not as an
    exception. Raises ``TooSlow`` past the deadline (the reading thread is left to the
    socket timeout), ``TooLarge`` for a body over ``max_bytes``, and urllib's
    ``URLError``/``OSError`` when the server cannot be reached.
    """
    deadline = time.monotonic() + timeout_s
    request = urllib.request.Request(url, headers=dict(headers or {}))
    box: list[tuple[int, bytes] | BaseException] = []

    def run() -> None:
        try:
            try:
                with urllib.request.urlopen(request, timeout=timeout_s) as resp:
                    box.append((resp.status, _read(resp, deadline, max_bytes)))
            except urllib.error.HTTPError as exc:
                box.append((exc.code, _read(exc, deadline, max_bytes)))
        except BaseException as exc:  # handed to the caller
            box.append(exc)

    worker = threading.Thread(target=run, name="jouled-http-get", daemon=True)
    worker.start()
    worker.join(timeout_s + 0.5)
    if not box:
        raise TooSlow(f"no whole answer from {url} within {timeout_s:g} s")
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


class _Body:
    """Chunks of a body up to ``max_bytes``; ``TooLarge`` past it."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.chunks: list[bytes] = []
        self.size = 0

    def add(self, chunk: bytes) -> bool:
        """Take one chunk; False at the end (an empty chunk)."""
        if not chunk:
            return False
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise TooLarge(f"the body is over {self.max_bytes} bytes")
        self.chunks.append(chunk)
        return True

    def whole(self) -> bytes:
        return b"".join(self.chunks)


def _read(resp: Any, deadline: float, max_bytes: int) -> bytes:
    body = _Body(max_bytes)
    while True:
        if time.monotonic() > deadline:
            raise TooSlow("the answer was still coming at the deadline")
        chunk = resp.read1(1 << 16) if hasattr(resp, "read1") else resp.read(1 << 16)
        if not body.add(chunk):
            return body.whole()


async def read_body(content: Any, max_bytes: int) -> bytes:
    """The whole body of an aiohttp response (``resp.content``), at most ``max_bytes``.

    ``StreamReader.read(n)`` returns what has arrived so far, not ``n`` bytes: a page sent
    in two writes was cut after the first (a counter of 1,234,567 read as 1). This reads
    until the end, and raises ``TooLarge`` past ``max_bytes`` without reading further.
    """
    body = _Body(max_bytes)
    while body.add(await content.read(max_bytes + 1 - body.size)):
        pass
    return body.whole()
