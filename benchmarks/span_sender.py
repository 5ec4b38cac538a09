"""Spans as real services send them: the OpenTelemetry Python SDK, one ``TracerProvider`` per
workload with its default ``BatchSpanProcessor`` (batches of up to 512 spans, every 5 s or as
soon as 512 wait) and the OTLP exporter over HTTP (protobuf) or gRPC.

Each span is a SERVER span of an LLM request as an instrumented FastAPI server records it
(HTTP semconv attributes, GenAI model and token counts), 5 ms long (``--span-ms``), ending when
it is made.
Spans are spread evenly over ``--workloads`` services (``w0``, ``w1``...) and 5 models each.
Bounded: stops after ``--seconds``; prints a progress line every 10 s to stderr.

    .venv/bin/python -m benchmarks.span_sender --endpoint 127.0.0.1:4317 --protocol grpc \
        --rate 1000 --seconds 60
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from benchmarks._util import exit_on_sigterm

MODELS_PER_WORKLOAD = 5


def model_names(workloads: int) -> list[list[str]]:
    """Per workload, its models: 5 each, 50 in all for 10 workloads."""
    return [[f"model-{w}-{k}" for k in range(MODELS_PER_WORKLOAD)] for w in range(workloads)]


def _providers(endpoint: str, protocol: str, workloads: int) -> list[Any]:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    providers = []
    for w in range(workloads):
        exporter: Any
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as HttpExporter,
            )

            exporter = HttpExporter(endpoint=f"http://{endpoint}/v1/traces")
        provider = TracerProvider(resource=Resource.create({"service.name": f"w{w}"}))
        provider.add_span_processor(BatchSpanProcessor(exporter))
        providers.append(provider)
    return providers


def record_request(tracer: Any, end_ns: int, model: str, duration_ns: int = 5_000_000) -> None:
    """One SERVER span (5 ms unless ``duration_ns``) ending at ``end_ns``, as an instrumented
    FastAPI server records an LLM request: HTTP semconv attributes, GenAI model and token
    counts."""
    from opentelemetry.trace import SpanKind

    span = tracer.start_span(
        "POST /v1/completions",
        kind=SpanKind.SERVER,
        start_time=end_ns - duration_ns,
        attributes={
            "http.method": "POST",
            "http.scheme": "http",
            "http.target": "/v1/completions",
            "http.route": "/v1/completions",
            "http.status_code": 200,
            "http.user_agent": "python-httpx/0.27.0",
            "net.host.port": 8000,
            "net.peer.ip": "10.0.0.7",
            "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": 512,
            "gen_ai.usage.output_tokens": 128,
        },
    )
    span.end(end_time=end_ns)


def send(
    endpoint: str,
    protocol: str,
    rate: float,
    seconds: float,
    workloads: int,
    *,
    span_ms: float = 5.0,
) -> int:
    """``rate`` spans/s of ``span_ms`` each for ``seconds``; returns the number of spans made."""
    providers = _providers(endpoint, protocol, workloads)
    tracers = [p.get_tracer("fastapi-app", "0.1.0") for p in providers]
    models = model_names(workloads)
    made = 0
    t0 = time.monotonic()
    next_progress = t0 + 10
    step = 0.01  # make spans in 10 ms slices
    try:
        while (now := time.monotonic()) < t0 + seconds:
            due = int((now - t0) * rate)
            while made < due:
                w = made % workloads
                end = time.time_ns()
                model = models[w][(made // workloads) % 5]
                record_request(tracers[w], end, model, int(span_ms * 1e6))
                made += 1
            if now >= next_progress:
                print(f"  sender: {made} spans in {now - t0:.0f} s", file=sys.stderr, flush=True)
                next_progress += 10
            time.sleep(step)
    finally:
        for p in providers:
            p.shutdown()  # exports what is queued
    return made


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--endpoint", required=True, help="HOST:PORT of the receiver")
    p.add_argument("--protocol", choices=("http", "grpc"), default="http")
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--workloads", type=int, default=10)
    p.add_argument("--span-ms", type=float, default=5.0, help="request length (LLM: ~2000)")
    args = p.parse_args()
    span_ms = min(max(args.span_ms, 0.0), 30_000.0)
    made = send(
        args.endpoint,
        args.protocol,
        args.rate,
        min(args.seconds, 3600),
        args.workloads,
        span_ms=span_ms,
    )
    print(made, flush=True)


if __name__ == "__main__":
    exit_on_sigterm()
    main()
