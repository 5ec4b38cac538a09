"""``jouled model ...`` through ``main(argv)``, and once through a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jouled.costmodel.cli import main
from jouled.costmodel.fitfile import load_fit

REPO = Path(__file__).resolve().parents[2]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_flops_json_has_gflops(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "flops", "--config", "bert-large-uncased", "--seq-len", "512", "--json"
    )
    assert code == 0
    assert json.loads(out)["gflops"] == pytest.approx(336.3, rel=0.02)


def test_flops_decoder_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "flops", "--config", "gpt2", "--seq-len", "128", "--new-tokens", "8")
    assert code == 0
    assert "prefill" in out and "decode, first step" in out
    assert (
        "decode 8 new tokens" in out and "(7 steps" in out and "request (prefill + decode)" in out
    )


def test_flops_prompt_and_new_tokens_by_repository_name(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys,
        "flops",
        "--config",
        "meta-llama/Meta-Llama-3-8B",
        "--prompt-tokens",
        "512",
        "--new-tokens",
        "128",
        "--json",
    )
    assert code == 0, err
    data = json.loads(out)
    assert round(data["gflops"], 3) == 7219.5
    assert round(data["decode_gflops"], 3) == 1945.433
    assert round(data["generate_gflops"], 3) == 9164.932
    assert data["decode_steps"] == 127 and data["parameters"] == 8_030_261_248
    code, out, _ = run(capsys, "flops", "--config", "Mixtral-8x7B-v0.1", "--prompt-tokens", "512")
    assert code == 0
    assert "46,702.8 M parameters (12,879.9 M active per token)" in out


def test_predict_counts_prompt_and_generated_tokens_and_no_fine_tuning_by_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["predict", "--config", "Meta-Llama-3-8B", "--prompt-tokens", "512"]
    argv += ["--new-tokens", "128", "--requests-per-day", "1000", "--days", "1", "--json"]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    data = json.loads(out)
    assert round(data["gflops_per_request"], 3) == 9164.932
    assert data["retrains"] == 0 and data["maintenance_joules"] == 0
    assert data["it_joules"] == pytest.approx(data["inference_joules"])


def test_fit_reproduces_thesis_and_writes_fit_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_fit = tmp_path / "fit.json"
    code, out, _ = run(
        capsys,
        "fit",
        "--csv",
        "thesis:inference",
        "--where",
        "tokenizer=fast",
        "--where",
        "split=train",
        "--out",
        str(out_fit),
        "--json",
    )
    assert code == 0
    data = json.loads(out)
    assert data["anchored"]["r2_thesis"] == pytest.approx(0.984, abs=0.001)
    assert data["anchored"]["slope"] * 336.3 == pytest.approx(63_148.1, rel=0.001)
    assert load_fit(out_fit).predict_joules(336.3) == pytest.approx(63_148.1, rel=0.001)


def test_fit_text_states_the_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "fit",
        "--csv",
        "thesis:inference",
        "--where",
        "tokenizer=fast",
        "--where",
        "split=train",
    )
    assert code == 0
    assert "R² Listing C.1 0.9845" in out
    assert "Single predictor that generalises best: gflops through origin" in out


def test_fit_plots_are_small_pngs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    plot, cv = tmp_path / "fit.png", tmp_path / "cv.png"
    code, _, err = run(
        capsys,
        "fit",
        "--csv",
        "thesis:coldstart",
        "--where",
        "split=train",
        "--plot",
        str(plot),
        "--plot-cv",
        str(cv),
    )
    assert code == 0
    assert err == (
        f"jouled model fit: plot written to {plot}\n"
        f"jouled model fit: predictor plot written to {cv}\n"
    )
    for png in (plot, cv):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size < 200_000


def test_predict_json_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "predict",
        "--gflops",
        "336.3",
        "--requests-per-day",
        "1100",
        "--days",
        "1",
        "--pue",
        "1",
        "--retrains",
        "1",
        "--json",
    )
    assert code == 0
    data = json.loads(out)
    assert data["inference_joules"] == pytest.approx(63_148.1)
    # One fine-tuning run (the thesis's, 40,506 steps) is most of it: 11.2 kWh of 11.2.
    assert round(data["it_kwh"], 1) == 11.2
    code, out, _ = run(
        capsys,
        "predict",
        "--config",
        "distilbert-base-uncased",
        "--requests-per-day",
        "1000",
        "--hardware",
        "T4",
        "--retrain-every-days",
        "7",
        "--days",
        "28",
    )
    assert code == 0
    assert "4 run(s)" in out and "hardware cost" in out and "gCO2e" in out


def test_validate_thesis(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate", "--json")
    assert code == 0
    checks = json.loads(out)
    inference = next(
        c for c in checks if c["method"] == "gflops anchored (thesis)" and c["event"] == "inference"
    )
    assert inference["error_percent"] == pytest.approx(37.6, abs=0.1)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fit", "--csv", "{tmp}/nocol.csv"], "missing column 'joules'"),
        (["flops", "--config", "{tmp}/t5.json", "--seq-len", "8"], "unknown model_type 't5'"),
        (["flops", "--config", "bert-base-uncased", "--seq-len", "-3"], "must be positive"),
        (["predict", "--gflops", "nan", "--requests-per-day", "1"], "finite"),
        (["predict", "--gflops", "1", "--requests-per-day", "1", "--pue", "0.5"], "PUE"),
        (
            ["predict", "--gflops", "1", "--requests-per-day", "1", "--hardware", "X"],
            "unknown hardware",
        ),
        (["validate", "--csv", "thesis:inference"], "--holdout"),
        (["fit", "--csv", "thesis:nothing"], "no packaged table"),
        # A name with a slash that is not a file lists the packaged configs too (issue 15).
        (
            ["flops", "--config", "some-org/Unknown-7B", "--seq-len", "8"],
            "some-org/Unknown-7B: no such file or packaged config (save the model's "
            "config.json and give its path); packaged: ",
        ),
        (["flops", "--config", "llama3", "--seq-len", "8"], "bert-base-uncased, "),
        (["flops", "--config", "{tmp}/no.json", "--seq-len", "8"], "no.json: no such file;"),
        (["flops", "--config", "meta-llama/Llama-3-8B", "--seq-len", "8"], "packaged: Llama-2"),
        (["flops", "--config", "gpt2", "--seq-len", "1000", "--new-tokens", "26"], "1024 learned"),
        (
            ["flops", "--config", "bert-base-uncased", "--seq-len", "8", "--new-tokens", "2"],
            "encoder",
        ),
        (
            ["predict", "--gflops", "1", "--new-tokens", "2", "--requests-per-day", "1"],
            "--new-tokens goes with --config",
        ),
    ],
)
def test_errors_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], message: str
) -> None:
    (tmp_path / "nocol.csv").write_text("model,gflops\na,1\nb,2\n")
    (tmp_path / "t5.json").write_text('{"model_type": "t5"}')
    code, out, err = run(capsys, *(a.replace("{tmp}", str(tmp_path)) for a in argv))
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and message in err


def test_a_hugging_face_id_finds_the_packaged_config_of_its_name() -> None:
    from jouled.costmodel import datasets

    path = datasets.resolve_config("TinyLlama/TinyLlama-1.1B-Chat-v1.0")
    assert path == datasets.data_dir() / "configs" / "TinyLlama-1.1B-Chat-v1.0.json"


@pytest.mark.parametrize(
    ("argv", "hidden", "line"),
    [
        (["fit", "--csv", "thesis:inference"], "numpy",
         "jouled model fit: needs numpy, pandas and scipy, not installed here: "
         "pip install 'jouled[model]'"),
        (["validate"], "scipy",
         "jouled model validate: needs numpy, pandas and scipy, not installed here: "
         "pip install 'jouled[model]'"),
        (["fit", "--csv", "thesis:inference", "--plot", "x.png"], "matplotlib",
         "jouled model: error: plots need matplotlib: pip install 'jouled[report]'"),
    ],
)  # fmt: skip
def test_without_the_offline_extras_one_line_says_what_to_install(
    tmp_path: Path, argv: list[str], hidden: str, line: str
) -> None:
    """As in ``make run``'s virtualenv (the daemon's dependencies only): no traceback."""
    code = (
        f"import sys; sys.modules[{hidden!r}] = None\n"  # import raises ModuleNotFoundError
        "from jouled.costmodel.cli import main\n"
        f"raise SystemExit(main({argv!r}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (2, "", line + "\n")


def test_help_returns_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", "--help"]) == 0
    assert "--where" in capsys.readouterr().out


def test_real_subprocess() -> None:
    code = (
        "from jouled.costmodel.cli import main; "
        "raise SystemExit(main(['flops', '--config', 'distilbert-base-uncased', "
        "'--seq-len', '512', '--json']))"
    )
    done = subprocess.run(
        [str(REPO / ".venv/bin/python"), "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["gflops"] == pytest.approx(48.5, rel=0.02)
    bad = subprocess.run(
        [
            str(REPO / ".venv/bin/python"),
            "-c",
            "from jouled.costmodel.cli import main; raise SystemExit(main(['fit', '--csv', "
            "'/nonexistent.csv']))",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == "jouled model: error: /nonexistent.csv: no such file"
