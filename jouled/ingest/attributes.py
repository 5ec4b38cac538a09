"""The span attribute names jouled reads, as real servers and instrumentations send them.

Each built-in name is listed with the source that emits it (docs/SPANS.md has the table).
``AttributeNames`` puts the operator's extra names (config ``spans.attributes``) in front of
the built-ins; the first attribute present on a span wins.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

# Model: OTel GenAI semconv (gen_ai.request.model, gen_ai.response.model; vLLM sets the
# response one in vllm/tracing.py SpanAttributes), Triton's model span (src/tracer.cc:
# "triton.model_name"), OpenInference (llm.model_name), and a plain `model`.
MODEL: Final = (
    "gen_ai.request.model",
    "gen_ai.response.model",
    "triton.model_name",
    "llm.model_name",
    "model",
)
# Tokens: OTel GenAI semconv >= 1.27 (input/output), vLLM and the older semconv
# (prompt/completion: vllm/tracing.py SpanAttributes), OpenLLMetry before its move to gen_ai
# (llm.usage.*: opentelemetry-semantic-conventions-ai), OpenInference (llm.token_count.*).
INPUT_TOKENS: Final = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.usage.prompt_tokens",
    "llm.token_count.prompt",
)
OUTPUT_TOKENS: Final = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.usage.completion_tokens",
    "llm.token_count.completion",
)
TOTAL_TOKENS: Final = ("llm.usage.total_tokens", "llm.token_count.total")
GFLOPS: Final = ("jouled.gflops",)
ROUTE: Final = "http.route"
REQUEST: Final = "jouled.request"
WORKLOAD: Final = "service.name"
# Span names that never stand for a request: TGI's Python shards export one SERVER span per
# batched Prefill/Decode RPC (server/text_generation_server/tracing.py, proto/v3/generate.proto)
# under the router's service name; the router's own request span already counts.
IGNORE_SPAN_NAMES: Final = (
    "/generate.v2.TextGenerationService/",
    "/generate.v3.TextGenerationService/",
)


def _merge(extra: Iterable[str], builtin: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*extra, *builtin]))


@dataclass(frozen=True, slots=True)
class AttributeNames:
    """Where each field comes from; ``first`` reads a field from an attribute mapping."""

    model: tuple[str, ...] = MODEL
    input_tokens: tuple[str, ...] = INPUT_TOKENS
    output_tokens: tuple[str, ...] = OUTPUT_TOKENS
    total_tokens: tuple[str, ...] = TOTAL_TOKENS
    gflops: tuple[str, ...] = GFLOPS
    ignore_span_names: tuple[str, ...] = IGNORE_SPAN_NAMES

    @classmethod
    def with_extra(
        cls,
        *,
        model: Iterable[str] = (),
        input_tokens: Iterable[str] = (),
        output_tokens: Iterable[str] = (),
        total_tokens: Iterable[str] = (),
        gflops: Iterable[str] = (),
        ignore_span_names: Iterable[str] = (),
    ) -> AttributeNames:
        return cls(
            model=_merge(model, MODEL),
            input_tokens=_merge(input_tokens, INPUT_TOKENS),
            output_tokens=_merge(output_tokens, OUTPUT_TOKENS),
            total_tokens=_merge(total_tokens, TOTAL_TOKENS),
            gflops=_merge(gflops, GFLOPS),
            ignore_span_names=_merge(ignore_span_names, IGNORE_SPAN_NAMES),
        )

    @property
    def wanted(self) -> frozenset[str]:
        """Every span attribute the decoder keeps (the rest are skipped while reading)."""
        return _wanted(self)

    def ignored(self, span_name: str) -> bool:
        return bool(span_name) and span_name.startswith(self.ignore_span_names)


@functools.lru_cache(maxsize=64)
def _wanted(names: AttributeNames) -> frozenset[str]:
    return frozenset(
        (
            *names.model,
            *names.input_tokens,
            *names.output_tokens,
            *names.total_tokens,
            *names.gflops,
            ROUTE,
            REQUEST,
        )
    )


def first(attrs: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    """The value of the first of ``names`` present (not None) in ``attrs``, else None."""
    for key in names:
        value = attrs.get(key)
        if value is not None:
            return value
    return None


DEFAULT_NAMES: Final = AttributeNames()
