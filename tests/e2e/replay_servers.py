"""Real senders and replays of real inference servers' spans, for tests/e2e/test_real_senders.

Each mode is a workload process: it waits for GO_FILE (so that jouled has claimed it), then
sends N requests' spans with the OpenTelemetry Python SDK, burning CPU inside each request,
and exits. Where the real server cannot run here (it needs a GPU), the spans are built the
way its source builds them:

- vllm: vllm/tracing.py (init_tracer: ``TracerProvider()`` with no resource, so service.name
  is ``unknown_service:python`` unless OTEL_SERVICE_NAME is set; the exporter is gRPC unless
  OTEL_EXPORTER_OTLP_TRACES_PROTOCOL says otherwise) and vllm/v1/engine/output_processor.py
  (do_tracing: one ``llm_request`` span, kind SERVER, started at the arrival time, with the
  SpanAttributes below and no model attribute).
- triton: triton-inference-server/server src/tracer.cc: OTLP/HTTP protobuf, resource
  service.name ``triton-inference-server``, every span kind SERVER: ``InferRequest`` (root)
  -> a span named after the model with triton.model_name, triton.model_version,
  triton.trace_id, triton.trace_parent_id, triton.request_id -> ``compute``. Exported span by
  span (here a SimpleSpanProcessor), children first or parents first.
- tgi: huggingface/text-generation-inference router/src/logging.rs (tonic gRPC exporter,
  service.name ``text-generation-inference.router``), router/src/server.rs (the ``generate``
  span with total_time ... seed fields, no token attributes), backends/v3/src/backend.rs (a
  root ``batch`` span that follows_from each request's ``infer`` span) and
  server/text_generation_server/tracing.py (the shard's SERVER span per Prefill/Decode RPC,
  same service name). tracing-opentelemetry spans are INTERNAL unless told otherwise.

Usage: python replay_servers.py MODE ENDPOINT GO_FILE N [MODEL]
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind

BUSY_S = 0.2  # CPU time is counted in 10 ms clock ticks: enough of them on a loaded machine


def burn(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def grpc_exporter(endpoint: str, **kw: Any) -> Any:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint, **kw)


def http_exporter(endpoint: str) -> Any:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint)


def sdk(endpoint: str, n: int, model: str, exporter: Any) -> None:
    """A plain instrumented app: one SERVER span per request with the GenAI attributes."""
    provider = TracerProvider(resource=Resource.create({"service.name": "classifier"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=200))
    tracer = provider.get_tracer("replay")
    for _ in range(n):
        with tracer.start_as_current_span("POST /v1/completions", kind=SpanKind.SERVER) as s:
            s.set_attribute("gen_ai.request.model", model)
            s.set_attribute("gen_ai.usage.input_tokens", 100)
            s.set_attribute("gen_ai.usage.output_tokens", 20)
            burn(BUSY_S)
    provider.shutdown()


def vllm(endpoint: str, n: int) -> None:
    # vllm/tracing.py init_tracer + get_span_exporter, exactly: no resource given.
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(grpc_exporter(endpoint)))
    trace.set_tracer_provider(provider)
    tracer = provider.get_tracer("vllm.llm_engine")
    for i in range(n):
        arrival = time.time()
        burn(BUSY_S)
        now = time.time()
        attributes = {  # output_processor.do_tracing; names from vllm/tracing.py SpanAttributes
            "gen_ai.latency.time_to_first_token": 0.01,
            "gen_ai.latency.e2e": now - arrival,
            "gen_ai.latency.time_in_queue": 0.001,
            "gen_ai.usage.prompt_tokens": 24,
            "gen_ai.usage.completion_tokens": 8,
            "gen_ai.latency.time_in_model_prefill": 0.01,
            "gen_ai.latency.time_in_model_decode": now - arrival - 0.02,
            "gen_ai.latency.time_in_model_inference": now - arrival - 0.01,
            "gen_ai.request.id": f"cmpl-{i:08x}",
            "gen_ai.request.top_p": 0.9,
            "gen_ai.request.max_tokens": 8,
            "gen_ai.request.temperature": 0.7,
            "gen_ai.request.n": 1,
        }
        # instrument_manual: start at the arrival time, end at once (end_time None).
        span = tracer.start_span(
            "llm_request",
            kind=SpanKind.SERVER,
            start_time=int(arrival * 1e9),
            attributes=attributes,
        )
        span.end()
    provider.shutdown()


def triton(endpoint: str, n: int, model: str, parents_first: bool) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "triton-inference-server"}))
    provider.add_span_processor(SimpleSpanProcessor(http_exporter(endpoint)))
    tracer = provider.get_tracer("triton-server")
    for i in range(n):
        t0 = time.time_ns()
        root = tracer.start_span("InferRequest", kind=SpanKind.SERVER, start_time=t0)
        ctx = trace.set_span_in_context(root)
        model_span = tracer.start_span(
            model,
            kind=SpanKind.SERVER,
            context=ctx,
            start_time=t0 + 1_000_000,
            attributes={
                "triton.model_name": model,
                "triton.model_version": 1,
                "triton.trace_id": i + 1,
                "triton.trace_parent_id": 0,
                "triton.request_id": f"req-{i}",
            },
        )
        compute = tracer.start_span(
            "compute",
            kind=SpanKind.SERVER,
            context=trace.set_span_in_context(model_span),
            start_time=t0 + 2_000_000,
        )
        burn(BUSY_S)
        t1 = time.time_ns()
        ends = [(compute, t1 - 2_000_000), (model_span, t1 - 1_000_000), (root, t1)]
        for span, end in reversed(ends) if parents_first else ends:
            span.end(end_time=end)  # SimpleSpanProcessor: exported as it ends
    provider.shutdown()


def tgi(endpoint: str, n: int) -> None:
    provider = TracerProvider(
        resource=Resource.create({"service.name": "text-generation-inference.router"})
    )
    provider.add_span_processor(BatchSpanProcessor(grpc_exporter(endpoint, insecure=True)))
    tracer = provider.get_tracer("text_generation_router")
    code = {"code.filepath": "router/src/server.rs", "code.namespace": "text_generation_router"}
    for _ in range(n):
        start = time.time()
        with tracer.start_as_current_span("generate", kind=SpanKind.INTERNAL) as gen:
            gen.set_attributes({**code, "parameters": "GenerateParameters { .. }"})
            with tracer.start_as_current_span("validate", kind=SpanKind.INTERNAL):
                burn(BUSY_S / 5)
            with tracer.start_as_current_span("infer", kind=SpanKind.INTERNAL) as infer:
                # A root span per batch that follows_from the requests (links), and under it
                # the shard's SERVER spans for the Prefill and Decode RPCs.
                batch = tracer.start_span(
                    "batch",
                    kind=SpanKind.INTERNAL,
                    context=trace.set_span_in_context(trace.INVALID_SPAN),
                    links=[Link(infer.get_span_context())],
                    attributes={"batch_size": 1},
                )
                bctx = trace.set_span_in_context(batch)
                for rpc in ("Prefill", "Decode", "Decode"):
                    with (
                        tracer.start_as_current_span(rpc.lower(), context=bctx) as client,
                        tracer.start_as_current_span(
                            f"/generate.v3.TextGenerationService/{rpc}",
                            kind=SpanKind.SERVER,
                            context=trace.set_span_in_context(client),
                            attributes={"rpc.system": "grpc", "net.transport": "unix"},
                        ),
                    ):
                        burn(BUSY_S / 4)
                batch.end()
            total = time.time() - start
            gen.set_attributes(
                {
                    "total_time": f"{total * 1000:.3f}ms",
                    "validation_time": "1ms",
                    "queue_time": "0.1ms",
                    "inference_time": f"{total * 1000 - 2:.3f}ms",
                    "time_per_token": f"{total * 500:.3f}ms",
                    "seed": "None",
                }
            )
    provider.shutdown()


def main() -> None:
    mode, endpoint, go, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    model = sys.argv[5] if len(sys.argv) > 5 else "m"
    while not os.path.exists(go):
        time.sleep(0.05)
    if mode == "sdk-grpc":
        sdk(endpoint, n, model, grpc_exporter(endpoint, insecure=True, compression=_gzip()))
    elif mode == "sdk-http":
        sdk(endpoint, n, model, http_exporter(endpoint))
    elif mode == "vllm":
        vllm(endpoint, n)
    elif mode in ("triton-children-first", "triton-parents-first"):
        triton(endpoint, n, model, parents_first=mode == "triton-parents-first")
    elif mode == "tgi":
        tgi(endpoint, n)
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(f"{mode}: sent {n}", flush=True)


def _gzip() -> Any:
    import grpc

    return grpc.Compression.Gzip


if __name__ == "__main__":
    main()
