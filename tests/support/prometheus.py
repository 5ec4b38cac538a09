"""A real Prometheus server for end-to-end tests (Debian package ``prometheus``)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.procs import Proc, free_port, http_get, wait_for


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{binary} is required in CI (Debian package prometheus)")
        pytest.skip(f"{binary} not installed (apt-get install prometheus)")
    return path


class Prometheus:
    def __init__(self, url: str, proc: Proc) -> None:
        self.url = url
        self.proc = proc

    def query(self, expr: str) -> list[dict[str, Any]]:
        status, body = http_get(f"{self.url}/api/v1/query?query={urllib.parse.quote(expr)}")
        data = json.loads(body)
        assert status == 200 and data["status"] == "success", body
        result: list[dict[str, Any]] = data["data"]["result"]
        return result

    def value(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, f"{expr} returned {result}"
        return float(result[0]["value"][1])

    def targets_up(self) -> bool:
        _, body = http_get(f"{self.url}/api/v1/targets")
        active = json.loads(body)["data"]["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)


@contextlib.contextmanager
def prometheus(
    tmp: Path,
    targets: Sequence[str],
    *,
    scrape_interval: str = "1s",
    rule_files: Sequence[Path] = (),
) -> Iterator[Prometheus]:
    binary = require("prometheus")
    port = free_port()
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {
                "job_name": "jouled",
                "static_configs": [{"targets": [t.removeprefix("http://") for t in targets]}],
            }
        ],
    }
    cfg_path = tmp / "prometheus.yml"
    cfg_path.write_text(yaml.safe_dump(config))
    proc = Proc(
        [
            binary,
            f"--config.file={cfg_path}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        tmp / "prometheus.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_get(url + "/-/ready")[0] == 200, 30, "prometheus ready")
        yield Prometheus(url, proc)
    except BaseException:
        print(proc.output())
        raise
    finally:
        proc.stop()
