"""Decoder-only and mixture-of-experts LLM shapes from a Hugging Face ``config.json``.

Reads each family's own keys (GPT-2, Llama, Mistral, Mixtral, Qwen2, Qwen2-MoE, Gemma, Phi-3,
Falcon) into one ``DecoderShape``: grouped-query attention, gated or plain MLPs, experts
(top-k, shared), sliding windows per layer, biases, tied heads. Stdlib only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jouled.costmodel.configjson import MAX_LAYERS, ConfigError, positive_int

DECODERS = (
    "gpt2",
    "llama",
    "mistral",
    "mixtral",
    "qwen2",
    "qwen2_moe",
    "gemma",
    "phi3",
    "falcon",
)


@dataclass(frozen=True)
class LayerKind:
    """``count`` layers that cost the same: their MLP and their attention window."""

    count: int
    window: int | None  # keys a position attends to at most (itself included); None: all
    ffn: int  # dense MLP width; 0 in mixture-of-experts layers
    experts: int = 0  # routed experts (0: a dense layer)
    top_k: int = 0  # experts each token goes to
    expert_ffn: int = 0
    shared_ffn: int = 0  # Qwen2-MoE's shared expert (0: none)


@dataclass(frozen=True)
class DecoderShape:
    """What the FLOPs depend on, normalised across the config dialects."""

    model_type: str
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    layers: tuple[LayerKind, ...]
    gated: bool  # gate * act(up) MLP (SwiGLU, GeGLU) rather than act(up)
    activation: str
    rmsnorm: bool
    norms_per_layer: int
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    rotary_fraction: float  # of each head's dims rotated by RoPE (0: no RoPE)
    learned_positions: int  # GPT-2's position table (0: none)
    embed_scale: bool  # Gemma multiplies the embeddings by sqrt(hidden)
    tie_embeddings: bool
    alibi: bool  # Falcon's ALiBi: one bias add per attention score

    @property
    def num_layers(self) -> int:
        return sum(kind.count for kind in self.layers)


def _window(config: Mapping[str, Any], key: str = "sliding_window") -> int | None:
    if config.get(key) is None:
        return None
    return positive_int(config, key)


def _layer_kinds(config: Mapping[str, Any], model_type: str, layers: int) -> tuple[LayerKind, ...]:
    ffn = positive_int(config, "intermediate_size", "ffn_hidden_size", default=0)
    if model_type == "mixtral":
        experts = positive_int(config, "num_local_experts")
        kind = LayerKind(
            count=layers,
            window=_window(config),
            ffn=0,
            experts=experts,
            top_k=positive_int(config, "num_experts_per_tok"),
            expert_ffn=positive_int(config, "intermediate_size"),
        )
        return (_checked_moe(kind),)
    window = _window(config) if model_type in ("mistral", "phi3") else None
    if model_type not in ("qwen2", "qwen2_moe"):
        if not ffn:
            raise ConfigError("config.json lacks 'intermediate_size'")
        return (LayerKind(count=layers, window=window, ffn=ffn),)
    # Qwen2: layers from max_window_layers on use the window, when use_sliding_window is set.
    first_windowed = layers
    if config.get("use_sliding_window"):
        window = _window(config)
        first_windowed = positive_int(config, "max_window_layers", default=layers)
    experts = positive_int(config, "num_experts", default=0) if model_type == "qwen2_moe" else 0
    step = positive_int(config, "decoder_sparse_step", default=1)
    dense_only = config.get("mlp_only_layers") or []
    if not isinstance(dense_only, list) or not all(isinstance(i, int) for i in dense_only):
        raise ConfigError("config key 'mlp_only_layers' must be a list of layer numbers")
    kinds: dict[LayerKind, int] = {}
    for i in range(layers):
        sparse = experts > 0 and i not in dense_only and (i + 1) % step == 0
        kind = LayerKind(
            count=0,
            window=window if i >= first_windowed else None,
            ffn=0 if sparse else ffn,
            experts=experts if sparse else 0,
            top_k=positive_int(config, "num_experts_per_tok") if sparse else 0,
            expert_ffn=positive_int(config, "moe_intermediate_size") if sparse else 0,
            shared_ffn=(
                positive_int(config, "shared_expert_intermediate_size", default=0) if sparse else 0
            ),
        )
        if not sparse and not ffn:
            raise ConfigError("config.json lacks 'intermediate_size'")
        kinds[kind] = kinds.get(kind, 0) + 1
    return tuple(
        _checked_moe(LayerKind(n, k.window, k.ffn, k.experts, k.top_k, k.expert_ffn, k.shared_ffn))
        for k, n in kinds.items()
    )


def _checked_moe(kind: LayerKind) -> LayerKind:
    if kind.experts and kind.top_k > kind.experts:
        raise ConfigError(
            f"num_experts_per_tok {kind.top_k} is more than the {kind.experts} experts"
        )
    return kind


def _heads(config: Mapping[str, Any], hidden: int, *keys: str) -> tuple[int, int]:
    """(attention heads, head width): ``head_dim`` where the config sets it (Gemma)."""
    heads = positive_int(config, *keys)
    if config.get("head_dim") is not None:
        return heads, positive_int(config, "head_dim")
    if hidden % heads:
        raise ConfigError(f"hidden size {hidden} is not divisible by {heads} heads")
    return heads, hidden // heads


def _gqa(config: Mapping[str, Any], heads: int) -> int:
    kv_heads = positive_int(config, "num_key_value_heads", default=heads)
    if heads % kv_heads:
        raise ConfigError(f"{heads} attention heads are not a multiple of {kv_heads} kv heads")
    return kv_heads


def decoder_shape(config: Mapping[str, Any]) -> DecoderShape:
    """Normalise a decoder's config; raises ConfigError naming the key to fix."""
    model_type = str(config.get("model_type"))
    if model_type == "gpt2":
        hidden = positive_int(config, "n_embd")
        heads, head_dim = _heads(config, hidden, "n_head")
        layers = positive_int(config, "n_layer", at_most=MAX_LAYERS)
        return DecoderShape(
            model_type=model_type,
            hidden=hidden,
            heads=heads,
            kv_heads=heads,
            head_dim=head_dim,
            vocab=positive_int(config, "vocab_size"),
            layers=(
                LayerKind(
                    count=layers,
                    window=None,
                    ffn=positive_int(config, "n_inner", default=4 * hidden),
                ),
            ),
            gated=False,
            activation=str(config.get("activation_function", "gelu_new")),
            rmsnorm=False,
            norms_per_layer=2,
            qkv_bias=True,
            o_bias=True,
            mlp_bias=True,
            rotary_fraction=0.0,
            learned_positions=positive_int(config, "n_positions", default=1024),
            embed_scale=False,
            tie_embeddings=True,
            alibi=False,
        )
    if model_type == "falcon":
        return _falcon(config)
    if model_type not in DECODERS:
        if config.get("model_type") is None:
            raise ConfigError(
                f"config.json has no 'model_type' key; decoders: {', '.join(DECODERS)}"
            )
        raise ConfigError(
            f"not a decoder model_type: {model_type!r}; decoders: {', '.join(DECODERS)}"
        )
    hidden = positive_int(config, "hidden_size")
    heads, head_dim = _heads(config, hidden, "num_attention_heads")
    attention_bias = bool(config.get("attention_bias", False))
    qwen = model_type in ("qwen2", "qwen2_moe")
    activation = config.get("hidden_activation") or config.get("hidden_act") or "silu"
    return DecoderShape(
        model_type=model_type,
        hidden=hidden,
        heads=heads,
        kv_heads=_gqa(config, heads),
        head_dim=head_dim,
        vocab=positive_int(config, "vocab_size"),
        layers=_layer_kinds(
            config, model_type, positive_int(config, "num_hidden_layers", at_most=MAX_LAYERS)
        ),
        gated=True,
        activation=str(activation),
        rmsnorm=True,
        norms_per_layer=2,
        # Qwen2 projects q, k and v with a bias and the output without one.
        qkv_bias=qwen or attention_bias,
        o_bias=attention_bias and not qwen,
        mlp_bias=bool(config.get("mlp_bias", False)),
        rotary_fraction=float(config.get("partial_rotary_factor", 1.0)),
        learned_positions=0,
        embed_scale=model_type == "gemma",
        tie_embeddings=bool(config.get("tie_word_embeddings", model_type == "gemma")),
        alibi=False,
    )


