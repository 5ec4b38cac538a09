"""Equations 5.3-5.5: Table 5.3 reproduced, PUE, hardware rescaling, money and carbon."""

from __future__ import annotations

import dataclasses

import pytest

from jouled.costmodel.fitfile import Fit
from jouled.costmodel.hardware import PRESETS
from jouled.costmodel.predict import (
    JOULES_PER_KWH,
    Deployment,
    PredictError,
    coefficients_from_fit,
    predict,
    retrains_for,
    thesis_coefficients,
)


def plan(**changes: object) -> Deployment:
    base = Deployment(
        gflops_per_request=336.3,
        requests_per_day=1100,
        days=1,
        inference_hardware=PRESETS["thesis-cpu"],
        training_hardware=PRESETS["thesis-gpu"],
        pue=1.0,
        retrains=1.0,  # Table 5.3 plans one fine-tuning run; the default plans none
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_reproduces_table_5_3_for_bert_large() -> None:
    result = predict(plan(), thesis_coefficients())
    assert round(result.finetune_joules_per_run / JOULES_PER_KWH, 1) == 11.2
    assert result.cold_start_joules == 250.0
    assert result.inference_joules == pytest.approx(63_148.1, rel=1e-9)
    # Eq. 5.5 with one fine-tuning run: total is 11.2 kWh, as Table 5.3's "Total".
    assert round(result.it_kwh, 1) == 11.2


def test_pue_money_and_carbon() -> None:
    one = predict(plan(pue=1.0), thesis_coefficients())
    pue = predict(plan(pue=1.5, grid_g_per_kwh=400, price_per_kwh=0.3), thesis_coefficients())
    assert pue.facility_kwh == pytest.approx(1.5 * one.it_kwh)
    assert pue.co2e_grams == pytest.approx(400 * 1.5 * one.it_kwh)
    assert pue.energy_cost == pytest.approx(0.3 * 1.5 * one.it_kwh)
    assert pue.hardware_cost is None  # the thesis laptop has no hourly price


def test_hardware_efficiency_rescales_energy_and_price_is_charged() -> None:
    coef = thesis_coefficients()
    cpu = predict(plan(retrains=0), coef)
    a100 = predict(plan(retrains=0, inference_hardware=PRESETS["A100"], days=2), coef)
    ratio = PRESETS["thesis-cpu"].tflops_per_joule("fp32") / PRESETS["A100"].tflops_per_joule()
    assert a100.inference_joules_per_request == pytest.approx(
        cpu.inference_joules_per_request * ratio
    )
    assert a100.hardware_cost == pytest.approx(3.3741 * 24 * 2)
    fp16 = predict(plan(retrains=0, inference_hardware=PRESETS["A100"], precision="fp16"), coef)
    assert fp16.inference_joules < a100.inference_joules / 2


def test_maintenance_multiplies_fine_tune_and_cold_start() -> None:
    coef = thesis_coefficients()
    once, thrice = predict(plan(), coef), predict(plan(retrains=3), coef)
    assert thrice.maintenance_joules == pytest.approx(3 * once.maintenance_joules)
    assert thrice.inference_joules == once.inference_joules
    assert retrains_for(365, 30) == 13
    assert retrains_for(30, 30) == 1


def test_fit_file_coefficients_without_hardware_are_used_as_measured() -> None:
    fit = Fit(slope_joules_per_gflop=2.0, intercept_joules=5.0)
    coef = coefficients_from_fit(fit)
    result = predict(plan(retrains=0, inference_hardware=PRESETS["A100"]), coef)
    assert result.inference_joules_per_request == pytest.approx(5.0 + 2.0 * 336.3)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"pue": 0.9}, "PUE"),
        ({"gflops_per_request": -1.0}, "gflops"),
        ({"days": 0.0}, "days"),
        ({"serving_hours_per_day": 25.0}, "at most 24"),
    ],
)
def test_bad_plans_are_refused(changes: dict[str, float], message: str) -> None:
    with pytest.raises(PredictError, match=message):
        predict(plan(**changes), thesis_coefficients())


def test_h100_has_no_thesis_price() -> None:
    assert PRESETS["H100"].price_per_hour_usd is None
    with pytest.raises(ValueError, match="fp8"):
        PRESETS["T4"].tflops_per_joule("fp8")
