"""A real Prometheus server (and promtool) for tests: Debian package ``prometheus``.

Artefacts and the daemon are checked by the tools that will consume them. A missing tool
skips its tests on a workstation but fails them in CI (``CI`` set).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.procs import free_port

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
RULE_FILES = (
    DEPLOY / "prometheus" / "rules" / "jouled-recording.yml",
    DEPLOY / "prometheus" / "rules" / "jouled-alerts.yml",
)
# Prometheus needs a moment to open its TSDB and load rules; on a loaded 2-core CI runner
# this has been seen to take several seconds. A generous ceiling, not a timing assertion.
READY_TIMEOUT_S = 60.0


def require_tool(name: str, fallback: str | None = None, debian_package: str = "") -> str:
    """The tool's path; skip when absent locally, fail when absent in CI."""
    path = shutil.which(name) or (fallback if fallback and Path(fallback).exists() else None)
    if path:
        return path
    hint = f" (Debian package {debian_package})" if debian_package else ""
    message = f"{name} is not installed{hint}"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must provide it", pytrace=False)
    pytest.skip(message)


def promtool_metrics_problems(text: str) -> str:
    """``promtool check metrics`` on an exposition: its complaints, "" when it passes."""
    promtool = require_tool("promtool", debian_package="prometheus")
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    return "" if lint.returncode == 0 else (lint.stdout + lint.stderr or "failed")


@dataclass(frozen=True)
class PrometheusServer:
    """A running Prometheus on loopback; ``url`` is its base URL."""

    url: str
    config_path: Path
    scrape_targets: tuple[str, ...]

    def api(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        """GET an HTTP API path; error answers (HTTP 400/422) are returned, not raised."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as resp:
                body: dict[str, Any] = json.load(resp)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        return body

    def query(self, expr: str, at: float | None = None) -> dict[str, Any]:
        """An instant query; the answer's ``status`` is "success" or "error"."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self.api("/api/v1/query", params)

    def result(self, expr: str) -> list[dict[str, Any]]:
        """The result vector of an instant query that must succeed."""
        answer = self.query(expr)
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def value(self, expr: str) -> float:
        """The single sample an instant query must return."""
        result = self.result(expr)
        assert len(result) == 1, f"{expr} returned {result}"
        return float(result[0]["value"][1])

    def wait_for_targets_up(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Block until every configured scrape target has been scraped successfully once."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            active = self.api("/api/v1/targets")["data"]["activeTargets"]
            if len(active) == len(self.scrape_targets) and all(t["health"] == "up" for t in active):
                return
            time.sleep(0.2)
        raise TimeoutError(f"targets {self.scrape_targets} not all up within {timeout_s} s")


def write_prometheus_config(
    path: Path,
    scrape_targets: Sequence[str],
    rule_files: Sequence[Path] = RULE_FILES,
    scrape_interval: str = "1s",
    relabel_configs: Sequence[dict[str, Any]] = (),
) -> None:
    scrape_configs: list[dict[str, Any]] = []
    if scrape_targets:
        job: dict[str, Any] = {
            "job_name": "jouled",
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "static_configs": [{"targets": list(scrape_targets)}],
        }
        if relabel_configs:
            job["relabel_configs"] = list(relabel_configs)
        scrape_configs.append(job)
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": scrape_configs,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


@contextlib.contextmanager
def run_prometheus(
    workdir: Path,
    scrape_targets: Sequence[str] = (),
    rule_files: Sequence[Path] = RULE_FILES,
    scrape_interval: str = "1s",
    relabel_configs: Sequence[dict[str, Any]] = (),
) -> Iterator[PrometheusServer]:
    """Start /usr/bin/prometheus on a free loopback port with a scratch TSDB; stop it after.

    ``relabel_configs`` are the scrape job's (e.g. deploy/prometheus/prometheus.yml's)."""
    binary = require_tool("prometheus", "/usr/bin/prometheus", "prometheus")
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "prometheus.yml"
    write_prometheus_config(
        config_path, scrape_targets, rule_files, scrape_interval, relabel_configs
    )
    port = free_port()
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    server = PrometheusServer(f"http://127.0.0.1:{port}", config_path, tuple(scrape_targets))
    try:
        _wait_ready(proc, server.url, log_path)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = log_path.read_text(encoding="utf-8", errors="replace")
            raise RuntimeError(f"prometheus exited with {proc.returncode}:\n{log}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"prometheus at {url} not ready within {READY_TIMEOUT_S} s")
