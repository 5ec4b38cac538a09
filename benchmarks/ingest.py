"""Span ingestion: spans per second on one core, batches of 512, OTLP protobuf and JSON.

Two measurements. In-process: decode + model cap + submit to the attribution stage, one
thread (the pure cost of a span). Real daemon: batches POSTed over loopback HTTP (or, for
``grpc``, the same protobuf messages sent to TraceService/Export) to a running ``jouled run``
(1 s tick, 10 workloads), the daemon's CPU seconds read from /proc: spans per daemon
CPU-second is the throughput of one core, whatever the sender's speed.

    .venv/bin/python -m benchmarks.ingest [--batches 200] [--batch-size 512]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import ClientSession

from benchmarks._util import (
    cpu_seconds,
    daemon,
    exit_on_sigterm,
    json_batch,
    otlp_batch,
    save,
    wait_for,
)
from jouled.attribution.stage import AttributionStage
from jouled.config import validate
from jouled.ingest.decode import decode_otlp_protobuf, decode_spans_json
from jouled.ingest.modelcap import ModelCap, apply_model_cap
from jouled.ingest.rules import Rules

WORKLOADS = [f"w{i}" for i in range(10)]
MODELS = [f"model-{i}" for i in range(50)]
CONTENT = {"protobuf": "application/x-protobuf", "json": "application/json"}
PATHS = {"protobuf": "/v1/traces", "json": "/v1/spans"}
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _bodies(kind: str, batches: int, size: int) -> list[bytes]:
    make = json_batch if kind == "json" else otlp_batch
    now = time.time_ns()
    return [
        make(size, workloads=WORKLOADS, models=MODELS, end_ns=now - 1_000_000 * i)
        for i in range(batches)
    ]


def in_process(kind: str, bodies: list[bytes]) -> dict[str, Any]:
    cfg = validate({"workloads": [{"name": w, "match": {"pid": 1}} for w in WORKLOADS]}, "<bench>")
    stage = AttributionStage(cfg)
    cap = ModelCap(50)
    decoder = decode_spans_json if kind == "json" else decode_otlp_protobuf
    rules = Rules(now=time.time(), known_workloads=set(WORKLOADS))
    spans = 0
    c0, t0 = time.process_time(), time.perf_counter()
    for body in bodies:
        result = decoder(body, rules)
        accepted, _late = stage.submit(apply_model_cap(result.spans, cap))
        spans += accepted
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    return {"spans": spans, "cpu_s": cpu, "spans_per_cpu_s": spans / cpu, "wall_s": wall}


async def _post_all(url: str, kind: str, bodies: list[bytes]) -> float:
    t0 = time.perf_counter()
    async with ClientSession() as session:
        for body in bodies:
            async with session.post(url, data=body, headers={"Content-Type": CONTENT[kind]}) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"ingest answered {r.status}")
    return time.perf_counter() - t0


async def _export_all(target: str, bodies: list[bytes]) -> float:
    import grpc

    t0 = time.perf_counter()
    async with grpc.aio.insecure_channel(target) as channel:
        export = channel.unary_unary(EXPORT)
        for body in bodies:
            await export(body, timeout=30)
    return time.perf_counter() - t0


def _value(body: bytes, name: str) -> float:
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def real_daemon(kind: str, bodies: list[bytes], size: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = {
            "interval": 1.0,
            "collectors": {"nvml": {"enabled": False}},
            "workloads": [{"name": w, "match": {"pid": 1}} for w in WORKLOADS],
        }
        spans = len(bodies) * size
        with daemon(Path(tmp), cfg) as d:
            time.sleep(1.5)
            # The idle tick loop's own CPU, subtracted below.
            i0, it = cpu_seconds(d.pid), time.monotonic()
            time.sleep(3.0)
            idle_rate = (cpu_seconds(d.pid) - i0) / (time.monotonic() - it)
            c0, t0 = cpu_seconds(d.pid), time.monotonic()
            if kind == "grpc":
                wall = asyncio.run(_export_all(d.cfg["ingest"]["grpc_listen"], bodies))
            else:
                wall = asyncio.run(_post_all(d.ingest_url + PATHS[kind], kind, bodies))
            # Settling happens in later ticks: count the CPU until every span is settled.
            wait_for(
                lambda: (
                    _value(d.metrics(), "jouled_spans_received_total") >= spans
                    and _value(d.metrics(), "jouled_spans_pending") == 0
                ),
                60,
                "spans settled",
            )
            cpu = cpu_seconds(d.pid) - c0 - idle_rate * (time.monotonic() - t0)
            received = _value(d.metrics(), "jouled_spans_received_total")
    return {
        "idle_cpu_per_s": idle_rate,
        "spans": spans,
        "received_by_daemon": received,
        "daemon_cpu_s": cpu,
        "spans_per_daemon_cpu_s": spans / cpu if cpu > 0 else float("nan"),
        "wall_s": wall,
        "spans_per_wall_s": spans / wall,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--no-daemon", action="store_true", help="in-process only")
    args = p.parse_args()
    results: dict[str, Any] = {"batches": args.batches, "batch_size": args.batch_size}
    for kind in ("protobuf", "grpc", "json"):
        bodies = _bodies(kind, args.batches, args.batch_size)
        r: dict[str, Any] = {"body_bytes": len(bodies[0]), "in_process": in_process(kind, bodies)}
        if not args.no_daemon:
            r["daemon"] = real_daemon(kind, bodies, args.batch_size)
        results[kind] = r
        line = f"{kind:9} in-process {r['in_process']['spans_per_cpu_s']:9,.0f} spans/CPU-s"
        if "daemon" in r:
            dd = r["daemon"]
            line += (
                f" | daemon {dd['spans_per_daemon_cpu_s']:9,.0f} spans/CPU-s, "
                f"{dd['spans_per_wall_s']:9,.0f} spans/s wall, "
                f"received {dd['received_by_daemon']:.0f}"
            )
        print(line)
    print("saved", save("ingest", results))


if __name__ == "__main__":
    exit_on_sigterm()
    main()
