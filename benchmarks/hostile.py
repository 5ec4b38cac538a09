"""The daemon under attack: event-loop lag, /healthz latency, missed ticks and memory while
each hostile input of issue 13 runs against a real ``jouled run`` on loopback.

Phases (each bounded in count and time): idle baseline; the largest allowed batch (4 MiB
of jouled JSON, ~25,000 spans) three times plus a declared 29 MiB one; two senders looping
255 KB gzip bombs (256 MiB inflated); eight concurrent 4 MiB bodies (the in-flight budget);
1,100 idle sockets with partial headers on the ingest port (over ``connections.max_ingest``
= 1024, descriptors as the unit sets them: ``LimitNOFILE=8192``); a SIGHUP storm (200 in
2 s).

The event-loop lag is measured inside the daemon by a probe task (a 10 ms sleep, how late
it wakes), installed by a bootstrap that then runs ``jouled run`` unchanged; /healthz is
probed from outside every 50 ms on a new connection. Targets (issue 13): the tick never
falls behind, /healthz answers within 100 ms, memory under the unit's ``MemoryMax=256M``.

    .venv/bin/python -m benchmarks.hostile [--seconds 6]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from benchmarks._util import (
    exit_on_sigterm,
    free_port,
    json_batch,
    percentiles,
    save,
    stop,
    wait_for,
)
from jouled.testing.fake_powercap import FakePowercap

# Runs inside the daemon's process: a lag probe beside `jouled run`, nothing else changed.
BOOTSTRAP = r"""
import asyncio, gc, sys, time
out = open(sys.argv[1], "w", buffering=1)
gc_worst = [0.0, 0.0]  # the longest cyclic-GC pause in the window (it stops every thread)
def gc_timer(phase, info):
    if phase == "start":
        gc_worst[1] = time.perf_counter()
    else:
        gc_worst[0] = max(gc_worst[0], time.perf_counter() - gc_worst[1])
gc.callbacks.append(gc_timer)
async def probe():
    loop = asyncio.get_running_loop()
    worst, window = 0.0, time.time()
    while True:
        t0 = loop.time()
        await asyncio.sleep(0.01)
        worst = max(worst, loop.time() - t0 - 0.01)
        if time.time() - window >= 0.1:
            out.write(f"{time.time():.3f} {worst:.6f} {gc_worst[0]:.6f}\n")
            worst, window, gc_worst[0] = 0.0, time.time(), 0.0
run = asyncio.run
def patched(coro, **kw):
    async def both():
        task = asyncio.ensure_future(probe())
        try:
            return await coro
        finally:
            task.cancel()
    return run(both(), **kw)
