"""Faults a production sidecar meets, against the real daemon process."""

import json
import signal
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.procs import fake_powercap, http_get, jouled, wait_for

pytestmark = pytest.mark.slow


def test_concurrent_scrapes_during_reloads_all_succeed(tmp_path: Path) -> None:
    with (
        fake_powercap(tmp_path, "--package-watts", "40") as powercap,
        jouled(
            tmp_path,
            {
                "interval": 0.2,
                "collectors": {"rapl": {"path": str(powercap)}, "nvml": {"enabled": False}},
            },
        ) as daemon,
    ):
        failures: list[str] = []
        done = threading.Event()
        counts = [0] * 4

        def scrape(i: int) -> None:
            while not done.is_set():
                status, body = http_get(daemon.metrics_url + "/metrics")
                if status != 200 or "jouled_host_energy_joules_total" not in body:
                    failures.append(f"{status}: {body[:200]}")
                counts[i] += 1

        threads = [threading.Thread(target=scrape, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for _ in range(10):
            daemon.proc.signal(signal.SIGHUP)
            time.sleep(0.2)
        done.set()
        for t in threads:
            t.join(10)
        assert failures == []
        assert sum(counts) > 20
        wait_for(lambda: daemon.proc.output().count("configuration reloaded") >= 1, 10, "reloads")
        assert http_get(daemon.metrics_url + "/healthz")[0] == 200


def test_garbage_on_the_ingest_listener_leaves_the_daemon_and_its_series_intact(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "none"
    empty.mkdir()
    cfg = {
        "workloads": [{"name": "api", "match": {"pid": 1}}],
        "collectors": {"rapl": {"path": str(empty)}, "nvml": {"enabled": False}},
    }
    with jouled(tmp_path, cfg) as daemon:
        bodies = [
            (b'{"spans": [{"workload": "api"', "application/json", "/v1/spans"),
            (b"\x00\xff garbage", "application/x-protobuf", "/v1/traces"),
            (b"{}", "text/plain", "/v1/traces"),
            (json.dumps({"spans": [{"workload": "api", "model": "m", "start": 5, "end": 1}]})
             .encode(), "application/json", "/v1/spans"),
        ]  # fmt: skip
        statuses = []
        for body, ctype, path in bodies:
            req = urllib.request.Request(
                daemon.ingest_url + path, data=body, headers={"Content-Type": ctype}
            )
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    statuses.append(resp.status)
                    answer = resp.read().decode()
            except urllib.error.HTTPError as exc:
                statuses.append(exc.code)
                answer = exc.read().decode(errors="replace")
            assert answer, "every refusal says why"
        assert statuses[0] == 400 and statuses[1] == 400 and statuses[2] == 415
        # A well-formed batch whose one span is invalid: OTLP-style partial success.
        assert statuses[3] in (200, 400)
        text = daemon.metrics()
        assert "jouled_spans_rejected_total" in text
        assert 'jouled_host_energy_joules_total{component="cpu",source="estimate"}' in text
        assert http_get(daemon.metrics_url + "/healthz")[0] == 200
