"""A real OpenTelemetry-instrumented server, matched by pidfile, sends spans to a real
jouled on a fake RAPL tree; the per-request energy appears in /metrics and adds up."""

import json
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.procs import Proc, fake_powercap, free_port, http_get, jouled, wait_for

pytestmark = pytest.mark.slow

SERVER = Path(__file__).parent / "otel_server.py"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: dict, name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def post(url: str, payload: dict) -> None:
    req = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200


def test_otel_spans_from_a_real_server_get_their_energy(tmp_path: Path) -> None:
    pidfile = tmp_path / "server.pid"
    port = free_port()
    cfg = {
        "interval": 0.5,
        "workloads": [{"name": "classifier", "match": {"pidfile": str(pidfile)}}],
        "spans": {"settle_seconds": 1.0},
    }
    with (
        fake_powercap(tmp_path, "--package-watts", "50", "--dram-watts", "5") as powercap,
        jouled(
            tmp_path,
            {
                **cfg,
                "collectors": {"rapl": {"path": str(powercap)}, "nvml": {"enabled": False}},
            },
        ) as daemon,
    ):
        server = Proc(
            [
                sys.executable,
                str(SERVER),
                str(port),
                daemon.ingest_url + "/v1/traces",
                str(pidfile),
            ],
            tmp_path / "server.log",
        )
        try:
            url = f"http://127.0.0.1:{port}/predict"
            wait_for(lambda: http_get(f"http://127.0.0.1:{port}/")[0] == 404, 20, "server up")
            for i in range(12):
                post(url, {"model": "bert-base", "gflops": 97.1, "ms": 60})
                post(url, {"model": "distilbert", "gflops": 48.5, "ms": 30})
                if i % 4 == 0:
                    time.sleep(0.3)

            def settled() -> bool:
                m = samples(daemon.metrics())
                return (
                    value(m, "jouled_requests_total", workload="classifier", model="bert-base")
                    == 12
                    and value(m, "jouled_spans_pending") == 0
                )

            wait_for(settled, 20, "all 24 requests settled")
            m = samples(daemon.metrics())
        finally:
            server.stop()
    assert value(m, "jouled_workload_processes", workload="classifier") == 1
    assert value(m, "jouled_spans_received_total") == 24
    assert value(m, "jouled_spans_late_total") == 0
    for model, gflops in (("bert-base", 97.1), ("distilbert", 48.5)):
        labels = {"workload": "classifier", "model": model}
        assert value(m, "jouled_requests_total", **labels) == 12
        assert value(m, "jouled_request_gflops_total", **labels) == pytest.approx(12 * gflops)
        assert value(m, "jouled_request_energy_joules_count", **labels) == 12
        assert value(m, "jouled_request_energy_joules_sum", **labels) > 0
        assert value(m, "jouled_energy_per_gflop_joules", **labels) > 0
    # Conservation: what the requests got is exactly what was settled into spans.
    in_spans = sum(
        v for (n, lab), v in m.items() if n == "jouled_workload_spans_energy_joules_total"
    )
    requests = sum(v for (n, lab), v in m.items() if n == "jouled_request_energy_joules_sum")
    assert requests == pytest.approx(in_spans, rel=1e-9)
    workload = sum(v for (n, lab), v in m.items() if n == "jouled_workload_energy_joules_total")
    outside = sum(
        v for (n, lab), v in m.items() if n == "jouled_workload_outside_spans_energy_joules_total"
    )
    assert 0 < in_spans + outside <= workload * (1 + 1e-9)
    # The longer, heavier model costs more per request.
    bert = value(m, "jouled_request_energy_joules_sum", workload="classifier", model="bert-base")
    distil = value(m, "jouled_request_energy_joules_sum", workload="classifier", model="distilbert")
    assert bert > distil
