"""Shared helpers for the benchmarks: a real daemon process, /proc accounting, OTLP batches.

Each benchmark prints a small table and writes ``benchmarks/results/<name>.json`` with the
machine, the command and the date, from which docs/BENCHMARKS.md is written.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import json
import os
import platform
import re
import secrets
import shlex
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from jouled.testing.net import free_port, http_get

RESULTS = Path(__file__).with_name("results")
ROOT = Path(__file__).resolve().parent.parent  # the checkout: ``python -m jouled`` runs it
CLK_TCK = os.sysconf("SC_CLK_TCK")


# What a real Prometheus sends on every scrape (scrape/scrape.go, scrapeAcceptHeader with
# OpenMetrics enabled; Go's HTTP transport adds Accept-Encoding: gzip).
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
}


def scrape_like_prometheus(url: str, timeout: float = 5.0) -> tuple[bytes, int]:
    """GET ``url`` with Prometheus's headers: (the decompressed body, bytes on the wire)."""
    req = urllib.request.Request(url, headers=PROMETHEUS_HEADERS)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        wire = resp.read()
        gzipped = resp.headers.get("Content-Encoding") == "gzip"
    return (gzip.decompress(wire) if gzipped else wire), len(wire)


def wait_for(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if pred():
                return
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_cpu_ns(pid: int) -> int:
    """CPU time of a whole process in ns, threads that have ended included: the kernel's
    process CPU clock (``clock_getcpuclockid(3)``: ``(~pid << 3) | CPUCLOCK_SCHED``, the same
    scheduler runtime schedstat counts). A sum of the live threads' schedstat would drop
    every thread that ended in the window: CodeCarbon's tracker starts a new timer thread for
    each measurement, so such a sum went negative."""
    if pid <= 0:
        raise ValueError(f"not a process id: {pid}")  # 0 and -1 would read our own clock
    try:
        return time.clock_gettime_ns(((~pid) << 3) | 2)
    except OSError as exc:
        raise ProcessLookupError(f"no process {pid} to read the CPU clock of") from exc


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread group of ``pid`` (from each task's schedstat, in ns): jouled's
    pools name their threads (``jouled/threads.py``), so ``jouled-ingest_0`` and ``_1`` add up
    as ``jouled-ingest``; the main thread (the event loop) is ``main``."""
    out: dict[str, float] = {}
    task = Path(f"/proc/{pid}/task")
    for tid in os.listdir(task):
        try:
            ns = int((task / tid / "schedstat").read_text().split()[0])
            comm = (task / tid / "comm").read_text().strip()
        except (OSError, ValueError, IndexError):
            continue  # a thread that just ended
        name = "main" if tid == str(pid) else re.sub(r"_\d*$", "", comm)  # cut at 15 bytes
        out[name] = out.get(name, 0.0) + ns / 1e9
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentiles(values_s: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds."""
    xs = sorted(values_s)

    def q(p: float) -> float:
        pos = (len(xs) - 1) * p
        lo = int(pos)
        hi = min(lo + 1, len(xs) - 1)
        return (xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)) * 1000

    return {
        "n": len(xs),
        "mean_ms": statistics.fmean(xs) * 1000,
        "p50_ms": q(0.50),
        "p95_ms": q(0.95),
        "p99_ms": q(0.99),
        "max_ms": xs[-1] * 1000,
    }


def _python_step(n: int) -> int:
    """Plain interpreter work of the kinds the daemon's Python does: dict and set updates,
    small tuples and strs, float arithmetic, a method call per item."""
    d: dict[int, float] = {}
    seen: set[str] = set()
    acc = 0
    for i in range(n):
        key = (i * 2654435761) % 4093
        d[key] = d.get(key, 0.0) + i * 0.5
        name = f"w{key % 64}"
        if name not in seen:
            seen.add(name)
        acc += len((name, key, i)[0].upper())
    return acc + len(d)


def host_speed(repeats: int = 5, steps: int = 20_000) -> dict[str, float]:
    """How fast this host runs what the daemon runs right now, by this thread's CPU clock,
    the best of ``repeats`` rounds of ``steps``: ``python_us``, µs for 1,000 steps of plain
    interpreter work (``_python_step``); ``syscall_us``, µs for one ``clock_gettime`` of the
    process CPU clock, a system call (the tracker makes one a workload process a tick;
    kernel entry costs vary most between hosts: CPU mitigations, virtualisation).

    A thread's CPU clock does not tell a fast CPU from one shared with a busy neighbour (an
    SMT sibling, a hypervisor's other guests): on the 2-vCPU VMs here both figures have
    moved twofold within a minute, and threefold between hosts (docs/BENCHMARKS_HISTORY.md, the
    eighteenth pass). Daemon CPU figures taken at different times compare only with these
    beside them (``daemon_cpu`` samples them through each window)."""
    py = sc = float("inf")
    for _ in range(repeats):
        t0 = time.thread_time_ns()
        _python_step(steps)
        py = min(py, (time.thread_time_ns() - t0) / steps)  # ns a step = µs per 1,000
        t0 = time.thread_time_ns()
        for _ in range(steps):
            time.clock_gettime_ns(time.CLOCK_PROCESS_CPUTIME_ID)
        sc = min(sc, (time.thread_time_ns() - t0) / steps / 1e3)
    return {"python_us": round(py, 1), "syscall_us": round(sc, 3)}


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_1m_at_start": round(load[0], 2),
        "host_speed": host_speed(),
    }


