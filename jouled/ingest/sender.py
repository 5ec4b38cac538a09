"""Which workload sent a body: the process at the other end of the ingest connection.

vLLM without ``OTEL_SERVICE_NAME`` reports ``service.name = unknown_service:python``; its
spans still belong to the workload whose process sent them. On the unix socket the kernel
tells the peer's pid (``SO_PEERCRED``); on loopback TCP (HTTP and gRPC) the client socket is
found in ``<proc>/net/tcp`` and ``tcp6`` (its local address is our peer, its remote address
our listener) and its inode among the ``<proc>/<pid>/fd`` links of the workloads' processes.
Only the processes workloads already claim are searched, and answers are cached per client
socket (its inode) for ``cache_s``: a keep-alive connection or a gRPC channel costs one fd
search, each request that needs it one read of /proc/net/tcp; a request whose spans name their
service reads nothing, and its resolver is made without copying the pid map. Not per peer
address: a port freed by a workload's connection could be bound by another process within
``cache_s`` (to either listener) and its spans taken for the workload's, past
``ingest.verify_sender``.
``proc_root`` is ``attribution.proc_path``, injectable for tests.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import socket
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Final

from jouled.clock import Clock
from jouled.throttle import Throttle

log = logging.getLogger(__name__)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Peer = tuple[str, int]  # (ip, port)
_PEERCRED: Final = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_pid(sock: socket.socket) -> int | None:
    """The pid of a unix-socket peer (SO_PEERCRED), None where the kernel does not say."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    except (OSError, AttributeError):
        return None
    pid = _PEERCRED.unpack(raw)[0]
    return pid if pid > 0 else None


