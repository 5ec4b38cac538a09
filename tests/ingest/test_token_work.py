"""Work of a span from its token counts: a model's config.json (prefill + decode), then a
flat GFLOPs per token; and the energy of concurrent requests split by that work."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jouled.attribution.spans import SpanSplitter
from jouled.costmodel import datasets
from jouled.costmodel.decoder import RequestWork
from jouled.costmodel.flops import load_config
from jouled.ingest.decode import Rules, decode_otlp_protobuf, decode_spans_json
from tests.costmodel.hand_counts import llama3_8b_request
from tests.ingest.otlp import INTERNAL, NOW, pb_span, request

LLAMA = RequestWork.from_config(load_config(datasets.resolve_config("Meta-Llama-3-8B")))
RULES = Rules(
    now=NOW,
    gflops_per_token={"llama-3-8b": 15.285, "flat": 2.0},
    token_costs={"llama-3-8b": LLAMA},
)


def hand_gflops(prompt: int, new: int) -> float:
    prefill, decode = llama3_8b_request(prompt, new)
    return (prefill + decode) / 1e9


def spans_body(*spans: dict[str, Any]) -> bytes:
    base = {"workload": "llm", "model": "llama-3-8b", "start": NOW - 2.0, "end": NOW - 1.0}
    return json.dumps({"spans": [{**base, **s} for s in spans]}).encode()


def test_concurrent_requests_get_energy_in_proportion_to_prefill_plus_decode() -> None:
    # Three requests of one model, open over the same second, with different shapes.
    shapes = [(512, 128), (128, 512), (2048, 16)]
    result = decode_spans_json(
        spans_body(*({"input_tokens": p, "output_tokens": n} for p, n in shapes)), RULES
    )
    assert result.rejected == {}
    gflops = [span.gflops for span in result.spans]
    assert gflops == pytest.approx([hand_gflops(p, n) for p, n in shapes], rel=1e-12)
    assert [round(g, 1) for g in gflops if g is not None] == [9164.9, 9568.4, 29_949.1]
    assert [(s.input_tokens, s.output_tokens) for s in result.spans] == shapes

    splitter = SpanSplitter(settle_seconds=0.0)
    for span in result.spans:
        splitter.add_span(span)
    splitter.add_tick(NOW - 2.0, NOW - 1.0, {"llm": {"gpu": 300.0, "cpu": 60.0}})
    settled = splitter.settle(NOW)
    energy = {(r.input_tokens, r.output_tokens): r.energy_j for r in settled.requests}
    total = sum(hand_gflops(p, n) for p, n in shapes)
    for p, n in shapes:
        share = hand_gflops(p, n) / total
        assert energy[(p, n)] == pytest.approx({"gpu": 300 * share, "cpu": 60 * share}, rel=1e-12)
    # The values, to the millijoule: prefill-heavy (2048 + 16) costs 3.3x the 512 + 128 one.
    assert [round(energy[s]["gpu"], 3) for s in shapes] == [56.478, 58.964, 184.558]
    # A flat rate per token would have split them by tokens: 640 : 640 : 2064.
    assert energy[(512, 128)]["gpu"] != pytest.approx(300 * 640 / 3344)


def test_precedence_gflops_attribute_then_model_config_then_gflops_per_token() -> None:
    result = decode_spans_json(
        spans_body(
            {"gflops": 42.0, "input_tokens": 512, "output_tokens": 128},
            {"input_tokens": 512, "output_tokens": 128},
            {"model": "flat", "input_tokens": 512, "output_tokens": 128},
            {"model": "mystery", "input_tokens": 512, "output_tokens": 128},
        ),
        RULES,
    )
    explicit, from_config, flat, unknown = result.spans
    assert explicit.gflops == 42.0 and explicit.input_tokens == 512
    assert from_config.gflops == pytest.approx(9164.93, abs=0.01)
    assert flat.gflops == 640 * 2.0
    assert unknown.gflops is None and unknown.output_tokens == 128


def test_before_model_configs_the_flat_rate_charged_the_issue_s_9782_gflops() -> None:
    flat_only = Rules(now=NOW, gflops_per_token={"llama-3-8b": 15.285})
    body = spans_body({"input_tokens": 512, "output_tokens": 128})
    (span,) = decode_spans_json(body, flat_only).spans
    assert span.gflops is not None and round(span.gflops) == 9782


def test_only_output_tokens_cost_their_decode_steps() -> None:
    (span,) = decode_spans_json(spans_body({"output_tokens": 4}), RULES).spans
    prefill, decode = llama3_8b_request(0, 4)
    assert prefill == 0
    assert span.gflops == pytest.approx(decode / 1e9, rel=1e-12)
    assert (span.input_tokens, span.output_tokens) == (None, 4)


def test_an_internal_child_lends_its_input_and_output_tokens_apart() -> None:
    body = bytes(
        request(
            [
                pb_span(1, gen_ai__request__model="llama-3-8b"),
                pb_span(
                    2,
                    kind=INTERNAL,
                    parent=1,
                    gen_ai__usage__input_tokens=512,
                    gen_ai__usage__output_tokens=128,
                ),
            ],
            service__name="llm",
        ).SerializeToString()
    )
    (span,) = decode_otlp_protobuf(body, RULES).spans
    assert (span.input_tokens, span.output_tokens) == (512, 128)
    assert span.gflops == pytest.approx(hand_gflops(512, 128), rel=1e-12)


def test_token_counts_too_large_for_any_context_are_rejected() -> None:
    huge = decode_spans_json(
        spans_body({"input_tokens": int(1e300), "output_tokens": int(1e300)}), RULES
    )
    assert huge.rejected == {"bad_tokens": 1}
    assert huge.first_error is not None and "too many" in huge.first_error