asyncio.run = patched
from jouled.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _vm(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _healthz(url: str) -> tuple[int, float]:
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            resp.read()
            code = int(resp.status)
    except urllib.error.HTTPError as exc:
        code = exc.code
    except OSError:
        code = 0
    return code, time.perf_counter() - t0


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


class Probe:
    """/healthz every 50 ms on a new connection, in a thread, while a phase runs."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(_healthz(self.url))
            self._stop.wait(0.05)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


@contextlib.contextmanager
def _daemon(tmp: Path) -> Iterator[dict[str, Any]]:
    fake = FakePowercap.typical_server(tmp / "sys", sockets=1)
    cfg = {
        "interval": 1.0,
        "listen": f"127.0.0.1:{free_port()}",
        "ingest": {"listen": f"127.0.0.1:{free_port()}", "max_requests_per_second": 0},
        "ledger": {"path": str(tmp / "ledger.db")},
        "log_level": "warning",
        "collectors": {"rapl": {"enabled": True, "path": str(fake.class_dir)}},
        "workloads": [{"name": f"w{i}", "match": {"pid": 1}} for i in range(2)],
    }
    path = tmp / "jouled.yaml"
    path.write_text(yaml.safe_dump(cfg))
    lag_file, log_file = tmp / "lag.txt", tmp / "jouled.log"

    def limits() -> None:  # the unit's LimitNOFILE
        resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))

    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", BOOTSTRAP, str(lag_file), "run", "--config", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=limits,  # noqa: PLW1509 (no threads started yet)
        )
    info = {
        "proc": proc,
        "metrics": f"http://{cfg['listen']}",
        "ingest": f"http://{cfg['ingest']['listen']}",  # type: ignore[index]
        "lag_file": lag_file,
        "log_file": log_file,
        "config": path,
    }
    try:
        wait_for(lambda: _healthz(info["metrics"] + "/healthz")[0] == 200, 30, "jouled")
        yield info
    finally:
        stop(proc)


def _lags(path: Path, t0: float, t1: float) -> tuple[list[float], list[float]]:
    """(loop lags, longest GC pauses) of the 100 ms windows in [t0, t1]."""
    lags, gcs = [], []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and t0 <= float(parts[0]) <= t1 + 0.1:
            lags.append(float(parts[1]))
            gcs.append(float(parts[2]))
    return lags, gcs


MAX_BODY = 4 * 1024 * 1024  # spans.max_body_bytes' default


def _largest_batch() -> bytes:
    """The largest jouled JSON batch the default limit takes (~25,000 spans)."""
    now_ns = time.time_ns() - 100_000_000
    n = 25_000
    while True:
        body = json_batch(n, workloads=["w0", "w1"], models=["m0", "m1"], end_ns=now_ns)
        if len(body) <= MAX_BODY:
            return body
        n = int(n * MAX_BODY / len(body) * 0.99)


def large_batch(d: dict[str, Any], seconds: float) -> dict[str, Any]:
    codes = []
    url = d["ingest"] + "/v1/spans"
    deadline = time.monotonic() + seconds
    for _ in range(3):
        if time.monotonic() > deadline:
            break
        codes.append(_post(url, _largest_batch(), {"Content-Type": "application/json"}))
    # The 29 MiB batch, declared: refused before it is read.
    host, port = d["ingest"].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(
            b"POST /v1/spans HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n{" % (29 * 1024 * 1024)
        )
        codes.append(int(s.recv(64).split()[1]))
    return {"answers": codes}


def _bomb() -> bytes:
    deflater = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b" " * (1 << 20)
    data = deflater.compress(b"{") + b"".join(deflater.compress(chunk) for _ in range(256))
    return data + deflater.flush()


def gzip_bombs(d: dict[str, Any], seconds: float) -> dict[str, Any]:
    bomb = _bomb()
    url = d["ingest"] + "/v1/spans"
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    deadline = time.monotonic() + seconds

    def sender() -> list[int]:
        codes = []
        while time.monotonic() < deadline and len(codes) < 40:
            codes.append(_post(url, bomb, headers))
        return codes

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: sender(), range(2)))
    codes = [c for r in results for c in r]
    return {"bomb_bytes": len(bomb), "inflates_to": 256 << 20, "posts": len(codes),
            "answers": sorted(set(codes))}  # fmt: skip


def concurrent_bodies(d: dict[str, Any], seconds: float) -> dict[str, Any]:
    body = _largest_batch()
    url = d["ingest"] + "/v1/spans"
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: _post(url, body, {"Content-Type": "application/json"}),
                              range(8)))  # fmt: skip
    return {"bodies": 8, "body_bytes": len(body), "answers": codes}


def idle_sockets(d: dict[str, Any], seconds: float) -> dict[str, Any]:
    host, port = d["ingest"].removeprefix("http://").split(":")
    socks = []
    try:
        for _ in range(1100):
            s = socket.create_connection((host, int(port)), timeout=5)
            with contextlib.suppress(OSError):
                s.sendall(b"POST /v1/spans HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            socks.append(s)
        time.sleep(min(seconds, 5.0))
        metrics_ok = urllib.request.urlopen(d["metrics"] + "/metrics", timeout=5).status
        refused = 0
        for s in socks:
            s.settimeout(0.01)
            with contextlib.suppress(OSError):
                if s.recv(32).startswith(b"HTTP/1.1 503"):
                    refused += 1
        return {"sockets": len(socks), "refused_503": refused, "metrics_status": metrics_ok}
    finally:
        for s in socks:
            s.close()


def sighup_storm(d: dict[str, Any], seconds: float) -> dict[str, Any]:
    pid = d["proc"].pid
    sent = 0
    deadline = time.monotonic() + min(seconds, 2.0)
    while time.monotonic() < deadline and sent < 200:
        os.kill(pid, signal.SIGHUP)
        sent += 1
        time.sleep(0.01)
    time.sleep(1.0)
    return {"sighups": sent}


def idle(_d: dict[str, Any], seconds: float) -> dict[str, Any]:
    time.sleep(seconds)
    return {}


PHASES: tuple[tuple[str, Callable[[dict[str, Any], float], dict[str, Any]]], ...] = (
    ("idle", idle),
    ("large_batch", large_batch),
    ("gzip_bombs", gzip_bombs),
    ("concurrent_4mib_bodies", concurrent_bodies),
    ("idle_sockets_1100", idle_sockets),
    ("sighup_storm", sighup_storm),
)


def bench(seconds: float) -> dict[str, Any]:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    out: dict[str, Any] = {"seconds_per_phase": seconds}
    with tempfile.TemporaryDirectory() as tmp_s, _daemon(Path(tmp_s)) as d:
        pid = d["proc"].pid
        time.sleep(2.0)
        for name, attack in PHASES:
            log_at = d["log_file"].stat().st_size
            t0 = time.time()
            with Probe(d["metrics"] + "/healthz") as probe:
                detail = attack(d, seconds)
                time.sleep(0.5)
            t1 = time.time()
            log_text = d["log_file"].read_bytes()[log_at:].decode(errors="replace")
            lags, gcs = _lags(d["lag_file"], t0, t1)
            codes = [c for c, _ in probe.samples]
            out[name] = {
                **detail,
                "wall_s": round(t1 - t0, 2),
                "loop_lag_worst_ms": 1000 * max(lags, default=0.0),
                "gc_pause_worst_ms": 1000 * max(gcs, default=0.0),
                "healthz": percentiles([t for _, t in probe.samples]),
                "healthz_probes": len(codes),
                "healthz_not_200": sum(1 for c in codes if c != 200),
                "ticks_fell_behind": log_text.count("tick loop fell behind"),
                "rss_mb": _vm(pid, "VmRSS"),
                "peak_rss_mb": _vm(pid, "VmHWM"),
            }
            print(_line(name, out[name]), flush=True)
        out["log_bytes"] = d["log_file"].stat().st_size
    return out


def _line(name: str, r: dict[str, Any]) -> str:
    return (
        f"{name:24} loop lag worst {r['loop_lag_worst_ms']:7.1f} ms (GC pause "
        f"{r['gc_pause_worst_ms']:5.1f}) | /healthz p50 "
        f"{r['healthz']['p50_ms']:6.1f} p99 {r['healthz']['p99_ms']:6.1f} max "
        f"{r['healthz']['max_ms']:6.1f} ms, {r['healthz_not_200']}/{r['healthz_probes']} not 200"
        f" | ticks behind {r['ticks_fell_behind']} | RSS {r['rss_mb']:.0f} MB "
        f"(peak {r['peak_rss_mb']:.0f})"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=6.0, help="upper bound per phase")
    args = p.parse_args()
    results = bench(args.seconds)
    print(f"daemon log: {results['log_bytes']} bytes in all")
    print("saved", save("hostile", results))


if __name__ == "__main__":
    exit_on_sigterm()
    main()
