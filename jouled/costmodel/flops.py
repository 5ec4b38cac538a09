"""Analytic forward-pass FLOPs of transformer encoders and decoders from a ``config.json``.

A multiply-add counts as 2 FLOPs (an (m, k) by (k, n) matmul is 2·m·k·n). Element-wise work
(bias adds, residual adds, norms, softmax, activations) is counted separately with small
per-element constants (``configjson``), so that the total can be compared to a profiler's
count. Encoders (BERT, RoBERTa, DistilBERT, ALBERT) are counted here, with a sequence
classification head; decoders (``decoder.DECODERS``) in ``decoder``: *prefill* of the prompt,
then *decode* steps over the KV cache. Stdlib only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from jouled.costmodel import decoder
from jouled.costmodel.configjson import (
    ACTIVATION_PER_ELEMENT,
    GIGA,
    LAYERNORM_PER_ELEMENT,
    SOFTMAX_PER_SCORE,
    ConfigError,
    load_config,
)
from jouled.costmodel.configjson import positive_int as _int

__all__ = ["ENCODERS", "ConfigError", "FlopsReport", "count", "load_config"]

Family = Literal["encoder", "decoder"]
ENCODERS = ("bert", "roberta", "distilbert", "albert")


@dataclass(frozen=True)
class Encoder:
    """What an encoder's FLOPs depend on, normalised across the config dialects."""

    model_type: str
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    embedding: int  # ALBERT factorises the embedding: vocab -> embedding -> hidden
    activation: str
    token_types: int
    learned_positions: int
    shared_layer_groups: int  # ALBERT shares weights across layers: params, not FLOPs
    num_labels: int


@dataclass(frozen=True)
class FlopsReport:
    """Encoders: one forward pass (``gflops``). Decoders: ``gflops`` is the prefill of a
    ``seq_len``-token prompt; with ``new_tokens`` N, ``decode_gflops`` is the N - 1 decode
    steps after it and ``generate_gflops`` the whole request (prefill + decode)."""

    model_type: str
    family: Family
    seq_len: int
    batch: int
    gflops: float
    matmul_gflops: float
    elementwise_gflops: float
    attention_gflops: float  # scores, softmax, weighted sum: the part that grows with context
    parameters: int
    layers: int
    decode_gflops_per_token: float | None = None  # the first decode step, cache of seq_len
    generate_gflops: float | None = None
    new_tokens: int | None = None
    decode_gflops: float | None = None
    decode_attention_gflops: float | None = None
    decode_steps: int | None = None
    active_parameters: int | None = None  # per token; fewer than parameters for experts
    sliding_window: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _labels(config: Mapping[str, Any]) -> int:
    id2label = config.get("id2label")
    if isinstance(id2label, Mapping) and id2label:
        return len(id2label)
    return _int(config, "num_labels", default=2)


def encoder_shape(config: Mapping[str, Any]) -> Encoder:
    """Normalise an encoder's config; raises ConfigError naming the key to fix."""
    model_type = str(config.get("model_type"))
    if model_type == "distilbert":
        hidden, heads = _int(config, "dim"), _int(config, "n_heads")
        if hidden % heads:
            raise ConfigError(f"dim {hidden} is not divisible by {heads} heads")
        return Encoder(
            model_type=model_type,
            hidden=hidden,
            layers=_int(config, "n_layers"),
            heads=heads,
            intermediate=_int(config, "hidden_dim"),
            vocab=_int(config, "vocab_size"),
            embedding=hidden,
            activation=str(config.get("activation", "gelu")),
            token_types=0,
            learned_positions=(
                0
                if config.get("sinusoidal_pos_embds")
                else _int(config, "max_position_embeddings", default=512)
            ),
            shared_layer_groups=0,
            num_labels=_labels(config),
        )
    hidden, heads = _int(config, "hidden_size"), _int(config, "num_attention_heads")
    if hidden % heads:
        raise ConfigError(f"hidden_size {hidden} is not divisible by {heads} heads")
    return Encoder(
        model_type=model_type,
        hidden=hidden,
        layers=_int(config, "num_hidden_layers"),
        heads=heads,
        intermediate=_int(config, "intermediate_size"),
        vocab=_int(config, "vocab_size"),
        embedding=_int(config, "embedding_size", default=hidden),
        activation=str(config.get("hidden_act", "gelu")),
        token_types=_int(config, "type_vocab_size", default=2),
        learned_positions=_int(config, "max_position_embeddings", default=512),
        shared_layer_groups=(
            _int(config, "num_hidden_groups", default=1) if model_type == "albert" else 0
        ),
        num_labels=_labels(config),
    )