def save(name: str, results: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    # The module run (``-m``), which a variant's file name (span_path_evict64) is not.
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    module = spec.name if spec is not None else f"benchmarks.{name}"
    payload = {
        "benchmark": name,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(
            shlex.quote(a) for a in [".venv/bin/python", "-m", module, *sys.argv[1:]]
        ),
        "machine": machine(),
        "results": results,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


class DaemonProc:
    def __init__(self, proc: subprocess.Popen[bytes], cfg: dict[str, Any], log: Path) -> None:
        self.proc = proc
        self.cfg = cfg
        self.log = log
        self.metrics_url = "http://" + cfg["listen"]
        self.ingest_url = "http://" + cfg["ingest"]["listen"]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def scrape(self) -> bytes:
        """/metrics as a real Prometheus asks for it (OpenMetrics, gzip), decompressed."""
        return scrape_like_prometheus(self.metrics_url + "/metrics")[0]

    def metrics(self) -> bytes:
        """/metrics in the plain text format (no Accept header), to read values from."""
        status, body = http_get(self.metrics_url + "/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return body.encode()


# Run by ``interpreter`` in the interpreter asked about, with the checkout's root as its
# argument: its build, and whether it can run jouled from that checkout (its dependencies
# importable there, and the compiled extensions built there loadable: where one is not, the
# daemon falls back to its pure-Python twin and a benchmark would measure that instead).
_INTERPRETER_PROBE = r"""
import importlib, json, pathlib, platform, sys, sysconfig
args = sysconfig.get_config_var("CONFIG_ARGS") or ""
root = pathlib.Path(sys.argv[1])
sys.path.insert(0, str(root))
unloadable = []
for so in sorted(root.joinpath("jouled").rglob("_*.so")):
    name = ".".join((*so.relative_to(root).parent.parts, so.name.split(".")[0]))
    try:
        importlib.import_module(name)
    except ImportError as exc:
        unloadable.append(f"{name} ({exc})")
with open("/proc/self/maps") as fh:
    shared = any("libpython" in line for line in fh)
missing = []
for name in ("aiohttp", "grpc", "google.protobuf", "pydantic", "yaml"):
    try:
        __import__(name)
    except ImportError:
        missing.append(name)
print(json.dumps({
    "path": sys.executable,
    "version": platform.python_version(),
    "implementation": platform.python_implementation(),
    "compiler": platform.python_compiler(),
    "configure_enable_optimizations": "--enable-optimizations" in args,
    "configure_with_lto": "--with-lto" in args,
    "libpython_shared": shared,
    "missing": missing,
    "unloadable": unloadable,
}))
"""


def interpreter(python: str, root: Path = ROOT) -> dict[str, Any]:
    """What ``python`` is: path, version, compiler, whether its ``configure`` asked for PGO
    (``--enable-optimizations``) and LTO (``--with-lto``), and whether it runs the
    interpreter from a shared ``libpython`` (``--enable-shared``: calls between the
    interpreter's own functions go through the PLT). Distributions may build with PGO and
    LTO without saying so in ``CONFIG_ARGS`` (Debian keeps its LTO flags out of
    ``_sysconfigdata``: /usr/share/doc/python3.11/changelog.Debian.gz), so the two
    ``configure_`` fields say what the build reports, not what it is.

    Raises RuntimeError naming what to fix when ``python`` does not run, lacks a package
    the daemon imports (make a venv with it and ``pip install -e .`` there), or cannot load
    a compiled extension built in ``root`` (the checkout the daemon runs from: built for
    another Python; ``pip install -e .`` with this one builds its own)."""
    try:
        out = subprocess.run(
            [python, "-c", _INTERPRETER_PROBE, str(root)],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"cannot run {python!r}: {exc}") from None
    if out.returncode != 0:
        raise RuntimeError(f"{python!r} failed: {out.stderr.strip()[-500:]}")
    info: dict[str, Any] = json.loads(out.stdout)
    if info["missing"]:
        raise RuntimeError(
            f"{python!r} lacks jouled's dependencies ({', '.join(info['missing'])}): make a "
            f"venv with it ({python} -m venv DIR) and run DIR/bin/pip install -e . there"
        )
    if info["unloadable"]:
        raise RuntimeError(
            f"{python!r} cannot load the compiled extensions built in {root} "
            f"({'; '.join(info['unloadable'])}): the daemon would run their pure-Python twins "
            f"instead; run {python} -m pip install -e . to build them for it"
        )
    del info["missing"], info["unloadable"]
    return info


@contextlib.contextmanager
def daemon(
    tmp: Path, cfg: dict[str, Any], python: str | None = None, root: Path = ROOT
) -> Iterator[DaemonProc]:
    """The real daemon (``python -m jouled run``, from the checkout at ``root``, this one by
    default) on loopback ports, stopped on exit. ``python``: the interpreter to run it on
    (default: this one's)."""
    cfg = {
        "listen": f"127.0.0.1:{free_port()}",
        # Never the host's ledger (/var/lib/jouled as root): two daemons side by side would
        # both book the host's energy there.
        "ledger": {"path": str(tmp / "ledger.db")},
        # Free ports for both receivers: another jouled may hold the default gRPC port.
        "ingest": {
            "listen": f"127.0.0.1:{free_port()}",
            "grpc_listen": f"127.0.0.1:{free_port()}",
        },
        "log_level": "warning",
        **cfg,
    }
    path = tmp / "jouled.yaml"
    path.write_text(yaml.safe_dump(cfg))
    log = tmp / "jouled.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [python or sys.executable, "-m", "jouled", "run", "--config", str(path)],
            cwd=root,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
        d = DaemonProc(proc, cfg, log)
        try:
            wait_for(lambda: http_get(d.metrics_url + "/healthz")[0] == 200, 30, "jouled")
            yield d
        finally:
            stop(proc)


def exit_on_sigterm() -> None:
    """SIGTERM (``kill``, ``timeout``) ends a benchmark as an exception does: its ``with``
    blocks stop the daemons, senders and busy workloads it started, where Python's default
    action would leave them running, skewing every measurement after it. For the main
    thread of a benchmark's ``__main__``."""
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


def stop(proc: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """SIGTERM (the daemon drains and flushes), SIGKILL after ``grace_s``."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def otlp_batch(
    n: int, *, workloads: Sequence[str], models: Sequence[str], end_ns: int, dur_ns: int = 5_000_000
) -> bytes:
    """An ExportTraceServiceRequest of ``n`` SERVER spans spread over workloads and models."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    req = ExportTraceServiceRequest()
    per = max(1, n // len(workloads))
    made = 0
    for wi, workload in enumerate(workloads):
        count = per if wi < len(workloads) - 1 else n - made
        if count <= 0:
            break
        rs = req.resource_spans.add()
        rs.resource.attributes.append(
            KeyValue(key="service.name", value=AnyValue(string_value=workload))
        )
        ss = rs.scope_spans.add()
        for i in range(count):
            s = ss.spans.add()
            s.trace_id = secrets.token_bytes(16)
            s.span_id = secrets.token_bytes(8)
            s.name = "POST /predict"
            s.kind = Span.SpanKind.SPAN_KIND_SERVER
            s.start_time_unix_nano = end_ns - dur_ns
            s.end_time_unix_nano = end_ns
            s.attributes.append(
                KeyValue(
                    key="gen_ai.request.model",
                    value=AnyValue(string_value=models[(made + i) % len(models)]),
                )
            )
            s.attributes.append(KeyValue(key="jouled.gflops", value=AnyValue(double_value=97.1)))
            s.attributes.append(KeyValue(key="http.route", value=AnyValue(string_value="/p")))
        made += count
    return bytes(req.SerializeToString())


def json_batch(
    n: int, *, workloads: Sequence[str], models: Sequence[str], end_ns: int, dur_ns: int = 5_000_000
) -> bytes:
    """jouled's own JSON schema (POST /v1/spans) with the same content as ``otlp_batch``."""
    spans = [
        {
            "workload": workloads[i % len(workloads)],
            "model": models[i % len(models)],
            "start_unix_nano": end_ns - dur_ns,
            "end_unix_nano": end_ns,
            "gflops": 97.1,
            "route": "/p",
            "span_id": secrets.token_hex(8),
        }
        for i in range(n)
    ]
    return json.dumps({"spans": spans}).encode()


@contextlib.contextmanager
def sleepers(total: int, groups: int, per_group: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Top the host up to ``total`` processes: ``groups`` x ``per_group`` match workloads
    (``sleep 1000.<g>``), the rest are anonymous ``sleep 999``."""
    existing = sum(1 for p in Path("/proc").iterdir() if p.name.isdigit())
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for g in range(groups):
            for _ in range(per_group):
                procs.append(subprocess.Popen(["sleep", f"1000.{g}"]))
        while existing + len(procs) < total:
            procs.append(subprocess.Popen(["sleep", "999"]))
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def workload_configs(groups: int) -> list[dict[str, Any]]:
    return [{"name": f"w{g}", "match": {"cmdline": f"^sleep 1000\\.{g}$"}} for g in range(groups)]
