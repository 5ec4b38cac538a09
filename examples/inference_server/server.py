"""An aiohttp text-classification server instrumented with jouled's request spans.

``POST /predict`` takes ``{"instances": [{"text": ...}, ...]}`` (the thesis's body) and
answers a label per text. Each request becomes one span sent to jouled's ingest listener
(``POST /v1/spans``, batched by ``jouled.client.SpanReporter``): workload, model name, start
and end, real token count and GFLOPs from ``jouled model flops`` on the model's own config.
jouled then gives the span its share of the process's energy.

    python -m examples.inference_server.server --port 8080 \\
        --jouled-ingest http://127.0.0.1:9878 --workload inference [--backend minilm]

With ``--metrics`` it also serves ``GET /metrics`` as vLLM does for a pooling (classify)
model: ``vllm:prompt_tokens_total``, ``vllm:generation_tokens_total`` (always 0: a
classifier generates nothing) and ``vllm:request_success_total``, labels ``model_name``,
``engine`` (``finished_reason`` on request_success); names from vLLM's
``vllm/v1/metrics/loggers.py``. jouled reads them in server-metrics mode
(``workloads[].server_metrics``, docs/TOKENS.md), with or without spans.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from examples.inference_server.model import Classifier, load
from jouled.client import SpanReporter

log = logging.getLogger("inference_server")
ROUTE = "/predict"
MAX_TEXTS = 10_000


MODEL_KEY = web.AppKey("model", Classifier)
REPORTER_KEY = web.AppKey("reporter", SpanReporter)
WORKLOAD_KEY = web.AppKey("workload", str)
LOCK_KEY = web.AppKey("lock", asyncio.Lock)


class VllmCounters:
    """vLLM's token and request counters (vllm/v1/metrics/loggers.py), in their own
    registry, for a pooling model: prompt tokens counted, no generated tokens."""

    def __init__(self, model_name: str) -> None:
        from prometheus_client import CollectorRegistry, Counter

        self.registry = CollectorRegistry()
        labels = ["model_name", "engine"]
        self.prompt = Counter(
            "vllm:prompt_tokens",
            "Number of prefill tokens processed.",
            labels,
            registry=self.registry,
        ).labels(model_name, "0")
        self.generation = Counter(
            "vllm:generation_tokens",
            "Number of generation tokens processed.",
            labels,
            registry=self.registry,
        ).labels(model_name, "0")
        self.success = Counter(
            "vllm:request_success", "Count of successfully processed requests.",
            [*labels, "finished_reason"], registry=self.registry,
        ).labels(model_name, "0", "stop")  # fmt: skip

    def served(self, prompt_tokens: int) -> None:
        self.prompt.inc(prompt_tokens)
        self.success.inc()

    def page(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


COUNTERS_KEY = web.AppKey("counters", VllmCounters)


async def predict(request: web.Request) -> web.Response:
    start = time.time()
    try:
        body = await request.json()
        texts = [str(item["text"]) for item in body["instances"]]
    except (ValueError, KeyError, TypeError):
        return web.json_response(
            {"error": 'expected {"instances": [{"text": "..."}, ...]}'}, status=400
        )
    if not texts or len(texts) > MAX_TEXTS:
        return web.json_response({"error": f"1 to {MAX_TEXTS} texts"}, status=400)
    model = request.app[MODEL_KEY]
    # One batch at a time, as a single-worker model server; the work runs off the loop.
    async with request.app[LOCK_KEY]:
        batch = await asyncio.to_thread(model.classify, texts)
    counters = request.app.get(COUNTERS_KEY)
    if counters is not None:
        counters.served(batch.tokens)
    reporter = request.app.get(REPORTER_KEY)
    if reporter is not None:
        # Queued without I/O; jouled.client's sender thread batches it to /v1/spans.
        reporter.record(
            model=model.name,
            start=start,
            end=time.time(),
            gflops=batch.gflops,
            input_tokens=batch.tokens,
            route=ROUTE,
        )
    return web.json_response(
        {
            "model": model.name,
            "predictions": [{"label": p.label, "score": p.score} for p in batch.predictions],
            "tokens": batch.tokens,
            "gflops": batch.gflops,
        }
    )


async def healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def metrics(request: web.Request) -> web.Response:
    body = request.app[COUNTERS_KEY].page()
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


def build_app(
    model: Classifier,
    *,
    ingest_url: str | None,
    workload: str = "inference",
    vllm_metrics: bool = False,
) -> web.Application:
    app = web.Application(client_max_size=32 * 1024 * 1024)
    app[MODEL_KEY] = model
    app[WORKLOAD_KEY] = workload
    app[LOCK_KEY] = asyncio.Lock()
    if ingest_url:
        reporter = SpanReporter(
            ingest_url.rstrip("/") + "/v1/spans", workload=workload, flush_interval=0.2
        )
        app[REPORTER_KEY] = reporter

        async def reporting(_app: web.Application) -> AsyncIterator[None]:
            yield
            await reporter.aclose()  # what is queued at shutdown still gets sent

        app.cleanup_ctx.append(reporting)
    app.router.add_post(ROUTE, predict)
    app.router.add_get("/healthz", healthz)
    if vllm_metrics:
        app[COUNTERS_KEY] = VllmCounters(model.name)
        app.router.add_get("/metrics", metrics)
    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--backend", choices=("tiny", "minilm"), default="tiny")
    p.add_argument("--jouled-ingest", help="jouled ingest URL, e.g. http://127.0.0.1:9878")
    p.add_argument("--workload", default="inference", help="workload name sent in spans")
    p.add_argument("--pidfile", type=Path, help="write our PID here (jouled matches on it)")
    p.add_argument(
        "--metrics", action="store_true", help="serve GET /metrics with vLLM's token counters"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    model = load(args.backend)
    log.info("model %s loaded (backend %s)", model.name, args.backend)
    if args.pidfile:
        args.pidfile.write_text(f"{os.getpid()}\n")
    app = build_app(
        model, ingest_url=args.jouled_ingest, workload=args.workload, vllm_metrics=args.metrics
    )
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