@dataclass(frozen=True)
class _Count:
    matmul: float = 0.0
    elementwise: float = 0.0
    attention: float = 0.0

    def __add__(self, other: _Count) -> _Count:
        return _Count(
            self.matmul + other.matmul,
            self.elementwise + other.elementwise,
            self.attention + other.attention,
        )

    def scaled(self, factor: float) -> _Count:
        return _Count(self.matmul * factor, self.elementwise * factor, self.attention * factor)


def _layer(shape: Encoder, tokens: int) -> _Count:
    """One encoder block over ``tokens`` positions (bidirectional: every pair attends)."""
    h, q, f = shape.hidden, tokens, shape.intermediate
    projections = 2 * q * h * 3 * h + 2 * q * h * h
    mlp = 2 * 2 * q * h * f
    # Scores (QK^T) and the weighted sum (AV): each head's queries against every key.
    attention_matmul = 2 * 2 * q * q * h
    softmax = SOFTMAX_PER_SCORE * shape.heads * q * q
    bias = q * (3 * h + h) + q * (f + h)
    activation = ACTIVATION_PER_ELEMENT.get(shape.activation, 8) * q * f
    residual = 2 * q * h
    norms = 2 * LAYERNORM_PER_ELEMENT * q * h
    return _Count(
        matmul=projections + mlp + attention_matmul,
        elementwise=softmax + bias + activation + residual + norms,
        attention=attention_matmul + softmax,
    )


def _embeddings(shape: Encoder, tokens: int) -> _Count:
    q, h, e = tokens, shape.hidden, shape.embedding
    # Lookups cost no FLOPs; position and token-type vectors are added, then normalised.
    adds = (1 if shape.learned_positions else 0) + (1 if shape.token_types else 0)
    elementwise = float(adds * q * e) + LAYERNORM_PER_ELEMENT * q * e
    matmul = 0.0
    if e != h:  # ALBERT's factorised embedding projects up to the hidden size
        matmul += 2 * q * e * h
        elementwise += q * h
    return _Count(matmul=matmul, elementwise=elementwise)


def _head(shape: Encoder) -> _Count:
    # Sequence classification: pooler (dense + tanh) on the first token, then classifier.
    h = shape.hidden
    return _Count(
        matmul=2 * h * h + 2 * h * shape.num_labels,
        elementwise=h + 8 * h + shape.num_labels,
    )


def encoder_parameters(shape: Encoder) -> int:
    """Parameter count (weights and biases) of the encoder with its classification head."""
    h, f, e = shape.hidden, shape.intermediate, shape.embedding
    layer = 4 * h * h + 4 * h + 2 * h * f + f + h + 2 * 2 * h
    total = (shape.shared_layer_groups or shape.layers) * layer
    total += shape.vocab * e + (shape.learned_positions + shape.token_types) * e
    total += 2 * e  # embedding norm
    if e != h:
        total += e * h + h
    return total + h * h + h + h * shape.num_labels + shape.num_labels


