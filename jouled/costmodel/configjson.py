"""Reading a Hugging Face ``config.json``, and the FLOP conventions every count shares.

A multiply-add counts as 2 FLOPs (an (m, k) by (k, n) matmul is 2·m·k·n). Element-wise work
(bias adds, residual adds, norms, softmax, activations) is counted with the small per-element
constants below: conventions, not measurements, roughly what a graph profiler (TensorFlow's,
which the thesis used) charges for the primitive ops each step expands to. Stdlib only: the
daemon imports this to turn token counts into work.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

GIGA = 1e9

LAYERNORM_PER_ELEMENT = 7  # mean, subtract, square, mean, scale, gamma, beta
RMSNORM_PER_ELEMENT = 4  # square, mean, scale, gamma
SOFTMAX_PER_SCORE = 5  # 1/sqrt(d) scale, mask add, exp, sum, divide
# Activation functions, FLOPs per element (unknown names count as GELU).
ACTIVATION_PER_ELEMENT = {
    "gelu": 8,
    "gelu_new": 8,
    "gelu_fast": 8,
    "gelu_pytorch_tanh": 8,
    "silu": 4,  # neg, exp, add, divide
    "swish": 4,
    "relu": 1,
}
GATE_PER_ELEMENT = 1  # the multiply of a gated MLP (SwiGLU, GeGLU)
SILU_GATE_PER_ELEMENT = ACTIVATION_PER_ELEMENT["silu"] + GATE_PER_ELEMENT
ROPE_PER_ELEMENT = 3  # two multiplies and an add per rotated element
SIGMOID_PER_ELEMENT = 4  # neg, exp, add, divide


class ConfigError(ValueError):
    """A config.json this module cannot read; ``str()`` names the key or type to fix."""


def positive_int(config: Mapping[str, Any], *keys: str, default: int | None = None) -> int:
    """The first of ``keys`` that is set, as a positive int; ``default`` when none is set."""
    for key in keys:
        value = config.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"config key {key!r} must be a positive integer, got {value!r}")
            return value
    if default is not None:
        return default
    raise ConfigError(f"config.json lacks {' or '.join(repr(k) for k in keys)}")


def activation_cost(name: str) -> int:
    return ACTIVATION_PER_ELEMENT.get(name, ACTIVATION_PER_ELEMENT["gelu"])


def load_config(path: Path) -> dict[str, Any]:
    """Read a config.json; raises ConfigError with the path on unreadable or non-object JSON."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config.json") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read ({err})") from None
    except (json.JSONDecodeError, RecursionError) as err:
        where = f"line {err.lineno}: {err.msg}" if isinstance(err, json.JSONDecodeError) else err
        raise ConfigError(f"{path}: not valid JSON ({where})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data
