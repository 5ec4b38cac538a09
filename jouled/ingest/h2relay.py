"""A connection relayed to grpcio at its start (``jouled.ingest.handover``), byte for byte,
until it can end without failing a call. Only the 9-byte frame headers are read (RFC 9113
section 4.1), never HPACK.

It ends with the two-step graceful shutdown of RFC 9113 section 6.8, as grpcio's own server
does it: once no stream is open, a GOAWAY naming no last stream (2^31-1) and a PING; the
client answers the PING after it has taken in the GOAWAY, so every stream it opened before
is known, and all are relayed and served; once they are done, the final GOAWAY names the
last of them and grpcio's side is closed. The client opens its next calls on a new
connection, straight to grpcio. (A single GOAWAY made a call the client had just opened on
the connection fail with UNAVAILABLE: grpc-core retries such calls only under a retry
policy.) A stream opened after the final GOAWAY, which a client does not do, is refused with
RST_STREAM REFUSED_STREAM; past MAX_REFUSED header blocks the connection is cut off.

A relay holds at most one socket read in each direction (64 KiB), ends with either side and
within MAX_LIFE_S; grpcio's handshake, idle and connection limits apply to what it relays.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Final

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # RFC 9113 section 3.4
DATA, HEADERS, RST_STREAM, PING, GOAWAY, CONTINUATION = 0, 1, 3, 6, 7, 9
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
NO_LAST_STREAM: Final = 0x7FFFFFFF
PING_DATA: Final = b"jouled\x00\x01"  # the 8 bytes of the PING after the first GOAWAY
REFUSED_STREAM: Final = 0x7
_CHUNK: Final = 64 * 1024
# A relayed connection that has sent its preface and then nothing this long is sent away.
# Not shorter: grpc-core fails a call that waits on the transport when a GOAWAY arrives
# (UNAVAILABLE, "Stream removed", not retried), and a client's first call can come a while
# after its preface (gzip of a large first batch on a loaded host: 0.2-0.4 s for 32 MiB on
# the eighteenth pass's VM, where 0.25 s failed the gzip-bomb test 2 times in 6).
QUIET_S: Final = 2.0
# The client has this long to answer the PING, and to close the connection after the final
# GOAWAY.
LINGER_S: Final = 5.0
# Header blocks taken after the final GOAWAY before the connection is cut off.
MAX_REFUSED: Final = 16
# A relay ends this long after it began, whatever its state (a call's body must arrive
# within ingest.body_timeout, at most 600 s, and the shutdown takes two LINGER_S).
MAX_LIFE_S: Final = 660.0


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    """One HTTP/2 frame: 9-byte header (24-bit length, type, flags, 31-bit stream id)."""
    head = struct.pack(">I", len(payload))[1:] + bytes((kind, flags))
    return head + struct.pack(">I", stream) + payload


def goaway(last_stream: int) -> bytes:
    """GOAWAY with NO_ERROR: streams up to ``last_stream`` were (or will be) served."""
    return frame(GOAWAY, 0, 0, struct.pack(">II", last_stream, 0))


class Frames:
    """Frame boundaries in one direction of a connection, fed as bytes arrive.

    ``feed(data)`` returns the bytes that may be passed on now (all of ``data`` except an
    incomplete 9-byte frame header, which waits for its rest) and calls ``on_frame(type,
    flags, stream)`` for each frame header, before any of its payload is passed on; when that
    returns True, ``on_payload(payload)`` is called with the frame's payload once it is in."""

    __slots__ = ("_held", "_kept", "_left", "_on_frame", "_on_payload", "_preface")

    def __init__(
        self,
        on_frame: Callable[[int, int, int], bool],
        on_payload: Callable[[bytes], None] | None = None,
        *,
        preface: bool,
    ) -> None:
        self._on_frame = on_frame
        self._on_payload = on_payload
        self._preface = len(PREFACE) if preface else 0  # preface bytes still to pass
        self._held = b""  # an incomplete frame header
        self._left = 0  # payload bytes of the current frame still to come
        self._kept: bytearray | None = None  # the payload on_frame asked for

    @property
    def at_boundary(self) -> bool:
        """No frame is part-way passed on: another frame may be written here."""
        return self._left == 0 and not self._held and not self._preface

    @property
    def past_preface(self) -> bool:
        return self._preface == 0

    def feed(self, data: bytes) -> bytes:
        view = memoryview(self._held + data) if self._held else memoryview(data)
        self._held = b""
        out = bytearray()
        pos, end = 0, len(view)
        while pos < end:
            if self._preface:
                take = min(self._preface, end - pos)
                self._preface -= take
            elif self._left:
                take = min(self._left, end - pos)
                self._left -= take
                if self._kept is not None:
                    self._kept += view[pos : pos + take]
                    if not self._left:
                        self._payload()
            elif end - pos < 9:
                self._held = bytes(view[pos:])
                break
            else:
                head = view[pos : pos + 9]
                length = int.from_bytes(head[:3], "big")
                stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
                keep = self._on_frame(head[3], head[4], stream)
                self._left = length
                take = 9
                if keep and self._on_payload is not None:
                    self._kept = bytearray()
                    if not length:
                        self._payload()
            out += view[pos : pos + take]
            pos += take
        return bytes(out)

    def _payload(self) -> None:
        kept, self._kept = self._kept, None
        if self._on_payload is not None and kept is not None:
            self._on_payload(bytes(kept))


RELAYING, DRAINING, CLOSING = 0, 1, 2


