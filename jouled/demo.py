"""``jouled demo``: the daemon, the example inference server and the thesis's scenarios together.

It starts jouled (workload ``inference`` matched by the server's pidfile), the example
server of ``examples/inference_server`` sending request spans, runs scenarios 1-3 with
``jouled loadgen`` and prints joules per request and per text by scenario (the thesis's
Table 4.3, on this host), with a PNG plot. Without readable RAPL the joules are estimates
from CPU utilization and the output says so; ``--fake-rapl`` runs an emulated RAPL tree
whose power follows the host's CPU load, so the numbers behave like measurements.

Over 400 lines because it is one command end to end (arguments, child processes, the
scenarios, the table); its plot is demo_plot.py, the RAPL emulator
jouled/testing/load_following.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from jouled.demo_plot import plot
from jouled.loadgen import driver, readout
from jouled.loadgen.scenarios import SCENARIO_REQUESTS
from jouled.testing.load_following import LoadFollowingRapl
from jouled.testing.net import free_port, http_get

WORKLOAD = "inference"
REPO_ROOT = Path(__file__).resolve().parent.parent


# --- child processes ------------------------------------------------------------------------


def wait_until(pred: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise DemoError(f"timed out after {timeout_s:.0f} s waiting for {what}")


class DemoError(Exception):
    """The demo cannot go on; ``str()`` says what and where the logs are."""


@contextlib.contextmanager
def child(
    args: list[str], log: Path, *, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as fh:
        proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


# --- the run ---------------------------------------------------------------------------------


# The source of every --fake-rapl figure, in the table, the plot and demo.json.
EMULATED = "rapl (emulated)"


@dataclass(frozen=True, slots=True)
class ScenarioRow:
    scenario: int
    requests: int
    errors: int
    texts: int
    wall_s: float
    p50_ms: float
    requests_settled: float
    joules_per_request: float
    joules_per_text: float
    gflops_per_request: float
    workload_energy_j: float
    sources: tuple[str, ...]
    truncated: bool
    spans_late: float = 0.0

    @property
    def run_joules_per_request(self) -> float:
        """The thesis's way: all the workload's active energy over the run, per request."""
        return self.workload_energy_j / self.requests if self.requests else math.nan

    @property
    def joules_per_gflop(self) -> float:
        g = self.gflops_per_request
        return self.joules_per_request / g if g and not math.isnan(g) else math.nan


@dataclass(frozen=True, slots=True)
class DemoPlan:
    scenario1_requests: int
    pause_scale: float
    interval_s: float
    settle_s: float


def _config(
    work: Path, pidfile: Path, plan: DemoPlan, rapl_path: Path | None, idle: dict[str, float]
) -> dict[str, Any]:
    collectors: dict[str, Any] = {"nvml": {"enabled": False}}
    if rapl_path is not None:
        collectors["rapl"] = {"enabled": True, "path": str(rapl_path)}
        collectors["estimate"] = {"enabled": False}
    return {
        "interval": plan.interval_s,
        "listen": f"127.0.0.1:{free_port()}",
        "ingest": {"listen": f"127.0.0.1:{free_port()}", "grpc_listen": None},
        "collectors": collectors,
        "workloads": [{"name": WORKLOAD, "match": {"pidfile": str(pidfile)}}],
        "attribution": {"idle": "exclude", "idle_power_watts": idle},
        "spans": {"settle_seconds": plan.settle_s},
        # Its own books: the demo's workload never lands in the host's (system) ledger.
        "ledger": {"path": str(work / "ledger.db")},
        "log_level": "warning",
    }


def estimate_idle_w() -> tuple[bool, dict[str, float]]:
    """(RAPL readable here, idle watts to configure). With estimates, idle is the model's
    own zero-load power, so subtracting it is exact for the model (the thesis's Eq. 4.3)."""
    from jouled import config as config_mod
    from jouled.clock import SystemClock
    from jouled.collectors.estimate import EstimateCollector
    from jouled.collectors.registry import build_collectors

    cfg = config_mod.validate({"collectors": {"nvml": {"enabled": False}}}, "<demo>")
    plan = build_collectors(cfg, SystemClock())
    idle: dict[str, float] = {}
    for c in plan.collectors:
        if isinstance(c, EstimateCollector):
            idle = {
                "cpu": c.cpu_power_w(0.0),
                "dram": c.memory_gb * cfg.collectors.estimate.memory_watts_per_gb,
            }
        with contextlib.suppress(Exception):
            c.close()
    return plan.rapl_readable, idle


async def _scenario(
    scenario: int, server_url: str, metrics_url: str, plan: DemoPlan, seed: int
) -> ScenarioRow:
    import aiohttp

    full = SCENARIO_REQUESTS[scenario]
    n = min(full, plan.scenario1_requests) if scenario == 1 else full
    opts = driver.RunOptions(
        url=server_url,
        seed=seed,
        scenario=scenario,
        max_requests=n,
        duration_s=600.0,
        pause_scale=plan.pause_scale,
        timeout_s=120.0,
    )
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        before = await readout.fetch_metrics(session, metrics_url)
        progress = driver.Progress(n, sys.stderr)
        result = await driver.run(opts, progress)
        progress.update(len(result.records), 0, force=True)
        progress.close()
        summary = driver.summarize(result)
        after = await readout.wait_settled(
            session,
            metrics_url,
            before,
            workload=WORKLOAD,
            expected_requests=summary.requests - summary.errors,
            timeout_s=plan.settle_s + 10 * plan.interval_s + 10,
            say=lambda message: print(f"  {message}", file=sys.stderr, flush=True),
        )
    energy = readout.energy_report(before, after, workload=WORKLOAD, texts=summary.texts)
    return ScenarioRow(
        scenario=scenario,
        requests=summary.requests,
        errors=summary.errors,
        texts=summary.texts,
        wall_s=summary.wall_s,
        p50_ms=summary.p50_ms,
        requests_settled=energy.requests_settled,
        joules_per_request=energy.joules_per_request,
        joules_per_text=energy.joules_per_text,
        gflops_per_request=energy.gflops_per_request,
        workload_energy_j=energy.workload_energy_j,
        sources=energy.sources,
        spans_late=energy.spans_late,
        truncated=n < full or plan.pause_scale != 1.0,
    )


def render_table(rows: list[ScenarioRow], model: str) -> str:
    head = (
        f"{'scenario':>8} {'requests':>8} {'texts':>6} {'wall s':>7} {'p50 ms':>8} "
        f"{'J/req span':>10} {'J/text':>9} {'GFLOPs/req':>10} {'J/GFLOP':>8} "
        f"{'workload J':>10} {'J/req run':>9}  source"
    )
    lines = [f"model: {model}", head, "-" * len(head)]
    for r in rows:
        mark = "*" if r.truncated else " "
        lines.append(
            f"{r.scenario:>7}{mark} {r.requests:>8} {r.texts:>6} {r.wall_s:>7.1f} "
            f"{r.p50_ms:>8.1f} {r.joules_per_request:>10.4f} {r.joules_per_text:>9.5f} "
            f"{r.gflops_per_request:>10.3f} {r.joules_per_gflop:>8.4f} "
            f"{r.workload_energy_j:>10.2f} {r.run_joules_per_request:>9.4f}  "
            f"{','.join(r.sources) or 'none'}"
        )
    lines.append(
        "J/req span: energy jouled gave the request spans; J/req run: all the workload's "
        "active energy over the run / requests (the thesis's Eq. 4.3 way)"
    )
    if any(r.truncated for r in rows):
        lines.append("* shortened for the demo (fewer requests or shorter pauses); --full runs")
        lines.append("  the thesis's scenarios unchanged (about 5 minutes)")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jouled demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("jouled-demo"), help="results directory")
    p.add_argument("--fake-rapl", action="store_true", help="emulated RAPL following CPU load")
    p.add_argument("--backend", choices=("tiny", "minilm"), default="tiny")
    p.add_argument("--scenario1-requests", type=int, default=40, help="of the thesis's 500")
    p.add_argument("--pause-scale", type=float, default=0.5, help="scenario pauses x this")
    p.add_argument("--full", action="store_true", help="the thesis's scenarios unshortened")
    p.add_argument("--scenarios", default="1,2,3", help="comma-separated subset")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--interval", type=float, default=0.5, help="jouled tick, seconds")
    return p


