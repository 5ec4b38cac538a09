"""Hostile files at a ``spans.model_configs`` path (and the other small files a config names:
the fit file, token files): refused at once with the key or the path to fix, never read
whole, never waited on, never an exception other than the one the daemon reports."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from jouled.config import validate
from jouled.costmodel.configjson import ConfigError, load_config
from jouled.costmodel.decoder import RequestWork
from jouled.costmodel.fitfile import FitFileError, load_fit
from jouled.daemon.service import StartupError, _load_model_configs, _read_token

LLAMA = {
    "model_type": "llama",
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "num_hidden_layers": 32,
    "intermediate_size": 14336,
    "vocab_size": 128256,
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # An int past any float: OverflowError escaped the daemon's start (a traceback).
        ({"hidden_size": 10**400}, "'hidden_size' is 1000.*: more than 1099511627776"),
        # 10^9 Qwen2 layers: a loop per layer ran for minutes.
        (
            {"model_type": "qwen2", "num_hidden_layers": 10**9, "use_sliding_window": True},
            "'num_hidden_layers' is 1000000000: more than 100000",
        ),
        ({"num_attention_heads": 0}, "'num_attention_heads' must be a positive integer, got 0"),
        ({"num_key_value_heads": None}, None),  # absent: as many as the heads (MHA)
        ({"hidden_size": None}, "lacks 'hidden_size'"),
        ({"vocab_size": 1e400}, "'vocab_size' must be a positive integer, got inf"),
    ],
)
def test_hostile_numbers_are_refused_with_the_key(change: dict[str, Any], message: str) -> None:
    config = {k: v for k, v in {**LLAMA, **change}.items() if v is not None}
    if message is None:
        assert RequestWork.from_config(config)(512, 128) > 0
        return
    with pytest.raises(ConfigError, match=message):
        RequestWork.from_config(config)


def test_a_fifo_or_a_huge_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)  # read_text() waited for a writer: the daemon never started
    huge = tmp_path / "huge.json"
    with huge.open("wb") as fh:
        fh.truncate(1 << 30)  # 1 GiB (sparse): read whole, then parsed, before
    start = time.monotonic()
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(fifo)
    with pytest.raises(ConfigError, match=r"1073741824 bytes; a config\.json may hold at most"):
        load_config(huge)
    with pytest.raises(FitFileError, match="not a regular file"):
        load_fit(fifo)
    with pytest.raises(StartupError, match=r"ingest\.token_file: cannot use .*not a regular file"):
        _read_token(fifo)
    assert time.monotonic() - start < 1.0


def test_the_daemon_refuses_to_start_on_an_absurd_config_with_the_models_name(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"model_type": "llama", "hidden_size": 1' + "0" * 400 + "}")
    cfg = validate({"spans": {"model_configs": {"big": str(path)}}}, "test")
    with pytest.raises(StartupError, match=r"spans.model_configs\['big'\]: .*'hidden_size' is"):
        _load_model_configs(cfg)


@pytest.mark.parametrize(
    "text",
    [
        '{"hidden_size": 1' + "0" * 5000 + "}",  # ValueError (int_max_str_digits) escaped
        "[" * 100_000 + "]" * 100_000,
    ],
)
def test_json_python_cannot_hold_is_refused_as_invalid(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(path)
    with pytest.raises(FitFileError, match="not valid JSON"):
        load_fit(path)
