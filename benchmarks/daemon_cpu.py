"""The real daemon's CPU and memory per span, in steady state, against its no-span baseline,
and the idle daemon against CodeCarbon's tracker.

A real ``jouled run`` at a 1 s tick with 10 workloads (200 of ~1,000 host processes matched)
receives spans from the real OpenTelemetry SDK (``benchmarks.span_sender``: one
BatchSpanProcessor per workload, 50 models) over OTLP/HTTP protobuf and OTLP/gRPC at each
rate. Each rate runs on a fresh daemon for ``settle_seconds + 10`` s before its window
opens, so that the window holds the whole span path (receive, decode, validate, queue,
settle, book) in steady state; the no-span baseline is a daemon of the same run on the
same host processes.

CPU is utime + stime of the daemon process (all threads) from /proc/<pid>/stat over the
window, as a percentage of one core: CPU-seconds, not wall time, so neighbours on a shared
machine do not count. Memory is the largest VmRSS sampled during the window. Spans per second
are the daemon's own ``jouled_spans_received_total`` over the window.

The idle comparison runs the idle daemon (no workloads, no spans) and CodeCarbon's
``OfflineEmissionsTracker`` (``measure_power_secs=1``, the ``bench`` extra) at the same time,
over the same window, so both see the same machine. Besides utime + stime it reads each
process's CPU clock in ns (``clock_gettime`` on the process CPU clock: threads that ended in
the window count; CodeCarbon starts a thread per measurement).

    .venv/bin/python -m benchmarks.daemon_cpu                  # 3 runs, ~25 min
    .venv/bin/python -m benchmarks.daemon_cpu --runs 1 --rates 1000 --transports http
    .venv/bin/python -m benchmarks.daemon_cpu --runs 0          # the idle comparison only
                                                                # (daemon_cpu_idle.json)
    .venv/bin/python -m benchmarks.daemon_cpu --runs 1 --rates 1000 --transports http \
        --no-codecarbon --span-ms 2000                          # LLM-length requests

``--settle-seconds`` shortens the settle delay (and the warm-up with it) for quick looks
only: the headline numbers use the default 30 s.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks._util import (
    cpu_seconds,
    daemon,
    exit_on_sigterm,
    host_speed,
    interpreter,
    process_cpu_ns,
    rss_mb,
    save,
    sleepers,
    thread_cpu,
    workload_configs,
)
from benchmarks.compare import CODECARBON, _codecarbon_python
from benchmarks.span_sender import model_names
from jouled.attribution.workloads import ProcessTracker
from jouled.testing.net import free_port

GROUPS = 10
DEFAULT_SETTLE_S = 30.0
YOUNG_S = ProcessTracker.YOUNG_S
_RECEIVED = re.compile(rb"^jouled_spans_received_total (\S+)$", re.M)
_LOST = re.compile(
    rb'^(?:jouled_spans_rejected_total\{reason="pending_full"\}|jouled_spans_dropped_total) (\S+)$',
    re.M,
)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _received(d: Any) -> float:
    m = _RECEIVED.search(d.metrics())
    return float(m.group(1)) if m else 0.0


def _lost(d: Any) -> float:
    """Spans the daemon refused or pushed out at its pending cap (pending_full, dropped): a
    row whose daemon threw spans away would understate the cost of keeping them."""
    text = d.metrics()
    return sum(float(m.group(1)) for m in _LOST.finditer(text))


_speeds: list[dict[str, float]] = []  # host_speed samples of the last window


def _window(pids: list[int], window: float) -> tuple[list[float], float, list[float], list[float]]:
    """CPU seconds per pid over ``window`` s of wall time (utime + stime, in 10 ms ticks);
    the wall time; max RSS per pid; CPU seconds per pid by the process CPU clock (ns: a 30 s
    window's ticks are 0.03 points of a core). The host's speed is sampled every second
    meanwhile (``_speeds``: ~5 ms of CPU each)."""
    _speeds.clear()
    ns0 = [process_cpu_ns(p) for p in pids]
    c0 = [cpu_seconds(p) for p in pids]
    t0 = time.monotonic()
    peak = [rss_mb(p) for p in pids]
    while (left := t0 + window - time.monotonic()) > 0:
        time.sleep(min(1.0, left))
        peak = [max(a, rss_mb(p)) for a, p in zip(peak, pids, strict=True)]
        _speeds.append(host_speed(repeats=1, steps=2_000))
    wall = time.monotonic() - t0
    cpu = [cpu_seconds(p) - c for p, c in zip(pids, c0, strict=True)]
    clock = [(process_cpu_ns(p) - n) / 1e9 for p, n in zip(pids, ns0, strict=True)]
    return cpu, wall, peak, clock


def _host_speed_row() -> dict[str, float]:
    """The median of the last window's host speed samples (see ``_util.host_speed``)."""
    if not _speeds:
        return {}
    return {
        "host_python_us": statistics.median(s["python_us"] for s in _speeds),
        "host_syscall_us": statistics.median(s["syscall_us"] for s in _speeds),
    }


def _threads(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, float]:
    """Where the CPU goes: ms a second per thread group, most first (jouled-worker: the tick
    and settling; jouled-ingest: decode, validate, queue; main: the event loop: HTTP, the
    cost stage; grpc's own threads by their names)."""
    used = {k: v - before.get(k, 0.0) for k, v in after.items()}
    return {
        k: round(1e3 * v / wall, 3) for k, v in sorted(used.items(), key=lambda kv: -kv[1]) if v > 0
    }


def _row(
    cpu: float, wall: float, rss: float, spans: float = 0.0, *, clock_s: float
) -> dict[str, float]:
    """A measured row; ``clock_s``: the CPU seconds by the process CPU clock, kept under the
    "schedstat_*" key the earlier results' readers know."""
    return {
        "window_s": round(wall, 2),
        "cpu_s": round(cpu, 3),
        "cpu_percent_of_one_core": 100 * cpu / wall,
        "schedstat_percent_of_one_core": 100 * clock_s / wall,
        "rss_mb": rss,
        "spans": spans,
        "spans_per_s": spans / wall,
        **_host_speed_row(),
    }


@contextlib.contextmanager
def _sender(
    endpoint: str, protocol: str, rate: int, seconds: float, span_ms: float = 5.0
) -> Iterator[None]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.span_sender",
            "--endpoint",
            endpoint,
            "--protocol",
            protocol,
            "--rate",
            str(rate),
            "--seconds",
            str(seconds),
            "--workloads",
            str(GROUPS),
            "--span-ms",
            str(span_ms),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def loaded_config(settle: float | None, rate: int = 0) -> dict[str, Any]:
    """10 workloads, token work for their 50 models, free loopback ports for HTTP and gRPC;
    ``spans.max_pending_spans`` raised where ``rate`` spans/s would outgrow the default (the
    operator's fix that the daemon's warning names), so that every span is kept."""
    spans_cfg: dict[str, Any] = {
        # Work from tokens, as a server reporting GenAI token counts gets it.
        "gflops_per_token": {m: 16.0 for ms in model_names(GROUPS) for m in ms},
    }
    if settle is not None:
        spans_cfg["settle_seconds"] = settle
    held = rate * ((DEFAULT_SETTLE_S if settle is None else settle) + 10)  # + tick + BSP delay
    if 1.25 * held > 100_000:
        spans_cfg["max_pending_spans"] = int(1.25 * held)
    return {
        "interval": 1.0,
        "collectors": {"nvml": {"enabled": False}},
        "workloads": workload_configs(GROUPS),
        "spans": spans_cfg,
        "ingest": {
            "listen": f"127.0.0.1:{free_port()}",
            "grpc_listen": f"127.0.0.1:{free_port()}",
        },
    }


def _loaded_run(
    run: int,
    rates: list[int],
    transports: list[str],
    window: float,
    settle: float | None,
    *,
    span_ms: float = 5.0,
    python: str | None = None,
) -> dict[str, Any]:
    settle_s = DEFAULT_SETTLE_S if settle is None else settle
    warm = settle_s + 10  # the first tick of the rate has settled, plus a BSP delay
    out: dict[str, Any] = {"settle_seconds": settle_s}
    with sleepers(1000, groups=GROUPS, per_group=20):
        # jouled re-reads the command line of processes younger than 30 s every tick (exec
        # re-matching): the host's processes must age first, as on a host in steady state.
        _log(f"run {run}: letting the host's processes age {YOUNG_S + 5:.0f} s")
        time.sleep(YOUNG_S + 5)
        # A fresh daemon for each measurement: freed memory is not given back to the OS, so
        # a daemon's RSS after a higher rate would say nothing about a lower one.
        with (
            tempfile.TemporaryDirectory() as tmp,
            daemon(Path(tmp), loaded_config(settle), python) as d,
        ):
            time.sleep(5)  # start-up is not the steady state
            _log(f"run {run}: no spans, {window:.0f} s window")
            th0 = thread_cpu(d.pid)
            (cpu,), wall, (rss,), (clock,) = _window([d.pid], window)
            th1 = thread_cpu(d.pid)
            out["no_spans"] = base = _row(cpu, wall, rss, clock_s=clock)
            base["threads_ms_per_s"] = _threads(th0, th1, wall)
        _log(f"run {run}: no spans {base['cpu_percent_of_one_core']:.2f} %, {rss:.1f} MB")
        for transport in transports:
            for rate in rates:
                _log(f"run {run}: {transport} {rate} spans/s, warm-up {warm:.0f} s")
                cfg = loaded_config(settle, rate)
                endpoint = cfg["ingest"]["grpc_listen" if transport == "grpc" else "listen"]
                with (
                    tempfile.TemporaryDirectory() as tmp,
                    daemon(Path(tmp), cfg, python) as d,
                    _sender(endpoint, transport, rate, warm + window + 10, span_ms),
                ):
                    time.sleep(warm)
                    n0, th0 = _received(d), thread_cpu(d.pid)
                    (cpu,), wall, (rss,), (clock,) = _window([d.pid], window)
                    n, th1 = _received(d) - n0, thread_cpu(d.pid)
                    lost = _lost(d)
                row = _row(cpu, wall, rss, n, clock_s=clock)
                row["spans_lost_at_cap"] = lost  # since start; 0 when every span was kept
                row["threads_ms_per_s"] = _threads(th0, th1, wall)
                extra = cpu - base["cpu_s"] * wall / base["window_s"]
                row["us_per_span_all_in"] = 1e6 * cpu / n if n else float("nan")
                row["us_per_span_over_baseline"] = 1e6 * extra / n if n else float("nan")
                out[f"{transport}_{rate}"] = row
                _log(
                    f"run {run}: {transport} {rate}/s: {row['spans_per_s']:.0f} spans/s "
                    f"received, CPU {row['cpu_percent_of_one_core']:.2f} % "
                    f"({row['schedstat_percent_of_one_core']:.2f} % by CPU clock) "
                    f"({row['us_per_span_all_in']:.1f} us/span all in, "
                    f"{row['us_per_span_over_baseline']:.1f} over baseline), "
                    f"RSS max {rss:.1f} MB, {lost:.0f} spans lost at the cap, host "
                    f"{row.get('host_python_us', float('nan')):.0f} us per 1,000 Python steps; "
                    "ms/s by thread: "
                    + ", ".join(f"{k} {v:.2f}" for k, v in row["threads_ms_per_s"].items())
                )
    return out


def idle_vs_codecarbon(window: float, python: str | None = None) -> dict[str, Any]:
    """The idle daemon (the default config: OTLP/HTTP and OTLP/gRPC receivers), the idle
    daemon with its gRPC receiver off (``ingest.grpc_listen: null``: grpcio's own threads
    are not started) and CodeCarbon's tracker, measured over the same window."""
    py = _codecarbon_python(None)
    out: dict[str, Any] = {}
    cfg = {"interval": 1.0, "collectors": {"nvml": {"enabled": False}}}
    no_grpc = {**cfg, "ingest": {"listen": f"127.0.0.1:{free_port()}", "grpc_listen": None}}
    with (
        tempfile.TemporaryDirectory() as tmp,
        tempfile.TemporaryDirectory() as tmp2,
        daemon(Path(tmp), cfg, python) as d,
        daemon(Path(tmp2), no_grpc, python) as d2,
    ):
        pids = [d.pid, d2.pid]
        proc = None
        if py is None:
            out["codecarbon"] = "not installed (pip install codecarbon: the bench extra)"
        else:
            proc = subprocess.Popen(
                [py, "-c", CODECARBON, str(window + 30)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            assert proc.stdout is not None
            proc.stdout.readline()  # "started": start-up is not overhead per tick
            pids.append(proc.pid)
        try:
            time.sleep(5)
            _log(f"idle daemons and CodeCarbon side by side, {window:.0f} s window")
            th0 = [thread_cpu(d.pid), thread_cpu(d2.pid)]
            # ns: the same CPU time from the process CPU clock: at ~0.15 % of a core, 120 s
            # is only ~18 of the 10 ms clock ticks that utime + stime count in.
            cpus, wall, peaks, ns = _window(pids, window)
            th1 = [thread_cpu(d.pid), thread_cpu(d2.pid)]
        finally:
            if proc is not None:
                proc.kill()
                proc.wait()
    for i, key in enumerate(("jouled", "jouled_grpc_off")):
        out[key] = _row(cpus[i], wall, peaks[i], clock_s=ns[i])
        out[key]["threads_ms_per_s"] = _threads(th0[i], th1[i], wall)
    if len(pids) > 2:
        out["codecarbon"] = _row(cpus[2], wall, peaks[2], clock_s=ns[2])
        for i, suffix in ((0, ""), (1, "_grpc_off")):
            out[f"ratio_cpu_jouled{suffix}_over_codecarbon"] = (
                cpus[i] / cpus[2] if cpus[2] else float("inf")
            )
            out[f"ratio_schedstat_jouled{suffix}_over_codecarbon"] = (
                ns[i] / ns[2] if ns[2] else float("inf")
            )
    return out


def _summary(runs: list[dict[str, Any]], keys: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in keys:
        rows = [r[key] for r in runs]
        out[key] = {
            field: [round(row[field], 3) for row in rows]
            for field in rows[0]
            if isinstance(rows[0][field], float | int)
        }
        out[key]["median_cpu_percent"] = statistics.median(
            row["cpu_percent_of_one_core"] for row in rows
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--window", type=float, default=30.0, help="seconds measured per rate")
    p.add_argument("--rates", default="100,1000,5000", help="spans/s, comma-separated")
    p.add_argument("--transports", default="http,grpc", help="http and/or grpc")
    p.add_argument(
        "--settle-seconds",
        type=float,
        default=None,
        help="shorter spans.settle_seconds for quick looks (headline: the default 30 s)",
    )
    p.add_argument(
        "--span-ms",
        type=float,
        default=5.0,
        help="request length: 5 ms (the headline) or LLM-like, e.g. 2000 (overlapping by the "
        "thousand at 1,000 spans/s)",
    )
    p.add_argument("--no-codecarbon", action="store_true", help="skip the idle comparison")
    p.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter the daemons run on (default: this one), e.g. a venv made with "
        "the distribution's python3 and `pip install -e .` there; its build is recorded",
    )
    p.add_argument(
        "--idle-window",
        type=float,
        default=120.0,
        help="seconds of the idle comparison (CPU time counts in 10 ms clock ticks: "
        "0.15 %% of a core over 30 s is only 4.5 of them)",
    )
    args = p.parse_args()
    rates = [int(x) for x in args.rates.split(",")]
    transports = [t for t in args.transports.split(",") if t]
    window = min(args.window, 300.0)
    span_ms = min(max(args.span_ms, 0.0), 30_000.0)
    results: dict[str, Any] = {
        "daemon_python": interpreter(args.python),
        "window_s": window,
        "rates": rates,
        "transports": transports,
        "span_ms": span_ms,
    }
    if not args.no_codecarbon:
        results["idle_vs_codecarbon"] = idle_vs_codecarbon(
            min(args.idle_window, 600.0), args.python
        )
    runs = [
        _loaded_run(
            i + 1,
            rates,
            transports,
            window,
            args.settle_seconds,
            span_ms=span_ms,
            python=args.python,
        )
        for i in range(min(args.runs, 10))
    ]
    results["runs"] = runs
    keys = ["no_spans"] + [f"{t}_{r}" for t in transports for r in rates] if runs else []
    if runs:
        results["summary"] = _summary(runs, keys)
    print(
        "\nCPU % of one core (all threads, CPU-seconds / wall; in brackets by the process CPU "
        "clock, ns) and max RSS, per run:"
    )
    for key in keys:
        cells = "  ".join(
            f"{r[key]['cpu_percent_of_one_core']:5.2f} % "
            f"({r[key]['schedstat_percent_of_one_core']:4.2f}) "
            f"{r[key]['rss_mb']:5.1f} MB"
            + (f" {r[key].get('us_per_span_all_in', 0):5.1f} us/span" if key != "no_spans" else "")
            for r in runs
        )
        print(f"  {key:12} {cells}")
    idle = results.get("idle_vs_codecarbon")
    if idle is not None:
        cc = idle["codecarbon"]
        cc_text = (
            f"CodeCarbon {cc['cpu_percent_of_one_core']:.3f} % "
            f"({cc['schedstat_percent_of_one_core']:.3f} % by CPU clock, {cc['rss_mb']:.1f} MB), "
            f"ratio {idle['ratio_cpu_jouled_over_codecarbon']:.2f} "
            f"({idle['ratio_schedstat_jouled_over_codecarbon']:.2f})"
            if isinstance(cc, dict)
            else f"CodeCarbon {cc}"
        )
        print(
            f"  idle jouled {idle['jouled']['cpu_percent_of_one_core']:.3f} % "
            f"({idle['jouled']['schedstat_percent_of_one_core']:.3f} % by CPU clock, "
            f"{idle['jouled']['rss_mb']:.1f} MB) vs {cc_text}"
        )
        off = idle["jouled_grpc_off"]
        ratio = idle.get("ratio_schedstat_jouled_grpc_off_over_codecarbon")
        print(
            f"  idle jouled, gRPC receiver off: {off['cpu_percent_of_one_core']:.3f} % "
            f"({off['schedstat_percent_of_one_core']:.3f} % by CPU clock, "
            f"{off['rss_mb']:.1f} MB)" + (f", ratio {ratio:.2f} by CPU clock" if ratio else "")
        )
    name = "daemon_cpu" if span_ms == 5.0 else f"daemon_cpu_{span_ms:g}ms"
    if not runs:
        name = "daemon_cpu_idle"  # the idle comparison alone keeps the loaded runs' file
    print("saved", save(name, results))


if __name__ == "__main__":
    exit_on_sigterm()
    main()
