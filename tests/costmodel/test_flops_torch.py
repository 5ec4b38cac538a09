"""The decoder matmul count against ``torch.utils.flop_counter`` on real Hugging Face models.

Each packaged architecture is shrunk (2 layers, small widths, the same code paths) and built
with random weights; its base model (no LM head) runs a prompt under ``FlopCounterMode``.
Eager attention multiplies the whole P x P score matrix and masks it afterwards, so the
expected count is jouled's prefill matmul with the LM head taken out and the causal pairs
(within the sliding window) replaced by all P² pairs. Mixture-of-experts models are left
out: the counter misses their per-expert matmuls (issue 12). Skipped where torch and
transformers are not installed (jouled does not depend on them).
"""

from __future__ import annotations

from typing import Any

import pytest

from jouled.costmodel import datasets
from jouled.costmodel.decoder import TokenCost, attended_keys, decoder_shape
from jouled.costmodel.flops import load_config

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SHRINK: dict[str, dict[str, Any]] = {
    "Meta-Llama-3-8B": {"num_attention_heads": 4, "num_key_value_heads": 2},
    "Mistral-7B-v0.1": {"num_attention_heads": 4, "num_key_value_heads": 2, "sliding_window": 8},
    "Qwen2-0.5B": {"num_attention_heads": 4, "num_key_value_heads": 2},
    "gemma-2b": {"num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 32},
    "Phi-3-mini-4k-instruct": {"num_attention_heads": 4, "num_key_value_heads": 4},
    "falcon-7b": {"num_attention_heads": 4},
    "gpt2": {"n_embd": 64, "n_head": 4, "n_layer": 2, "n_inner": None},
}
PROMPT = 24


def shrunk(name: str) -> dict[str, Any]:
    config = load_config(datasets.resolve_config(name))
    config.pop("_name_or_path", None)
    if config["model_type"] != "gpt2":
        config.update(hidden_size=64, intermediate_size=96, num_hidden_layers=2)
    config.update(vocab_size=512, **SHRINK[name])
    return config


@pytest.mark.parametrize("name", sorted(SHRINK))
def test_matmul_flops_match_torch_flop_counter(name: str) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    config = shrunk(name)
    hf_config = transformers.AutoConfig.for_model(**config)
    hf_config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(hf_config).eval()
    ids = torch.randint(0, 512, (1, PROMPT))
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.base_model(input_ids=ids)
    measured = counter.get_total_flops()

    shape = decoder_shape(config)
    prefill = TokenCost.from_shape(shape).prefill(PROMPT)
    per_pair = 4 * shape.heads * shape.head_dim * shape.num_layers
    (kind,) = shape.layers
    counted = attended_keys(PROMPT, kind.window)  # causal, within the sliding window
    expected = prefill.matmul - 2 * shape.hidden * shape.vocab + per_pair * (PROMPT**2 - counted)
    assert measured == expected
