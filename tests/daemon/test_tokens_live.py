"""The daemon turns token counts into work with a model's config.json and exports
``jouled_tokens_total``: the real OpenTelemetry SDK sends gen_ai.usage spans to the real
ingest listener; /metrics is read over HTTP and linted by promtool."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import aiohttp
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from jouled import config
from jouled.clock import FakeClock
from jouled.costmodel import datasets
from jouled.daemon.service import Daemon, StartupError
from jouled.daemon.systemd import Notifier
from jouled.testing.fake_powercap import FakePowercap
from tests.costmodel.hand_counts import llama3_8b_request
from tests.support.procs import free_port
from tests.support.prometheus import promtool_metrics_problems

REQUESTS = [(512, 128), (128, 512), (2048, 16), (40, 1)]


def send(url: str, start_s: float) -> None:
    """Runs in a thread (the SDK exporter blocks): four concurrent requests of one model."""
    provider = TracerProvider(resource=Resource.create({"service.name": "llm"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=url, timeout=10)))
    tracer = provider.get_tracer("jouled-test")
    start_ns = int(start_s * 1e9)
    for prompt, new in REQUESTS:
        span = tracer.start_span("POST /v1/chat/completions", kind=SpanKind.SERVER,
                                 start_time=start_ns)  # fmt: skip
        span.set_attribute("gen_ai.request.model", "llama-3-8b")
        span.set_attribute("gen_ai.usage.input_tokens", prompt)
        span.set_attribute("gen_ai.usage.output_tokens", new)
        span.end(end_time=start_ns + 1_000_000_000)
    provider.shutdown()


def daemon_config(tmp_path: Path, model_config: Path) -> config.Config:
    powercap = FakePowercap.typical_server(tmp_path, sockets=1, package_w=100, dram_w=10)
    return config.validate(
        {
            "listen": f"127.0.0.1:{free_port()}",
            "ingest": {"listen": f"127.0.0.1:{free_port()}", "grpc_listen": None},
            "ledger": {"path": None},
            "workloads": [{"name": "llm", "match": {"pid": os.getpid()}}],
            "collectors": {
                "rapl": {"enabled": True, "path": str(powercap.class_dir)},
                "nvml": {"enabled": False},
            },
            "spans": {"settle_seconds": 1.0, "model_configs": {"llama-3-8b": str(model_config)}},
        },
        "test",
    )


async def test_tokens_and_prefill_decode_work_reach_metrics(tmp_path: Path) -> None:
    model_config = tmp_path / "config.json"
    shutil.copy(datasets.resolve_config("Meta-Llama-3-8B"), model_config)
    clock = FakeClock()
    daemon = Daemon(daemon_config(tmp_path, model_config), clock=clock, notifier=Notifier({}))
    await daemon.start()
    try:
        assert daemon.sampler is not None
        host, port = daemon.bound["ingest"]
        await asyncio.to_thread(send, f"http://{host}:{port}/v1/traces", clock.time() + 0.25)
        for _ in range(5):
            clock.advance(1.0)
            await daemon.sampler.tick()
        host, port = daemon.bound["metrics"]
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://{host}:{port}/metrics") as resp,
        ):
            text = await resp.text()
    finally:
        await daemon.shutdown()
    m = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    labels = (("model", "llama-3-8b"), ("workload", "llm"))
    assert m[("jouled_requests_total", labels)] == 4
    assert m[("jouled_tokens_total", (("kind", "input"), *labels))] == 2728
    assert m[("jouled_tokens_total", (("kind", "output"), *labels))] == 657
    hand = sum(sum(llama3_8b_request(p, n)) for p, n in REQUESTS) / 1e9
    assert m[("jouled_request_gflops_total", labels)] == pytest.approx(hand, rel=1e-12)
    assert "# TYPE jouled_tokens_total counter" in text
    assert await asyncio.to_thread(promtool_metrics_problems, text) == ""


async def test_an_unusable_model_config_stops_startup_naming_model_and_file(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "t5.json"
    bad.write_text('{"model_type": "t5"}')
    daemon = Daemon(daemon_config(tmp_path, bad), clock=FakeClock(), notifier=Notifier({}))
    with pytest.raises(StartupError, match=r"model_configs\['llama-3-8b'\]: .*t5\.json.*'t5'"):
        await daemon.start()
    await daemon.shutdown()
