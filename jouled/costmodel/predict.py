"""A planned deployment into kWh, money and gCO2e: the thesis's Equations 5.3 to 5.5.

Coefficients are joules per GFLOP measured on one machine; with that machine's efficiency
e_measured (FLOPs/J) they become hardware-free ratios beta = alpha·e_measured, and on hardware with
efficiency e the energy is beta·FLOPs/e (section 5.3). Fine-tuning (per step, Eq. 5.3) plus cold
start, repeated ``retrains`` times, plus inference over the period (Eq. 5.4) gives Eq. 5.5;
times PUE gives the facility's energy. Stdlib only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from jouled.costmodel.fitfile import Fit
from jouled.costmodel.hardware import PRESETS, HardwarePreset, Precision

JOULES_PER_KWH = 3.6e6
GIGA = 1e9

# Training steps behind each fine-tuning run, derived (not printed) from Table 4.1:
# kWh · 3.6e6 / step joules is 40,499 to 40,514 for the four models.
THESIS_FINETUNE_STEPS = 40_506
# Table 5.3's inference energy is for the thesis's whole workload of 1100 texts.
THESIS_TEXTS = 1100


class PredictError(ValueError):
    """An unusable planned deployment; ``str()`` names the input to fix."""


@dataclass(frozen=True)
class Coefficients:
    """Joules per GFLOP measured on the thesis's (or your) machine, and that machine's e."""

    finetune_cpu_joules_per_gflop_step: float
    finetune_gpu_joules_per_gflop_step: float
    inference_joules_per_gflop: float  # per request (one sequence)
    cold_start_joules: float
    inference_intercept_joules: float = 0.0
    measured_cpu_tflops_per_joule: float | None = PRESETS["thesis-cpu"].tflops_per_joule_fp32
    measured_gpu_tflops_per_joule: float | None = PRESETS["thesis-gpu"].tflops_per_joule_fp32
    measured_inference_tflops_per_joule: float | None = PRESETS["thesis-cpu"].tflops_per_joule_fp32
    source: str = "thesis"


def thesis_coefficients() -> Coefficients:
    """Section 5.3's β1, β2 over its e_cpu, e_gpu; inference from Table 5.3 per text.

    The printed β3 (26.25e9) gives 1,001 J for BERT-large, not Table 5.3's 63,148 J; the
    inference slope here is Table 5.3's own: 63,148.1 J / 336.3 GFLOPs / 1100 texts.
    """
    return Coefficients(
        finetune_cpu_joules_per_gflop_step=2.05e9 / 8.82e9,
        finetune_gpu_joules_per_gflop_step=67.29e9 / 24.77e9,
        inference_joules_per_gflop=63_148.1 / 336.3 / THESIS_TEXTS,
        cold_start_joules=250.0,
        source="thesis section 5.3 and Table 5.3",
    )


def coefficients_from_fit(fit: Fit, base: Coefficients | None = None) -> Coefficients:
    """Inference from a fit file; fine-tuning and cold start stay as ``base`` (the thesis's)."""
    base = base or thesis_coefficients()
    return Coefficients(
        finetune_cpu_joules_per_gflop_step=base.finetune_cpu_joules_per_gflop_step,
        finetune_gpu_joules_per_gflop_step=base.finetune_gpu_joules_per_gflop_step,
        inference_joules_per_gflop=fit.slope_joules_per_gflop,
        inference_intercept_joules=fit.intercept_joules,
        cold_start_joules=base.cold_start_joules,
        measured_cpu_tflops_per_joule=base.measured_cpu_tflops_per_joule,
        measured_gpu_tflops_per_joule=base.measured_gpu_tflops_per_joule,
        measured_inference_tflops_per_joule=fit.measured_on_tflops_per_joule,
        source=f"fit file ({fit.method}) for inference; {base.source} for fine-tuning",
    )


@dataclass(frozen=True)
class Deployment:
    """What is planned. ``retrains`` counts fine-tuning runs in the period (maintenance)."""

    gflops_per_request: float
    requests_per_day: float
    days: float
    inference_hardware: HardwarePreset
    training_hardware: HardwarePreset
    cpu: HardwarePreset = PRESETS["thesis-cpu"]
    precision: Precision = "fp32"
    retrains: float = 0.0  # fine-tuning runs in the period: none unless planned
    finetune_steps: float = THESIS_FINETUNE_STEPS
    finetune_gflops_per_step: float | None = None  # the thesis used the forward GFLOPs
    pue: float = 1.58
    grid_g_per_kwh: float = 475.0
    price_per_kwh: float = 0.20
    currency: str = "USD"
    serving_hours_per_day: float = 24.0


@dataclass(frozen=True)
class Prediction:
    finetune_joules_per_run: float
    cold_start_joules: float
    retrains: float
    maintenance_joules: float
    inference_joules_per_request: float
    requests: float
    inference_joules: float
    it_joules: float
    it_kwh: float
    pue: float
    facility_kwh: float
    energy_cost: float
    hardware_cost: float | None
    total_cost: float
    currency: str
    co2e_grams: float
    days: float
    coefficients_source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rescale(measured_tflops: float | None, target: HardwarePreset, precision: Precision) -> float:
    """Factor turning joules measured on one machine into joules on ``target`` (e_m / e_t)."""
    if measured_tflops is None:
        return 1.0  # the fit did not record its hardware: predict for that same hardware
    return measured_tflops / target.tflops_per_joule(precision)


def _positive(name: str, value: float, *, zero_ok: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        kind = "zero or more" if zero_ok else "positive"
        raise PredictError(f"{name} must be {kind}, got {value!r}")


def predict(plan: Deployment, coef: Coefficients) -> Prediction:
    """Equations 5.3 (fine-tune), 5.4 (inference), 5.5 (total), then PUE, money, carbon."""
    _positive("gflops per request", plan.gflops_per_request)
    _positive("requests per day", plan.requests_per_day, zero_ok=True)
    _positive("days", plan.days)
    _positive("retrains", plan.retrains, zero_ok=True)
    _positive("fine-tune steps", plan.finetune_steps, zero_ok=True)
    _positive("serving hours per day", plan.serving_hours_per_day, zero_ok=True)
    if plan.serving_hours_per_day > 24:
        raise PredictError(
            f"serving hours per day must be at most 24, got {plan.serving_hours_per_day}"
        )
    if not plan.pue >= 1 or not math.isfinite(plan.pue):
        raise PredictError(f"PUE is total facility energy over IT energy, so >= 1; got {plan.pue}")
    _positive("grid intensity", plan.grid_g_per_kwh, zero_ok=True)
    _positive("energy price", plan.price_per_kwh, zero_ok=True)

    finetune = 0.0
    if plan.retrains > 0 and plan.finetune_steps > 0:
        step_gflops = plan.finetune_gflops_per_step or plan.gflops_per_request
        cpu_factor = _rescale(coef.measured_cpu_tflops_per_joule, plan.cpu, "fp32")
        gpu_factor = _rescale(
            coef.measured_gpu_tflops_per_joule, plan.training_hardware, plan.precision
        )
        per_step = step_gflops * (
            coef.finetune_cpu_joules_per_gflop_step * cpu_factor
            + coef.finetune_gpu_joules_per_gflop_step * gpu_factor
        )
        finetune = plan.finetune_steps * per_step
    maintenance = (finetune + coef.cold_start_joules) * plan.retrains

    inf_factor = _rescale(
        coef.measured_inference_tflops_per_joule, plan.inference_hardware, plan.precision
    )
    per_request = (
        coef.inference_intercept_joules
        + coef.inference_joules_per_gflop * plan.gflops_per_request * inf_factor
    )
    requests = plan.requests_per_day * plan.days
    inference = per_request * requests
    it_joules = maintenance + inference
    it_kwh = it_joules / JOULES_PER_KWH
    facility_kwh = it_kwh * plan.pue
    energy_cost = facility_kwh * plan.price_per_kwh
    price = plan.inference_hardware.price_per_hour_usd
    hardware_cost = None if price is None else price * plan.serving_hours_per_day * plan.days
    return Prediction(
        finetune_joules_per_run=finetune,
        cold_start_joules=coef.cold_start_joules,
        retrains=plan.retrains,
        maintenance_joules=maintenance,
        inference_joules_per_request=per_request,
        requests=requests,
        inference_joules=inference,
        it_joules=it_joules,
        it_kwh=it_kwh,
        pue=plan.pue,
        facility_kwh=facility_kwh,
        energy_cost=energy_cost,
        hardware_cost=hardware_cost,
        total_cost=energy_cost + (hardware_cost or 0.0),
        currency=plan.currency,
        co2e_grams=facility_kwh * plan.grid_g_per_kwh,
        days=plan.days,
        coefficients_source=coef.source,
    )


def retrains_for(days: float, retrain_every_days: float) -> float:
    """Fine-tuning runs in a period: the first one plus one per elapsed interval."""
    if not retrain_every_days > 0:
        raise PredictError(f"retrain interval must be positive, got {retrain_every_days}")
    return float(math.ceil(days / retrain_every_days))
