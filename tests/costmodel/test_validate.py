"""Section 5.4 reproduced: BERT-large held out, predicted against measured."""

from __future__ import annotations

import pytest

from jouled.costmodel import datasets
from jouled.costmodel.fit import MeasurementError, read_measurements
from jouled.costmodel.validate import holdout_validation, summary, thesis_validation


def by_method(event: str) -> dict[str, object]:
    return {c.method: c for c in thesis_validation() if c.event == event}


def test_inference_holdout_reproduces_table_5_3() -> None:
    check = by_method("inference")["gflops anchored (thesis)"]
    assert check.measured == 45_886.2  # type: ignore[attr-defined]
    assert check.predicted == pytest.approx(63_148.1, rel=0.001)  # type: ignore[attr-defined]
    assert check.error_percent == pytest.approx(37.6, abs=0.1)  # type: ignore[attr-defined]


def test_fine_tune_and_cold_start_reproduce_table_5_3() -> None:
    tune = by_method("fine-tune")["thesis beta1 + beta2 (Eq. 5.3)"]
    assert round(tune.predicted, 1) == 11.2  # type: ignore[attr-defined]
    assert tune.measured == 16.7  # type: ignore[attr-defined]
    cold = by_method("cold start")["thesis constant 250 J"]
    assert cold.error_percent == pytest.approx(-32.7, abs=0.1)  # type: ignore[attr-defined]


def test_parameters_beat_gflops_on_the_held_out_large_model() -> None:
    checks = by_method("inference")
    gflops = abs(checks["gflops anchored (thesis)"].error_percent)  # type: ignore[attr-defined]
    params = abs(checks["parameters_m through origin"].error_percent)  # type: ignore[attr-defined]
    assert params < gflops


def test_generic_holdout_and_summary() -> None:
    frame = read_measurements(datasets.resolve_csv("thesis:coldstart"))
    checks = holdout_validation(frame, "distilbert-base-uncased")
    assert checks[0].measured == 188.8
    assert "distilbert-base-uncased" in summary(checks)
    with pytest.raises(MeasurementError, match="not in the data"):
        holdout_validation(frame, "t5-small")
