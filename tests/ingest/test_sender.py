"""The sending workload: SO_PEERCRED on the unix socket, /proc/net/tcp + fd links on TCP."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
from aiohttp import ClientSession, UnixConnector, web
from aiohttp.test_utils import TestClient, TestServer

from jouled.clock import FakeClock, SystemClock
from jouled.ingest.app import STATE_KEY, build_ingest_app
from jouled.ingest.sender import SenderLookup, needs_search, peer_pid, socket_inode
from tests.ingest.otlp import pb_span, request
from tests.ingest.test_otel_sdk import ListSink

# /proc/net/tcp as the kernel prints it: a client 127.0.0.1:40000 -> server 127.0.0.1:4317.
TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:10DD 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 111 1
   1: 0100007F:9C40 0100007F:10DD 01 00000000:00000000 00:00000000 00000000  1000        0 222 1
   2: 0100007F:10DD 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 333 1
"""
# tcp6: the same pair over ::1, and an IPv4-mapped client.
TCP6 = """\
  sl  local_address                         remote_address                        st
   0: 00000000000000000000000001000000:9C41 00000000000000000000000001000000:10DD 01 00000000:00000000 00:00000000 00000000  1000 0 444 1
   1: 0000000000000000FFFF00000100007F:9C42 0000000000000000FFFF00000100007F:10DD 01 00000000:00000000 00:00000000 00000000  1000 0 555 1
"""  # noqa: E501


def test_socket_inode_reads_the_kernels_hex_and_picks_the_client_end() -> None:
    lines = TCP.splitlines()
    assert socket_inode(lines, ("127.0.0.1", 40000), ("127.0.0.1", 4317)) == 222
    assert socket_inode(lines, ("127.0.0.1", 40000), ("0.0.0.0", 4317)) == 222  # any-address
    assert socket_inode(lines, ("127.0.0.1", 40001), ("127.0.0.1", 4317)) is None
    six = TCP6.splitlines()
    assert socket_inode(six, ("::1", 40001), ("::1", 4317)) == 444
    assert socket_inode(six, ("127.0.0.1", 40002), ("127.0.0.1", 4317)) == 555


def fake_proc(root: Path, holders: dict[int, int]) -> Path:
    (root / "net").mkdir(parents=True)
    (root / "net" / "tcp").write_text(TCP)
    (root / "net" / "tcp6").write_text(TCP6)
    for pid, inode in holders.items():
        fd = root / str(pid) / "fd"
        fd.mkdir(parents=True)
        (fd / "0").symlink_to("/dev/null")
        (fd / "7").symlink_to(f"socket:[{inode}]")
    return root


def test_lookup_finds_the_workload_holding_the_client_socket_and_caches(tmp_path: Path) -> None:
    root = fake_proc(tmp_path / "proc", {10: 999, 20: 222})
    clock = FakeClock()
    lookup = SenderLookup(root, lambda: {10: "other", 20: "vllm"}, clock, cache_s=10)
    client, server = ("127.0.0.1", 40000), ("127.0.0.1", 4317)
    resolve = lookup.for_tcp(client, server)
    assert lookup.lookups == 0  # lazy: nothing read until a span needs it
    assert needs_search(resolve)  # the ingest decodes off the loop for it
    assert resolve() == "vllm" and resolve() == "vllm"
    assert lookup.lookups == 1
    cached = lookup.for_tcp(client, server)
    assert cached() == "vllm" and lookup.lookups == 1  # the socket's answer, no fd search
    clock.advance(11)
    assert lookup.for_tcp(client, server)() == "vllm" and lookup.lookups == 2
    # A remote peer is never searched; an unknown socket belongs to no workload.
    assert lookup.for_tcp(("10.0.0.5", 40000), server)() is None
    assert lookup.for_tcp(("127.0.0.1", 40009), server)() is None
    assert lookup.for_tcp(("::1", 40001), ("::1", 4317))() is None  # inode 444: nobody's


def test_real_loopback_connection_and_unix_peer_credentials() -> None:
    me = os.getpid()
    lookup = SenderLookup(Path("/proc"), lambda: {me: "tests"}, SystemClock())
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = listener.getsockname()
        with socket.create_connection(server):
            conn, _ = listener.accept()
            with conn:
                assert lookup.for_tcp(conn.getpeername(), conn.getsockname())() == "tests"
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        assert peer_pid(a) == me
        assert lookup.for_unix(a)() == "tests"
    none = SenderLookup(Path("/proc"), dict, SystemClock())
    with (
        socket.create_server(("127.0.0.1", 0)) as listener,
        socket.create_connection(listener.getsockname()),
    ):
        conn, _ = listener.accept()
        with conn:
            assert none.for_tcp(conn.getpeername(), conn.getsockname())() is None


