"""``jouled model flops|fit|predict|validate``: the offline cost model from the command line.

``main(argv)`` parses, runs and returns an exit code: 0 on success, 2 with one line on
stderr saying what to fix. numpy, pandas, scipy and matplotlib are imported inside the
subcommands that need them, so ``flops`` and ``predict`` stay light.

Over 400 lines because it holds the argument parsing and output of the four offline
subcommands; offline only.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from jouled.costmodel import datasets
from jouled.costmodel.fitfile import FitFileError, load_fit
from jouled.costmodel.flops import ConfigError, FlopsReport, count, load_config
from jouled.costmodel.hardware import PRECISIONS, HardwareError, lookup
from jouled.costmodel.predict import (
    THESIS_FINETUNE_STEPS,
    Deployment,
    PredictError,
    coefficients_from_fit,
    predict,
    retrains_for,
    thesis_coefficients,
)


class UsageError(Exception):
    """A bad argument or input; ``str()`` is the one line shown."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see --help)")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def _count_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be zero or more")
    return value


def _where(text: str) -> tuple[str, str]:
    column, sep, value = text.partition("=")
    if not sep or not column:
        raise argparse.ArgumentTypeError(f"{text!r} is not COLUMN=VALUE")
    return column.strip(), value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jouled model", description="The offline cost model (thesis ch. 5).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("flops", help="analytic forward-pass GFLOPs from a config.json")
    p.add_argument(
        "--config",
        required=True,
        help="config.json path, or a packaged name: " + ", ".join(datasets.config_names()),
    )
    p.add_argument(
        "--prompt-tokens",
        "--seq-len",
        dest="seq_len",
        type=_positive_int,
        required=True,
        help="tokens per sequence (decoders: the prompt, counted as prefill)",
    )
    p.add_argument("--batch", type=_positive_int, default=1)
    p.add_argument(
        "--new-tokens", type=_count_int, help="decoders: tokens generated (decode over the cache)"
    )
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("fit", help="fit energy against GFLOPs (thesis) and compare predictors")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--csv",
        help="CSV with model,gflops,joules (+ parameters_m, tokens, layers, requests)"
        "; or thesis:inference, thesis:finetune, thesis:coldstart",
    )
    source.add_argument(
        "--ledger",
        type=Path,
        help="jouled's ledger (SQLite): per model, GFLOPs and joules per request as measured",
    )
    p.add_argument("--since-days", type=_positive_float, help="with --ledger: the last N days")
    p.add_argument("--x", default="gflops", help="predictor column (default gflops)")
    p.add_argument("--y", default="joules", help="energy column (default joules)")
    p.add_argument(
        "--where",
        type=_where,
        action="append",
        default=[],
        metavar="COL=VALUE",
        help="keep rows where COL equals VALUE (repeatable)",
    )
    p.add_argument(
        "--requests",
        type=_positive_float,
        help="divide energy by this many requests (thesis Eq. 5.1)",
    )
    p.add_argument("--out", type=Path, help="write the fit file (JSON) the daemon can load")
    p.add_argument(
        "--method",
        choices=("anchored", "ols"),
        default="anchored",
        help="line written to --out (default anchored, the thesis's)",
    )
    p.add_argument("--measured-on", help="hardware preset the energy was measured on")
    p.add_argument("--plot", type=Path, help="regression figure (PNG; needs matplotlib)")
    p.add_argument("--plot-cv", type=Path, help="predictor comparison figure (PNG)")
    p.add_argument("--title", default="", help="figure title")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("predict", help="a planned deployment into kWh, money and gCO2e")
    work = p.add_mutually_exclusive_group(required=True)
    work.add_argument("--gflops", type=_positive_float, help="GFLOPs per request")
    work.add_argument("--config", help="config.json (or packaged name) to count GFLOPs from")
    p.add_argument(
        "--prompt-tokens",
        "--seq-len",
        dest="seq_len",
        type=_positive_int,
        default=512,
        help="with --config: tokens per request (decoders: the prompt) (512)",
    )
    p.add_argument(
        "--new-tokens",
        type=_count_int,
        help="with a decoder --config: tokens generated per request (prefill + decode)",
    )
    p.add_argument("--batch", type=_positive_int, default=1, help="with --config")
    p.add_argument("--requests-per-day", type=_positive_float, required=True)
    p.add_argument("--days", type=_positive_float, default=30.0, help="period (default 30)")
    p.add_argument("--hardware", help="preset for inference and fine-tuning (e.g. A100, T4)")
    p.add_argument("--inference-hardware", help="preset for inference (default thesis-cpu)")
    p.add_argument("--training-hardware", help="preset for fine-tuning (default thesis-gpu)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument(
        "--efficiency",
        type=_positive_float,
        help="TFLOPs per joule of the inference hardware (a user entry)",
    )
    p.add_argument(
        "--price-per-hour", type=_positive_float, help="hourly price of the inference hardware"
    )
    p.add_argument("--serving-hours-per-day", type=_positive_float, default=24.0)
    p.add_argument("--pue", type=float, default=1.58)
    p.add_argument("--grid", type=_positive_float, default=475.0, help="gCO2e per kWh (475)")
    p.add_argument("--price-per-kwh", type=_positive_float, default=0.20)
    p.add_argument("--currency", default="USD")
    retrain = p.add_mutually_exclusive_group()
    retrain.add_argument(
        "--retrains", type=_positive_float, help="fine-tuning runs in the period (default 0)"
    )
    retrain.add_argument("--retrain-every-days", type=_positive_float)
    p.add_argument("--finetune-steps", type=_positive_float, default=float(THESIS_FINETUNE_STEPS))
    p.add_argument("--cold-start-joules", type=_positive_float)
    p.add_argument("--fit", type=Path, help="fit file for the inference coefficients")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("validate", help="held-out model: predicted against measured")
    p.add_argument("--csv", help="CSV (default: the thesis's section 5.4 check)")
    p.add_argument("--holdout", help="model to hold out (with --csv)")
    p.add_argument("--x", default="gflops")
    p.add_argument("--y", default="joules")
    p.add_argument("--where", type=_where, action="append", default=[], metavar="COL=VALUE")
    p.add_argument("--json", action="store_true")
    return parser


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False, allow_nan=False))


