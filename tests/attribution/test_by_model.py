"""A tick's workload energy split among models by their work: exact, proportional, total."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jouled.attribution.by_model import split_by_work, tick_gflops, work_by_model
from jouled.collectors.server_metrics import Counts
from jouled.costmodel import datasets

energies = st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False)
works = st.dictionaries(
    st.text(min_size=1, max_size=8),
    st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False),
    max_size=60,
)


@given(energies, works)
def test_the_shares_add_up_to_the_energy_and_none_is_negative(
    energy: float, work: dict[str, float]
) -> None:
    out = split_by_work(energy, work)
    if math.fsum(work.values()) <= 0:
        assert out == {}
        return
    assert set(out) == set(work)
    assert all(j >= 0 for j in out.values())
    assert math.fsum(out.values()) == pytest.approx(energy, rel=1e-12, abs=1e-300)


@given(energies, works)
def test_shares_follow_the_work(energy: float, work: dict[str, float]) -> None:
    out = split_by_work(energy, work)
    total = math.fsum(work.values())
    for model, j in out.items():
        assert j == pytest.approx(energy * (work[model] / total), rel=1e-9, abs=1e-6)


def test_a_model_with_three_times_the_work_gets_three_quarters() -> None:
    assert split_by_work(8.0, {"big": 3.0, "small": 1.0, "idle": 0.0}) == {
        "big": 6.0,
        "small": 2.0,
        "idle": 0.0,
    }


@pytest.mark.parametrize("bad", [-1.0, math.inf, math.nan])
def test_bad_numbers_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="finite and >= 0"):
        split_by_work(bad, {"m": 1.0})
    with pytest.raises(ValueError, match="finite and >= 0"):
        split_by_work(1.0, {"m": bad})


def test_work_is_gflops_where_every_model_with_tokens_has_a_config() -> None:
    counts = {"llama": Counts(512, 128, 1), "tiny": Counts(10, 5, 1), "other": Counts(0, 0, 3)}
    known = {"llama": 9250.0, "tiny": 1.5}
    basis, work = work_by_model(counts, lambda m, p, n, r: known.get(m))
    assert (basis, work) == ("gflops", {"llama": 9250.0, "tiny": 1.5})
    # One model with tokens but no config: every model falls back to tokens (one unit).
    basis, work = work_by_model(counts, lambda m, p, n, r: known.get(m) if m == "llama" else None)
    assert (basis, work) == ("tokens", {"llama": 640.0, "tiny": 15.0})


def test_work_is_requests_where_no_tokens_are_counted_and_none_without_either() -> None:
    assert work_by_model({"resnet": Counts(requests=4), "bert": Counts(requests=1)}) == (
        "requests",
        {"resnet": 4.0, "bert": 1.0},
    )
    assert work_by_model({"m": Counts()}) == ("none", {})


def test_tick_gflops_costs_the_ticks_tokens_as_requests_of_the_mean_shape() -> None:
    from jouled.costmodel.decoder import RequestWork
    from jouled.costmodel.flops import load_config

    llama = RequestWork.from_config(load_config(datasets.resolve_config("Meta-Llama-3-8B")))
    of = tick_gflops({"llama-3-8b": llama})
    # Two requests of 512 prompt + 128 generated tokens in one tick: twice the issue's
    # 9,164.93 GFLOPs per request (jouled model flops' own count).
    assert of("llama-3-8b", 1024, 256, 2) == pytest.approx(2 * 9164.93, abs=0.02)
    # vLLM counts tokens every engine step, requests when they end: no request yet is one.
    assert of("llama-3-8b", 512, 128, 0) == pytest.approx(9164.93, abs=0.01)
    assert of("unknown", 10, 10, 1) is None
    # Two Llama requests' worth of tokens against a model with no config: tokens for all.
    counts = {"llama-3-8b": Counts(1024, 256, 2), "other": Counts(100, 0, 1)}
    assert work_by_model(counts, of)[0] == "tokens"
    basis, work = work_by_model({"llama-3-8b": Counts(1024, 256, 2)}, of)
    assert basis == "gflops" and work["llama-3-8b"] == pytest.approx(18329.86, abs=0.02)
