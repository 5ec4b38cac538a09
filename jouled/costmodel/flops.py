"""Analytic forward-pass FLOPs of transformer encoders and decoders from a ``config.json``.

A multiply-add counts as 2 FLOPs (an (m, k) by (k, n) matmul is 2·m·k·n). Element-wise work
(bias adds, residual adds, norms, softmax, activations) is counted separately with small
per-element constants, listed below, so that the total can be compared to a profiler's count.
For decoders, *prefill* processes the prompt and *decode* one new token against the cache.
Stdlib only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

GIGA = 1e9

# FLOPs per element of the element-wise steps. Conventions, not measurements: what a graph
# profiler (TensorFlow's, which the thesis used) charges for the primitive ops each expands to.
LAYERNORM_PER_ELEMENT = 7  # mean, subtract, square, mean, scale, gamma, beta
RMSNORM_PER_ELEMENT = 4  # square, mean, scale, gamma
SOFTMAX_PER_SCORE = 5  # 1/sqrt(d) scale, mask add, exp, sum, divide
ACTIVATION_PER_ELEMENT = {"gelu": 8, "gelu_new": 8, "gelu_pytorch_tanh": 8, "relu": 1}
SILU_GATE_PER_ELEMENT = 5  # silu (neg, exp, add, divide) and the gate multiply
ROPE_PER_ELEMENT = 3  # two multiplies and an add per rotated element

Family = Literal["encoder", "decoder"]


class ConfigError(ValueError):
    """A config.json this module cannot read; ``str()`` names the key or type to fix."""


@dataclass(frozen=True)
class Shape:
    """What the FLOPs depend on, normalised across the Hugging Face config dialects."""

    model_type: str
    family: Family
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    embedding: int  # ALBERT factorises the embedding: vocab -> embedding -> hidden
    gated_mlp: bool
    activation: str
    rmsnorm: bool
    attn_bias: bool
    mlp_bias: bool
    token_types: int
    learned_positions: int
    rope: bool
    tie_embeddings: bool
    shared_layer_groups: int  # ALBERT shares weights across layers: params, not FLOPs
    num_labels: int


@dataclass(frozen=True)
class FlopsReport:
    """One forward pass. ``gflops`` is the headline: encoder forward or decoder prefill."""

    model_type: str
    family: Family
    seq_len: int
    batch: int
    gflops: float
    matmul_gflops: float
    elementwise_gflops: float
    attention_gflops: float  # the part quadratic in seq_len: scores, softmax, weighted sum
    parameters: int
    layers: int
    decode_gflops_per_token: float | None = None
    generate_gflops: float | None = None
    new_tokens: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _int(config: Mapping[str, Any], *keys: str, default: int | None = None) -> int:
    for key in keys:
        value = config.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"config key {key!r} must be a positive integer, got {value!r}")
            return value
    if default is not None:
        return default
    raise ConfigError(f"config.json lacks {' or '.join(repr(k) for k in keys)}")


def _labels(config: Mapping[str, Any]) -> int:
    id2label = config.get("id2label")
    if isinstance(id2label, Mapping) and id2label:
        return len(id2label)
    return _int(config, "num_labels", default=2)


ENCODERS = ("bert", "roberta", "distilbert", "albert")
DECODERS = ("gpt2", "llama", "mistral", "qwen2")


def shape_from_config(config: Mapping[str, Any]) -> Shape:
    """Normalise a Hugging Face config; raises ConfigError on an unknown ``model_type``."""
    model_type = config.get("model_type")
    if model_type in ("bert", "roberta", "albert"):
        hidden = _int(config, "hidden_size")
        heads = _int(config, "num_attention_heads")
        if hidden % heads:
            raise ConfigError(f"hidden_size {hidden} is not divisible by {heads} heads")
        return Shape(
            model_type=model_type,
            family="encoder",
            hidden=hidden,
            layers=_int(config, "num_hidden_layers"),
            heads=heads,
            kv_heads=heads,
            head_dim=hidden // heads,
            intermediate=_int(config, "intermediate_size"),
            vocab=_int(config, "vocab_size"),
            embedding=_int(config, "embedding_size", default=hidden),
            gated_mlp=False,
            activation=str(config.get("hidden_act", "gelu")),
            rmsnorm=False,
            attn_bias=True,
            mlp_bias=True,
            token_types=_int(config, "type_vocab_size", default=2),
            learned_positions=_int(config, "max_position_embeddings", default=512),
            rope=False,
            tie_embeddings=True,
            shared_layer_groups=(
                _int(config, "num_hidden_groups", default=1) if model_type == "albert" else 0
            ),
            num_labels=_labels(config),
        )
    if model_type == "distilbert":
        hidden = _int(config, "dim")
        heads = _int(config, "n_heads")
        if hidden % heads:
            raise ConfigError(f"dim {hidden} is not divisible by {heads} heads")
        return Shape(
            model_type=model_type,
            family="encoder",
            hidden=hidden,
            layers=_int(config, "n_layers"),
            heads=heads,
            kv_heads=heads,
            head_dim=hidden // heads,
            intermediate=_int(config, "hidden_dim"),
            vocab=_int(config, "vocab_size"),
            embedding=hidden,
            gated_mlp=False,
            activation=str(config.get("activation", "gelu")),
            rmsnorm=False,
            attn_bias=True,
            mlp_bias=True,
            token_types=0,
            learned_positions=(
                0
                if config.get("sinusoidal_pos_embds")
                else _int(config, "max_position_embeddings", default=512)
            ),
            rope=False,
            tie_embeddings=True,
            shared_layer_groups=0,
            num_labels=_labels(config),
        )
    if model_type == "gpt2":
        hidden = _int(config, "n_embd")
        heads = _int(config, "n_head")
        if hidden % heads:
            raise ConfigError(f"n_embd {hidden} is not divisible by {heads} heads")
        return Shape(
            model_type=model_type,
            family="decoder",
            hidden=hidden,
            layers=_int(config, "n_layer"),
            heads=heads,
            kv_heads=heads,
            head_dim=hidden // heads,
            intermediate=_int(config, "n_inner", default=4 * hidden),
            vocab=_int(config, "vocab_size"),
            embedding=hidden,
            gated_mlp=False,
            activation=str(config.get("activation_function", "gelu_new")),
            rmsnorm=False,
            attn_bias=True,
            mlp_bias=True,
            token_types=0,
            learned_positions=_int(config, "n_positions", default=1024),
            rope=False,
            tie_embeddings=True,
            shared_layer_groups=0,
            num_labels=0,
        )
    if model_type in ("llama", "mistral", "qwen2"):
        hidden = _int(config, "hidden_size")
        heads = _int(config, "num_attention_heads")
        kv_heads = _int(config, "num_key_value_heads", default=heads)
        if heads % kv_heads:
            raise ConfigError(f"{heads} attention heads are not a multiple of {kv_heads} kv heads")
        head_dim = _int(config, "head_dim", default=hidden // heads)
        attn_bias = bool(config.get("attention_bias", model_type == "qwen2"))
        return Shape(
            model_type=model_type,
            family="decoder",
            hidden=hidden,
            layers=_int(config, "num_hidden_layers"),
            heads=heads,
            kv_heads=kv_heads,
            head_dim=head_dim,
            intermediate=_int(config, "intermediate_size"),
            vocab=_int(config, "vocab_size"),
            embedding=hidden,
            gated_mlp=True,
            activation=str(config.get("hidden_act", "silu")),
            rmsnorm=True,
            attn_bias=attn_bias,
            mlp_bias=bool(config.get("mlp_bias", False)),
            token_types=0,
            learned_positions=0,
            rope=True,
            tie_embeddings=bool(config.get("tie_word_embeddings", False)),
            shared_layer_groups=0,
            num_labels=0,
        )
    known = ", ".join((*ENCODERS, *DECODERS))
    if model_type is None:
        raise ConfigError(f"config.json has no 'model_type' key; supported: {known}")
    raise ConfigError(f"unknown model_type {model_type!r} in config.json; supported: {known}")


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


def _norm(shape: Shape, elements: float) -> float:
    return (RMSNORM_PER_ELEMENT if shape.rmsnorm else LAYERNORM_PER_ELEMENT) * elements


def _layer(shape: Shape, queries: int, keys: int) -> _Count:
    """One transformer block: ``queries`` new positions attending over ``keys`` positions."""
    h, q, k = shape.hidden, queries, keys
    q_width = shape.heads * shape.head_dim
    kv_width = shape.kv_heads * shape.head_dim
    f = shape.intermediate
    projections = 2 * q * h * (q_width + 2 * kv_width) + 2 * q * q_width * h
    mlp = (3 if shape.gated_mlp else 2) * 2 * q * h * f
    # Scores (QK^T) and the weighted sum (AV): each head's queries against every key.
    attention_matmul = 2 * 2 * shape.heads * q * k * shape.head_dim
    softmax = SOFTMAX_PER_SCORE * shape.heads * q * k
    bias = (q * (q_width + 2 * kv_width + h) if shape.attn_bias else 0) + (
        q * ((2 if shape.gated_mlp else 1) * f + h) if shape.mlp_bias else 0
    )
    if shape.gated_mlp:
        activation = SILU_GATE_PER_ELEMENT * q * f
    else:
        activation = ACTIVATION_PER_ELEMENT.get(shape.activation, 8) * q * f
    rope = ROPE_PER_ELEMENT * q * (q_width + kv_width) if shape.rope else 0
    residual = 2 * q * h
    norms = 2 * _norm(shape, q * h)
    return _Count(
        matmul=projections + mlp + attention_matmul,
        elementwise=softmax + bias + activation + rope + residual + norms,
        attention=attention_matmul + softmax,
    )


def _embeddings(shape: Shape, queries: int) -> _Count:
    q, h, e = queries, shape.hidden, shape.embedding
    # Lookups cost no FLOPs; position and token-type vectors are added, then normalised.
    adds = (1 if shape.learned_positions else 0) + (1 if shape.token_types else 0)
    elementwise = float(adds * q * e)
    if shape.family == "encoder":
        elementwise += _norm(shape, q * e)
    matmul = 0.0
    if e != h:  # ALBERT's factorised embedding projects up to the hidden size
        matmul += 2 * q * e * h
        elementwise += q * h
    return _Count(matmul=matmul, elementwise=elementwise)


def _head(shape: Shape, positions: int) -> _Count:
    h = shape.hidden
    if shape.family == "encoder":
        # Sequence classification: pooler (dense + tanh) on the first token, then classifier.
        return _Count(
            matmul=2 * h * h + 2 * h * shape.num_labels,
            elementwise=h + 8 * h + shape.num_labels,
        )
    # Final norm on the positions whose logits are wanted, then the LM head.
    return _Count(
        matmul=2 * positions * h * shape.vocab,
        elementwise=_norm(shape, positions * h),
    )


def _forward(shape: Shape, queries: int, keys: int, logits_positions: int) -> _Count:
    total = _embeddings(shape, queries) + _layer(shape, queries, keys).scaled(shape.layers)
    return total + _head(shape, logits_positions)


def parameters(shape: Shape) -> int:
    """Parameter count (weights and biases) of the base model with its head."""
    h, f, e = shape.hidden, shape.intermediate, shape.embedding
    q_width = shape.heads * shape.head_dim
    kv_width = shape.kv_heads * shape.head_dim
    norm = h if shape.rmsnorm else 2 * h
    attn = h * q_width + 2 * h * kv_width + q_width * h
    if shape.attn_bias:
        attn += q_width + 2 * kv_width + h
    mlp = (3 if shape.gated_mlp else 2) * h * f
    if shape.mlp_bias:
        mlp += (2 if shape.gated_mlp else 1) * f + h
    layer = attn + mlp + 2 * norm
    distinct_layers = shape.shared_layer_groups or shape.layers
    total = distinct_layers * layer
    total += shape.vocab * e + (shape.learned_positions + shape.token_types) * e
    if shape.family == "encoder":
        total += 2 * e  # embedding norm
        if e != h:
            total += e * h + h
        total += h * h + h + h * shape.num_labels + shape.num_labels
    else:
        total += norm
        if not shape.tie_embeddings:
            total += h * shape.vocab
    return total


def count(
    config: Mapping[str, Any], seq_len: int, batch: int = 1, new_tokens: int | None = None
) -> FlopsReport:
    """FLOPs of one forward pass over ``batch`` sequences of ``seq_len`` tokens.

    Decoders: ``gflops`` is the prefill of a ``seq_len`` prompt (logits for its last token
    only, as a generating server computes); ``decode_gflops_per_token`` is one new token
    against a cache of ``seq_len``; with ``new_tokens`` M, ``generate_gflops`` is prefill
    plus M decode steps over a growing cache.
    """
    if seq_len <= 0 or batch <= 0:
        raise ConfigError(f"seq_len and batch must be positive, got {seq_len} and {batch}")
    if new_tokens is not None and new_tokens < 0:
        raise ConfigError(f"new_tokens must be zero or more, got {new_tokens}")
    shape = shape_from_config(config)
    if shape.learned_positions and seq_len > shape.learned_positions:
        raise ConfigError(
            f"seq_len {seq_len} exceeds the {shape.learned_positions} learned positions "
            "(max_position_embeddings) of this model"
        )
    logits = 1
    forward = _forward(shape, seq_len, seq_len, logits).scaled(batch)
    decode: float | None = None
    generate: float | None = None
    if shape.family == "decoder":
        step = _forward(shape, 1, seq_len + 1, 1).scaled(batch)
        decode = step.matmul + step.elementwise
        if new_tokens is not None:
            # Token i of the generation attends over the prompt plus the i tokens before it.
            steps = _Count()
            for i in range(new_tokens):
                steps = steps + _forward(shape, 1, seq_len + i + 1, 1)
            generate = forward.matmul + forward.elementwise
            generate += (steps.matmul + steps.elementwise) * batch
    return FlopsReport(
        model_type=shape.model_type,
        family=shape.family,
        seq_len=seq_len,
        batch=batch,
        gflops=(forward.matmul + forward.elementwise) / GIGA,
        matmul_gflops=forward.matmul / GIGA,
        elementwise_gflops=forward.elementwise / GIGA,
        attention_gflops=forward.attention / GIGA,
        parameters=parameters(shape),
        layers=shape.layers,
        decode_gflops_per_token=None if decode is None else decode / GIGA,
        generate_gflops=None if generate is None else generate / GIGA,
        new_tokens=new_tokens if shape.family == "decoder" else None,
    )


def load_config(path: Path) -> dict[str, Any]:
    """Read a config.json; raises ConfigError with the path on unreadable or non-object JSON."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read ({err})") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data
