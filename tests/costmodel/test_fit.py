"""Fits: Table 5.1's inference R² and Table 5.3's prediction reproduced; exact data recovered."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jouled.costmodel import datasets
from jouled.costmodel.fit import (
    MeasurementError,
    anchored_fit,
    compare_predictors,
    fit_report,
    ols_fit,
    read_measurements,
    report_to_dict,
    to_fit,
)

FAST_TRAIN = [("tokenizer", "fast"), ("split", "train")]


@pytest.fixture
def inference() -> object:
    return read_measurements(datasets.resolve_csv("thesis:inference"), where=FAST_TRAIN)


def test_reproduces_table_5_1_inference_r2_and_table_5_3_prediction(inference: object) -> None:
    report = fit_report(inference)  # type: ignore[arg-type]
    published = datasets.published()
    assert report.n == 4
    assert report.anchored.r2_thesis == pytest.approx(
        published["table_5_1_r2"]["inference"], abs=0.001
    )
    predicted = report.anchored.slope * 336.3 + report.anchored.intercept
    assert predicted == pytest.approx(
        published["table_5_3_bert_large_predicted"]["inference_joules"], rel=0.001
    )


def test_listing_c1_r2_is_inflated_against_the_centred_r2(inference: object) -> None:
    a = fit_report(inference).anchored  # type: ignore[arg-type]
    assert a.r2_thesis == pytest.approx(0.98452, abs=1e-5)
    assert a.r2_centered == pytest.approx(0.94105, abs=1e-5)
    assert a.r2_thesis > a.r2_centered
    lo, hi = a.slope_ci95
    assert lo < a.slope < hi
    assert a.p_value < 0.001


def test_listing_c1_verbatim(inference: object) -> None:
    """The algorithm of Listing C.1, typed in again, gives the same slope and R²."""
    xs = np.array([0.0, *inference["gflops"]])  # type: ignore[index]
    ys = np.array([0.0, *inference["joules"]])  # type: ignore[index]
    a = np.vstack([xs, np.ones(len(xs))]).T
    w = np.diag(np.ones([len(xs)]))
    w[0, 0] = 1000.0
    [m, c], [resid] = np.linalg.lstsq(np.dot(w, a), np.dot(w, ys), rcond=None)[:2]
    r2 = 1 - resid / (ys.size * ys.var())
    ours = anchored_fit(xs[1:], ys[1:])
    assert ours.slope == pytest.approx(m, rel=1e-12)
    assert ours.intercept == pytest.approx(c, abs=1e-9)
    assert ours.r2_thesis == pytest.approx(r2, rel=1e-12)


def test_intercept_fit_has_honest_uncertainty(inference: object) -> None:
    report = fit_report(inference)  # type: ignore[arg-type]
    o = report.ols
    assert o is not None
    # Three of four models sit at 97 GFLOPs: the intercept is indistinguishable from zero.
    assert o.intercept_p > 0.5
    assert o.intercept_ci95[0] < 0 < o.intercept_ci95[1]
    assert o.slope_p < 0.05


def test_loo_ranks_gflops_first_among_single_predictors(inference: object) -> None:
    report = fit_report(inference)  # type: ignore[arg-type]
    singles = [r for r in report.cv if len(r.predictors) == 1]
    assert singles[0].label == "gflops through origin"
    assert singles[0].loo_mape_percent == pytest.approx(7.29, abs=0.01)
    params = next(r for r in singles if r.label == "parameters_m through origin")
    assert params.loo_mape_percent > 30
    assert "gflops through origin" in report.verdict
    assert "not a proof" in report.verdict


slopes = st.floats(0.01, 1000.0)
intercepts = st.floats(-500.0, 500.0)
xs_strategy = st.lists(st.floats(1.0, 500.0), min_size=3, max_size=12, unique=True).filter(
    lambda v: max(v) - min(v) > 1.0
)


@settings(max_examples=200, deadline=None)
@given(slopes, intercepts, xs_strategy)
def test_exact_synthetic_data_returns_its_coefficients(
    slope: float, intercept: float, xs: list[float]
) -> None:
    x = np.array(xs)
    o = ols_fit(x, intercept + slope * x)
    assert o.slope == pytest.approx(slope, rel=1e-6, abs=1e-6)
    assert o.intercept == pytest.approx(intercept, rel=1e-6, abs=1e-4)
    assert o.r2 == pytest.approx(1.0, abs=1e-9)
    a = anchored_fit(x, slope * x)
    assert a.slope == pytest.approx(slope, rel=1e-9)
    assert a.r2_centered == pytest.approx(1.0, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(slopes, st.floats(0.1, 10.0), xs_strategy.filter(lambda v: len(v) >= 5))
def test_multi_variable_fit_recovers_two_coefficients(a: float, b: float, xs: list[float]) -> None:
    import pandas as pd

    rng = np.random.default_rng(len(xs))
    layers = rng.integers(1, 48, len(xs)).astype(float)
    frame = pd.DataFrame(
        {"model": [f"m{i}" for i in range(len(xs))], "gflops": xs, "layers": layers}
    )
    frame["joules"] = a * frame["gflops"] + b * frame["layers"]
    results = compare_predictors(frame, "joules", ("gflops", "layers"))
    pair = next(r for r in results if r.predictors == ("gflops", "layers") and not r.intercept)
    well_posed = all(
        np.linalg.cond(np.column_stack([xs, layers])[np.arange(len(xs)) != i]) < 1e6
        for i in range(len(xs))
    )
    if well_posed:
        assert pair.coefficients == pytest.approx((a, b), rel=1e-5, abs=1e-6)
        assert pair.loo_mape_percent == pytest.approx(0.0, abs=1e-4)


def test_fit_file_from_report_predicts_each_model(inference: object) -> None:
    fit = to_fit(fit_report(inference), "anchored", 0.00882)  # type: ignore[arg-type]
    assert fit.joules_for_model("bert-base-uncased") == pytest.approx(187.78 * 97.1, rel=1e-4)
    assert fit.measured_on_tflops_per_joule == 0.00882
    assert set(fit.models) == {
        "distilbert-base-uncased",
        "roberta-base",
        "bert-base-uncased",
        "albert-base-v2",
    }


def test_report_is_json_safe(inference: object) -> None:
    import json

    text = json.dumps(report_to_dict(fit_report(inference)), allow_nan=False)  # type: ignore[arg-type]
    assert '"r2_thesis"' in text


def test_requests_divide_energy_per_request(tmp_path: Path) -> None:
    csv = tmp_path / "m.csv"
    csv.write_text("model,gflops,joules,requests\na,10,1000,10\nb,20,2000,10\n")
    frame = read_measurements(csv)
    assert list(frame["joules"]) == [100.0, 200.0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model,gflops\na,1\nb,2\n", "missing column 'joules'"),
        ("model,gflops,joules\na,1,2\nb,x,3\n", "line 3: column 'gflops' has 'x'"),
        ("model,gflops,joules\na,1,2\n", "1 row"),
        ("", "empty file"),
        ("model,gflops,joules\na,1,-2\nb,2,3\n", "must not be negative"),
    ],
)
def test_bad_csv_says_what_to_fix(tmp_path: Path, text: str, message: str) -> None:
    csv = tmp_path / "m.csv"
    csv.write_text(text)
    with pytest.raises(MeasurementError, match=message):
        read_measurements(csv)


def test_where_on_unknown_column(tmp_path: Path) -> None:
    with pytest.raises(MeasurementError, match="absent"):
        read_measurements(datasets.resolve_csv("thesis:coldstart"), where=[("gpu", "x")])
