"""Fits of measured energy (joules) against work (GFLOPs), as the thesis did and done right.

*Anchored* is the thesis's Listing C.1: least squares with a (0, 0) point weighted 1000, so
the line passes through the origin; its R² counts that artificial point. *OLS* fits an
intercept and reports p-values and 95 % confidence intervals. Leave-one-out cross-validation
(LOO) compares predictors (GFLOPs, parameters, tokens, layers) on models left out of the fit.
Imports numpy, pandas and scipy: load it only from the offline commands.

Over 400 lines because the thesis's fits (plain, anchored, per model) and their report share
one data preparation; offline only.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats

from jouled.costmodel.fitfile import Fit, ModelEntry

Array = npt.NDArray[np.float64]

REQUIRED_COLUMNS = ("model", "gflops", "joules")
PREDICTORS = ("gflops", "parameters_m", "parameters", "tokens", "layers")
ANCHOR_WEIGHT = 1000.0  # Listing C.1: "weight 1000 times larger" for the (0, 0) point


class MeasurementError(ValueError):
    """Unusable measurements; ``str()`` names the file, the column and what to fix."""


def read_measurements(
    path: Path,
    *,
    x: str = "gflops",
    y: str = "joules",
    where: Sequence[tuple[str, str]] = (),
    requests: float | None = None,
) -> pd.DataFrame:
    """Read a CSV with at least ``model,gflops,joules``; filter rows by ``where`` equalities.

    ``requests`` (or a ``requests`` column) divides the energy into joules per request
    (thesis Eq. 5.1).
    """
    try:
        frame = pd.read_csv(path, skipinitialspace=True)
    except FileNotFoundError:
        raise MeasurementError(f"{path}: no such file") from None
    except pd.errors.EmptyDataError:
        raise MeasurementError(
            f"{path}: empty file; it needs a header model,gflops,joules"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as err:
        raise MeasurementError(f"{path}: not a readable CSV ({err})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    needed = ["model", x, y]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise MeasurementError(
            f"{path}: missing column {', '.join(repr(c) for c in missing)}; the header needs "
            f"at least {','.join(needed)} (it has {','.join(frame.columns)})"
        )
    for column, value in where:
        if column not in frame.columns:
            raise MeasurementError(f"{path}: --where names column {column!r}, which is absent")
        frame = frame[frame[column].astype(str).str.strip().str.lower() == value.strip().lower()]
    if len(frame) < 2:
        raise MeasurementError(f"{path}: {len(frame)} row(s) left after filters; a fit needs 2+")
    frame = frame.copy()
    frame["model"] = frame["model"].astype(str).str.strip()
    numeric = [c for c in (x, y, "requests", *PREDICTORS) if c in frame.columns]
    for column in dict.fromkeys(numeric):
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() | ~np.isfinite(values.astype(float))
        if column in (x, y) and bad.any():
            index = int(np.flatnonzero(bad.to_numpy())[0])
            line = int(frame.index[index]) + 2  # header is line 1
            raise MeasurementError(
                f"{path} line {line}: column {column!r} has {frame[column].iloc[index]!r}, "
                "not a number"
            )
        frame[column] = values.astype(float)
    if (frame[x] < 0).any() or (frame[y] < 0).any():
        raise MeasurementError(f"{path}: {x} and {y} must not be negative")
    if "requests" in frame.columns:
        if (frame["requests"] <= 0).any() or frame["requests"].isna().any():
            raise MeasurementError(f"{path}: column 'requests' must be positive numbers")
        frame[y] = frame[y] / frame["requests"]
    if requests is not None:
        if not requests > 0:
            raise MeasurementError(f"--requests must be positive, got {requests}")
        frame[y] = frame[y] / requests
    return frame.reset_index(drop=True)


@dataclass(frozen=True)
class AnchoredFit:
    """Through the origin. ``r2_thesis`` is Listing C.1's; the others are over real points."""

    slope: float
    intercept: float
    r2_thesis: float
    r2_centered: float  # 1 - SSres / Σ(y - ȳ)² over the measured points only
    r2_uncentered: float  # 1 - SSres / Σy², the usual R² of a no-intercept model
    slope_stderr: float
    slope_ci95: tuple[float, float]
    p_value: float
    n: int


