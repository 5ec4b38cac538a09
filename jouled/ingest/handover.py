"""grpcio started at the first OTLP/gRPC connection, not at start-up: an idle grpcio server
wakes 8-10 times a second (its lifeguard and timer threads, 1 s each, hard-coded) and holds
~10 MB, which a host with no gRPC sender should not pay.

Until then a plain listening socket holds the port. The first connection starts grpcio on
it, and each connection the placeholder accepted is relayed to grpcio and ended gracefully
(``jouled.ingest.h2relay``); clients then open their next calls on new connections, straight
to grpcio. The placeholder is accepted from by hand: just before grpcio binds the port, the
connections still queued on it are accepted and relayed too, then it is closed. A client
that connects in the moment between that close and grpcio's listening (~1.5 ms measured) is
refused, and reconnects as gRPC clients do.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Final

from jouled.ingest.h2relay import Relay

log = logging.getLogger(__name__)

# Connections relayed at once (grpcio's own connection cap); past it they are closed, as
# grpcio closes connections past its cap.
MAX_RELAYS: Final = 256
# Connections taken off the placeholder's queue in one go (its backlog is 128).
_ACCEPT_BATCH: Final = 1024
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
        max_relays: int = MAX_RELAYS,
    ) -> None:
        self._start = start
        self._what = what
        self._module = module
        self._max_relays = max_relays
        self._listen = ""
        self._sock: socket.socket | None = None  # the placeholder
        self._loop: asyncio.AbstractEventLoop | None = None
        self._starting: asyncio.Future[None] | None = None
        self.relays: set[asyncio.Task[None]] = set()
        self.relayed: dict[Address, Address] = {}

    async def listen(self, host: str, port: int) -> int:
        """Hold ``host`` (an IP address, or empty for all) and ``port`` (0: any free one);
        returns the port. Raises OSError when it cannot be bound."""
        sock = _listen_socket(host, port)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._accept, sock)
        self._sock = sock
        bound = int(sock.getsockname()[1])
        host = host or "0.0.0.0"
        self._listen = f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"
        return bound

    async def close(self) -> None:
        """Close the placeholder, end the relays, and stop a start in progress."""
        self._close_placeholder(accept=False)
        for task in list(self.relays):
            task.cancel()
        starting, self._starting = self._starting, None
        if starting is not None and not starting.done():
            starting.cancel()
            # Stopped while the server started; _hand_over logged any failure.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting

    def release(self) -> None:
        """Relay what is still queued on the placeholder, then close it (on the loop)."""
        self._close_placeholder(accept=True)

    def release_without_relaying(self) -> None:
        """Close the placeholder (stopping): what is queued on it is refused."""
        self._close_placeholder(accept=False)

    def _close_placeholder(self, *, accept: bool) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(sock.fileno())
        if accept:
            self._accept(sock)
        sock.close()

    def _accept(self, sock: socket.socket) -> None:
        """Take the connections queued on ``sock`` (the loop calls it when there are some)."""
        for _ in range(_ACCEPT_BATCH):
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors: the next readiness tries again
                log.warning("%s: cannot accept a connection: %s", self._what, exc)
                return
            if len(self.relays) >= self._max_relays:
                conn.close()
                continue
            conn.setblocking(False)
            task = asyncio.ensure_future(self._relay(conn))
            self.relays.add(task)
            task.add_done_callback(self.relays.discard)

    async def _relay(self, conn: socket.socket) -> None:
        """Start the server (once), then relay ``conn`` to it."""
        key: Address | None = None
        try:
            reader, writer = await asyncio.open_connection(sock=conn)
        except OSError:
            conn.close()
            return
        try:
            if self._starting is None:
                self._starting = asyncio.ensure_future(self._hand_over())
            try:
                await asyncio.shield(self._starting)
            except Exception:
                return  # _hand_over logged why
            up = await _connect_back(conn.getsockname())
            up_reader, up_writer = await asyncio.open_connection(sock=up)
            key = plain_peer(up.getsockname())
            self.relayed[key] = plain_peer(conn.getpeername())
            await Relay((reader, writer), (up_reader, up_writer)).run()
        except OSError:
            pass  # the client left, or the server refused the relay (its connection limit)
        except asyncio.CancelledError:
            pass  # close(): ends quietly
        finally:
            if key is not None:
                self.relayed.pop(key, None)
            writer.transport.abort()  # closed already when the relay ran; else nothing to send

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


def _listen_socket(host: str, port: int) -> socket.socket:
    """The listening socket for what grpcio would bind: a wildcard address (``0.0.0.0``, ``::``
    or none) on IPv6 and IPv4 both, like grpcio's ``add_wildcard_addrs_to_server`` (IPv4
    alone where the kernel has no IPv6); a scoped IPv6 address (``fe80::1%eth0``) on its
    interface."""
    if host in ("", "0.0.0.0", "::"):
        try:
            return _bound(socket.AF_INET6, ("::", port), dual=True)
        except OSError as exc:
            if exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                raise
        return _bound(socket.AF_INET, ("0.0.0.0", port))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    flags = socket.AI_PASSIVE | socket.AI_NUMERICHOST
    where = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, flags)[0][4]
    return _bound(family, where)


def _bound(family: int, where: Any, *, dual: bool = False) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if dual:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(where)
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def _connect_back(here: Any) -> socket.socket:
    """A connection to the address a client reached (the server listens there now): an
    IPv4 client of a dual-stack socket over IPv4, as the server then names its peer
    ``ipv4:...``; a scoped IPv6 address with its scope."""
    host = str(here[0])
    if _unmapped(host) != host:
        family, where = socket.AF_INET, (_unmapped(host), here[1])
    else:
        family, where = (socket.AF_INET6 if ":" in host else socket.AF_INET), here
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, where)
    except BaseException:
        sock.close()
        raise
    return sock


def _unmapped(host: str) -> str:
    """``::ffff:10.0.0.1`` -> ``10.0.0.1`` (an IPv4 client of a dual-stack socket)."""
    return host.removeprefix("::ffff:") if host.startswith("::ffff:") and "." in host else host


def plain_peer(addr: Any) -> Address:
    """(host, port) of a socket address, as the relay map keys it: no IPv6 scope, an
    IPv4-mapped address as IPv4."""
    return _unmapped(str(addr[0]).partition("%")[0]), int(addr[1])
