"""Hand counts written out from the formulas, for tests that need an independent number."""

from __future__ import annotations


def pairs(positions: int, window: int | None = None) -> int:
    """Causal (query, key) pairs over ``positions``, one position at a time."""
    return sum(min(i, window or i) for i in range(1, positions + 1))


def llama3_8b_request(prompt: int, new: int) -> tuple[int, int]:
    """(prefill, decode) FLOPs of Meta-Llama-3-8B, every FLOP, from its config.json values.

    Prefill: the prompt's positions and one row of logits; decode: N - 1 steps, step j
    attending to P + j keys. Linear layers 2·in·out per token; attention 4·head_dim per
    (query, key) pair and head, softmax 5 per score; RMSNorm 4, RoPE 3, SiLU and gate 5,
    residual add 1 per element.
    """
    h, f, layers, heads, kv, hd, vocab = 4096, 14336, 32, 32, 8, 128, 128256
    projections = 2 * h * heads * hd + 2 * 2 * h * kv * hd + 2 * heads * hd * h
    per_token = layers * (
        projections
        + 3 * 2 * h * f  # gate, up and down projections
        + 2 * 4 * h  # two RMSNorms
        + 3 * (heads + kv) * hd  # RoPE on queries and keys
        + 2 * h  # two residual adds
        + 5 * f  # SiLU (4) and the gate multiply (1)
    )
    per_pair = layers * heads * (4 * hd + 5)
    per_logits_row = 4 * h + 2 * h * vocab  # final norm and LM head
    prefill = prompt * per_token + pairs(prompt) * per_pair + (per_logits_row if prompt else 0)
    decode = sum(per_token + (prompt + j) * per_pair + per_logits_row for j in range(1, new))
    return prefill, decode