def anchored_fit(x: Array, y: Array, anchor_weight: float = ANCHOR_WEIGHT) -> AnchoredFit:
    """Listing C.1 verbatim (numpy lstsq with a weighted (0, 0) row), plus honest statistics."""
    xs = np.concatenate(([0.0], np.asarray(x, dtype=float)))
    ys = np.concatenate(([0.0], np.asarray(y, dtype=float)))
    a = np.vstack([xs, np.ones(len(xs))]).T
    w = np.diag(np.ones(len(xs)))
    w[0, 0] = anchor_weight
    solution, residuals, _, _ = np.linalg.lstsq(w @ a, w @ ys, rcond=None)
    slope, intercept = float(solution[0]), float(solution[1])
    resid = (
        float(residuals[0]) if residuals.size else float(np.sum((w @ a @ solution - w @ ys) ** 2))
    )
    r2_thesis = 1.0 - resid / (ys.size * ys.var())

    xr, yr = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(xr)
    errors = yr - (slope * xr + intercept)
    ss_res = float(np.sum(errors**2))
    ss_tot = float(np.sum((yr - yr.mean()) ** 2))
    dof = n - 1
    sxx = float(np.sum(xr**2))
    stderr = math.sqrt(ss_res / dof / sxx) if dof > 0 and sxx > 0 else math.nan
    if stderr > 0:
        t_crit = float(stats.t.ppf(0.975, dof))
        p_value = float(2 * stats.t.sf(abs(slope / stderr), dof))
    else:
        t_crit, p_value = math.nan, math.nan if math.isnan(stderr) else 0.0
    return AnchoredFit(
        slope=slope,
        intercept=intercept,
        r2_thesis=float(r2_thesis),
        r2_centered=1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan,
        r2_uncentered=1.0 - ss_res / float(np.sum(yr**2)),
        slope_stderr=stderr,
        slope_ci95=(slope - t_crit * stderr, slope + t_crit * stderr),
        p_value=p_value,
        n=n,
    )


@dataclass(frozen=True)
class OlsFit:
    """Ordinary least squares with an intercept; t-based p-values and 95 % intervals."""

    slope: float
    intercept: float
    slope_stderr: float
    intercept_stderr: float
    slope_p: float
    intercept_p: float
    slope_ci95: tuple[float, float]
    intercept_ci95: tuple[float, float]
    r2: float
    adj_r2: float
    n: int


def ols_fit(x: Array, y: Array) -> OlsFit:
    xr, yr = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(xr)
    if n < 2 or float(np.ptp(xr)) == 0.0:
        raise MeasurementError("an intercept fit needs at least two distinct x values")
    result = stats.linregress(xr, yr)
    dof = n - 2
    if dof > 0:
        t_crit = float(stats.t.ppf(0.975, dof))
        slope_se, icpt_se = float(result.stderr), float(result.intercept_stderr)
        slope_p = float(result.pvalue)
        icpt_p = float(2 * stats.t.sf(abs(result.intercept / icpt_se), dof)) if icpt_se > 0 else 0.0
    else:  # two points: a line through both, no residual left to estimate error from
        t_crit = slope_se = icpt_se = slope_p = icpt_p = math.nan
    r2 = float(result.rvalue) ** 2
    return OlsFit(
        slope=float(result.slope),
        intercept=float(result.intercept),
        slope_stderr=slope_se,
        intercept_stderr=icpt_se,
        slope_p=slope_p,
        intercept_p=icpt_p,
        slope_ci95=(
            float(result.slope - t_crit * slope_se),
            float(result.slope + t_crit * slope_se),
        ),
        intercept_ci95=(
            float(result.intercept - t_crit * icpt_se),
            float(result.intercept + t_crit * icpt_se),
        ),
        r2=r2,
        adj_r2=1 - (1 - r2) * (n - 1) / dof if dof > 0 else math.nan,
        n=n,
    )