def run_demo(args: argparse.Namespace, out: Callable[[str], None]) -> dict[str, Any]:
    plan = DemoPlan(
        scenario1_requests=500 if args.full else args.scenario1_requests,
        pause_scale=1.0 if args.full else args.pause_scale,
        interval_s=args.interval,
        # A span must arrive before its first tick settles, or it is late and not counted:
        # longer than the longest request (scenario 3's 500 texts) plus the report delay.
        settle_s=6.0 if args.backend == "tiny" else 30.0,
    )
    scenarios = [int(s) for s in args.scenarios.split(",") if s.strip()]
    if not scenarios or any(s not in SCENARIO_REQUESTS for s in scenarios):
        raise DemoError(f"--scenarios: choose among 1,2,3, got {args.scenarios!r}")
    server_module = REPO_ROOT / "examples" / "inference_server" / "server.py"
    if not server_module.exists():
        raise DemoError(f"{server_module} not found: run the demo from a jouled checkout")
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=args.out))
    emulator: LoadFollowingRapl | None = None
    if args.fake_rapl:
        emulator = LoadFollowingRapl(work / "sys")
        emulator.start()
        idle = {"cpu": emulator.package_idle_w, "dram": emulator.dram_idle_w}
        mode = (
            "EMULATED RAPL: a fake powercap tree whose power follows this host's CPU load "
            f"({emulator.package_idle_w} W idle + {emulator.package_w_per_cpu} W per busy CPU)"
        )
        rapl_path: Path | None = emulator.class_dir
    else:
        readable, idle = estimate_idle_w()
        rapl_path = None
        if readable:
            idle = {}  # real RAPL: idle is learned from the first quiet ticks
            mode = "MEASURED: this host's RAPL counters"
        else:
            mode = (
                "ESTIMATES: no readable RAPL here, so jouled estimates CPU and memory power "
                "from CPU utilization (Cloud Carbon Footprint coefficients). Not measurements."
            )
    out(f"jouled demo: {mode}")
    pidfile = work / "server.pid"
    cfg = _config(work, pidfile, plan, rapl_path, idle)
    cfg_path = work / "jouled.yaml"
    cfg_path.write_text(json.dumps(cfg, indent=2))  # JSON is YAML
    metrics_url = "http://" + cfg["listen"]
    ingest_url = "http://" + cfg["ingest"]["listen"]
    server_port = free_port()
    server_url = f"http://127.0.0.1:{server_port}/predict"
    env_python = sys.executable
    rows: list[ScenarioRow] = []
    try:
        # The server first, so jouled's first scan finds it by its pidfile (a pidfile
        # written later is claimed at a later scan: examples/inference_server/README.md).
        with (
            child(
                [
                    env_python,
                    "-m",
                    "examples.inference_server.server",
                    "--port",
                    str(server_port),
                    "--backend",
                    args.backend,
                    "--jouled-ingest",
                    ingest_url,
                    "--workload",
                    WORKLOAD,
                    "--pidfile",
                    str(pidfile),
                ],
                work / "server.log",
                cwd=REPO_ROOT,
            ) as server,
            contextlib.ExitStack() as stack,
        ):

            def up(url: str, proc: subprocess.Popen[bytes], name: str) -> bool:
                if proc.poll() is not None:
                    raise DemoError(f"{name} exited with {proc.returncode}; see {work}")
                return http_get(url, 2.0)[0] == 200

            wait_until(
                lambda: up(f"http://127.0.0.1:{server_port}/healthz", server, "server"),
                120,
                "the example server",
            )
            daemon = stack.enter_context(
                child(
                    [env_python, "-m", "jouled", "run", "--config", str(cfg_path)],
                    work / "jouled.log",
                )
            )
            wait_until(lambda: up(metrics_url + "/healthz", daemon, "jouled"), 30, "jouled")
            out(f"jouled serving {metrics_url}/metrics; logs in {work}")

            def matched() -> bool:
                text = http_get(metrics_url + "/metrics", 2.0)[1]
                return f'jouled_workload_processes{{workload="{WORKLOAD}"}} 1.0' in text

            wait_until(matched, 15, "jouled to find the server's process")
            if not idle:
                out("learning idle power for 6 s ...")
                time.sleep(6)
            for s in scenarios:
                out(f"scenario {s} ...")
                rows.append(asyncio.run(_scenario(s, server_url, metrics_url, plan, args.seed)))
    finally:
        if emulator is not None:
            emulator.stop()
    if args.fake_rapl:  # jouled read an emulated tree: its "rapl" is no measurement here
        rows = [
            replace(r, sources=tuple(EMULATED if s == "rapl" else s for s in r.sources))
            for r in rows
        ]
    model = "tiny-bert (numpy, random weights)" if args.backend == "tiny" else "all-MiniLM-L6-v2"
    estimated = any("estimate" in r.sources for r in rows)
    out("")
    out(render_table(rows, model))
    late = sum(r.spans_late for r in rows)
    if late:
        out(f"WARNING: {late:.0f} span(s) arrived after their energy settled and were not counted")
    if estimated:
        out("NOTE: source=estimate: joules estimated from CPU utilization, not measured.")
    if args.fake_rapl:
        out(
            f"NOTE: source={EMULATED}: jouled's RAPL collector read the emulator's fake "
            "powercap tree (power follows this host's CPU load), not this host's meters."
        )
    kind = "estimated" if estimated else ("emulated RAPL" if args.fake_rapl else "RAPL")
    png = args.out / "demo.png"
    if plot(rows, png, title=f"jouled demo: {model}, {kind}", estimated=estimated):
        out(f"plot: {png}")
    else:
        out("plot skipped: matplotlib is not installed (pip install 'jouled[report]')")
    result = {
        "mode": mode,
        "model": model,
        "estimated": estimated,
        "fake_rapl": bool(args.fake_rapl),
        "plan": asdict(plan),
        "rows": [
            {
                **asdict(r),
                "joules_per_gflop": r.joules_per_gflop,
                "run_joules_per_request": r.run_joules_per_request,
            }
            for r in rows
        ],
    }
    (args.out / "demo.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        run_demo(args, print)
    except DemoError as exc:
        print(f"jouled demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
