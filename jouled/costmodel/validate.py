"""Held-out validation: fit without one model, predict it, report the percentage error.

``thesis_validation`` reproduces the thesis's section 5.4: fit on DistilBERT, BERT-base,
RoBERTa and ALBERT, predict BERT-large (Table 5.3) and compare with its measurement (Table
5.2). ``holdout_validation`` does the same for any CSV and every candidate predictor.
Imports numpy, pandas and scipy (through ``fit``): offline only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jouled.costmodel import datasets
from jouled.costmodel.fit import (
    PREDICTORS,
    MeasurementError,
    _design,
    anchored_fit,
    linear_fit,
    ols_fit,
    read_measurements,
)
from jouled.costmodel.predict import JOULES_PER_KWH, THESIS_FINETUNE_STEPS


@dataclass(frozen=True)
class Check:
    """One predicted-against-measured comparison; error is (predicted - measured) / measured."""

    event: str
    method: str
    unit: str
    measured: float
    predicted: float
    thesis_predicted: float | None = None

    @property
    def error_percent(self) -> float:
        return (self.predicted - self.measured) / self.measured * 100

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["error_percent"] = self.error_percent
        return data


def holdout_validation(
    frame: pd.DataFrame,
    holdout: str,
    *,
    x: str = "gflops",
    y: str = "joules",
    predictors: Sequence[str] = PREDICTORS,
) -> list[Check]:
    """Fit on every model but ``holdout``; predict the held-out model's mean measurement."""
    held = frame[frame["model"].str.lower() == holdout.lower()]
    train = frame[frame["model"].str.lower() != holdout.lower()]
    if held.empty:
        models = ", ".join(sorted(frame["model"].unique()))
        raise MeasurementError(f"held-out model {holdout!r} is not in the data; models: {models}")
    if len(train) < 2:
        raise MeasurementError("fewer than two rows left to fit after holding the model out")
    measured = float(held[y].mean())
    target = train[y].to_numpy(dtype=float)
    anchored = anchored_fit(train[x].to_numpy(dtype=float), target)
    checks = [
        Check(
            event=holdout,
            method=f"{x} anchored (thesis)",
            unit=y,
            measured=measured,
            predicted=anchored.intercept + anchored.slope * float(held[x].mean()),
        )
    ]
    if float(np.ptp(train[x])) > 0:
        ols = ols_fit(train[x].to_numpy(dtype=float), target)
        checks.append(
            Check(
                holdout,
                f"{x} with intercept",
                y,
                measured,
                ols.intercept + ols.slope * float(held[x].mean()),
            )
        )
    for p in dict.fromkeys(predictors):
        if p == x or p not in frame.columns or frame[p].isna().any():
            continue
        for intercept in (False, True):
            try:
                coef = linear_fit(_design(train, [p], intercept), target)
            except np.linalg.LinAlgError:
                continue
            point = _design(held.iloc[:1].assign(**{p: float(held[p].mean())}), [p], intercept)
            label = f"{p} {'with intercept' if intercept else 'through origin'}"
            checks.append(Check(holdout, label, y, measured, float(point[0] @ coef)))
    return checks


def thesis_validation(data: Path | None = None) -> list[Check]:
    """Section 5.4 reproduced from the packaged tables: BERT-large predicted vs measured."""
    root = data or datasets.data_dir()
    published = datasets.published()
    predicted = published["table_5_3_bert_large_predicted"]
    checks: list[Check] = []

    inference = read_measurements(root / "thesis_inference.csv", where=[("tokenizer", "fast")])
    for check in holdout_validation(
        inference, "bert-large-uncased", predictors=("parameters_m", "layers")
    ):
        thesis = predicted["inference_joules"] if "anchored" in check.method else None
        checks.append(_renamed(check, "inference", "J per 1100 texts", thesis))

    coldstart = read_measurements(root / "thesis_coldstart.csv")
    measured_cold = float(
        coldstart.loc[coldstart["model"] == "bert-large-uncased", "joules"].iloc[0]
    )
    checks.append(
        Check(
            "cold start",
            "thesis constant 250 J",
            "J",
            measured_cold,
            published["section_5_3"]["cold_start_joules"],
            predicted["coldstart_joules"],
        )
    )
    for check in holdout_validation(
        coldstart, "bert-large-uncased", predictors=("parameters_m", "layers")
    ):
        checks.append(_renamed(check, "cold start", "J", None))

    finetune = read_measurements(root / "thesis_finetune.csv")
    train = finetune[finetune["split"] == "train"]
    measured_kwh = float(finetune.loc[finetune["model"] == "bert-large-uncased", "kwh"].iloc[0])
    gflops = float(finetune.loc[finetune["model"] == "bert-large-uncased", "gflops"].iloc[0])
    section = published["section_5_3"]
    alpha_thesis = (
        section["beta1_cpu"] / section["e_cpu_flops_per_joule"]
        + section["beta2_gpu"] / section["e_gpu_flops_per_joule"]
    )
    checks.append(
        Check(
            "fine-tune",
            "thesis beta1 + beta2 (Eq. 5.3)",
            "kWh",
            measured_kwh,
            alpha_thesis * gflops * THESIS_FINETUNE_STEPS / JOULES_PER_KWH,
            predicted["finetune_kwh"],
        )
    )
    fitted = anchored_fit(
        train["gflops"].to_numpy(dtype=float), train["joules"].to_numpy(dtype=float)
    )
    checks.append(
        Check(
            "fine-tune",
            "gflops anchored, per step",
            "kWh",
            measured_kwh,
            fitted.slope * gflops * THESIS_FINETUNE_STEPS / JOULES_PER_KWH,
        )
    )
    return checks


def _renamed(check: Check, event: str, unit: str, thesis: float | None) -> Check:
    return Check(event, check.method, unit, check.measured, check.predicted, thesis)


def summary(checks: Sequence[Check]) -> str:
    """One line per check, aligned, for the terminal."""
    lines = [
        f"{'event':<11} {'method':<32} {'measured':>12} {'predicted':>12} {'error':>8}"
        f" {'thesis pred.':>12}  unit"
    ]
    for c in checks:
        thesis = "" if c.thesis_predicted is None else f"{c.thesis_predicted:,.1f}"
        err = f"{c.error_percent:+.1f} %" if math.isfinite(c.error_percent) else "n/a"
        lines.append(
            f"{c.event:<11} {c.method:<32} {c.measured:>12,.1f} {c.predicted:>12,.1f} "
            f"{err:>8} {thesis:>12}  {c.unit}"
        )
    return "\n".join(lines)
