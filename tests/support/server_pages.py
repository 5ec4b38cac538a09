"""Faithful replays of inference servers' ``/metrics`` pages, served over loopback HTTP.

None of these servers runs here (they need GPUs), so each page is written as the server
writes it, with the names, types, HELP text and label sets of its source:

- vLLM: ``vllm/v1/metrics/loggers.py`` (``PrometheusStatLogger``) registers, with
  prometheus-client, counters ``vllm:prompt_tokens``, ``vllm:generation_tokens`` (labels
  ``model_name``, ``engine``) and ``vllm:request_success`` (+ ``finished_reason``). The
  replay registers the same counters with the same library, so the text is byte-for-byte
  the library's (``_total`` and ``_created`` samples included).
- SGLang: ``python/sglang/srt/metrics/collector.py`` (``TokenizerMetricsCollector``), also
  prometheus-client: ``sglang:prompt_tokens_total``, ``sglang:generation_tokens_total``,
  ``sglang:num_requests_total``; labels ``model_name``, ``engine_type``.
- TGI: ``router/src/server.rs`` (``describe_*`` and the ``metrics::*!`` calls) and
  ``router/src/validation.rs``, rendered by ``metrics-exporter-prometheus`` 0.15: counters
  without ``_total``, histograms with buckets from ``set_buckets_for_metric``, a blank line
  between families, no model label.
- Triton: ``triton-inference-server/core`` ``src/metrics.cc`` (``nv_inference_request_success``,
  ``nv_inference_count``; labels ``model``, ``version``) and TensorRT-LLM's
  ``custom_metrics_reporter.cc`` (``nv_llm_input_token_len``, ``nv_llm_output_token_len``
  histograms, buckets 10, 50, 100, 500, 1000, label ``response_metric_type``), as
  prometheus-cpp's text serializer writes them (``le`` last, integers without ``.0``).
"""

from __future__ import annotations

import bisect
import contextlib
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from tests.support.loopback import http_server


@dataclass
class Totals:
    input: int = 0
    output: int = 0
    requests: int = 0
    inputs: list[int] = field(default_factory=list)  # per request, for histograms
    outputs: list[int] = field(default_factory=list)


class Replay:
    """One server's counters; ``serve`` a request, ``restart`` to zero them, ``page()``."""

    server = ""
    model_labelled = True

    def __init__(self, models: list[str]) -> None:
        self.models = list(models)
        self.lock = threading.Lock()
        self.start_time = time.time()
        self.restarts = 0
        self.before_restarts: dict[str, Totals] = {}
        self._fresh()

    def _fresh(self) -> None:
        self.totals = {m: Totals() for m in self.models}

    def serve(self, model: str, prompt_tokens: int, generated_tokens: int) -> None:
        self.serve_all([(model, prompt_tokens, generated_tokens)])

    def serve_all(self, requests: list[tuple[str, int, int]]) -> None:
        """Several requests at once: a read sees all of them or none."""
        with self.lock:
            for model, prompt_tokens, generated_tokens in requests:
                t = self.totals[model]
                t.input += prompt_tokens
                t.output += generated_tokens
                t.requests += 1
                t.inputs.append(prompt_tokens)
                t.outputs.append(generated_tokens)
                self._observe(model, prompt_tokens, generated_tokens)

    def _observe(self, model: str, prompt_tokens: int, generated_tokens: int) -> None:
        """Subclasses with a registry record the request there."""

    def restart(self) -> None:
        """The server restarts: its counters start over (the totals before it are kept in
        ``before_restarts`` for the test's own books)."""
        with self.lock:
            self.restarts += 1
            self.start_time = time.time()
            for m, t in self.totals.items():
                was = self.before_restarts.setdefault(m, Totals())
                was.input += t.input
                was.output += t.output
                was.requests += t.requests
            self._fresh()

    def lifetime(self, model: str) -> Totals:
        """Tokens and requests served by ``model`` across restarts."""
        with self.lock:
            was = self.before_restarts.get(model, Totals())
            t = self.totals[model]
            return Totals(was.input + t.input, was.output + t.output, was.requests + t.requests)

    def page(self) -> str:
        raise NotImplementedError


