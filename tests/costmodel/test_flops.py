"""Analytic FLOPs: the thesis's GFLOPs column reproduced, and the scaling laws as properties."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jouled.costmodel import datasets
from jouled.costmodel.flops import ConfigError, count, load_config

# Table 4.1 (four decimals) and Table 5.2 (BERT-large): GFLOPs at 512 tokens.
THESIS_GFLOPS = {
    "distilbert-base-uncased": 48.526,
    "bert-base-uncased": 97.119,
    "roberta-base": 97.042,
    "albert-base-v2": 97.178,
    "bert-large-uncased": 336.3,
}


def config(name: str) -> dict[str, Any]:
    return load_config(datasets.resolve_config(name))


@pytest.mark.parametrize(("name", "thesis"), sorted(THESIS_GFLOPS.items()))
def test_reproduces_thesis_gflops_within_2_percent(name: str, thesis: float) -> None:
    report = count(config(name), seq_len=512)
    assert report.gflops == pytest.approx(thesis, rel=0.02)
    # Tighter than the contract: the element-wise convention lands within 0.1 %.
    assert report.gflops == pytest.approx(thesis, rel=0.001)


def test_published_table_matches_the_test_constants() -> None:
    assert datasets.published()["gflops_at_512_tokens"] == THESIS_GFLOPS


@pytest.mark.parametrize(
    ("name", "millions"),
    [
        ("bert-base-uncased", 109.5),
        ("bert-large-uncased", 335.1),
        ("roberta-base", 124.6),
        ("distilbert-base-uncased", 67.0),
        ("albert-base-v2", 11.7),  # shared layers: 12 layers of compute, 1 of weights
        ("gpt2", 124.4),
        ("TinyLlama-1.1B-Chat-v1.0", 1100.0),
    ],
)
def test_parameter_counts_match_published_sizes(name: str, millions: float) -> None:
    assert count(config(name), 128).parameters / 1e6 == pytest.approx(millions, rel=0.01)


def test_albert_shares_weights_not_compute() -> None:
    albert = count(config("albert-base-v2"), 512)
    bert = count(config("bert-base-uncased"), 512)
    assert albert.parameters < bert.parameters / 9
    # Factorised embedding adds one 128 -> 768 projection per token, nothing else differs.
    assert albert.matmul_gflops - bert.matmul_gflops == pytest.approx(2 * 512 * 128 * 768 / 1e9)


def test_grouped_query_attention_and_gated_mlp() -> None:
    base = config("TinyLlama-1.1B-Chat-v1.0")
    mha = {**base, "num_key_value_heads": base["num_attention_heads"]}
    gqa_report, mha_report = count(base, 256), count(mha, 256)
    h, s, layers = 2048, 256, 22
    kv_saved = 2 * 2 * s * h * (h - 4 * 64) * layers  # K and V projections shrink 32 -> 4 heads
    assert (mha_report.matmul_gflops - gqa_report.matmul_gflops) * 1e9 == pytest.approx(kv_saved)
    # Gated MLP: three h x f matmuls per token.
    mlp = 3 * 2 * s * h * 5632 * layers
    assert gqa_report.matmul_gflops * 1e9 > mlp


def test_decoder_prefill_and_decode() -> None:
    gpt2 = config("gpt2")
    short, long = count(gpt2, 128), count(gpt2, 512, new_tokens=4)
    assert long.decode_gflops_per_token is not None and short.decode_gflops_per_token is not None
    # Decode is roughly 2 x parameters per token plus attention over the cache.
    assert 0.2 < long.decode_gflops_per_token < 0.3
    assert long.decode_gflops_per_token > short.decode_gflops_per_token
    assert long.generate_gflops is not None and long.decode_gflops is not None
    assert long.generate_gflops == pytest.approx(long.gflops + long.decode_gflops, rel=1e-12)
    # The prefill's logits give the first token: 4 new tokens are 3 decode steps, each
    # over a longer cache than the first.
    assert long.decode_steps == 3
    assert long.decode_gflops == pytest.approx(3 * long.decode_gflops_per_token, rel=0.01)
    assert long.decode_gflops > 3 * long.decode_gflops_per_token


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c.update(model_type="t5"), "unknown model_type 't5'"),
        (lambda c: c.pop("num_hidden_layers"), "num_hidden_layers"),
        (lambda c: c.update(hidden_size="big"), "hidden_size"),
        (lambda c: c.update(num_attention_heads=7), "divisible"),
    ],
)
def test_bad_configs_name_what_to_fix(mutate: Any, message: str) -> None:
    cfg = copy.deepcopy(config("bert-base-uncased"))
    mutate(cfg)
    with pytest.raises(ConfigError, match=message):
        count(cfg, 128)


def test_sequence_longer_than_learned_positions_is_refused() -> None:
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        count(config("bert-base-uncased"), 513)


def _synthetic(kind: str, layers: int, hidden_heads: int) -> dict[str, Any]:
    head_dim = 64
    hidden = hidden_heads * head_dim
    if kind == "bert":
        return {
            "model_type": "bert",
            "hidden_size": hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": hidden_heads,
            "intermediate_size": 4 * hidden,
            "vocab_size": 30522,
            "max_position_embeddings": 4096,
        }
    return {
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": hidden_heads,
        "num_key_value_heads": 1,
        "intermediate_size": 3 * hidden,
        "vocab_size": 32000,
    }


kinds = st.sampled_from(["bert", "llama"])
layer_counts = st.integers(1, 48)
heads = st.integers(1, 16)
seqs = st.integers(1, 1024)


@settings(max_examples=200, deadline=None)
@given(kinds, layer_counts, heads, seqs, st.integers(1, 64))
def test_flops_are_linear_in_batch(kind: str, layers: int, h: int, s: int, batch: int) -> None:
    cfg = _synthetic(kind, layers, h)
    one, many = count(cfg, s), count(cfg, s, batch=batch)
    assert many.gflops == pytest.approx(batch * one.gflops, rel=1e-12)
    assert many.attention_gflops == pytest.approx(batch * one.attention_gflops, rel=1e-12)


@settings(max_examples=200, deadline=None)
@given(kinds, layer_counts, heads, seqs)
def test_flops_are_linear_in_layers(kind: str, layers: int, h: int, s: int) -> None:
    f1, f2, f3 = (count(_synthetic(kind, n, h), s).gflops for n in (layers, layers + 1, 2 * layers))
    per_layer = f2 - f1
    assert per_layer > 0
    # Affine: embeddings and head once, then the same cost for every added layer.
    assert f3 - f1 == pytest.approx(layers * per_layer, rel=1e-9)
    a1 = count(_synthetic(kind, layers, h), s).attention_gflops
    a3 = count(_synthetic(kind, 2 * layers, h), s).attention_gflops
    assert a3 == pytest.approx(2 * a1, rel=1e-12)


@settings(max_examples=200, deadline=None)
@given(kinds, layer_counts, heads, st.integers(1, 512), st.integers(2, 4))
def test_attention_is_quadratic_in_sequence_length(
    kind: str, layers: int, h: int, s: int, k: int
) -> None:
    cfg = _synthetic(kind, layers, h)
    short, long = count(cfg, s), count(cfg, k * s)
    if kind == "bert":  # every position attends to every position: s² pairs
        assert long.attention_gflops == pytest.approx(k * k * short.attention_gflops, rel=1e-12)
    else:  # causal: position i attends to its i keys, s(s + 1)/2 pairs
        pairs = (s * (s + 1) // 2, k * s * (k * s + 1) // 2)
        assert long.attention_gflops * pairs[0] == pytest.approx(
            short.attention_gflops * pairs[1], rel=1e-12
        )
    # Everything else (projections, MLP, norms) is affine in tokens: zero second difference.
    if kind == "bert":
        rest = [count(cfg, n * s).gflops - count(cfg, n * s).attention_gflops for n in (1, 2, 3)]
        assert rest[2] - 2 * rest[1] + rest[0] == pytest.approx(0.0, abs=1e-9 * rest[2])
