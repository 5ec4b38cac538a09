"""What one export call costs the daemon to receive, against the HTTP and gRPC libraries
alone: the floor under the span path that no change to jouled's own code can go below.

Four servers on loopback, one at a time, each sent ``--rate`` export calls a second for
``--seconds`` s by the clients the OpenTelemetry SDK's exporters use (``requests`` for
OTLP/HTTP, a grpcio channel's unary call for OTLP/gRPC), with bodies of 1 and of 500 spans
(``_util.otlp_batch``; 500 is what a BatchSpanProcessor sends at 1,000 spans/s from 10
workloads, two calls a second):

- ``aiohttp``: a bare aiohttp application whose handler reads the body (``iter_chunked``, as
  jouled's does) and answers an empty 200;
- ``grpcio``: a bare ``grpc.aio`` server with jouled's options (``bdp_probe`` off) and a
  stream-unary handler that reads the one message and answers an empty response;
- ``jouled http`` and ``jouled grpc``: a real ``jouled run`` (this checkout, one workload
  the spans name), its receivers doing all they do: limits, counters, decode, validation and
  queueing (1-span bodies: nearly only the receiving).

Each figure is the server process's CPU (its process CPU clock, all threads, in ns) per
call, less its idle CPU over the same time (measured first, for ``--idle`` s): µs of CPU a
call. At two calls a second each call meets cold caches, as in the daemon.

    .venv/bin/python -m benchmarks.receive_floor                 # ~6 min
    .venv/bin/python -m benchmarks.receive_floor --rate 40 --seconds 10
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks._util import (
    daemon,
    exit_on_sigterm,
    host_speed,
    otlp_batch,
    process_cpu_ns,
    save,
    wait_for,
    workload_configs,
)
from jouled.testing.net import free_port

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
METHOD = f"/{SERVICE}/Export"

_BARE_AIOHTTP = r"""
import sys
from aiohttp import web

async def export(request):
    chunks = []
    async for chunk in request.content.iter_chunked(64 * 1024):
        chunks.append(chunk)
    b"".join(chunks)
    return web.Response(body=b"", content_type="application/x-protobuf")

app = web.Application()
app.router.add_post("/v1/traces", export)
app.router.add_get("/healthz", lambda request: web.Response(text="ok"))
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""

_BARE_GRPCIO = r"""
import asyncio, sys
import grpc
from grpc import aio

async def export(_requests, context):
    await context.read()
    return b""

async def main():
    server = aio.server(
        options=[("grpc.http2.bdp_probe", 0), ("grpc.max_receive_message_length", 8 << 20)]
    )
    handler = grpc.method_handlers_generic_handler(
        sys.argv[2], {"Export": grpc.stream_unary_rpc_method_handler(export)}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port("127.0.0.1:" + sys.argv[1])
    await server.start()
    await server.wait_for_termination()

asyncio.run(main())
"""


def _http_caller(url: str) -> Callable[[bytes], None]:
    import requests

    session = requests.Session()

    def call(body: bytes) -> None:
        r = session.post(url, data=body, headers={"Content-Type": "application/x-protobuf"})
        if r.status_code != 200:
            raise RuntimeError(f"{url} answered {r.status_code}: {r.text[:200]}")

    return call


def _grpc_caller(address: str) -> Callable[[bytes], None]:
    import grpc

    channel = grpc.insecure_channel(address)
    export = channel.unary_unary(METHOD)

    def call(body: bytes) -> None:
        export(body, timeout=10)

    return call


@contextlib.contextmanager
def _bare(kind: str) -> Iterator[tuple[int, Callable[[bytes], None]]]:
    """A bare server: (its pid, a caller)."""
    port = free_port()
    source = _BARE_AIOHTTP if kind == "aiohttp" else _BARE_GRPCIO
    proc = subprocess.Popen([sys.executable, "-c", source, str(port), SERVICE])
    try:
        if kind == "aiohttp":
            call = _http_caller(f"http://127.0.0.1:{port}/v1/traces")
        else:
            call = _grpc_caller(f"127.0.0.1:{port}")
        wait_for(lambda: _answers(call), 30, f"the bare {kind} server")
        yield proc.pid, call
    finally:
        proc.kill()
        proc.wait()