def _falcon(config: Mapping[str, Any]) -> DecoderShape:
    hidden = positive_int(config, "hidden_size")
    heads, head_dim = _heads(config, hidden, "num_attention_heads", "n_head")
    new_arch = bool(config.get("new_decoder_architecture", False))
    if new_arch:
        kv_heads = positive_int(config, "num_kv_heads", default=heads)
    else:
        kv_heads = 1 if config.get("multi_query", True) else heads
    if heads % kv_heads:
        raise ConfigError(f"{heads} attention heads are not a multiple of {kv_heads} kv heads")
    if new_arch:
        norms = positive_int(config, "num_ln_in_parallel_attn", default=2)
    else:
        norms = 1 if config.get("parallel_attn", True) else 2
    bias = bool(config.get("bias", False))
    layers = positive_int(config, "num_hidden_layers", "n_layer", at_most=MAX_LAYERS)
    ffn = positive_int(config, "ffn_hidden_size", default=4 * hidden)
    alibi = bool(config.get("alibi", False))
    return DecoderShape(
        model_type="falcon",
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        vocab=positive_int(config, "vocab_size"),
        layers=(LayerKind(count=layers, window=None, ffn=ffn),),
        gated=False,
        activation=str(config.get("activation", "gelu")),
        rmsnorm=False,
        norms_per_layer=norms,
        qkv_bias=bias,
        o_bias=bias,
        mlp_bias=bias,
        rotary_fraction=0.0 if alibi else 1.0,
        learned_positions=0,
        embed_scale=False,
        tie_embeddings=bool(config.get("tie_word_embeddings", True)),
        alibi=alibi,
    )


def parameters(shape: DecoderShape) -> tuple[int, int]:
    """(all parameters, parameters active for one token): they differ for experts."""
    h = shape.hidden
    q_width = shape.heads * shape.head_dim
    kv_width = shape.kv_heads * shape.head_dim
    norm = h if shape.rmsnorm else 2 * h
    attention = 2 * h * q_width + 2 * h * kv_width
    attention += (q_width + 2 * kv_width if shape.qkv_bias else 0) + (h if shape.o_bias else 0)

    def mlp(width: int) -> int:
        if shape.gated:
            return 3 * h * width + (2 * width + h if shape.mlp_bias else 0)
        return 2 * h * width + (width + h if shape.mlp_bias else 0)

    total = active = 0
    for kind in shape.layers:
        base = attention + shape.norms_per_layer * norm
        if kind.experts:
            shared = mlp(kind.shared_ffn) + h if kind.shared_ffn else 0
            router = h * kind.experts
            every = base + router + kind.experts * mlp(kind.expert_ffn) + shared
            used = base + router + kind.top_k * mlp(kind.expert_ffn) + shared
        else:
            every = used = base + mlp(kind.ffn)
        total += kind.count * every
        active += kind.count * used
    outer = (shape.vocab + shape.learned_positions) * h + norm
    if not shape.tie_embeddings:
        outer += h * shape.vocab
    return total + outer, active + outer
