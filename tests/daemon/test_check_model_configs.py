"""``jouled check`` reads each ``spans.model_configs`` file as the daemon will, and fails
(exit 1, with the fix) where ``jouled run`` would refuse to start."""

from __future__ import annotations

from pathlib import Path

import pytest

from jouled.costmodel import datasets
from tests.daemon.test_check_cli import run_check

OFF = {"rapl": {"enabled": False}, "nvml": {"enabled": False}, "estimate": {"enabled": False}}


def test_check_shows_what_each_model_config_charges(tmp_path: Path) -> None:
    llama = datasets.resolve_config("Meta-Llama-3-8B")
    mixtral = datasets.resolve_config("Mixtral-8x7B-v0.1")
    cfg = {
        "collectors": OFF,
        "spans": {"model_configs": {"llama": str(llama), "mix": str(mixtral)}},
    }
    out = run_check(tmp_path, cfg)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("model_config")]
    assert len(rows) == 2 and all(" ok " in row for row in rows)
    assert "llama, 8.03 B parameters; 512 + 128 tokens: 9,164.9 GFLOPs" in rows[0]
    assert "46.70 B parameters (12.88 B active)" in rows[1]


def test_check_fails_on_a_config_the_daemon_would_refuse(tmp_path: Path) -> None:
    bert = datasets.resolve_config("bert-base-uncased")
    missing = tmp_path / "missing.json"
    cfg = {"collectors": OFF, "spans": {"model_configs": {"bert": str(bert), "x": str(missing)}}}
    out = run_check(tmp_path, cfg)
    assert out.returncode == 1
    assert "not a decoder model_type: 'bert'" in out.stdout
    assert "missing.json: no such file" in out.stdout
    assert "fix: give spans.model_configs['bert'] a decoder's config.json" in out.stdout
    assert "spans.model_configs cannot be used for: bert" in out.stdout


def test_a_packaged_name_or_repository_id_works_as_in_model_flops(tmp_path: Path) -> None:
    """`jouled model flops --config meta-llama/Meta-Llama-3-8B` takes a packaged config by
    name; spans.model_configs takes the same names (no file to save first), in check and
    in the daemon, and an unknown name lists the packaged ones."""
    from jouled.config import validate
    from jouled.daemon.service import StartupError, _load_model_configs

    names = {"llama": "meta-llama/Meta-Llama-3-8B", "mix": "Mixtral-8x7B-v0.1"}
    out = run_check(tmp_path, {"collectors": OFF, "spans": {"model_configs": names}})
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("model_config")]
    assert "512 + 128 tokens: 9,164.9 GFLOPs" in rows[0]
    assert "46.70 B parameters (12.88 B active)" in rows[1]
    work = _load_model_configs(validate({"spans": {"model_configs": names}}, "t"))
    assert round(work["llama"](512, 128), 3) == 9164.932  # docs/COSTMODEL.md's worked example

    out = run_check(tmp_path, {"collectors": OFF, "spans": {"model_configs": {"x": "Llama-9"}}})
    assert out.returncode == 1
    assert (
        "'Llama-9' is neither a file nor a packaged config; packaged: Llama-2-7b-hf" in out.stdout
    )
    with pytest.raises(StartupError, match=r"spans.model_configs\['x'\]: 'Llama-9' is neither"):
        _load_model_configs(validate({"spans": {"model_configs": {"x": "Llama-9"}}}, "t"))
