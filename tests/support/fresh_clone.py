"""The README's first command on a fresh clone, as a newcomer runs it.

``git clone`` of the checkout's HEAD into an empty folder, then ``make run`` as a non-root
user (``jouled-newcomer``, created with ``useradd`` when the tests run as root) with an
empty home: no pip cache, no virtualenv, the default ledger. Used by the slow test
``tests/e2e/test_fresh_clone.py`` and by ``python -m benchmarks.fresh_clone``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.procs import free_port, http_get

NEWCOMER = "jouled-newcomer"


@dataclass
class FreshRun:
    """What the newcomer saw: seconds from ``make run`` to a 200 on /metrics, and more."""

    user: str
    home: Path
    clone: Path
    seconds: float
    metrics: str
    log: Path
    install_seconds: float  # until make echoed the daemon's command line (venv + pip done)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def venv_bytes(self) -> int:
        """Size of the virtualenv ``make run`` made (``du -sb``)."""
        out = subprocess.run(
            ["du", "-sb", str(self.clone / ".venv")], capture_output=True, text=True, check=True
        )
        return int(out.stdout.split()[0])


def newcomer() -> str | None:
    """The non-root user to run as: ourselves, or ``jouled-newcomer`` (created) as root."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        pwd.getpwnam(NEWCOMER)
        return NEWCOMER
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", NEWCOMER],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return NEWCOMER


def _as(user: str | None, argv: list[str]) -> list[str]:
    if user is None:
        return argv
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"  # util-linux
    return [runuser, "-u", user, "--", *argv]


@contextlib.contextmanager
def make_run(repo: Path, timeout: float = 300.0) -> Iterator[FreshRun]:
    """Clone ``repo``, run ``make run`` in the clone, yield once /metrics answers 200.

    Raises TimeoutError (with the output) when /metrics does not answer within
    ``timeout`` seconds, or RuntimeError when ``make run`` exits first. The daemon is
    stopped (SIGTERM to its process group) and the folder removed on exit.
    """
    user = newcomer()
    base = Path(tempfile.mkdtemp(prefix="jouled-fresh-", dir="/tmp"))
    base.chmod(0o755)
    try:
        clone, home = base / "jouled", base / "home"
        subprocess.run(
            ["git", "clone", "--quiet", "--no-hardlinks", str(repo), str(clone)],
            check=True,
            timeout=60,
        )
        home.mkdir()
        port, ingest, grpc = free_port(), free_port(), free_port()
        cfg = base / "jouled.yaml"  # only ports: two runs (or a local collector) must not collide
        cfg.write_text(f"ingest:\n  listen: 127.0.0.1:{ingest}\n  grpc_listen: 127.0.0.1:{grpc}\n")
        if user is not None:
            shutil.chown(base, user)
            subprocess.run(["chown", "-R", user, str(base)], check=True, timeout=60)
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "USER": user or pwd.getpwuid(os.geteuid()).pw_name,
        }
        log = base / "make-run.log"
        make = ["make", "run", f"ARGS=--config {cfg} --listen 127.0.0.1:{port}"]
        # runuser would set HOME from passwd: env sets the empty one again.
        argv = _as(user, ["env", *(f"{k}={v}" for k, v in env.items()), *make])
        start = time.monotonic()
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                argv, cwd=clone, env=env, stdout=fh, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            installed = None
            while True:
                if installed is None and "bin/jouled run" in log.read_text(errors="replace"):
                    installed = time.monotonic() - start
                with contextlib.suppress(OSError):
                    code, text = http_get(url, timeout=2)
                    if code == 200:
                        break
                if proc.poll() is not None:
                    raise RuntimeError(f"make run exited {proc.returncode}:\n{log.read_text()}")
                if time.monotonic() - start > timeout:
                    raise TimeoutError(f"no /metrics after {timeout:.0f} s:\n{log.read_text()}")
                time.sleep(0.5)
            seconds = time.monotonic() - start
            yield FreshRun(
                user or env["USER"], home, clone, seconds, text, log, installed or seconds
            )
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
    finally:
        shutil.rmtree(base, ignore_errors=True)