def _design(frame: pd.DataFrame, predictors: Sequence[str], intercept: bool) -> Array:
    columns = [frame[p].to_numpy(dtype=float) for p in predictors]
    if intercept:
        columns.insert(0, np.ones(len(frame)))
    return np.column_stack(columns)


def linear_fit(design: Array, y: Array) -> Array:
    """Least-squares coefficients; raises LinAlgError when the design is rank-deficient."""
    if np.linalg.matrix_rank(design) < design.shape[1]:
        raise np.linalg.LinAlgError("rank-deficient design")
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return np.asarray(coef, dtype=float)


def loo_predictions(design: Array, y: Array) -> Array:
    """Each row predicted by a fit on all the other rows; NaN where that fit is undefined."""
    out = np.full(len(y), math.nan)
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        try:
            coef = linear_fit(design[keep], y[keep])
        except np.linalg.LinAlgError:
            continue
        out[i] = float(design[i] @ coef)
    return out


@dataclass(frozen=True)
class CvResult:
    """One candidate model, scored on rows it was not fitted on (leave-one-out)."""

    label: str
    predictors: tuple[str, ...]
    intercept: bool
    n: int
    loo_rmse: float
    loo_mape_percent: float
    r2_in_sample: float
    coefficients: tuple[float, ...]
    note: str = ""


def _candidate(
    frame: pd.DataFrame, y: str, predictors: tuple[str, ...], intercept: bool
) -> CvResult:
    label = " + ".join(predictors) + (" with intercept" if intercept else " through origin")
    target = frame[y].to_numpy(dtype=float)
    design = _design(frame, predictors, intercept)
    try:
        coef = linear_fit(design, target)
    except np.linalg.LinAlgError:
        return CvResult(
            label,
            predictors,
            intercept,
            len(frame),
            math.inf,
            math.inf,
            math.nan,
            (),
            "not identifiable: the predictors are collinear in this data",
        )
    fitted = design @ coef
    ss_tot = float(np.sum((target - target.mean()) ** 2))
    r2 = 1 - float(np.sum((target - fitted) ** 2)) / ss_tot if ss_tot > 0 else math.nan
    loo = loo_predictions(design, target)
    undefined = int(np.isnan(loo).sum())
    if undefined:
        return CvResult(
            label,
            predictors,
            intercept,
            len(frame),
            math.inf,
            math.inf,
            r2,
            tuple(float(c) for c in coef),
            f"undefined on {undefined} left-out row(s): the rest cannot identify it",
        )
    errors = loo - target
    rmse = float(np.sqrt(np.mean(errors**2)))
    nonzero = target != 0
    mape = float(np.mean(np.abs(errors[nonzero] / target[nonzero]))) * 100
    return CvResult(
        label, predictors, intercept, len(frame), rmse, mape, r2, tuple(float(c) for c in coef)
    )


def compare_predictors(
    frame: pd.DataFrame, y: str = "joules", candidates: Sequence[str] = PREDICTORS
) -> list[CvResult]:
    """Every usable predictor alone and in pairs, with and without intercept, by LOO error.

    A candidate needs one residual degree of freedom in each leave-one-out fit; constant
    predictors are skipped. Sorted best first (lowest LOO MAPE).
    """
    usable = [
        c
        for c in dict.fromkeys(candidates)
        if c in frame.columns and frame[c].notna().all() and float(np.ptp(frame[c])) > 0
    ]
    results: list[CvResult] = []
    n_train = len(frame) - 1
    for size in (1, 2):
        for combo in itertools.combinations(usable, size):
            for intercept in (False, True):
                if n_train < size + int(intercept) + 1:
                    continue
                results.append(_candidate(frame, y, combo, intercept))
    return sorted(results, key=lambda r: (r.loo_mape_percent, r.loo_rmse))


