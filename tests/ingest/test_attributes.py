"""Attribute names of real servers, workloads[].model, the sender's workload, batch spans,
ignored span names and the pre-1.0 ``instrumentationLibrarySpans`` (docs/SPANS.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from jouled import config
from jouled.config import SpanAttributeNames
from jouled.ingest.attributes import AttributeNames
from jouled.ingest.decode import decode_otlp_json, decode_otlp_protobuf, decode_spans_json
from jouled.ingest.listeners import attribute_names
from jouled.ingest.rules import Rules
from tests.ingest.otlp import INTERNAL, NOW, SERVER, TRACE, pb_span, request

PER_TOKEN = {"m": 2.0}


def decode(spans: list[PbSpan], rules: Rules | None = None, **resource: Any) -> Any:
    body = bytes(request(spans, **resource).SerializeToString())
    return decode_otlp_protobuf(body, rules or Rules(now=NOW, gflops_per_token=PER_TOKEN))


@pytest.mark.parametrize(
    ("attrs", "model", "gflops"),
    [
        # OTel GenAI semconv >= 1.27
        ({"gen_ai.request.model": "m", "gen_ai.usage.input_tokens": 3,
          "gen_ai.usage.output_tokens": 4}, "m", 14.0),
        # vLLM (vllm/tracing.py SpanAttributes) and the older semconv; response model
        ({"gen_ai.response.model": "m", "gen_ai.usage.prompt_tokens": 3,
          "gen_ai.usage.completion_tokens": 4}, "m", 14.0),
        # Triton's model span (src/tracer.cc)
        ({"triton.model_name": "m", "triton.model_version": 1}, "m", None),
        # OpenLLMetry before gen_ai (opentelemetry-semantic-conventions-ai)
        ({"model": "m", "llm.usage.prompt_tokens": 1, "llm.usage.completion_tokens": 2}, "m", 6.0),
        ({"model": "m", "llm.usage.total_tokens": 10}, "m", 20.0),
        # OpenInference (openinference-semantic-conventions)
        ({"llm.model_name": "m", "llm.token_count.prompt": 5,
          "llm.token_count.completion": 5}, "m", 20.0),
        ({"llm.model_name": "m", "llm.token_count.total": 7}, "m", 14.0),
    ],
)  # fmt: skip
def test_each_servers_attribute_names(attrs: dict[str, Any], model: str, gflops: Any) -> None:
    result = decode([pb_span(1, **{k.replace(".", "__"): v for k, v in attrs.items()})])
    assert result.rejected == {}
    (span,) = result.spans
    assert (span.model, span.gflops) == (model, gflops)


def test_request_model_wins_over_response_model_and_input_over_total() -> None:
    result = decode(
        [
            pb_span(
                1,
                gen_ai__response__model="resp",
                gen_ai__request__model="m",
                llm__usage__total_tokens=1000,
                gen_ai__usage__input_tokens=1,
            )
        ]
    )
    (span,) = result.spans
    assert (span.model, span.gflops) == ("m", 2.0)


def test_configured_names_are_tried_first_without_code() -> None:
    names = attribute_names(
        SpanAttributeNames(
            model=("acme.model",), input_tokens=("acme.in",), output_tokens=("acme.out",)
        )
    )
    rules = Rules(now=NOW, gflops_per_token=PER_TOKEN, names=names)
    span = pb_span(1, acme__model="m", model="ignored", acme__in=2, acme__out=3)
    (got,) = decode([span], rules).spans
    assert (got.model, got.gflops) == ("m", 10.0)
    assert names.model[0] == "acme.model" and "gen_ai.request.model" in names.model


def test_workload_model_is_the_default_and_prices_the_tokens() -> None:
    rules = Rules(
        now=NOW, gflops_per_token={"opt-125m": 0.25}, default_models={"classifier": "opt-125m"}
    )
    span = pb_span(1, gen_ai__usage__prompt_tokens=6, gen_ai__usage__completion_tokens=2)
    named = pb_span(2, gen_ai__request__model="other")
    first, second = decode([span, named], rules).spans
    assert (first.model, first.gflops) == ("opt-125m", 2.0)
    assert second.model == "other"


def test_unknown_service_goes_to_the_sending_workload_or_is_rejected_by_name() -> None:
    base = {"now": NOW, "known_workloads": {"vllm"}}
    calls: list[int] = []

    def sender() -> str:
        calls.append(1)
        return "vllm"

    spans = [pb_span(1), pb_span(2)]
    got = decode(spans, Rules(**base, sender=sender), service__name="unknown_service:python")
    assert [s.workload for s in got.spans] == ["vllm", "vllm"] and got.rejected == {}
    # The decoder asks per span (Python) or per resource (compiled, jouled/ingest/_roots.c);
    # the ingest layer's resolver memoizes.
    assert 1 <= len(calls) <= 2
    # A known name never asks who sent it.
    calls.clear()
    decode(spans, Rules(**base, sender=sender), service__name="vllm")
    assert calls == []
    lost = decode(spans, Rules(**base, sender=lambda: None), service__name="unknown_service:python")
    assert lost.rejected == {"unknown_workload": 2}
    assert lost.unknown_services == frozenset({"unknown_service:python"})
    assert "OTEL_SERVICE_NAME" in (lost.first_error or "")


def test_verify_sender_rejects_a_span_naming_another_workload() -> None:
    rules = Rules(now=NOW, known_workloads={"a", "b"}, sender=lambda: "a", verify_sender=True)
    assert decode([pb_span(1)], rules, service__name="a").rejected == {}
    bad = decode([pb_span(1)], rules, service__name="b")
    assert bad.rejected == {"sender_mismatch": 1}
    assert bad.first_error == "sender_mismatch: span names workload 'b' but workload 'a' sent it"
    nobody = Rules(now=NOW, known_workloads={"a"}, sender=lambda: None, verify_sender=True)
    assert decode([pb_span(1)], nobody, service__name="a").rejected == {"sender_mismatch": 1}


def test_nested_request_span_points_at_its_outer_request_through_internal_spans() -> None:
    outer = pb_span(1, start=NOW - 5, end=NOW - 1)
    middle = pb_span(2, kind=INTERNAL, parent=1, start=NOW - 4.5, end=NOW - 1.5)
    inner = pb_span(3, parent=2, start=NOW - 4, end=NOW - 2)
    spans = decode([inner, middle, outer]).spans
    by_id = {s.span_id: s for s in spans}
    assert set(by_id) == {"0000000000000001", "0000000000000003"}
    assert by_id["0000000000000003"].parent_id == "0000000000000001"
    assert by_id["0000000000000001"].parent_id == ""


def _named(span_id: int, name: str, kind: int, links: int = 0, parent: int | None = None) -> Any:
    span = pb_span(span_id, kind=kind, parent=parent)
    span.name = name
    for i in range(links):
        span.links.add(trace_id=TRACE, span_id=(100 + i).to_bytes(8, "big"))
    return span


def test_tgi_batch_root_and_shard_rpcs_are_not_requests() -> None:
    # text-generation-inference: backends/v3/src/backend.rs opens `info_span!(parent: None,
    # "batch")` that follows_from (links to) each request; the Python shards export a SERVER
    # span per Prefill/Decode RPC (server/text_generation_server/tracing.py).
    spans = [
        _named(1, "generate", INTERNAL),
        _named(2, "batch", INTERNAL, links=2),
        _named(3, "/generate.v3.TextGenerationService/Prefill", SERVER, parent=2),
        _named(4, "/generate.v3.TextGenerationService/Decode", SERVER, parent=2),
    ]
    result = decode(spans, service__name="text-generation-inference.router")
    assert [s.span_id for s in result.spans] == ["0000000000000001"]
    assert result.ignored == 3


def test_configured_ignored_names_add_to_the_builtin_ones() -> None:
    names = AttributeNames.with_extra(ignore_span_names=("GET /health",))
    rules = Rules(now=NOW, names=names)
    spans = [_named(1, "GET /health", SERVER), _named(2, "GET /healthz", SERVER)]
    assert decode(spans, rules).spans == ()  # a prefix: /healthz too
    assert "/generate.v3.TextGenerationService/" in names.ignore_span_names


def test_json_instrumentation_library_spans_are_read_as_scope_spans() -> None:
    span = {
        "traceId": TRACE.hex(),
        "spanId": "00000000000000aa",
        "name": "GET /v1/infer",
        "kind": 2,
        "startTimeUnixNano": str(int((NOW - 2) * 1e9)),
        "endTimeUnixNano": str(int((NOW - 1) * 1e9)),
        "attributes": [{"key": "gen_ai.request.model", "value": {"stringValue": "m"}}],
    }
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "go-app"}}]
                },
                # Pre-1.0 OTLP/JSON (older Go and Java SDKs)
                "instrumentationLibrarySpans": [
                    {"instrumentationLibrary": {"name": "net/http"}, "spans": [span]}
                ],
            }
        ]
    }
    result = decode_otlp_json(json.dumps(body).encode(), Rules(now=NOW))
    assert [(s.workload, s.model, s.span_id) for s in result.spans] == [
        ("go-app", "m", "00000000000000aa")
    ]


def test_simple_schema_unknown_workload_goes_to_the_sender_too() -> None:
    body = json.dumps({"spans": [{"workload": "x", "start": NOW - 2, "end": NOW - 1}]}).encode()
    rules = Rules(now=NOW, known_workloads={"w"}, sender=lambda: "w")
    assert [s.workload for s in decode_spans_json(body, rules).spans] == ["w"]


def test_the_yaml_in_docs_spans_is_a_valid_config() -> None:
    text = (Path(__file__).parents[2] / "docs" / "SPANS.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 2
    for block in blocks:
        cfg = config.validate(yaml.safe_load(block), "docs/SPANS.md")
        assert cfg is not None
    vllm = config.validate(yaml.safe_load(blocks[1]), "docs/SPANS.md")
    assert vllm.workloads[0].model == "facebook/opt-125m"
    names = attribute_names(config.validate(yaml.safe_load(blocks[0]), "x").spans.attributes)
    assert names.model[0] == "acme.model_id" and names.ignored("GET /health/live")


def test_grpc_and_http_ingest_need_a_port_each() -> None:
    with pytest.raises(config.ConfigError, match="grpc_listen and listen are both"):
        config.validate(
            {"ingest": {"listen": "127.0.0.1:4317", "grpc_listen": "127.0.0.1:4317"}}, "x"
        )
    cfg = config.validate({"ingest": {"grpc_listen": None}}, "x")
    assert cfg.ingest.grpc_listen is None and config.Config().ingest.grpc_listen == "127.0.0.1:4317"


def test_sglang_shape_counts_one_request_per_bootstrap_room() -> None:
    # sgl-project/sglang python/sglang/srt/tracing/trace.py: trace_req_start opens a root
    # "Bootstrap Room 0x0" span, a "Req <rid>" child, a thread span per process under it,
    # and trace_slice_start adds slice spans that link to the previous slice; all INTERNAL,
    # service.name "sglang".
    spans = [
        _named(1, "Bootstrap Room 0x0", INTERNAL),
        _named(2, "Req 1a2b3c4d", INTERNAL, parent=1),
        _named(3, "Scheduler [TP 0] (host:0123abcd | pid:42)", INTERNAL, parent=2),
        _named(4, "prefill_forward", INTERNAL, links=1, parent=3),
        _named(5, "decode_loop", INTERNAL, links=1, parent=3),
    ]
    result = decode(spans, service__name="sglang")
    assert [s.span_id for s in result.spans] == ["0000000000000001"]
    assert result.ignored == 4