@functools.lru_cache(maxsize=256)
def _ip(value: str) -> IpAddress | None:
    """The peer's address (an IPv4-mapped one as IPv4), None when not an address. Cached:
    parsing it was ~15 µs of the event loop's time per request, and peers are few."""
    try:
        ip = ipaddress.ip_address(value.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _proc_ip(hex_addr: str) -> IpAddress | None:
    """An address as /proc/net/tcp{,6} prints it: 32-bit words in host (little-endian) order."""
    try:
        raw = bytes.fromhex(hex_addr)
    except ValueError:
        return None
    if len(raw) not in (4, 16):
        return None
    packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(packed)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _endpoint(field: str) -> tuple[IpAddress, int] | None:
    addr, _, port = field.partition(":")
    ip = _proc_ip(addr)
    try:
        return (ip, int(port, 16)) if ip is not None else None
    except ValueError:
        return None


def socket_inode(lines: Iterable[str], client: Peer, server: Peer) -> int | None:
    """The inode of the socket whose local end is ``client`` and remote end ``server``, in
    the lines of /proc/net/tcp or tcp6."""
    want_local = (_ip(client[0]), client[1])
    server_ip = _ip(server[0])
    any_ip = server_ip is None or server_ip.is_unspecified  # a listener on 0.0.0.0 or ::
    for line in lines:
        fields = line.split()
        if len(fields) < 10 or fields[0] == "sl":
            continue
        remote = _endpoint(fields[2])
        if remote is None or remote[1] != server[1] or not (any_ip or remote[0] == server_ip):
            continue
        if _endpoint(fields[1]) == want_local:
            try:
                inode = int(fields[9])
            except ValueError:
                return None
            return inode or None
    return None


class _Once:
    """A resolver that asks when first called, then remembers: a request whose spans all
    name their service never asks (the common case), so it costs nothing per request."""

    needs_search = False

    def __init__(self, search: Callable[[], str | None]) -> None:
        self._search = search
        self._memo: list[str | None] = []

    def __call__(self) -> str | None:
        if not self._memo:
            self._memo.append(self._search())
        return self._memo[0]


class _Search(_Once):
    """A resolver that reads /proc when first called (then remembers): callers run the
    decoding that may call it off the event loop (``needs_search``)."""

    needs_search = True


def needs_search(resolver: Callable[[], str | None] | None) -> bool:
    """Whether calling ``resolver`` may read /proc (a new loopback connection)."""
    return bool(getattr(resolver, "needs_search", False))


class SenderLookup:
    """Peer -> the workload whose process holds the client end (None: no workload's)."""

    def __init__(
        self,
        proc_root: Path,
        workload_pids: Callable[[], Mapping[int, str]],
        clock: Clock,
        *,
        cache_s: float = 10.0,
        max_cache: int = 4096,
    ) -> None:
        self._root = proc_root
        self._workload_pids = workload_pids
        self._clock = clock
        self._cache_s = cache_s
        self._max_cache = max_cache
        self._cache: OrderedDict[int, tuple[float, str | None]] = OrderedDict()
        self.lookups = 0  # searches of the workloads' fds made (not answered from the cache)

    def _cached(self, key: int) -> tuple[bool, str | None]:
        hit = self._cache.get(key)
        if hit is not None and hit[0] > self._clock.monotonic():
            return True, hit[1]
        return False, None

    def _store(self, key: int, workload: str | None) -> None:
        self._cache[key] = (self._clock.monotonic() + self._cache_s, workload)
        self._cache.move_to_end(key)
        while len(self._cache) > self._max_cache:
            self._cache.popitem(last=False)

    def for_unix(self, sock: socket.socket | None) -> Callable[[], str | None]:
        """A resolver for a unix-socket connection: the peer's pid is read now, the pid map
        when the resolver is first called (it is safe from any thread)."""
        pid = peer_pid(sock) if sock is not None else None
        if pid is None:
            return lambda: None
        return _Once(lambda: self._workload_pids().get(pid))

    def for_tcp(self, client: Peer | None, server: Peer | None) -> Callable[[], str | None]:
        """A lazy resolver for a TCP connection: only loopback peers are searched (a remote
        host's processes are not ours). Safe to call from a worker thread."""
        if client is None or server is None:
            return lambda: None
        ip = _ip(client[0])
        if ip is None or not ip.is_loopback:
            return lambda: None
        return _Search(lambda: self._search(client, server))

    def _search(self, client: Peer, server: Peer) -> str | None:
        inode = None
        for name in ("tcp", "tcp6"):
            try:
                with open(self._root / "net" / name, encoding="ascii", errors="replace") as f:
                    inode = socket_inode(f, client, server)
            except OSError:
                continue
            if inode is not None:
                break
        if inode is None:
            return None  # gone (the sender closed first) or not a loopback socket
        hit, workload = self._cached(inode)
        if hit:
            return workload
        self.lookups += 1
        target = f"socket:[{inode}]"
        # The pid map (a copy of the claimed processes: O(processes)) only on a cache miss.
        pids = self._workload_pids()
        workload = next((w for pid, w in pids.items() if self._holds(pid, target)), None)
        self._store(inode, workload)
        return workload

    def _holds(self, pid: int, target: str) -> bool:
        try:
            with os.scandir(self._root / str(pid) / "fd") as entries:
                for entry in entries:
                    try:
                        if os.readlink(entry.path) == target:
                            return True
                    except OSError:
                        continue
        except OSError:
            return False  # gone, or not ours to read (another user's process)
        return False


class UnknownServiceWarning:
    """One warning a minute at most, naming the service.name values that matched nothing."""

    def __init__(self, clock: Clock, every_s: float = 60.0) -> None:
        self._throttle = Throttle(clock, every_s)
        self._seen: set[str] = set()

    def note(self, services: Iterable[str]) -> None:
        self._seen.update(services)
        if not self._seen or self._throttle.allow() is None:
            return
        names = sorted(self._seen)
        shown = ", ".join(repr(n) for n in names[:5]) + (" ..." if len(names) > 5 else "")
        self._seen.clear()
        log.warning(
            "spans rejected (unknown_workload): service.name %s matches no workloads[].name and "
            "no workload's process sent them; set OTEL_SERVICE_NAME to the workload's name in "
            "the server's environment, or name a workload %r (workloads[].name) or widen its "
            "match to cover the sending process",
            shown,
            names[0],
        )
