"""grpcio starts at the first gRPC connection: a placeholder socket holds the port, and the
connections it accepted are relayed to grpcio and ended with HTTP/2's two-step graceful
shutdown (jouled.ingest.handover, jouled.ingest.h2relay). Real grpc.aio clients, a real
client in another process, raw HTTP/2 frames, and a real ``jouled run``."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import itertools
import os
import selectors
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jouled.clock import SystemClock
from jouled.ingest import grpccore, h2relay
from jouled.ingest import handover as handover_module
from jouled.ingest.app import STATE_KEY, build_ingest_app
from jouled.ingest.grpc import GrpcIngest
from jouled.ingest.h2relay import PREFACE, Frames, frame
from jouled.ingest.sender import SenderLookup
from tests.ingest.otlp import pb_span, request
from tests.ingest.test_grpc import EXPORT, serve
from tests.ingest.test_otel_sdk import ListSink
from tests.support.procs import jouled, wait_for

SETTINGS, PING = 4, 6
ROOT = str(Path(__file__).resolve().parents[2])


def _body(span_id: int, service: str = "classifier") -> bytes:
    now = time.time()
    spans = [pb_span(span_id, start=now - 2, end=now - 1)]
    return bytes(request(spans, service__name=service).SerializeToString())


async def test_calls_in_flight_at_the_hand_over_are_each_served_once() -> None:
    """12 calls opened at once on the first connection (relayed; under MAX_CONCURRENT_RPCS),
    then 20 one after another
    on the same channel, which go on it until the client takes in the shutdown: every call
    answered OK, every span taken exactly once. A lone GOAWAY made a call the client had just
    opened on the connection fail with UNAVAILABLE."""
    sink = ListSink()
    ingest = await serve(sink)
    port = ingest.address[1] if ingest.address else 0
    assert not ingest.started
    options = [("grpc.use_local_subchannel_pool", 1)]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            export = channel.unary_unary(EXPORT)
            await asyncio.gather(*(export(_body(i), timeout=10) for i in range(1, 13)))
            for i in range(13, 33):
                await export(_body(i), timeout=10)
        assert ingest.started
        ids = sorted(int(s.span_id, 16) for s in sink.spans)
        assert ids == list(range(1, 33))
        assert ingest.state.requests.totals() == {("grpc", "OK", "ok"): 32}
        # The relayed connection ended; later connections reach grpcio directly.
        handover = ingest._handover
        assert handover is not None
        for _ in range(200):
            if not handover.relays:
                break
            await asyncio.sleep(0.05)
        assert not handover.relays and not handover.relayed
    finally:
        await ingest.stop()


SENDER = """
import sys, grpc
sys.path[:0] = [{root!r}]
from tests.ingest.test_grpc_handover import _body
from tests.ingest.test_grpc import EXPORT
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
with grpc.insecure_channel(sys.argv[1]) as channel:
    export = channel.unary_unary(EXPORT)
    for i, service in enumerate(["mine", "theirs", "mine"], 1):
        reply = ExportTraceServiceResponse.FromString(export(_body(i, service), timeout=10))
        print(service, reply.partial_success.rejected_spans, flush=True)
