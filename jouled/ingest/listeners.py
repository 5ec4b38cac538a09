"""The ingest listeners as the daemon builds them from config: the HTTP app and OTLP/gRPC.

Both share one ``IngestState`` (books, limits, attribute names, the sender lookup) and one
rate limit, so a sender gets the same answers whichever protocol it speaks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from jouled.attribution.stage import AttributionStage
from jouled.clock import Clock
from jouled.config import Config, SpanAttributeNames
from jouled.ingest.app import STATE_KEY, build_ingest_app, request_bucket
from jouled.ingest.attributes import AttributeNames
from jouled.ingest.grpc import GrpcIngest
from jouled.ingest.limits import BytesInFlight, OffLoop
from jouled.ingest.requests import IngestRequests
from jouled.ingest.rules import TokenCostFn
from jouled.ingest.sender import SenderLookup


def attribute_names(cfg: SpanAttributeNames) -> AttributeNames:
    """The configured extra names in front of the built-in ones."""
    return AttributeNames.with_extra(
        model=cfg.model,
        input_tokens=cfg.input_tokens,
        output_tokens=cfg.output_tokens,
        total_tokens=cfg.total_tokens,
        gflops=cfg.gflops,
        ignore_span_names=cfg.ignore_span_names,
    )


@dataclass(frozen=True, slots=True)
class IngestListeners:
    http: web.Application
    grpc: GrpcIngest | None  # None when ingest.grpc_listen is null


def build_listeners(
    cfg: Config,
    stage: AttributionStage,
    clock: Clock,
    token: str | None,
    token_costs: Mapping[str, TokenCostFn] | None = None,
    *,
    budget: BytesInFlight | None = None,
    off_loop: OffLoop | None = None,
    requests: IngestRequests | None = None,
) -> IngestListeners:
    """``token_costs``: per model, a request's GFLOPs from its tokens (``spans.model_configs``
    loaded by the daemon). ``budget`` and ``off_loop``: the daemon's bytes in flight and
    ingest thread pool, shared by both listeners (``jouled.ingest.limits``). ``requests``:
    the request book the daemon exports (``jouled_ingest_requests_total``)."""
    bucket = request_bucket(cfg.ingest.max_requests_per_second, clock)
    app = build_ingest_app(
        stage,
        clock=clock,
        known_workloads=stage.known_workloads,
        gflops_per_token=cfg.spans.gflops_per_token,
        max_body_bytes=cfg.spans.max_body_bytes,
        model_cap=cfg.spans.max_models_per_workload,
        token=token,
        bucket=bucket,
        names=attribute_names(cfg.spans.attributes),
        default_models=stage.default_models,
        senders=SenderLookup(cfg.attribution.proc_path, stage.workload_pids, clock),
        verify_sender=cfg.ingest.verify_sender,
        token_costs=token_costs,
        budget=budget,
        off_loop=off_loop,
        body_timeout_s=cfg.ingest.body_timeout,
        requests=requests,
    )
    grpc = None
    if cfg.ingest.grpc_listen is not None:
        grpc = GrpcIngest(app[STATE_KEY], token=token, bucket=bucket)
    return IngestListeners(app, grpc)
