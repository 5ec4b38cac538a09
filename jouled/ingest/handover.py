"""grpcio started at the first OTLP/gRPC connection, not at start-up: an idle grpcio server
wakes 8-10 times a second (its lifeguard and timer threads, 1 s each, hard-coded) and holds
~10 MB, which a host with no gRPC sender should not pay.

Until then a plain listening socket holds the port. The first connection starts grpcio on
it (the placeholder is closed just before grpcio binds), and each connection the placeholder
had accepted is relayed to grpcio and ended gracefully (``jouled.ingest.h2relay``); clients
then open their next calls on new connections, straight to grpcio.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Final

from jouled.ingest.h2relay import Relay

log = logging.getLogger(__name__)

# Connections the placeholder socket accepts while the server starts; past it they are closed.
MAX_RELAYS: Final = 64
Address = tuple[str, int]


class HandOver:
    """A port held by a plain listening socket until its first connection; then
    ``start(listen, release)`` binds the real server there (calling ``release()`` just
    before, which closes the placeholder) and each connection the placeholder accepted is
    relayed to it (``Relay``).

    ``start`` runs once; ``module`` is imported first, off the event loop. ``relayed`` maps a
    relay's own address, as the server sees its peer, to the client's address."""

    def __init__(
        self,
        start: Callable[[str, Callable[[], None]], Awaitable[Any]],
        what: str,
        module: str = "grpc.aio",
    ) -> None:
        self._start = start
        self._what = what
        self._module = module
        self._listen = ""
        self._holders: list[asyncio.Server] = []
        self._starting: asyncio.Future[None] | None = None
        self.relays: set[asyncio.Task[None]] = set()
        self.relayed: dict[Address, Address] = {}

    async def listen(self, host: str, port: int) -> int:
        """Hold ``host`` (an IP address, or empty for all) and ``port`` (0: any free one);
        returns the port. Raises OSError when it cannot be bound."""
        socks = _listen_sockets(host, port)
        bound = int(socks[0].getsockname()[1])
        for sock in socks:
            self._holders.append(await asyncio.start_server(self._accepted, sock=sock))
        host = host or "0.0.0.0"
        self._listen = f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"
        return bound

    async def close(self) -> None:
        """Close the placeholder, end the relays, and stop a start in progress."""
        self.release()
        for task in list(self.relays):
            task.cancel()
        starting, self._starting = self._starting, None
        if starting is not None and not starting.done():
            starting.cancel()
            # Stopped while the server started; _hand_over logged any failure.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting

    def release(self) -> None:
        """Close the placeholder sockets (their accepted connections stay open)."""
        holders, self._holders = self._holders, []
        for holder in holders:
            holder.close()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A connection to the placeholder: start the server, then relay this one to it."""
        task = asyncio.current_task()
        if task is None or len(self.relays) >= MAX_RELAYS:
            writer.close()
            return
        self.relays.add(task)
        key: Address | None = None
        try:
            if self._starting is None:
                self._starting = asyncio.ensure_future(self._hand_over())
            try:
                await asyncio.shield(self._starting)
            except Exception:
                return  # _hand_over logged why
            here = writer.get_extra_info("sockname")
            up_reader, up_writer = await asyncio.open_connection(_unmapped(here[0]), here[1])
            key = _plain_peer(up_writer.get_extra_info("sockname"))
            self.relayed[key] = _plain_peer(writer.get_extra_info("peername"))
            await Relay((reader, writer), (up_reader, up_writer)).run()
        except OSError:
            pass  # the client left, or the server refused the relay (its connection limit)
        except asyncio.CancelledError:
            pass  # close(): ends quietly (asyncio logs a connection task that was cancelled)
        finally:
            if key is not None:
                self.relayed.pop(key, None)
            self.relays.discard(task)
            writer.close()

    async def _hand_over(self) -> None:
        try:
            # grpcio's first import takes ~0.1 s: not on the loop.
            await asyncio.to_thread(importlib.import_module, self._module)
            await self._start(self._listen, self.release)
        except Exception as exc:
            log.error(
                "%s: grpcio could not start on %s at the first connection: %s "
                "(%s is off until restart; is another process on the port now?)",
                self._what,
                self._listen,
                exc,
                self._what,
            )
            raise
        log.info("%s: grpcio serves %s from the first connection on", self._what, self._listen)


def is_ip(host: str) -> bool:
    if host == "":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _listen_sockets(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for what grpcio would bind: a wildcard address (``0.0.0.0``, ``::``
    or none) on IPv6 and IPv4 both, like grpcio's ``add_wildcard_addrs_to_server``."""
    wildcard = host in ("", "0.0.0.0", "::")
    family = socket.AF_INET6 if wildcard or ":" in host else socket.AF_INET
    if wildcard and not socket.has_ipv6:
        family, host = socket.AF_INET, "0.0.0.0"
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if wildcard and family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            host = "::"
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return [sock]


def _unmapped(host: str) -> str:
    """``::ffff:10.0.0.1`` -> ``10.0.0.1`` (an IPv4 client of a dual-stack socket)."""
    return host.removeprefix("::ffff:") if host.startswith("::ffff:") and "." in host else host


def _plain_peer(addr: Any) -> Address:
    return _unmapped(str(addr[0])), int(addr[1])