def _answers(call: Callable[[bytes], None]) -> bool:
    try:
        call(b"")
    except Exception:
        return False
    return True


@contextlib.contextmanager
def _jouled(transport: str) -> Iterator[tuple[int, Callable[[bytes], None]]]:
    cfg = {"collectors": {"nvml": {"enabled": False}}, "workloads": workload_configs(1)}
    with tempfile.TemporaryDirectory() as tmp, daemon(Path(tmp), cfg) as d:
        if transport == "http":
            call = _http_caller(d.ingest_url + "/v1/traces")
        else:
            call = _grpc_caller(d.cfg["ingest"]["grpc_listen"])
        time.sleep(2)  # the first ticks: spans ending now are not late
        yield d.pid, call


def measure(
    pid: int, call: Callable[[bytes], None], *, spans: int, rate: float, seconds: float, idle: float
) -> dict[str, Any]:
    """The server's CPU per call over its idle CPU, µs; raises what ``call`` raises."""
    for _ in range(5):  # the connection, and whatever the first call builds
        call(otlp_batch(spans, workloads=["w0"], models=["m"], end_ns=time.time_ns()))
    c0, t0 = process_cpu_ns(pid), time.monotonic()
    time.sleep(idle)
    idle_ns_per_s = (process_cpu_ns(pid) - c0) / (time.monotonic() - t0)
    bodies = 0
    c0, t0 = process_cpu_ns(pid), time.monotonic()
    while (now := time.monotonic()) - t0 < seconds:
        body = otlp_batch(spans, workloads=["w0"], models=["m"], end_ns=time.time_ns())
        call(body)
        bodies += 1
        time.sleep(max(0.0, t0 + bodies / rate - time.monotonic()))
    wall = now - t0
    used = process_cpu_ns(pid) - c0 - idle_ns_per_s * wall
    return {
        "calls": bodies,
        "body_bytes": len(body),
        "cpu_us_per_call": round(used / bodies / 1e3, 1),
        "idle_cpu_ms_per_s": round(idle_ns_per_s / 1e6, 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=2.0, help="export calls a second")
    p.add_argument("--seconds", type=float, default=30.0, help="seconds of calls per figure")
    p.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU first")
    p.add_argument("--sizes", default="1,500", help="spans a body, comma-separated")
    args = p.parse_args()
    exit_on_sigterm()
    rate = max(0.1, min(args.rate, 200.0))
    seconds = max(1.0, min(args.seconds, 600.0))
    idle = max(1.0, min(args.idle, 120.0))
    sizes = [max(1, min(int(s), 5000)) for s in args.sizes.split(",") if s]
    servers: list[tuple[str, Callable[[], Any]]] = [
        ("aiohttp", lambda: _bare("aiohttp")),
        ("jouled http", lambda: _jouled("http")),
        ("grpcio", lambda: _bare("grpcio")),
        ("jouled grpc", lambda: _jouled("grpc")),
    ]
    results: dict[str, Any] = {"rate": rate, "seconds": seconds, "rows": []}
    for name, start in servers:
        for spans in sizes:
            with start() as (pid, call):
                speed = host_speed(repeats=1, steps=2_000)["python_us"]
                row = {"server": name, "spans": spans, "host_python_us": speed}
                row.update(measure(pid, call, spans=spans, rate=rate, seconds=seconds, idle=idle))
            results["rows"].append(row)
            print(
                f"{name:12} {spans:4} spans ({row['body_bytes']:6} B): "
                f"{row['cpu_us_per_call']:7.1f} us of CPU a call over idle "
                f"({row['calls']} calls; idle {row['idle_cpu_ms_per_s']:.2f} ms/s; "
                f"host {speed:.0f} us)",
                flush=True,
            )
    print(f"saved {save('receive_floor', results)}")


if __name__ == "__main__":
    main()
