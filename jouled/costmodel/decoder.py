"""FLOPs of decoder-only and mixture-of-experts LLMs from a Hugging Face ``config.json``.

Families: GPT-2, Llama, Mistral (sliding window), Mixtral (top-k of n experts), Qwen2 and
Qwen2-MoE (shared expert), Gemma, Phi-3 and Falcon; grouped-query attention, gated MLPs, tied
and untied heads. Conventions in ``configjson`` (a multiply-add is 2 FLOPs).

A request of P prompt tokens that generates N tokens costs, exactly:

* **prefill(P)**: the P prompt positions through every layer, causal attention (position i
  attends to its i keys, at most the sliding window), then the final norm and LM head on the
  last position only: its logits give the first generated token.
* **decode(P, N)**: N - 1 single-position steps over the KV cache (step j attends to P + j
  keys, at most the window), each with the final norm and LM head.

So a request forwards P + N - 1 positions and computes N rows of logits; its attention work
does not depend on how the server splits it into prefill and decode. ``TokenCost`` holds the
per-model coefficients (per position, per logits row, per attended key), so the cost of a
request is a handful of multiplications: the daemon computes it once per span. Stdlib only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from jouled.costmodel.configjson import (
    GATE_PER_ELEMENT,
    GIGA,
    LAYERNORM_PER_ELEMENT,
    RMSNORM_PER_ELEMENT,
    ROPE_PER_ELEMENT,
    SIGMOID_PER_ELEMENT,
    SOFTMAX_PER_SCORE,
    activation_cost,
)
from jouled.costmodel.decoder_config import (
    DECODERS,
    DecoderShape,
    LayerKind,
    decoder_shape,
    parameters,
)

__all__ = [
    "DECODERS",
    "Count",
    "DecoderShape",
    "RequestWork",
    "TokenCost",
    "attended_keys",
    "decoder_shape",
    "parameters",
]


class Count(NamedTuple):
    """FLOPs split three ways; ``attention`` (scores, softmax, weighted sum) is a part of
    ``matmul`` + ``elementwise``, not an addition to them."""

    matmul: float = 0.0
    elementwise: float = 0.0
    attention: float = 0.0

    @property
    def total(self) -> float:
        return self.matmul + self.elementwise

    def plus(self, other: Count, times: float = 1.0) -> Count:
        return Count(
            self.matmul + times * other.matmul,
            self.elementwise + times * other.elementwise,
            self.attention + times * other.attention,
        )


def _mlp(shape: DecoderShape, width: int) -> Count:
    """One token through a (gated) MLP of ``width``."""
    h = shape.hidden
    act = activation_cost(shape.activation)
    if shape.gated:
        bias = 2 * width + h if shape.mlp_bias else 0
        return Count(3 * 2 * h * width, (act + GATE_PER_ELEMENT) * width + bias)
    bias = width + h if shape.mlp_bias else 0
    return Count(2 * 2 * h * width, act * width + bias)


def _ffn(shape: DecoderShape, kind: LayerKind) -> Count:
    if not kind.experts:
        return _mlp(shape, kind.ffn)
    h = shape.hidden
    # Router logits and their softmax; top-k selection (comparisons) is not counted.
    cost = Count(2 * h * kind.experts, SOFTMAX_PER_SCORE * kind.experts)
    cost = cost.plus(_mlp(shape, kind.expert_ffn), times=kind.top_k)
    # Each chosen expert's output times its routing weight, summed: (2k - 1) per element.
    cost = cost.plus(Count(0, (2 * kind.top_k - 1) * h))
    if kind.shared_ffn:
        # Qwen2-MoE: a shared expert for every token, scaled by sigmoid(gate(x)), added.
        cost = cost.plus(_mlp(shape, kind.shared_ffn))
        cost = cost.plus(Count(2 * h, SIGMOID_PER_ELEMENT + 2 * h))
    return cost


def _norm(shape: DecoderShape) -> int:
    return (RMSNORM_PER_ELEMENT if shape.rmsnorm else LAYERNORM_PER_ELEMENT) * shape.hidden


def _position(shape: DecoderShape, kind: LayerKind) -> Count:
    """One position through one layer of ``kind``, attention scores excluded."""
    h = shape.hidden
    q_width = shape.heads * shape.head_dim
    kv_width = shape.kv_heads * shape.head_dim
    matmul = 2 * h * (q_width + 2 * kv_width) + 2 * q_width * h
    elementwise = float(q_width + 2 * kv_width if shape.qkv_bias else 0) + (
        h if shape.o_bias else 0
    )
    elementwise += ROPE_PER_ELEMENT * (q_width + kv_width) * shape.rotary_fraction
    elementwise += 2 * h + shape.norms_per_layer * _norm(shape)  # residual adds and norms
    return Count(matmul, elementwise).plus(_ffn(shape, kind))


def _per_key(shape: DecoderShape) -> Count:
    """One query position against one key, in one layer: QK^T and AV, softmax (and ALiBi)."""
    matmul = 2 * 2 * shape.heads * shape.head_dim
    elementwise = (SOFTMAX_PER_SCORE + (1 if shape.alibi else 0)) * shape.heads
    return Count(matmul, elementwise, matmul + elementwise)


def attended_keys(positions: int, window: int | None) -> int:
    """Sum over positions i = 1..n of the keys position i attends to: min(i, window)."""
    n = positions
    if n <= 0:
        return 0
    if window is None or n <= window:
        return n * (n + 1) // 2
    return window * (window + 1) // 2 + (n - window) * window


@dataclass(frozen=True)
class TokenCost:
    """Per-model coefficients, in FLOPs: everything a request's cost needs.

    ``position``: one position through every layer and the embedding, attention scores
    excluded; ``logits``: the final norm and LM head for one position; ``per_key``: one
    attended key in every layer of a window group, one entry per group.
    """

    model_type: str
    position: Count
    logits: Count
    per_key: tuple[tuple[int | None, Count], ...]  # (window, cost per attended key)
    learned_positions: int

    @classmethod
    def from_shape(cls, shape: DecoderShape) -> TokenCost:
        h = shape.hidden
        embed = (h if shape.learned_positions else 0) + (h if shape.embed_scale else 0)
        position = Count(0, embed)
        groups: dict[int | None, Count] = {}
        for kind in shape.layers:
            position = position.plus(_position(shape, kind), times=kind.count)
            groups[kind.window] = groups.get(kind.window, Count()).plus(
                _per_key(shape), times=kind.count
            )
        logits = Count(2 * h * shape.vocab, _norm(shape))
        return cls(
            model_type=shape.model_type,
            position=position,
            logits=logits,
            per_key=tuple(groups.items()),
            learned_positions=shape.learned_positions,
        )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TokenCost:
        return cls.from_shape(decoder_shape(config))

    def _forward(self, start: int, end: int, logits_rows: int) -> Count:
        """Positions start+1..end (1-based) forwarded, ``logits_rows`` rows of logits."""
        total = Count().plus(self.position, times=end - start)
        total = total.plus(self.logits, times=logits_rows)
        for window, cost in self.per_key:
            keys = attended_keys(end, window) - attended_keys(start, window)
            total = total.plus(cost, times=keys)
        return total

    def prefill(self, prompt_tokens: int) -> Count:
        """The prompt's positions, causal attention, logits of the last one (0 for 0)."""
        return self._forward(0, prompt_tokens, 1 if prompt_tokens > 0 else 0)

    def decode(self, prompt_tokens: int, new_tokens: int) -> Count:
        """The ``new_tokens - 1`` steps after the prefill, over a growing KV cache."""
        steps = max(new_tokens - 1, 0)
        return self._forward(prompt_tokens, prompt_tokens + steps, steps)