def verdict(results: Sequence[CvResult], n_models: int) -> str:
    """Plain sentences: which single predictor generalises to rows left out of the fit."""
    scored = [r for r in results if math.isfinite(r.loo_mape_percent)]
    if not scored:
        return "No candidate could be cross-validated: too few distinct rows."
    best_single: dict[str, CvResult] = {}
    for r in scored:  # sorted best first, so the first seen per predictor is its best form
        if len(r.predictors) == 1:
            best_single.setdefault(r.predictors[0], r)
    ranking = sorted(best_single.values(), key=lambda r: r.loo_mape_percent)
    if ranking:
        top = ranking[0]
        text = (
            f"Single predictor that generalises best: {top.label}, leave-one-out error "
            f"{top.loo_mape_percent:.1f} % (RMSE {top.loo_rmse:.4g})"
        )
        if len(ranking) > 1:
            text += "; then " + ", ".join(
                f"{r.label} {r.loo_mape_percent:.1f} %" for r in ranking[1:]
            )
        text += "."
    else:
        text = "No single predictor could be cross-validated."
    pairs = [r for r in scored if len(r.predictors) > 1]
    if pairs:
        pair = pairs[0]
        text += (
            f" Best two-predictor model: {pair.label}, {pair.loo_mape_percent:.1f} %, each fit"
            f" on {n_models - 1} rows with {len(pair.coefficients)} coefficients"
            f" {tuple(round(c, 4) for c in pair.coefficients)}: check the signs before trusting it."
        )
    text += f" With {n_models} rows, read this as a ranking, not a proof."
    return text


@dataclass(frozen=True)
class ModelPrediction:
    model: str
    x: float
    measured: float
    anchored: float
    ols: float | None


@dataclass(frozen=True)
class FitReport:
    x: str
    y: str
    n: int
    anchored: AnchoredFit
    ols: OlsFit | None
    cv: list[CvResult]
    verdict: str
    rows: list[ModelPrediction] = field(default_factory=list)


def fit_report(frame: pd.DataFrame, x: str = "gflops", y: str = "joules") -> FitReport:
    xs = frame[x].to_numpy(dtype=float)
    ys = frame[y].to_numpy(dtype=float)
    anchored = anchored_fit(xs, ys)
    ols = ols_fit(xs, ys) if float(np.ptp(xs)) > 0 else None
    cv = compare_predictors(frame, y, (x, *PREDICTORS))
    rows = [
        ModelPrediction(
            model=str(r["model"]),
            x=float(r[x]),
            measured=float(r[y]),
            anchored=anchored.intercept + anchored.slope * float(r[x]),
            ols=None if ols is None else ols.intercept + ols.slope * float(r[x]),
        )
        for _, r in frame.iterrows()
    ]
    return FitReport(x, y, len(frame), anchored, ols, cv, verdict(cv, len(frame)), rows)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def report_to_dict(report: FitReport) -> dict[str, Any]:
    """JSON-ready; NaN and infinity (undefined statistics) become null."""
    data = asdict(report)
    data["anchored"]["r2"] = report.anchored.r2_thesis
    return dict(_json_safe(data))


def to_fit(
    report: FitReport, method: str = "anchored", measured_on_tflops_per_joule: float | None = None
) -> Fit:
    """The stdlib fit file: the chosen line and each model's predicted joules per request."""
    if method == "ols":
        if report.ols is None:
            raise MeasurementError("an intercept fit needs at least two distinct x values")
        slope, intercept, r2 = report.ols.slope, report.ols.intercept, report.ols.r2
    else:
        slope, intercept = report.anchored.slope, report.anchored.intercept
        r2 = report.anchored.r2_thesis
    by_model: dict[str, list[float]] = {}
    for row in report.rows:
        by_model.setdefault(row.model, []).append(row.x)
    models = {
        name: ModelEntry(
            gflops=sum(v) / len(v), joules_per_request=intercept + slope * sum(v) / len(v)
        )
        for name, v in by_model.items()
    }
    return Fit(
        slope_joules_per_gflop=slope,
        intercept_joules=intercept,
        method=method,
        predictor=report.x,
        r2=r2,
        n=report.n,
        measured_on_tflops_per_joule=measured_on_tflops_per_joule,
        models=models,
    )
