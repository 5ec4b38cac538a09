"""A real aiohttp inference-like server instrumented with the real OpenTelemetry SDK.

Each POST /predict burns CPU for the requested milliseconds inside a SERVER span carrying
``gen_ai.request.model`` and ``jouled.gflops``; spans go to jouled over OTLP/HTTP protobuf.
Usage: python otel_server.py PORT OTLP_ENDPOINT PIDFILE
"""

import os
import sys
import time

from aiohttp import web
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind


def main() -> None:
    port, endpoint, pidfile = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    provider = TracerProvider(resource=Resource.create({"service.name": "classifier"}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint), schedule_delay_millis=200)
    )
    tracer = provider.get_tracer("otel_server")

    async def predict(request: web.Request) -> web.Response:
        body = await request.json()
        with tracer.start_as_current_span("POST /predict", kind=SpanKind.SERVER) as span:
            span.set_attribute("gen_ai.request.model", body["model"])
            span.set_attribute("jouled.gflops", float(body["gflops"]))
            span.set_attribute("http.route", "/predict")
            end = time.perf_counter() + body["ms"] / 1000
            while time.perf_counter() < end:
                pass
        return web.json_response({"ok": True})

    async def on_shutdown(_app: web.Application) -> None:
        provider.shutdown()

    app = web.Application()
    app.router.add_post("/predict", predict)
    app.on_shutdown.append(on_shutdown)
    with open(pidfile, "w") as fh:
        fh.write(f"{os.getpid()}\n")
    web.run_app(app, host="127.0.0.1", port=port, print=None)


if __name__ == "__main__":
    main()