class RequestWork:
    """``TokenCost`` reduced to floats for the daemon: GFLOPs of one request from its token
    counts in a few multiplications (``work(input_tokens, output_tokens)``).

    Equal to ``prefill(P).total + decode(P, N).total`` in GFLOPs. A request with no input
    tokens is costed as its decode steps only. Counts far beyond any context give ``inf``
    (floats throughout, never an exception): the caller refuses a non-finite result.
    """

    __slots__ = ("_keys", "_logits", "_position", "model_type")

    def __init__(self, cost: TokenCost) -> None:
        self.model_type = cost.model_type
        self._position = cost.position.total / GIGA
        self._logits = cost.logits.total / GIGA
        self._keys = tuple(
            (None if w is None else float(w), c.total / GIGA) for w, c in cost.per_key
        )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RequestWork:
        return cls(TokenCost.from_config(config))

    def __call__(self, input_tokens: int, output_tokens: int) -> float:
        steps = float(max(output_tokens - 1, 0))
        end = float(input_tokens) + steps
        gflops = self._position * end + self._logits * ((1.0 if input_tokens > 0 else 0.0) + steps)
        for window, per_key in self._keys:
            if window is None or end <= window:
                gflops += per_key * end * (end + 1.0) * 0.5
            else:
                gflops += per_key * (window * (window + 1.0) * 0.5 + (end - window) * window)
        return gflops
