"""The real OpenTelemetry SDK exports to the ingest app over loopback HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from aiohttp.test_utils import TestServer
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from jouled.attribution.spans import Span
from jouled.clock import SystemClock
from jouled.ingest.app import build_ingest_app


class ListSink:
    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.rejections: dict[str, int] = {}

    def submit(self, spans: Sequence[Span]) -> tuple[int, int]:
        self.spans.extend(spans)
        return len(spans), 0

    def rejected(self, reason: str, n: int) -> None:
        self.rejections[reason] = self.rejections.get(reason, 0) + n


def export_with_sdk(port: int) -> tuple[float, float]:
    """Runs in a thread: the SDK's exporter is blocking (requests)."""
    exporter = OTLPSpanExporter(
        endpoint=f"http://127.0.0.1:{port}/v1/traces", compression=Compression.Gzip, timeout=10
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "classifier"}))
    # The SDK's default processor: the child "infer" span travels in the same batch as its
    # SERVER span, which is what lets it lend its model and work (docs/SPANS.md).
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=60_000))
    tracer = provider.get_tracer("jouled-test")
    before = time.time()
    with tracer.start_as_current_span("POST /predict", kind=SpanKind.SERVER) as server:
        server.set_attribute("http.route", "/predict")
        with tracer.start_as_current_span("infer") as child:
            child.set_attribute("gen_ai.request.model", "bert-base")
            child.set_attribute("jouled.gflops", 97.1)
    with tracer.start_as_current_span("POST /predict", kind=SpanKind.SERVER) as server:
        server.set_attribute("gen_ai.request.model", "resnet50")
        server.set_attribute("jouled.gflops", 4)
    after = time.time()
    provider.shutdown()  # flushes the batch
    return before, after


async def test_real_sdk_spans_reach_the_sink_with_their_fields() -> None:
    sink = ListSink()
    app = build_ingest_app(
        sink, clock=SystemClock(), known_workloads=lambda: {"classifier"}, gflops_per_token={}
    )
    async with TestServer(app, host="127.0.0.1") as server:
        before, after = await asyncio.to_thread(export_with_sdk, server.port or 0)
    assert sink.rejections == {}
    first, second = sink.spans
    assert (first.workload, first.model, first.gflops, first.route) == (
        "classifier",
        "bert-base",
        97.1,
        "/predict",
    )
    assert (second.model, second.gflops, second.route) == ("resnet50", 4.0, "")
    for span in sink.spans:
        assert before <= span.start <= span.end <= after
        assert len(span.trace_id) == 32 and len(span.span_id) == 16