def count(
    config: Mapping[str, Any], seq_len: int, batch: int = 1, new_tokens: int | None = None
) -> FlopsReport:
    """FLOPs of ``batch`` sequences of ``seq_len`` tokens.

    Encoders: one forward pass. Decoders: ``gflops`` is the prefill of a ``seq_len`` prompt
    (causal attention; logits for its last token only, as a generating server computes);
    ``decode_gflops_per_token`` is the first decode step, against a cache of ``seq_len``;
    with ``new_tokens`` N, ``decode_gflops`` is the N - 1 steps after the prefill (whose
    logits gave the first new token) and ``generate_gflops`` prefill plus decode.
    """
    if seq_len <= 0 or batch <= 0:
        raise ConfigError(f"seq_len and batch must be positive, got {seq_len} and {batch}")
    if new_tokens is not None and new_tokens < 0:
        raise ConfigError(f"new_tokens must be zero or more, got {new_tokens}")
    model_type = config.get("model_type")
    if model_type in decoder.DECODERS:
        return _count_decoder(config, seq_len, batch, new_tokens)
    if model_type not in ENCODERS:
        known = ", ".join((*ENCODERS, *decoder.DECODERS))
        if model_type is None:
            raise ConfigError(f"config.json has no 'model_type' key; supported: {known}")
        raise ConfigError(f"unknown model_type {model_type!r} in config.json; supported: {known}")
    shape = encoder_shape(config)
    _check_positions(shape.learned_positions, seq_len, "seq_len")
    forward = _embeddings(shape, seq_len) + _layer(shape, seq_len).scaled(shape.layers)
    forward = (forward + _head(shape)).scaled(batch)
    return FlopsReport(
        model_type=shape.model_type,
        family="encoder",
        seq_len=seq_len,
        batch=batch,
        gflops=(forward.matmul + forward.elementwise) / GIGA,
        matmul_gflops=forward.matmul / GIGA,
        elementwise_gflops=forward.elementwise / GIGA,
        attention_gflops=forward.attention / GIGA,
        parameters=encoder_parameters(shape),
        layers=shape.layers,
    )


def _check_positions(learned: int, positions: int, what: str) -> None:
    if learned and positions > learned:
        raise ConfigError(
            f"{what} {positions} exceeds the {learned} learned positions "
            "(max_position_embeddings) of this model"
        )


def _count_decoder(
    config: Mapping[str, Any], prompt: int, batch: int, new_tokens: int | None
) -> FlopsReport:
    shape = decoder.decoder_shape(config)
    cost = decoder.TokenCost.from_shape(shape)
    generated = new_tokens or 0
    positions = prompt + max(generated - 1, 0)
    what = "seq_len" if generated <= 1 else f"seq_len + new_tokens - 1 ({prompt} + {generated} - 1)"
    _check_positions(shape.learned_positions, max(positions, prompt + 1), what)
    prefill = cost.prefill(prompt)
    first_step = cost.decode(prompt, 2)
    decode = cost.decode(prompt, generated) if new_tokens is not None else None
    total, active = decoder.parameters(shape)
    windows = [kind.window for kind in shape.layers if kind.window is not None]
    return FlopsReport(
        model_type=shape.model_type,
        family="decoder",
        seq_len=prompt,
        batch=batch,
        gflops=batch * prefill.total / GIGA,
        matmul_gflops=batch * prefill.matmul / GIGA,
        elementwise_gflops=batch * prefill.elementwise / GIGA,
        attention_gflops=batch * prefill.attention / GIGA,
        parameters=total,
        layers=shape.num_layers,
        decode_gflops_per_token=batch * first_step.total / GIGA,
        generate_gflops=None if decode is None else batch * (prefill.total + decode.total) / GIGA,
        new_tokens=new_tokens,
        decode_gflops=None if decode is None else batch * decode.total / GIGA,
        decode_attention_gflops=None if decode is None else batch * decode.attention / GIGA,
        decode_steps=None if new_tokens is None else max(generated - 1, 0),
        active_parameters=active,
        sliding_window=min(windows) if windows else None,
    )