"""


async def test_a_relayed_calls_sender_is_the_client_process_not_the_relay() -> None:
    """With ingest.verify_sender, a span naming workload "mine" is taken only from mine's
    processes. The first call reaches grpcio from the relay's own socket (this process);
    the sender must still be the client in the other process."""
    sink = ListSink()
    clock = SystemClock()
    claimed: dict[int, str] = {}
    app = build_ingest_app(
        sink,
        clock=clock,
        known_workloads=lambda: {"mine", "theirs"},
        gflops_per_token={},
        senders=SenderLookup(Path("/proc"), lambda: dict(claimed), clock, cache_s=0.0),
        verify_sender=True,
    )
    ingest = GrpcIngest(app[STATE_KEY])
    host, port = await ingest.start("127.0.0.1:0")
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SENDER.format(root=ROOT),
        f"{host}:{port}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    claimed[child.pid] = "mine"
    try:
        out, _ = await asyncio.wait_for(child.communicate(), 60)
    finally:
        await ingest.stop()
    assert child.returncode == 0, out.decode()
    # Call 1 went through the relay, call 3 (likely) straight to grpcio.
    assert out.decode().split() == ["mine", "0", "theirs", "1", "mine", "0"]
    assert [s.workload for s in sink.spans] == ["mine", "mine"]
    assert sink.rejections == {"sender_mismatch": 1}


def _frames(sock: socket.socket, until: float) -> list[tuple[int, int, int, bytes]]:
    """Every frame the server sends before ``until`` (or its close)."""
    data = b""
    sock.settimeout(0.05)
    while time.monotonic() < until:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            break
        data += chunk
    out = []
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        stream = int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
        out.append((data[3], data[4], stream, data[9 : 9 + length]))
        data = data[9 + length :]
    return out


async def _client_preface(
    ingest: GrpcIngest, wait_s: float = 1.0
) -> tuple[socket.socket, list[tuple[int, int, int, bytes]]]:
    """A raw client connected to ``ingest`` that has sent its preface and empty SETTINGS,
    and the frames it got in the ``wait_s`` after."""
    port = ingest.address[1] if ingest.address else 0
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(PREFACE + frame(SETTINGS, 0, 0, b""))
    return sock, await asyncio.to_thread(_frames, sock, time.monotonic() + wait_s)


async def test_the_shutdown_steps_and_a_stream_opened_after_the_last_goaway_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Raw frames: a client that sends its preface and nothing else gets GOAWAY(2^31-1) and
    a PING after QUIET_S; once it answers the PING, the final GOAWAY names no stream; a stream
    opened after it is refused with RST_STREAM REFUSED_STREAM, and never reaches grpcio."""
    monkeypatch.setattr(h2relay, "QUIET_S", 0.1)
    sink = ListSink()
    ingest = await serve(sink)
    sock, got = await _client_preface(ingest)
    try:
        kinds = [(k, s) for k, _f, s, _p in got]
        assert kinds[0] == (SETTINGS, 0)  # grpcio's preface first
        goaways = [p for k, _f, _s, p in got if k == h2relay.GOAWAY]
        assert goaways == [struct.pack(">II", 0x7FFFFFFF, 0)]
        pings = [p for k, f, _s, p in got if k == PING and not f & 1]
        assert pings == [h2relay.PING_DATA]
        sock.sendall(frame(PING, 1, 0, h2relay.PING_DATA))
        got = await asyncio.to_thread(_frames, sock, time.monotonic() + 0.5)
        assert [p for k, _f, _s, p in got if k == h2relay.GOAWAY] == [struct.pack(">II", 0, 0)]
        sock.sendall(frame(h2relay.HEADERS, 0x4, 1, b"\x82\x87"))
        got = await asyncio.to_thread(_frames, sock, time.monotonic() + 0.5)
        refused = struct.pack(">I", h2relay.REFUSED_STREAM)
        assert [(k, s, p) for k, _f, s, p in got] == [(h2relay.RST_STREAM, 1, refused)]
        assert ingest.state.requests.totals() == {} and not sink.spans
    finally:
        sock.close()
        await ingest.stop()


def _literal_headers(fields: list[tuple[bytes, bytes]]) -> bytes:
    """An HPACK header block of literal fields, never indexed, no Huffman (RFC 7541 6.2.3)."""
    out = b""
    for name, value in fields:
        assert len(name) < 127 and len(value) < 127
        out += b"\x10" + bytes((len(name),)) + name + bytes((len(value),)) + value
    return out


async def test_a_first_call_that_comes_a_while_after_the_preface_is_served_not_sent_away() -> None:
    """A client whose first stream opens a second after its preface (a client compressing a
    large first batch on a loaded host: 0.2-0.4 s for 32 MiB here) gets its call served: the
    relay's quiet period is long enough that no GOAWAY races the call. grpc-core fails a
    call that waits on the transport when a GOAWAY arrives with UNAVAILABLE ("Stream
    removed"), and does not retry it; with a 0.25 s quiet period the gzip bomb test of
    test_grpc.py failed that way 2 times in 6 on a slow host."""
    assert h2relay.QUIET_S >= 1.5
    sink = ListSink()
    ingest = await serve(sink)
    port = ingest.address[1] if ingest.address else 0
    sock, got = await _client_preface(ingest)
    try:
        assert {k for k, _f, _s, _p in got} == {SETTINGS}  # grpcio's preface and ack, no GOAWAY
        settings_ack = frame(SETTINGS, 1, 0, b"")
        block = _literal_headers(
            [
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", EXPORT.encode()),
                (b":authority", f"127.0.0.1:{port}".encode()),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
            ]
        )
        message = request([]).SerializeToString()
        body = b"\x00" + struct.pack(">I", len(message)) + message
        sock.sendall(
            settings_ack
            + frame(h2relay.HEADERS, h2relay.END_HEADERS, 1, block)
            + frame(h2relay.DATA, h2relay.END_STREAM, 1, body)
        )
        got = await asyncio.to_thread(_frames, sock, time.monotonic() + 1.5)
        on_stream = [(k, f) for k, f, st_, _p in got if st_ == 1]
        assert any(k == h2relay.HEADERS and f & h2relay.END_STREAM for k, f in on_stream)
        assert h2relay.RST_STREAM not in [k for k, _f in on_stream]
        kinds = [k for k, _f, _s, _p in got]
        first_goaway = kinds.index(h2relay.GOAWAY) if h2relay.GOAWAY in kinds else len(kinds)
        assert all(k != h2relay.HEADERS for k in kinds[first_goaway:])  # none before: served
        assert ingest.state.requests.totals() == {("grpc", "OK", "ok"): 1}
    finally:
        sock.close()
        await ingest.stop()


