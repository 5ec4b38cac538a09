"""The fit file and the hardware presets: stdlib only, strict validation, immutable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jouled.costmodel.fitfile import Fit, FitFileError, ModelEntry, load_fit, write_fit
from jouled.costmodel.hardware import PRESETS, HardwareError, from_dict, lookup


def test_round_trip(tmp_path: Path) -> None:
    fit = Fit(
        slope_joules_per_gflop=1.5,
        intercept_joules=2.0,
        r2=0.9,
        n=4,
        models={"bert": ModelEntry(gflops=97.1, joules_per_request=147.65)},
    )
    path = tmp_path / "fit.json"
    write_fit(fit, path)
    loaded = load_fit(path)
    assert loaded.predict_joules(10.0) == pytest.approx(17.0)
    assert loaded.joules_for_model("bert") == pytest.approx(147.65)
    assert loaded.joules_for_model("gpt2") is None
    assert dict(loaded.predicted_joules_per_request) == {"bert": pytest.approx(147.65)}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"schema": "other"}, "schema"),
        ({"schema": "jouled.costmodel.fit/1"}, "slope_joules_per_gflop"),
        ({"schema": "jouled.costmodel.fit/1", "slope_joules_per_gflop": "x"}, "finite number"),
        (
            {"schema": "jouled.costmodel.fit/1", "slope_joules_per_gflop": 1, "models": {"a": {}}},
            r"models\['a'\]: missing key 'gflops'",
        ),
    ],
)
def test_bad_fit_files_name_the_key(tmp_path: Path, data: object, message: str) -> None:
    path = tmp_path / "fit.json"
    path.write_text(json.dumps(data))
    with pytest.raises(FitFileError, match=message):
        load_fit(path)


def test_unreadable_fit_file(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(FitFileError, match="not valid JSON"):
        load_fit(tmp_path / "bad.json")
    with pytest.raises(FitFileError, match="no such fit file"):
        load_fit(tmp_path / "missing.json")


def test_negative_gflops_refused() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        Fit(slope_joules_per_gflop=1.0).predict_joules(-1.0)


def test_daemon_side_modules_import_no_heavy_libraries() -> None:
    code = (
        "import sys; import jouled.costmodel, jouled.costmodel.fitfile, "
        "jouled.costmodel.hardware, jouled.costmodel.predict, jouled.costmodel.flops, "
        "jouled.costmodel.cli, jouled.costmodel.decoder, jouled.daemon.service; "
        "heavy = {'numpy', 'pandas', 'scipy', 'matplotlib'} & set(sys.modules); "
        "print(sorted(heavy)); raise SystemExit(1 if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_presets_are_the_thesis_tables_and_immutable() -> None:
    assert PRESETS["A100"].price_per_hour_usd == 3.3741
    assert PRESETS["A100"].tflops_per_joule("fp16") == 0.89
    assert PRESETS["H100"].tflops_per_joule("fp8") == 2.86
    assert {k: PRESETS[k].tflops_per_joule() for k in ("T4", "P4", "V100", "P100", "K80")} == {
        "T4": 0.12,
        "P4": 0.08,
        "V100": 0.06,
        "P100": 0.04,
        "K80": 0.03,
    }
    with pytest.raises(TypeError):
        PRESETS["X"] = PRESETS["T4"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        PRESETS["T4"].price_per_hour_usd = 0.0  # type: ignore[misc]


def test_lookup_and_user_entries() -> None:
    assert lookup("a100").name == "A100"
    user = from_dict({"name": "L4", "per_hour": 0.7, "tflops_per_joule_fp32": 0.17})
    assert lookup("l4", {"L4": user}).flops_per_joule() == pytest.approx(0.17e12)
    with pytest.raises(HardwareError, match="unknown hardware"):
        lookup("TPUv9")
    with pytest.raises(HardwareError, match="positive"):
        from_dict({"name": "L4", "per_hour": -1})
    with pytest.raises(HardwareError, match="unknown keys"):
        from_dict({"name": "L4", "watts": 72})