def _count(spec: str, seq_len: int, batch: int, new_tokens: int | None = None) -> FlopsReport:
    path = datasets.resolve_config(spec)
    try:
        return count(load_config(path), seq_len, batch, new_tokens)
    except ConfigError as err:
        message = str(err)
        raise ConfigError(
            message if message.startswith(str(path)) else f"{path}: {message}"
        ) from None


def _cmd_flops(args: argparse.Namespace) -> int:
    report = _count(args.config, args.seq_len, args.batch, args.new_tokens)
    if args.new_tokens is not None and report.family == "encoder":
        raise UsageError(f"--new-tokens: {report.model_type} is an encoder, it generates none")
    if args.json:
        _print_json(report.to_dict())
        return 0
    params = f"{report.parameters / 1e6:,.1f} M parameters"
    if report.active_parameters is not None and report.active_parameters != report.parameters:
        params += f" ({report.active_parameters / 1e6:,.1f} M active per token)"
    window = f", sliding window {report.sliding_window}" if report.sliding_window else ""
    print(f"{report.model_type} ({report.family}), {report.layers} layers{window}, {params}")
    if report.family == "encoder":
        print(f"  seq_len {report.seq_len}, batch {report.batch}")
    else:
        print(f"  prompt {report.seq_len} tokens, batch {report.batch}")

    def row(label: str, gflops: float, note: str = "") -> None:
        print(f"  {label:<28} {gflops:>12,.3f}{note}")

    row("forward" if report.family == "encoder" else "prefill", report.gflops, " GFLOPs")
    row("  matmul", report.matmul_gflops)
    row("  element-wise", report.elementwise_gflops)
    row("  attention", report.attention_gflops)
    if report.decode_gflops_per_token is not None:
        row(
            "decode, first step",
            report.decode_gflops_per_token,
            f" GFLOPs (cache {report.seq_len})",
        )
    if report.decode_gflops is not None and report.generate_gflops is not None:
        steps = f" GFLOPs ({report.decode_steps} steps: the prefill gives the first token)"
        row(f"decode {report.new_tokens} new tokens", report.decode_gflops, steps)
        if report.decode_attention_gflops is not None:
            row("  attention", report.decode_attention_gflops)
        row("request (prefill + decode)", report.generate_gflops, " GFLOPs")
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    from jouled.costmodel import fit

    if args.ledger is not None:
        path = datasets.ledger_csv(args.ledger, since_days=args.since_days)
    else:
        path = datasets.resolve_csv(args.csv)
    frame = fit.read_measurements(
        path, x=args.x, y=args.y, where=args.where, requests=args.requests
    )
    report = fit.fit_report(frame, args.x, args.y)
    measured_on = None
    if args.measured_on:
        measured_on = lookup(args.measured_on).tflops_per_joule("fp32")
    if args.out:
        from jouled.costmodel.fitfile import write_fit

        write_fit(fit.to_fit(report, args.method, measured_on), args.out)
    if args.plot or args.plot_cv:
        try:
            from jouled.costmodel import plots
        except ImportError:
            raise UsageError("plots need matplotlib: pip install 'jouled[report]'") from None
        if args.plot:
            plots.regression_plot(report, args.plot, args.title)
            print(f"jouled model fit: plot written to {args.plot}", file=sys.stderr)
        if args.plot_cv:
            plots.cv_plot(report, args.plot_cv)
            print(f"jouled model fit: predictor plot written to {args.plot_cv}", file=sys.stderr)
    if args.json:
        _print_json(fit.report_to_dict(report))
        return 0
    a, o = report.anchored, report.ols
    print(f"{report.n} rows from {path}; {report.y} against {report.x}")
    print(
        f"through origin (thesis, Listing C.1): slope {a.slope:.6g} J/{report.x}, "
        f"95 % CI {a.slope_ci95[0]:.5g} to {a.slope_ci95[1]:.5g}, p {a.p_value:.3g}"
    )
    print(
        f"  R² Listing C.1 {a.r2_thesis:.4f} (counts the (0,0) anchor); centred "
        f"{a.r2_centered:.4f}; uncentred {a.r2_uncentered:.4f}"
    )
    if o is not None:
        print(
            f"with intercept (OLS): slope {o.slope:.6g} (95 % CI {o.slope_ci95[0]:.5g} to "
            f"{o.slope_ci95[1]:.5g}, p {o.slope_p:.3g}), intercept {o.intercept:.6g} "
            f"(95 % CI {o.intercept_ci95[0]:.5g} to {o.intercept_ci95[1]:.5g}, "
            f"p {o.intercept_p:.3g}); R² {o.r2:.4f}"
        )
    print("leave-one-out comparison (best first):")
    for r in report.cv:
        err = (
            "undefined"
            if not math.isfinite(r.loo_mape_percent)
            else (f"{r.loo_mape_percent:7.1f} %  RMSE {r.loo_rmse:.4g}")
        )
        print(f"  {r.label:<44} {err}{'  ' + r.note if r.note else ''}")
    print(report.verdict)
    if args.out:
        print(f"fit file written: {args.out}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    if args.gflops is not None:
        if args.new_tokens is not None:
            raise UsageError("--new-tokens goes with --config (--gflops is the whole request)")
        gflops = float(args.gflops)
    else:
        report = _count(args.config, args.seq_len, args.batch, args.new_tokens)
        if args.new_tokens is not None and report.family == "encoder":
            raise UsageError(f"--new-tokens: {report.model_type} is an encoder, it generates none")
        gflops = report.gflops if report.generate_gflops is None else report.generate_gflops
    inference = lookup(args.inference_hardware or args.hardware or "thesis-cpu")
    training = lookup(args.training_hardware or args.hardware or "thesis-gpu")
    if args.efficiency is not None or args.price_per_hour is not None:
        if args.efficiency == 0:
            raise UsageError("--efficiency must be positive (TFLOPs per joule)")
        changes: dict[str, Any] = {"name": f"{inference.name} (user)", "source": "user entry"}
        if args.efficiency is not None:
            changes[f"tflops_per_joule_{args.precision}"] = args.efficiency
        if args.price_per_hour is not None:
            changes["price_per_hour_usd"] = args.price_per_hour
        inference = replace(inference, **changes)
    coef = thesis_coefficients()
    if args.fit:
        coef = coefficients_from_fit(load_fit(args.fit), coef)
    if args.cold_start_joules is not None:
        coef = replace(coef, cold_start_joules=args.cold_start_joules)
    if args.retrain_every_days is not None:
        retrains = retrains_for(args.days, args.retrain_every_days)
    else:
        retrains = 0.0 if args.retrains is None else float(args.retrains)
    plan = Deployment(
        gflops_per_request=gflops,
        requests_per_day=args.requests_per_day,
        days=args.days,
        inference_hardware=inference,
        training_hardware=training,
        precision=args.precision,
        retrains=retrains,
        finetune_steps=args.finetune_steps,
        pue=args.pue,
        grid_g_per_kwh=args.grid,
        price_per_kwh=args.price_per_kwh,
        currency=args.currency,
        serving_hours_per_day=args.serving_hours_per_day,
    )
    result = predict(plan, coef)
    if args.json:
        data = result.to_dict()
        data.update(
            gflops_per_request=gflops,
            inference_hardware=inference.name,
            training_hardware=training.name,
            precision=args.precision,
        )
        _print_json(data)
        return 0
    cur = result.currency
    rows = [
        ("work per request", f"{gflops:,.3f} GFLOPs"),
        ("hardware", f"inference {inference.name}, fine-tuning {training.name} ({args.precision})"),
        (
            "fine-tuning per run (Eq. 5.3)",
            f"{result.finetune_joules_per_run / 3.6e6:,.4f} kWh" if result.retrains else "-",
        ),
        ("cold start per run", f"{result.cold_start_joules:,.1f} J" if result.retrains else "-"),
        (
            "maintenance",
            f"{result.retrains:g} run(s): {result.maintenance_joules / 3.6e6:,.4f} kWh"
            if result.retrains
            else "none (add fine-tuning with --retrains N or --retrain-every-days D)",
        ),
        ("inference per request (Eq. 5.4)", f"{result.inference_joules_per_request:,.4g} J"),
        (
            "inference",
            f"{result.requests:,.0f} requests: {result.inference_joules / 3.6e6:,.4f} kWh",
        ),
        ("IT energy (Eq. 5.5)", f"{result.it_kwh:,.4f} kWh over {result.days:g} days"),
        ("facility energy", f"{result.facility_kwh:,.4f} kWh (PUE {result.pue:g})"),
        ("energy cost", f"{result.energy_cost:,.2f} {cur}"),
        (
            "hardware cost",
            "n/a (no price for this hardware; give --price-per-hour)"
            if result.hardware_cost is None
            else f"{result.hardware_cost:,.2f} {cur}",
        ),
        ("total cost", f"{result.total_cost:,.2f} {cur}"),
        ("emissions", f"{result.co2e_grams:,.1f} gCO2e ({result.co2e_grams / 1000:,.3f} kg)"),
        ("coefficients", result.coefficients_source),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from jouled.costmodel import fit, validate

    if args.csv:
        if not args.holdout:
            raise UsageError("jouled model validate: --csv needs --holdout MODEL")
        frame = fit.read_measurements(
            datasets.resolve_csv(args.csv), x=args.x, y=args.y, where=args.where
        )
        checks = validate.holdout_validation(frame, args.holdout, x=args.x, y=args.y)
    else:
        checks = validate.thesis_validation()
    if args.json:
        _print_json([c.to_dict() for c in checks])
        return 0
    print(validate.summary(checks))
    return 0


_COMMANDS = {
    "flops": _cmd_flops,
    "fit": _cmd_fit,
    "predict": _cmd_predict,
    "validate": _cmd_validate,
}


# The offline half's libraries are extras, not daemon dependencies: a missing one is a
# one-line instruction, never a traceback.
_MODEL_EXTRA = "needs numpy, pandas and scipy, not installed here: pip install 'jouled[model]'"
_OFFLINE_EXTRAS = {
    "numpy": _MODEL_EXTRA,
    "pandas": _MODEL_EXTRA,
    "scipy": _MODEL_EXTRA,
    "matplotlib": "plots need matplotlib: pip install 'jouled[report]'",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``jouled model`` with ``argv`` (without the program name); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        return _COMMANDS[args.command](args)
    except SystemExit as stop:  # --help
        return stop.code if isinstance(stop.code, int) else 0
    except ModuleNotFoundError as err:
        missing = (err.name or "").partition(".")[0]
        if missing not in _OFFLINE_EXTRAS:
            raise
        command = " ".join(["jouled model", *list(sys.argv[1:] if argv is None else argv)[:1]])
        print(f"{command}: {_OFFLINE_EXTRAS[missing]}", file=sys.stderr)
        return 2
    except (
        UsageError,
        ConfigError,
        FitFileError,
        HardwareError,
        PredictError,
        FileNotFoundError,
    ) as err:
        print(f"jouled model: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except ValueError as err:  # MeasurementError and number checks from the offline half
        print(f"jouled model: error: {_one_line(err)}", file=sys.stderr)
        return 2


def _one_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return " ".join(text.split())


if __name__ == "__main__":
    raise SystemExit(main())
