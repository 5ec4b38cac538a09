"""Real processes for end-to-end tests: the jouled daemon, the fake powercap emulator."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from jouled.testing.net import free_port, http_get


def wait_for(predicate: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            last = predicate()
            if last:
                return last
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Proc:
    """A child process whose output goes to a file, so a test can show it on failure."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._fh = log.open("wb")
        self.popen = subprocess.Popen(
            args, stdout=self._fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )

    def output(self) -> str:
        self._fh.flush()
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def stop(self) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._fh.close()
        return self.popen.returncode


_BUSY = (
    "import os, sys, time\nopen(sys.argv[1], 'w').write(str(os.getpid()))\n"
    "busy, idle = float(sys.argv[2]), float(sys.argv[3])\n"
    "while True:\n    t = time.monotonic()\n    while time.monotonic() - t < busy: pass\n"
    "    time.sleep(idle)\n"
)


def start_busy(pidfile: Path, log: Path, *, busy_s: float, idle_s: float) -> Proc:
    """A workload that burns ``busy_s`` then sleeps ``idle_s``, forever; it writes its pid to
    ``pidfile`` (for a ``match: {pidfile: ...}`` workload) and is returned once it has.
    The caller stops it."""
    proc = Proc([sys.executable, "-c", _BUSY, str(pidfile), str(busy_s), str(idle_s)], log)
    try:
        wait_for(pidfile.exists, 15, "the busy workload")
    except BaseException:
        proc.stop()
        raise
    return proc


@contextlib.contextmanager
def fake_powercap(root: Path, *args: str) -> Iterator[Path]:
    """Run the emulator in real time; yields the class/powercap path to point jouled at."""
    ready = root / "ready"
    proc = Proc(
        [
            sys.executable,
            "-m",
            "jouled.testing.fake_powercap",
            "--root",
            str(root / "sys"),
            "--ready-file",
            str(ready),
            *args,
        ],
        root / "fake_powercap.log",
    )
    try:
        wait_for(ready.exists, 15, "the fake powercap tree")
        yield root / "sys" / "class" / "powercap"
    finally:
        proc.stop()


class Daemon:
    def __init__(
        self, proc: Proc, metrics_url: str, ingest_url: str, config: Path, grpc: str | None = None
    ) -> None:
        self.proc = proc
        self.metrics_url = metrics_url
        self.ingest_url = ingest_url
        self.config = config
        self.grpc = grpc  # HOST:PORT of the OTLP/gRPC listener, None when off

    def metrics(self) -> str:
        status, body = http_get(self.metrics_url + "/metrics")
        assert status == 200, body
        return body


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


@contextlib.contextmanager
def jouled(tmp: Path, cfg: dict[str, Any], *extra: str) -> Iterator[Daemon]:
    port, ingest_port = free_port(), free_port()
    if "listen" in cfg:  # a port chosen beforehand (e.g. already a Prometheus target)
        port = int(str(cfg["listen"]).rpartition(":")[2])
    cfg = {
        "listen": f"127.0.0.1:{port}",
        # Never the host's /var/lib/jouled: each test keeps its own books.
        "ledger": {"path": str(tmp / "ledger.db")},
        **cfg,
        # Never the shared default 4317: tests run side by side.
        "ingest": {
            "listen": f"127.0.0.1:{ingest_port}",
            "grpc_listen": f"127.0.0.1:{free_port()}",
            **cfg.get("ingest", {}),
        },
    }
    config = write_config(tmp / "jouled.yaml", cfg)
    proc = Proc(
        [sys.executable, "-m", "jouled", "run", "--config", str(config), *extra],
        tmp / "jouled.log",
    )
    daemon = Daemon(
        proc,
        f"http://127.0.0.1:{port}",
        f"http://127.0.0.1:{ingest_port}",
        config,
        cfg["ingest"]["grpc_listen"],
    )
    try:
        wait_for(
            lambda: http_get(daemon.metrics_url + "/healthz")[0] == 200,
            30,
            "jouled /healthz",
        )
        yield daemon
    except BaseException:
        print(proc.output())
        raise
    finally:
        proc.stop()