async def test_http_spans_of_an_unknown_service_go_to_the_sending_workload(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = ListSink()
    clock = SystemClock()
    app = build_ingest_app(
        sink,
        clock=clock,
        known_workloads=lambda: {"vllm"},
        gflops_per_token={"opt": 0.25},
        default_models=lambda: {"vllm": "opt"},
        senders=SenderLookup(Path("/proc"), lambda: {os.getpid(): "vllm"}, clock),
    )
    now = time.time()
    body = request(
        [pb_span(1, start=now - 2, end=now - 1, gen_ai__usage__prompt_tokens=8)],
        service__name="unknown_service:python",
    ).SerializeToString()
    headers = {"Content-Type": "application/x-protobuf"}
    async with TestServer(app, host="127.0.0.1") as server, TestClient(server) as client:
        resp = await client.post("/v1/traces", data=body, headers=headers)
        assert resp.status == 200
        (span,) = sink.spans
        assert (span.workload, span.model, span.gflops) == ("vllm", "opt", 2.0)
        # Sent by no workload's process: rejected, and one warning naming it and the fix.
        app[STATE_KEY].senders = SenderLookup(Path("/proc"), dict, clock)
        for _ in range(3):
            resp = await client.post("/v1/traces", data=body, headers=headers)
            assert resp.status == 200
    assert sink.rejections == {"unknown_workload": 3}
    warnings = [r.getMessage() for r in caplog.records if r.name == "jouled.ingest.sender"]
    assert len(warnings) == 1
    assert "'unknown_service:python'" in warnings[0] and "OTEL_SERVICE_NAME" in warnings[0]


async def test_unix_socket_peer_credentials_and_verify_sender_over_http(tmp_path: Path) -> None:
    sink = ListSink()
    clock = SystemClock()
    app = build_ingest_app(
        sink,
        clock=clock,
        known_workloads=lambda: {"mine", "theirs"},
        gflops_per_token={},
        senders=SenderLookup(Path("/proc"), lambda: {os.getpid(): "mine"}, clock),
        verify_sender=True,
    )
    runner = web.AppRunner(app)
    await runner.setup()
    path = str(tmp_path / "ingest.sock")
    await web.UnixSite(runner, path).start()
    now = time.time()

    def body(service: str) -> bytes:
        spans = [pb_span(1, start=now - 2, end=now - 1)]
        return bytes(request(spans, service__name=service).SerializeToString())

    headers = {"Content-Type": "application/x-protobuf"}
    try:
        async with ClientSession(connector=UnixConnector(path=path)) as session:
            for service in ("unknown_service:python", "mine", "theirs"):
                async with session.post(
                    "http://ingest/v1/traces", data=body(service), headers=headers
                ) as resp:
                    assert resp.status == 200
    finally:
        await runner.cleanup()
    # SO_PEERCRED named this process, which workload "mine" claims.
    assert [s.workload for s in sink.spans] == ["mine", "mine"]
    assert sink.rejections == {"sender_mismatch": 1}


def test_a_port_freed_by_a_workload_and_bound_by_another_process_is_not_the_workload(
    tmp_path: Path,
) -> None:
    """The answer was cached per client address: within cache_s a process binding the port a
    workload's connection had used (to either listener) was taken for the workload, its
    spans accepted as the workload's even with ingest.verify_sender."""
    root = fake_proc(tmp_path / "proc", {20: 222})
    clock = FakeClock()
    lookup = SenderLookup(root, lambda: {20: "vllm"}, clock, cache_s=10)
    client = ("127.0.0.1", 40000)  # 0x9C40
    assert lookup.for_tcp(client, ("127.0.0.1", 4317))() == "vllm"
    # The workload's socket is gone; another process (inode 777, nobody's) bound port
    # 40000 and connected to the other listener, 0x2646 = 9798.
    (root / "net" / "tcp").write_text(
        TCP.splitlines()[0]
        + "\n   1: 0100007F:9C40 0100007F:2646 01 00000000:00000000 00:00000000 00000000"
        + "  1000        0 777 1\n"
    )
    assert lookup.for_tcp(client, ("127.0.0.1", 9798))() is None
    assert lookup.for_tcp(client, ("127.0.0.1", 4317))() is None  # its socket is gone


def test_a_resolver_reads_the_pid_map_only_when_a_span_needs_it(tmp_path: Path) -> None:
    """Each request gets a resolver, but most never call it (their spans name their
    service): making one must not copy the claimed processes (O(processes) on the event
    loop per request, 14 µs at 200). The map is read at a cache miss, once per resolver."""
    root = fake_proc(tmp_path / "proc", {20: 222})
    reads: list[int] = []

    def claimed() -> dict[int, str]:
        reads.append(1)
        return {20: "vllm"}

    lookup = SenderLookup(root, claimed, FakeClock(), cache_s=10)
    client, server = ("127.0.0.1", 40000), ("127.0.0.1", 4317)
    resolvers = [lookup.for_tcp(client, server) for _ in range(100)]
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        unix = lookup.for_unix(a)
    assert reads == []
    assert resolvers[0]() == "vllm" and resolvers[0]() == "vllm" and len(reads) == 1
    assert resolvers[1]() == "vllm" and len(reads) == 1  # the socket's cached answer
    assert unix() is None and unix() is None and len(reads) == 2  # our pid: nobody's
    assert not needs_search(unix) and needs_search(resolvers[2])