async def test_a_client_that_never_answers_the_ping_is_ended_after_linger(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(h2relay, "QUIET_S", 0.1)
    monkeypatch.setattr(h2relay, "LINGER_S", 0.3)
    ingest = await serve(ListSink())
    port = ingest.address[1] if ingest.address else 0
    sock = socket.create_connection(("127.0.0.1", port))
    try:
        sock.sendall(PREFACE + frame(SETTINGS, 0, 0, b""))
        got = await asyncio.to_thread(_frames, sock, time.monotonic() + 1.5)
        goaways = [p for k, _f, _s, p in got if k == h2relay.GOAWAY]
        assert goaways == [struct.pack(">II", 0x7FFFFFFF, 0), struct.pack(">II", 0, 0)]
        # ... and closed LINGER_S after the final GOAWAY.
        assert await asyncio.to_thread(_frames, sock, time.monotonic() + 1.0) == []
        assert sock.recv(1) == b""
    finally:
        sock.close()
        await ingest.stop()


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0"])
async def test_a_wildcard_address_takes_ipv4_and_ipv6_before_and_after_the_hand_over(
    listen: str,
) -> None:
    """As grpcio binds a wildcard address: IPv6 and IPv4 both (one dual-stack socket)."""
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    sink = ListSink()
    ingest = await serve(sink, listen=listen)
    port = ingest.address[1] if ingest.address else 0
    try:
        for n, host in enumerate(["127.0.0.1", "[::1]", "127.0.0.1", "[::1]"], 1):
            options = [("grpc.use_local_subchannel_pool", 1)]
            async with grpc.aio.insecure_channel(f"{host}:{port}", options=options) as channel:
                await channel.unary_unary(EXPORT)(_body(n), timeout=10)
        assert ingest.started and len(sink.spans) == 4
    finally:
        await ingest.stop()


FRAME = st.tuples(
    st.integers(0, 9), st.integers(0, 255), st.integers(0, 2**31 - 1), st.binary(max_size=40)
)


@settings(max_examples=200, deadline=None)
@given(frames=st.lists(FRAME, max_size=12), cuts=st.lists(st.integers(0, 700), max_size=20))
def test_frames_sees_the_same_frames_however_the_bytes_arrive(
    frames: list[tuple[int, int, int, bytes]], cuts: list[int]
) -> None:
    """Any chunking: each frame header seen once, in order, before any of its payload is
    passed on; every byte passed on, in order; a PING's payload handed over whole."""
    wire = PREFACE + b"".join(frame(*f) for f in frames)
    seen: list[tuple[int, int, int, int]] = []  # (type, flags, stream, bytes passed before)
    payloads: list[bytes] = []
    passed = bytearray()

    def on_frame(kind: int, flags: int, stream: int) -> bool:
        seen.append((kind, flags, stream, len(passed)))
        return kind == PING

    parser = Frames(on_frame, payloads.append, preface=True)
    points = sorted({c for c in cuts if c < len(wire)} | {0, len(wire)})
    for a, b in itertools.pairwise(points):
        passed += parser.feed(wire[a:b])
    assert bytes(passed) == wire
    assert [s[:3] for s in seen] == [f[:3] for f in frames]
    assert payloads == [f[3] for f in frames if f[0] == PING]
    assert parser.at_boundary
    # A header is seen no later than its own bytes are passed on.
    offset = len(PREFACE)
    for (_k, _f, _s, before), f in zip(seen, frames, strict=True):
        assert before <= offset
        offset += 9 + len(f[3])


def _grpcio_threads(pid: int) -> list[str]:
    names = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            names.append(Path(f"/proc/{pid}/task/{task}/comm").read_text().strip())
        except OSError:
            continue
    return [n for n in names if n in ("event_engine", "grpc_global_tim", "lifeguard")]


def test_an_idle_daemon_runs_no_grpcio_until_a_grpc_client_connects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``jouled run``: no grpcio thread while no gRPC client has come; the port answers; the
    first export is taken; then grpcio's threads run, with the grpc-core experiments the
    daemon chose itself (jouled.ingest.grpccore), which grpc-core knows."""
    monkeypatch.delenv(grpccore.VARIABLE, raising=False)
    cfg = {"interval": 0.5, "collectors": {"nvml": {"enabled": False}}}
    with jouled(tmp_path, cfg, "--log-level", "debug") as d:
        pid = d.proc.popen.pid
        time.sleep(1.0)
        assert _grpcio_threads(pid) == []
        assert "(grpcio starts at the first gRPC connection)" in d.proc.output()
        chosen = grpccore.choose_experiments({})
        said = f"{grpccore.VARIABLE}={chosen} (iomgr's listener)" if chosen else "its defaults"
        assert f"grpc-core experiments: {said}" in d.proc.output()
        assert d.grpc is not None
        with grpc.insecure_channel(d.grpc) as channel:
            channel.unary_unary(EXPORT)(_body(1), timeout=10)
        wait_for(lambda: _grpcio_threads(pid) != [], 10, "grpcio's threads")
        assert "grpcio serves" in d.proc.output()
        assert "Unknown experiment" not in d.proc.output()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def test_stop_before_any_client_frees_the_port() -> None:
    ingest = await serve(ListSink())
    port = ingest.address[1] if ingest.address else 0
    assert not _port_free(port)
    await ingest.stop()
    assert _port_free(port) and not ingest.started


async def test_a_port_taken_in_the_hand_over_is_logged_and_the_client_is_closed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process binds the port in the moment between the placeholder's close and
    grpcio's bind: grpcio cannot start; the error says so, the client is closed, and the
    listener stops cleanly."""
    ingest = await serve(ListSink())
    port = ingest.address[1] if ingest.address else 0
    intruder: list[socket.socket] = []
    handover = ingest._handover
    assert handover is not None
    release = handover.release

    def release_then_taken() -> None:
        release()
        intruder.append(socket.create_server(("127.0.0.1", port)))

    monkeypatch.setattr(handover, "release", release_then_taken)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(PREFACE)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        assert "grpcio could not start" in caplog.text and str(port) in caplog.text
        assert not ingest.started and len(intruder) == 1
    finally:
        for sock in intruder:
            sock.close()
        await ingest.stop()


async def test_a_client_that_goes_on_opening_streams_after_the_last_goaway_is_cut_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Streams opened after the final GOAWAY, new ones and the same one again and again,
    while the client reads nothing: each new stream is refused once, at most MAX_REFUSED,
    and the connection is cut off (a review found 3 million RST_STREAMs queued, 48 MB a
    relay, held until the client read them)."""
    monkeypatch.setattr(h2relay, "QUIET_S", 0.1)
    monkeypatch.setattr(h2relay, "LINGER_S", 0.5)
    ingest = await serve(ListSink())
    port = ingest.address[1] if ingest.address else 0
    handover = ingest._handover
    assert handover is not None
    sock = socket.create_connection(("127.0.0.1", port))
    try:
        sock.sendall(PREFACE + frame(SETTINGS, 0, 0, b""))
        await asyncio.to_thread(_frames, sock, time.monotonic() + 0.5)
        sock.sendall(frame(PING, 1, 0, h2relay.PING_DATA))
        got = await asyncio.to_thread(_frames, sock, time.monotonic() + 0.3)
        assert [p for k, _f, _s, p in got if k == h2relay.GOAWAY] == [struct.pack(">II", 0, 0)]
        new = b"".join(frame(h2relay.HEADERS, 0x4, n, b"") for n in range(1, 200, 2))
        again = frame(h2relay.HEADERS, 0x4, 1, b"") * 20_000
        with contextlib.suppress(OSError):
            sock.sendall(new + again)
        got = await asyncio.to_thread(_frames, sock, time.monotonic() + 2.0)
        resets = [s for k, _f, s, _p in got if k == h2relay.RST_STREAM]
        assert resets == list(range(1, 2 * h2relay.MAX_REFUSED, 2))  # then cut off
        for _ in range(40):
            if not handover.relays:
                break
            await asyncio.sleep(0.05)
        assert not handover.relays
    finally:
        sock.close()
        await ingest.stop()


async def test_connections_queued_on_the_placeholder_at_the_hand_over_are_relayed() -> None:
    """Clients that connected while grpcio started (queued, not yet accepted, when the
    placeholder closes) reach grpcio: they used to be reset, or left hanging unanswered
    (asyncio's server closed under a half-made connection)."""
    ingest = await serve(ListSink())
    port = ingest.address[1] if ingest.address else 0
    handover = ingest._handover
    assert handover is not None
    release = handover.release
    queued: list[socket.socket] = []

    def connect_then_release() -> None:
        # On the loop: nothing accepts these before release() does.
        queued.extend(socket.create_connection(("127.0.0.1", port)) for _ in range(20))
        release()

    handover.release = connect_then_release  # type: ignore[method-assign]
    first = socket.create_connection(("127.0.0.1", port))
    try:
        for sock in [first]:
            sock.sendall(PREFACE + frame(SETTINGS, 0, 0, b""))
        for _ in range(100):
            if ingest.started:
                break
            await asyncio.sleep(0.05)
        assert ingest.started and len(queued) == 20
        for sock in queued:
            sock.sendall(PREFACE + frame(SETTINGS, 0, 0, b""))
        firsts = await asyncio.to_thread(_first_frames, queued, time.monotonic() + 3.0)
        assert firsts == [SETTINGS] * 20
    finally:
        for sock in [first, *queued]:
            sock.close()
        await ingest.stop()


def _first_frames(socks: list[socket.socket], until: float) -> list[int | None]:
    """The type of the first frame each socket receives before ``until``."""
    data = {sock: b"" for sock in socks}
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ)
        while time.monotonic() < until and any(len(d) < 9 for d in data.values()):
            for key, _ in sel.select(0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                chunk = sock.recv(65536)
                data[sock] += chunk
                if not chunk:
                    sel.unregister(sock)
    return [d[3] if len(d) >= 9 else None for d in data.values()]


def _link_local() -> str | None:
    """An IPv6 link-local address of this host with its scope (``fe80::1%eth0``)."""
    try:
        rows = Path("/proc/net/if_inet6").read_text().split()
    except OSError:
        return None
    for i in range(0, len(rows) - 5, 6):
        hexaddr, name = rows[i], rows[i + 5]
        if hexaddr.startswith("fe80"):
            addr = ":".join(hexaddr[j : j + 4] for j in range(0, 32, 4))
            return f"{ipaddress.ip_address(addr)}%{name}"
    return None


async def test_a_scoped_ipv6_link_local_address_is_held_and_served() -> None:
    """``[fe80::...%eth0]:PORT`` (which grpcio binds) bound the placeholder without its
    scope: EINVAL at start-up."""
    where = _link_local()
    if where is None:
        pytest.skip("no IPv6 link-local address here")
    sink = ListSink()
    ingest = await serve(sink, listen=f"[{where}]:0")
    port = ingest.address[1] if ingest.address else 0
    try:
        for n in (1, 2):
            options = [("grpc.use_local_subchannel_pool", 1)]
            target = f"ipv6:[{where.replace('%', '%25')}]:{port}"
            async with grpc.aio.insecure_channel(target, options=options) as channel:
                await channel.unary_unary(EXPORT)(_body(n), timeout=10)
        assert ingest.started and len(sink.spans) == 2
    finally:
        await ingest.stop()


async def test_a_wildcard_address_on_a_kernel_without_ipv6_falls_back_to_ipv4(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``socket.has_ipv6`` says what Python was built with, not what the kernel has
    (``ipv6.disable=1``): an IPv6 socket then fails with EAFNOSUPPORT."""
    real = socket.socket

    def no_ipv6(family: int = socket.AF_INET, *args: Any) -> socket.socket:
        if family == socket.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        return real(family, *args)

    monkeypatch.setattr(handover_module.socket, "socket", no_ipv6)
    sink = ListSink()
    ingest = await serve(sink, listen="0.0.0.0:0")
    monkeypatch.undo()
    port = ingest.address[1] if ingest.address else 0
    try:
        options = [("grpc.use_local_subchannel_pool", 1)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            await channel.unary_unary(EXPORT)(_body(1), timeout=10)
        assert len(sink.spans) == 1
    finally:
        await ingest.stop()


class SlowSink(ListSink):
    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()

    def submit(self, spans: Any) -> tuple[int, int]:
        self.entered.set()
        time.sleep(0.5)
        return super().submit(spans)


async def test_stop_lets_a_relayed_call_in_flight_finish() -> None:
    """SIGTERM with a call in flight on the relayed first connection: it is answered
    within the grace, as on a direct connection (the relays were cancelled first)."""
    sink = SlowSink()
    ingest = await serve(sink)
    port = ingest.address[1] if ingest.address else 0
    options = [("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        call = asyncio.ensure_future(channel.unary_unary(EXPORT)(_body(1), timeout=10))
        assert await asyncio.to_thread(sink.entered.wait, 10)
        await ingest.stop(2.0)
        await call
    assert len(sink.spans) == 1
