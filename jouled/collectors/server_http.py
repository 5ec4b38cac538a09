"""Reading an inference server's ``/metrics`` over HTTP for server-metrics mode: the
daemon's read (aiohttp, on the event loop) and ``jouled check``'s (blocking), both bounded in
bytes and time, with the ``jouled check`` rows. What the page says is
``collectors/server_metrics.py``'s (``parse_page``).
"""

from __future__ import annotations

import ssl
import urllib.parse
from collections.abc import Iterable
from typing import Any

from jouled import httpget
from jouled.collectors.base import CheckRow
from jouled.collectors.server_metrics import PageError, parse_page

MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def _origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.netloc


async def fetch_page(
    session: Any, url: str, *, max_bytes: int, tls: ssl.SSLContext | None = None
) -> str:
    """GET ``url`` with an aiohttp ``session``; the body, at most ``max_bytes`` of it.
    ``tls`` verifies an https server (None: aiohttp's default context).

    Redirects are followed on the same scheme, host and port only (a server mounting its
    page at ``/metrics/``), at most ``MAX_REDIRECTS``: the configured server must not send
    jouled to read another host every tick. Raises ``PageError`` on an HTTP error status,
    a redirect elsewhere, or a longer body; aiohttp's own errors (refused, reset, timeout)
    pass through.
    """
    first = url
    for _ in range(MAX_REDIRECTS + 1):
        async with session.get(
            url, headers={"Accept": "text/plain"}, allow_redirects=False, ssl=tls or True
        ) as resp:
            if resp.status in _REDIRECTS:
                target = urllib.parse.urljoin(url, resp.headers.get("Location", ""))
                if _origin(target) != _origin(first):
                    raise PageError(
                        f"HTTP {resp.status} from {url} redirects to another host "
                        f"({target[:200]}); set server_metrics.url to it if that is meant"
                    )
                url = target
                continue
            if resp.status != 200:
                raise PageError(f"HTTP {resp.status} from {url}")
            try:
                body = await httpget.read_body(resp.content, max_bytes)
            except httpget.TooLarge:
                raise PageError(
                    f"the page is over server_metrics.max_body_bytes ({max_bytes} bytes)"
                ) from None
            return body.decode("utf-8", errors="replace")
    raise PageError(f"more than {MAX_REDIRECTS} redirects from {first}")


def read_page_blocking(url: str, *, timeout: float, max_bytes: int) -> str:
    """The same read for ``jouled check`` (no event loop): the whole answer within
    ``timeout`` (a server trickling bytes is cut off), at most ``max_bytes``."""
    try:
        status, body = httpget.get(
            url, timeout_s=timeout, max_bytes=max_bytes, headers={"Accept": "text/plain"}
        )
    except httpget.TooLarge:
        raise PageError(
            f"the page is over server_metrics.max_body_bytes ({max_bytes} bytes)"
        ) from None
    except httpget.TooSlow:
        raise PageError(f"no whole answer within {timeout:g}s") from None
    if status != 200:
        raise PageError(f"HTTP {status} from {url}")
    return body.decode("utf-8", errors="replace")


def check_rows(workloads: Iterable[Any]) -> list[CheckRow]:
    """``jouled check`` rows: one per workload with ``server_metrics``, read once now."""
    rows: list[CheckRow] = []
    for w in workloads:
        sm = w.server_metrics
        if sm is None:
            continue
        target = f"{w.name} {sm.url}"
        try:
            text = read_page_blocking(sm.url, timeout=sm.timeout, max_bytes=sm.max_body_bytes)
            page = parse_page(text, default_model=sm.model or w.model or w.name)
        except PageError as exc:
            rows.append(
                CheckRow(
                    "server_metrics",
                    target,
                    False,
                    str(exc),
                    "point workloads[].server_metrics.url at the server's own /metrics "
                    "(vLLM, SGLang: the API port; TGI: --prometheus-port; Triton: port 8002)",
                )
            )
            continue
        except Exception as exc:  # refused, timeout, HTTP error, DNS
            rows.append(
                CheckRow(
                    "server_metrics",
                    target,
                    False,
                    f"cannot read: {type(exc).__name__}: {exc}",
                    "start the inference server, or correct workloads[].server_metrics.url "
                    f"(timeout {sm.timeout:g}s)",
                )
            )
            continue
        models = sorted({s.model for s in page.series})
        kinds = sorted({s.kind for s in page.series})
        shown = ", ".join(models[:5]) + (f" (+{len(models) - 5})" if len(models) > 5 else "")
        rows.append(
            CheckRow(
                "server_metrics",
                target,
                True,
                f"{'/'.join(sorted(page.servers))}: {', '.join(kinds)} of model(s) {shown}",
            )
        )
    return rows