class Relay:
    """One accepted connection relayed to grpcio until its graceful end (module doc)."""

    def __init__(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self._creader, self._cwriter = client
        self._ureader, self._uwriter = upstream
        self.phase = RELAYING
        self.open: set[int] = set()  # client streams grpcio has not ended
        self.last = 0  # the highest stream the client opened (all were passed to grpcio)
        self.served = 0  # streams grpcio ended
        self.refused = 0  # header blocks the client sent after the final GOAWAY
        self._server_spoke = False  # grpcio's SETTINGS (its preface) went to the client
        self._server_goaway = False  # grpcio ends the connection itself (idle, limits)
        self._in_block = False  # grpcio is part-way through a header block
        self._quiet = False  # nothing from the client for QUIET_S
        self._acked = False  # the client answered the PING (or LINGER_S passed)
        self._timer: asyncio.TimerHandle | None = None
        self._up = Frames(self._client_frame, self._client_payload, preface=True)
        self._down = Frames(self._server_frame, preface=False)
        self._refuse: list[bytes] = []  # RST_STREAMs for the client

    # Frames the client sends (read before they are passed on to grpcio).
    def _client_frame(self, kind: int, flags: int, stream: int) -> bool:
        if kind == HEADERS and self.phase == CLOSING:
            # Every header block counts (a stream's again too): a client past MAX_REFUSED is
            # cut off. A new stream is refused, once.
            self.refused += 1
            if stream & 1 and stream > self.last and self.refused <= MAX_REFUSED:
                reset = frame(RST_STREAM, 0, stream, struct.pack(">I", REFUSED_STREAM))
                self._refuse.append(reset)
            self.last = max(self.last, stream)
        elif kind == HEADERS and stream & 1 and stream > self.last:
            self.open.add(stream)
            self.last = stream
        elif kind == RST_STREAM:
            self.open.discard(stream)
        return kind == PING and bool(flags & ACK) and self.phase == DRAINING

    def _client_payload(self, payload: bytes) -> None:
        if payload == PING_DATA:
            self._acked = True

    # Frames grpcio sends (read before they are passed on to the client).
    def _server_frame(self, kind: int, flags: int, stream: int) -> bool:
        self._server_spoke = True
        if kind in (HEADERS, CONTINUATION):
            self._in_block = not flags & END_HEADERS
        if (kind in (HEADERS, DATA) and flags & END_STREAM) or kind == RST_STREAM:
            if stream in self.open:
                self.open.discard(stream)
                self.served += 1
        elif kind == GOAWAY:
            self._server_goaway = True
        return False

    def _quiescent(self) -> bool:
        """Nothing open, and a frame may be written to the client here."""
        return (
            self._server_spoke
            and not self._server_goaway
            and not self.open
            and not self._in_block
            and self._down.at_boundary
            and self._up.past_preface
        )

    def _advance(self) -> None:
        """Take the next step of the shutdown once its condition holds (module doc)."""
        if self.phase == RELAYING and self._quiescent() and (self.served or self._quiet):
            self.phase = DRAINING
            self._cwriter.write(goaway(NO_LAST_STREAM) + frame(PING, 0, 0, PING_DATA))
            self._arm(LINGER_S, self._ping_unanswered)
        elif self.phase == DRAINING and self._quiescent() and self._acked:
            self.phase = CLOSING
            self._cwriter.write(goaway(self.last))
            self._uwriter.close()
            # The client closes the connection now; if it does not, it is cut off.
            self._arm(LINGER_S, self._cwriter.transport.abort)

    def _arm(self, delay: float, then: Callable[[], None]) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(delay, then)

    def _ping_unanswered(self) -> None:
        self._timer = None
        self._acked = True  # LINGER_S without the PING's answer: go on without it
        self._advance()

    def _went_quiet(self) -> None:
        self._timer = None
        self._quiet = True
        self._advance()

    async def run(self) -> None:
        """Relay until either side ends, at most MAX_LIFE_S; never raises OSError."""
        try:
            async with asyncio.timeout(MAX_LIFE_S):
                await asyncio.gather(self._upward(), self._downward())
        except (ConnectionError, OSError, TimeoutError):
            pass
        finally:
            if self._timer is not None:
                self._timer.cancel()
            self._uwriter.transport.abort()
            # What is still unsent goes only to a client that reads it; nothing waits for it.
            if self._cwriter.transport.get_write_buffer_size():
                self._cwriter.transport.abort()
            else:
                self._cwriter.close()

    async def _upward(self) -> None:
        """Client to grpcio; after the final GOAWAY, until the client closes the connection
        (or LINGER_S passes), with any new stream refused."""
        while data := await self._creader.read(_CHUNK):
            passed = self._up.feed(data)
            if self.phase != CLOSING:
                self._uwriter.write(passed)
            if self._refuse:
                self._cwriter.write(b"".join(self._refuse))
                self._refuse.clear()
            if self.phase == CLOSING and (
                self.refused > MAX_REFUSED or self._cwriter.transport.get_write_buffer_size()
            ):
                return  # a client that goes on opening streams, or does not read: cut off
            if self.phase == RELAYING and not self.served:
                self._quiet = False
                self._arm(QUIET_S, self._went_quiet)
            self._advance()
            if self.phase != CLOSING:
                await self._uwriter.drain()

    async def _downward(self) -> None:
        """grpcio to client, with the shutdown's frames written between its frames."""
        while self.phase != CLOSING:
            data = await self._ureader.read(_CHUNK)
            if not data:
                if self.phase != CLOSING:  # grpcio closed it (timeouts, limits)
                    self.phase = CLOSING
                    self._cwriter.close()
                return
            self._cwriter.write(self._down.feed(data))
            self._advance()
            await self._cwriter.drain()
