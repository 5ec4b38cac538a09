"""The ``jouled`` command: run, check, model, report, loadgen."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from jouled import __version__

_DELEGATED = {
    "model": "jouled.costmodel.cli",
    "report": "jouled.report",
    "loadgen": "jouled.loadgen.cli",
    "demo": "jouled.demo",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jouled",
        description="Energy and carbon telemetry for ML inference hosts.",
    )
    p.add_argument("--version", action="version", version=f"jouled {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon (embedded defaults without --config)")
    run.add_argument("--config", type=Path, help="YAML config file")
    run.add_argument("--listen", help="HOST:PORT for /metrics and /healthz (overrides config)")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])

    check = sub.add_parser("check", help="what each collector can read, and how to fix it")
    check.add_argument("--config", type=Path, help="YAML config file")

    for name, text in (
        ("model", "the offline cost model: flops | fit | predict | validate"),
        ("report", "energy, cost and emissions from the ledger: tables, CSV, JSON, plots"),
        ("loadgen", "the thesis's request scenarios against an inference server"),
        ("demo", "daemon, example server and a scenario together, with a report"),
    ):
        sub.add_parser(name, help=text, add_help=False)
    return p


def cmd_run(args: argparse.Namespace) -> int:
    from jouled import config, logs, tls
    from jouled.daemon.lean_imports import import_aiohttp_web_without_mime_files
    from jouled.daemon.malloc_tuning import tune_malloc
    from jouled.ingest import grpccore

    tls.import_aiohttp_without_ca_bundle()  # before anything imports aiohttp: ~2 MB
    import_aiohttp_web_without_mime_files()  # ~0.3 MB
    from jouled.daemon.service import Daemon, serve

    try:
        flags = {"listen": args.listen, "log_level": args.log_level}
        cfg = config.load(args.config).with_overrides(**flags)
    except config.ConfigError as exc:
        print(f"jouled: config error: {exc}", file=sys.stderr)
        return 2
    logs.setup(cfg.log_level)
    # Before any thread and before grpcio is imported (at the first gRPC connection).
    grpccore.choose_experiments()
    tune_malloc()  # before the daemon's threads make arenas of their own
    daemon = Daemon(cfg, config_path=args.config, flag_overrides=flags)
    return asyncio.run(serve(daemon))


def cmd_check(args: argparse.Namespace) -> int:
    from jouled import config
    from jouled.clock import SystemClock
    from jouled.collectors.registry import required_failures
    from jouled.daemon.check import MODEL_CONFIG, collect_rows, render

    try:
        cfg = config.load(args.config)
    except config.ConfigError as exc:
        print(f"jouled: config error: {exc}", file=sys.stderr)
        return 2
    rows = collect_rows(cfg, SystemClock())
    render(rows, sys.stdout)
    failed = required_failures(cfg, rows)
    bad_models = [r.target for r in rows if r.collector == MODEL_CONFIG and not r.readable]
    if bad_models:
        print(
            f"\nspans.model_configs cannot be used for: {', '.join(bad_models)} "
            "(jouled run would not start); see the fixes above",
            file=sys.stdout,
        )
    if failed:
        print(
            f"\nrequired collector(s) cannot read: {', '.join(failed)} "
            "(enabled: true in the config); see the fixes above",
            file=sys.stdout,
        )
        return 1
    return 1 if bad_models else 0


def main(argv: Sequence[str] | None = None) -> int:
    """The ``jouled`` command. Output piped into a reader that quits early (``jouled report
    | head``) ends the command quietly with status 1, as the Python docs advise
    (library/signal, "Note on SIGPIPE"), instead of a BrokenPipeError traceback."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, not at exit, where the error could only be printed
        return code
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null so that flush is silent.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _DELEGATED:
        # These commands own their argument parsing; importing them lazily keeps pandas,
        # scipy and aiohttp's client out of the daemon's start-up.
        module = importlib.import_module(_DELEGATED[argv[0]])
        code: int = module.main(argv[1:])
        return code
    args = _parser().parse_args(argv)
    if args.command == "run":
        return cmd_run(args)
    if args.command == "check":
        return cmd_check(args)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
