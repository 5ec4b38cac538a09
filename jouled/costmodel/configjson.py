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

from jouled.files import FileReadError, read_small_file

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
ROPE_PER_ELEMENT = 3  # two multiplies and an add per rotated element
SIGMOID_PER_ELEMENT = 4  # neg, exp, add, divide


class ConfigError(ValueError):
    """A config.json this module cannot read; ``str()`` names the key or type to fix."""


# The largest size or count a config.json may give (2^40: a trillion; real ones are under
# 2^25), so that products of a few of them stay finite floats.
MAX_CONFIG_INT = 2**40
# The most layers (real decoders have at most a few hundred; some counts loop per layer).
MAX_LAYERS = 100_000


def positive_int(
    config: Mapping[str, Any],
    *keys: str,
    default: int | None = None,
    at_most: int = MAX_CONFIG_INT,
) -> int:
    """The first of ``keys`` that is set, as a positive int of at most ``at_most``;
    ``default`` when none is set. ``ConfigError`` names the key otherwise."""
    for key in keys:
        value = config.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"config key {key!r} must be a positive integer, got {value!r}")
            if value > at_most:
                raise ConfigError(
                    f"config key {key!r} is {value}: more than {at_most} is no real model"
                )
            return value
    if default is not None:
        return default
    raise ConfigError(f"config.json lacks {' or '.join(repr(k) for k in keys)}")


def activation_cost(name: str) -> int:
    return ACTIVATION_PER_ELEMENT.get(name, ACTIVATION_PER_ELEMENT["gelu"])


# A config.json is a few kB (a large id2label map: hundreds of kB); anything bigger is not
# one, and is refused before it is read into memory.
MAX_CONFIG_JSON_BYTES = 4 * 1024 * 1024


def load_config(path: Path) -> dict[str, Any]:
    """Read a config.json; raises ConfigError with the path on a missing, unreadable,
    non-regular (a FIFO is refused, never waited on) or oversized file (over
    ``MAX_CONFIG_JSON_BYTES``), on non-UTF-8 or invalid JSON, or a non-object."""
    try:
        raw = read_small_file(path, MAX_CONFIG_JSON_BYTES, "config.json")
    except FileReadError as err:
        if not path.exists():
            raise ConfigError(f"{path}: no such file") from None
        if path.is_dir():
            raise ConfigError(f"{path}: is a directory, not a config.json") from None
        raise ConfigError(str(err)) from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: cannot read ({err})") from None
    except (json.JSONDecodeError, RecursionError, ValueError) as err:
        # ValueError: an integer of over 4,300 digits (Python's int_max_str_digits).
        where = f"line {err.lineno}: {err.msg}" if isinstance(err, json.JSONDecodeError) else err
        raise ConfigError(f"{path}: not valid JSON ({where})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def load_model_config(path: Path) -> dict[str, Any]:
    """``load_config`` of a file; where no such file exists, of the packaged config of that
    name (``Meta-Llama-3-8B``, or the repository ``meta-llama/Meta-Llama-3-8B``), as
    ``jouled model flops --config`` resolves it. ConfigError lists the packaged names."""
    if not path.exists() and path.suffix != ".json":
        from jouled.costmodel.datasets import resolve_config

        try:
            path = resolve_config(str(path))
        except FileNotFoundError as exc:
            raise ConfigError(str(exc)) from None
    return load_config(path)
