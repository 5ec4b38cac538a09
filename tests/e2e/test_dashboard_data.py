"""Issue 6 end to end: the real daemon on a fake RAPL tree with a busy workload and spans
posted, a second one in server-metrics mode beside a replayed vLLM /metrics page, a real
Prometheus loading our recording and alert rules and scraping it, and every Grafana panel
query answered with data, or listed below with the reason it cannot be."""

import json
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from jouled.costmodel.fitfile import Fit
from tests.deploy.test_deploy_grafana import exprs, load_dashboard
from tests.support.procs import fake_powercap, jouled, start_busy, wait_for
from tests.support.prometheus import RULE_FILES, run_prometheus
from tests.support.server_pages import VllmReplay, serving

pytestmark = pytest.mark.slow


# Panels that cannot have data in a 30-second run, and why. Everything else must.
EMPTY_BY_NATURE = {
    "workload_model:jouled_request_energy_joules:baseline_mean1d": "the baseline is a day of "
    "history ending an hour ago",
    "workload_model:jouled_request_energy_joules:drift_ratio": "needs the 1-day baseline",
    'jouled_host_energy_joules_total{source="estimate"': "empty by design on a host whose "
    "RAPL is readable (it lists estimate-only hosts)",
}


def post_spans(url: str, stop: threading.Event) -> None:
    i = 0
    while not stop.is_set():
        now = time.time()
        spans = [
            {"workload": "api", "model": "bert", "start": now - 0.3, "end": now - 0.05,
             "gflops": 97.1},
            {"workload": "api", "model": "distilbert", "start": now - 0.2, "end": now - 0.05,
             "gflops": 48.5},
        ]  # fmt: skip
        if i % 10 == 0:  # one bad span now and then, so the rejected series has data
            spans.append({"workload": "api", "model": "bert", "start": now, "end": now - 1})
        req = urllib.request.Request(
            url + "/v1/spans",
            data=json.dumps({"spans": spans}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            exc.read()
        i += 1
        stop.wait(0.25)


def serve_tokens(replay: VllmReplay, stop: threading.Event) -> None:
    while not stop.is_set():
        replay.serve_all([("llama-3-8b", 200, 50), ("phi-3-mini", 60, 40)])
        stop.wait(0.1)


@pytest.mark.timeout(300)
def test_every_dashboard_query_returns_data(tmp_path: Path) -> None:
    pidfile = tmp_path / "api.pid"
    fit = tmp_path / "fit.json"
    fit.write_text(json.dumps(Fit(slope_joules_per_gflop=0.05).to_dict()))
    busy = start_busy(pidfile, tmp_path / "busy.log", busy_s=0.003, idle_s=0.003)
    chat = start_busy(tmp_path / "chat.pid", tmp_path / "chat.log", busy_s=0.01, idle_s=0.04)
    replay = VllmReplay(["llama-3-8b", "phi-3-mini"])
    stop = threading.Event()
    try:
        with (
            serving(replay) as vllm_url,
            fake_powercap(tmp_path, "--package-watts", "60", "--dram-watts", "6") as powercap,
            jouled(
                tmp_path,
                {
                    "interval": 0.5,
                    "collectors": {"rapl": {"path": str(powercap)}, "nvml": {"enabled": False}},
                    "workloads": [
                        {"name": "api", "match": {"pidfile": str(pidfile)}},
                        {
                            "name": "chat",
                            "match": {"pidfile": str(tmp_path / "chat.pid")},
                            "server_metrics": vllm_url,
                        },
                    ],
                    "spans": {"settle_seconds": 1.0, "fit_file": str(fit)},
                    "cost": {
                        "pue": 1.4,
                        "grid_intensity": 400,
                        "energy_price": {"per_kwh": 0.3, "currency": "EUR"},
                        "hardware": [{"name": "box", "per_hour": 2.0, "component": "cpu"}],
                    },
                },
            ) as daemon,
            run_prometheus(
                tmp_path / "prom",
                [daemon.metrics_url.removeprefix("http://")],
                rule_files=RULE_FILES,
            ) as prom,
        ):
            sender = threading.Thread(target=post_spans, args=(daemon.ingest_url, stop))
            sender.start()
            tokens = threading.Thread(target=serve_tokens, args=(replay, stop))
            tokens.start()
            prom.wait_for_targets_up()
            instance = daemon.metrics_url.removeprefix("http://")
            substitutions = {
                "$__rate_interval": "10s",
                "$__interval": "1s",
                "$__range_s": "60",
                "$__range": "1m",
                "$instance": instance,
                "$workload": "api|chat",
                "$model": ".*",
            }

            def render(expr: str) -> str:
                for k, v in substitutions.items():
                    expr = expr.replace("${" + k[1:] + "}", v).replace(k, v)
                return expr

            queries = [(title, render(e)) for title, e in exprs(load_dashboard())]
            assert len(queries) > 30

            def empty() -> list[tuple[str, str]]:
                return [(t, q) for t, q in queries if not prom.result(q)]

            def only_expected_empty() -> bool:
                return all(any(k in q for k in EMPTY_BY_NATURE) for _, q in empty())

            try:
                # The rule groups evaluate once a minute: a group's first evaluation can
                # come before the request histograms have two samples, and the next is a
                # minute later. Two intervals and a margin.
                wait_for(only_expected_empty, 150, "every panel query to return data")
            except TimeoutError:
                missing = [t for t, q in empty() if not any(k in q for k in EMPTY_BY_NATURE)]
                pytest.fail(f"panels without data: {missing}")
            finally:
                stop.set()
                sender.join(10)
                tokens.join(10)
            # The listed exceptions really are empty (else the list has gone stale).
            listed = [q for _, q in queries if any(k in q for k in EMPTY_BY_NATURE)]
            assert listed and all(not prom.result(q) for q in listed)
            # Rules load and evaluate without errors.
            groups = prom.api("/api/v1/rules")["data"]["groups"]
            assert groups
            bad = [r["name"] for g in groups for r in g["rules"] if r.get("health") == "err"]
            assert bad == []
            # Measured vs predicted sits side by side: predicted = 0.05 J/GFLOP x 97.1.
            predicted = prom.value(
                'jouled_predicted_request_energy_joules{workload="api",model="bert"}'
            )
            assert predicted == pytest.approx(0.05 * 97.1)
    finally:
        stop.set()
        busy.stop()
        chat.stop()