class VllmReplay(Replay):
    server = "vllm"

    def _fresh(self) -> None:
        super()._fresh()
        self.registry = CollectorRegistry()
        labelnames = ["model_name", "engine"]
        self.prompt = Counter(
            name="vllm:prompt_tokens",
            documentation="Number of prefill tokens processed.",
            labelnames=labelnames,
            registry=self.registry,
        )
        self.generation = Counter(
            name="vllm:generation_tokens",
            documentation="Number of generation tokens processed.",
            labelnames=labelnames,
            registry=self.registry,
        )
        self.success = Counter(
            name="vllm:request_success",
            documentation="Count of successfully processed requests.",
            labelnames=[*labelnames, "finished_reason"],
            registry=self.registry,
        )
        Histogram(
            name="vllm:time_to_first_token_seconds",
            documentation="Histogram of time to first token in seconds.",
            labelnames=labelnames,
            buckets=[0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5],
            registry=self.registry,
        ).labels(self.models[0], "0")
        for m in self.models:
            self.prompt.labels(m, "0")
            self.generation.labels(m, "0")
            for reason in ("stop", "length", "abort"):  # vllm.v1.engine.FinishReason
                self.success.labels(m, "0", reason)

    def _observe(self, model: str, prompt_tokens: int, generated_tokens: int) -> None:
        self.prompt.labels(model, "0").inc(prompt_tokens)
        self.generation.labels(model, "0").inc(generated_tokens)
        reason = "length" if generated_tokens % 2 else "stop"
        self.success.labels(model, "0", reason).inc()

    def page(self) -> str:
        with self.lock:
            return generate_latest(self.registry).decode()


class SglangReplay(Replay):
    server = "sglang"

    def _fresh(self) -> None:
        super()._fresh()
        self.registry = CollectorRegistry()
        labelnames = ["model_name", "engine_type"]
        kw = {"labelnames": labelnames, "registry": self.registry}
        self.prompt = Counter(
            name="sglang:prompt_tokens_total",
            documentation="Number of prefill tokens processed.",
            **kw,  # type: ignore[arg-type]
        )
        self.generation = Counter(
            name="sglang:generation_tokens_total",
            documentation="Number of generation tokens processed.",
            **kw,  # type: ignore[arg-type]
        )
        Counter(
            name="sglang:cached_tokens_total",
            documentation="Number of cached prompt tokens.",
            **kw,  # type: ignore[arg-type]
        )
        self.requests = Counter(
            name="sglang:num_requests_total",
            documentation="Number of requests processed.",
            **kw,  # type: ignore[arg-type]
        )
        for m in self.models:
            for c in (self.prompt, self.generation, self.requests):
                c.labels(m, "unified")

    def _observe(self, model: str, prompt_tokens: int, generated_tokens: int) -> None:
        self.prompt.labels(model, "unified").inc(prompt_tokens)
        self.generation.labels(model, "unified").inc(generated_tokens)
        self.requests.labels(model, "unified").inc()

    def page(self) -> str:
        with self.lock:
            return generate_latest(self.registry).decode()


def _hist_lines(name: str, labels: str, bounds: list[float], values: list[int]) -> list[str]:
    """A histogram's samples in the order both metrics-exporter-prometheus and
    prometheus-cpp write them; ``labels`` is the text before ``le`` (may be empty)."""
    ordered = sorted(values)
    lines = []
    sep = "," if labels else ""
    for b in bounds:
        le = f"{b:g}"
        lines.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {bisect.bisect_right(ordered, b)}')
    lines.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {len(values)}')
    wrap = f"{{{labels}}}" if labels else ""
    lines.append(f"{name}_sum{wrap} {sum(values)}")
    lines.append(f"{name}_count{wrap} {len(values)}")
    return lines


