"""An aiohttp text-classification server instrumented with jouled's request spans.

``POST /predict`` takes ``{"instances": [{"text": ...}, ...]}`` (the thesis's body) and
answers a label per text. Each request becomes one span sent to jouled's ingest listener
(``POST /v1/spans``, batched): workload, model name, start and end, real token count and
GFLOPs from ``jouled model flops`` on the model's own config. jouled then gives the span
its share of the process's energy.

    python -m examples.inference_server.server --port 8080 \\
        --jouled-ingest http://127.0.0.1:9878 --workload inference [--backend minilm]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

from examples.inference_server.model import Classifier, load

log = logging.getLogger("inference_server")
ROUTE = "/predict"
MAX_TEXTS = 10_000


class SpanReporter:
    """Batches spans and posts them to jouled's ``/v1/spans``; bounded, never blocks serving.

    jouled/client.py's reporter did not exist when this example was written; this is the
    same idea in 40 lines, posting jouled's JSON schema with aiohttp.
    """

    def __init__(
        self, ingest_url: str, *, flush_s: float = 0.2, batch: int = 512, cap: int = 10_000
    ) -> None:
        self.url = ingest_url.rstrip("/") + "/v1/spans"
        self.flush_s = flush_s
        self.batch = batch
        self.cap = cap
        self._queue: list[dict[str, Any]] = []
        self.sent = 0
        self.dropped = 0
        self.failed = 0
        self._wake = asyncio.Event()

    def add(self, span: dict[str, Any]) -> None:
        if len(self._queue) >= self.cap:
            self.dropped += 1  # jouled unreachable for long: shed load, do not grow
            return
        self._queue.append(span)
        if len(self._queue) >= self.batch:
            self._wake.set()

    async def _post(self, session: ClientSession) -> None:
        while self._queue:
            chunk, self._queue = self._queue[: self.batch], self._queue[self.batch :]
            try:
                async with session.post(self.url, json={"spans": chunk}) as resp:
                    body = await resp.json(content_type=None)
                    if resp.status != 200 or body.get("rejected"):
                        log.warning("jouled answered %d: %s", resp.status, body)
                self.sent += len(chunk)
            except Exception as exc:
                self.failed += len(chunk)
                log.warning("cannot send %d spans to %s: %s", len(chunk), self.url, exc)

    async def run(self) -> None:
        async with ClientSession(timeout=ClientTimeout(total=5)) as session:
            try:
                while True:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.flush_s)
                    self._wake.clear()
                    await self._post(session)
            finally:
                await self._post(session)  # what is queued at shutdown still gets sent


MODEL_KEY = web.AppKey("model", Classifier)
REPORTER_KEY = web.AppKey("reporter", SpanReporter)
WORKLOAD_KEY = web.AppKey("workload", str)
LOCK_KEY = web.AppKey("lock", asyncio.Lock)


async def predict(request: web.Request) -> web.Response:
    start_ns = time.time_ns()
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
    end_ns = time.time_ns()
    reporter = request.app.get(REPORTER_KEY)
    if reporter is not None:
        reporter.add(
            {
                "workload": request.app[WORKLOAD_KEY],
                "model": model.name,
                "start_unix_nano": start_ns,
                "end_unix_nano": end_ns,
                "gflops": batch.gflops,
                "input_tokens": batch.tokens,
                "route": ROUTE,
                "span_id": secrets.token_hex(8),
            }
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


def build_app(
    model: Classifier, *, ingest_url: str | None, workload: str = "inference"
) -> web.Application:
    app = web.Application(client_max_size=32 * 1024 * 1024)
    app[MODEL_KEY] = model
    app[WORKLOAD_KEY] = workload
    app[LOCK_KEY] = asyncio.Lock()
    if ingest_url:
        reporter = SpanReporter(ingest_url)
        app[REPORTER_KEY] = reporter

        async def reporting(_app: web.Application) -> AsyncIterator[None]:
            task = asyncio.create_task(reporter.run())
            yield
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        app.cleanup_ctx.append(reporting)
    app.router.add_post(ROUTE, predict)
    app.router.add_get("/healthz", healthz)
    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--backend", choices=("tiny", "minilm"), default="tiny")
    p.add_argument("--jouled-ingest", help="jouled ingest URL, e.g. http://127.0.0.1:9878")
    p.add_argument("--workload", default="inference", help="workload name sent in spans")
    p.add_argument("--pidfile", type=Path, help="write our PID here (jouled matches on it)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    model = load(args.backend)
    log.info("model %s loaded (backend %s)", model.name, args.backend)
    if args.pidfile:
        args.pidfile.write_text(f"{os.getpid()}\n")
    app = build_app(model, ingest_url=args.jouled_ingest, workload=args.workload)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