class TgiReplay(Replay):
    """Text Generation Inference serves one model; its counters carry no model label."""

    server = "tgi"
    model_labelled = False
    max_input_tokens = 1024
    max_total_tokens = 2048

    def page(self) -> str:
        with self.lock:
            (t,) = self.totals.values()
            inp = [self.max_input_tokens / 100 * (x + 1) for x in range(100)]
            gen = [self.max_total_tokens / 100 * (x + 1) for x in range(100)]
            blocks = [
                [
                    "# HELP tgi_request_count Total number of requests",
                    "# TYPE tgi_request_count counter",
                    f"tgi_request_count {t.requests}",
                ],
                [
                    "# HELP tgi_request_success Number of successful requests",
                    "# TYPE tgi_request_success counter",
                    f"tgi_request_success {t.requests}",
                ],
                [
                    "# HELP tgi_queue_size Current queue size",
                    "# TYPE tgi_queue_size gauge",
                    "tgi_queue_size 0",
                ],
                [
                    "# HELP tgi_request_input_length Input token length per request",
                    "# TYPE tgi_request_input_length histogram",
                    *_hist_lines("tgi_request_input_length", "", inp, t.inputs),
                ],
                [
                    "# HELP tgi_request_generated_tokens Generated tokens per request",
                    "# TYPE tgi_request_generated_tokens histogram",
                    *_hist_lines("tgi_request_generated_tokens", "", gen, t.outputs),
                ],
            ]
        return "\n\n".join("\n".join(b) for b in blocks) + "\n"


class TritonReplay(Replay):
    """Triton with a TensorRT-LLM ensemble: requests counted for every model of the
    ensemble, tokens only for ``tensorrt_llm`` (the models listed here)."""

    server = "triton"

    def page(self) -> str:
        bounds = [10.0, 50.0, 100.0, 500.0, 1000.0]
        with self.lock:
            total_requests = sum(t.requests for t in self.totals.values())
            lines = [
                "# HELP nv_inference_request_success Number of successful inference "
                "requests, all batch sizes",
                "# TYPE nv_inference_request_success counter",
            ]
            for name in ("ensemble", "preprocessing", "postprocessing"):
                lines.append(
                    f'nv_inference_request_success{{model="{name}",version="1"}} {total_requests}'
                )
            for m, t in self.totals.items():
                lines.append(
                    f'nv_inference_request_success{{model="{m}",version="1"}} {t.requests}'
                )
            lines += [
                "# HELP nv_inference_request_failure Number of failed inference requests, "
                "all batch sizes",
                "# TYPE nv_inference_request_failure counter",
            ]
            for m in self.totals:
                lines.append(f'nv_inference_request_failure{{model="{m}",version="1"}} 0')
            for family, label, attr in (
                ("nv_llm_output_token_len", "total_output_tokens", "outputs"),
                ("nv_llm_input_token_len", "total_input_tokens", "inputs"),
            ):
                lines += [
                    f"# HELP {family} TRT LLM response metrics",
                    f"# TYPE {family} histogram",
                ]
                for m, t in self.totals.items():
                    labels = f'model="{m}",response_metric_type="{label}",version="1"'
                    lines += _hist_lines(family, labels, bounds, getattr(t, attr))
        return "\n".join(lines) + "\n"


REPLAYS: dict[str, type[Replay]] = {
    "vllm": VllmReplay,
    "sglang": SglangReplay,
    "tgi": TgiReplay,
    "triton": TritonReplay,
}


class _Handler(BaseHTTPRequestHandler):
    replay: Replay

    def do_GET(self) -> None:
        if self.path != "/metrics":
            self.send_error(404)
            return
        body = self.server.replay.page().encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serving(replay: Replay, tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """Serve ``replay``'s page on a loopback port (over TLS with ``tls``, a server-side
    context); yields the /metrics URL."""
    with http_server(_Handler, tls=tls, replay=replay) as base:
        yield f"{base}/metrics"
