"""The Prometheus artefacts, checked by promtool and, for loading, a real Prometheus.

``promtool test rules`` replays synthetic series through the recording and alerting rules
(deploy/prometheus/tests/*.yml); these tests run it and check that every alert has both
a firing and a silent case there.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import DEPLOY, RULE_FILES, PrometheusServer, require_tool, run_prometheus

PROM = DEPLOY / "prometheus"
RULE_TESTS = sorted((PROM / "tests").glob("*.yml"))
ALERTS = {
    "JouledEnergyPerRequestDrift",
    "JouledEnergyPerRequestAbovePrediction",
    "JouledCollectorDown",
    "JouledEstimatesOnly",
    "JouledGridIntensityStale",
    "JouledSpansLate",
    "JouledSpansRejected",
    "JouledServerMetricsDown",
    "JouledDown",
}
# The drift test replays 28 h of one-minute evaluations (about 6 s here).
SLOW_RULE_TESTS = {"drift_test.yml"}


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_tool("promtool", "/usr/bin/promtool", "prometheus")


def run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=110, check=False, cwd=cwd)


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


def rules_of(path: Path) -> list[dict[str, Any]]:
    return [rule for group in load(path)["groups"] for rule in group["rules"]]


def test_rule_files_pass_promtool_check(promtool: str) -> None:
    result = run([promtool, "check", "rules", *map(str, RULE_FILES)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout  # the alerts file


def test_example_config_passes_promtool_check(promtool: str) -> None:
    # check config also loads and checks the rule files it names, relative to itself.
    result = run([promtool, "check", "config", str(PROM / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rule files found" in result.stdout


@pytest.mark.parametrize(
    "rule_test",
    [
        pytest.param(p, id=p.name, marks=[pytest.mark.slow] if p.name in SLOW_RULE_TESTS else [])
        for p in RULE_TESTS
    ],
)
def test_promtool_rule_unit_tests_pass(promtool: str, rule_test: Path) -> None:
    result = run([promtool, "test", "rules", rule_test.name], cwd=rule_test.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alert_set_is_the_documented_one() -> None:
    alerts = rules_of(PROM / "rules" / "jouled-alerts.yml")
    assert {r["alert"] for r in alerts} == ALERTS
    for rule in alerts:
        assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]
        assert "Runbook" in rule["annotations"]["description"], rule["alert"]
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert "for" in rule, f"{rule['alert']} would fire on a single evaluation"


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        for case in load(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    assert firing >= ALERTS, f"never shown firing: {ALERTS - firing}"
    assert silent >= ALERTS, f"never shown silent: {ALERTS - silent}"


def test_drift_cases_cover_both_directions_and_the_quiet_ones() -> None:
    drift = load(PROM / "tests" / "drift_test.yml")
    fired = {
        (a["exp_labels"]["model"], a["exp_labels"]["direction"])
        for case in drift["tests"]
        for check in case["alert_rule_test"]
        for a in check.get("exp_alerts", [])
    }
    assert fired == {("up", "up"), ("down", "down")}
    series = " ".join(s["series"] for case in drift["tests"] for s in case["input_series"])
    for silent_model in ("slow", "quiet", "stable", "fleet"):
        assert f'model="{silent_model}"' in series


def test_ratios_are_recorded_from_summed_rates() -> None:
    # Recording rules must aggregate counters (rate, then sum, then divide), never average
    # per-host ratios or gauges: only then do they add up across a fleet.
    for rule in rules_of(PROM / "rules" / "jouled-recording.yml"):
        expr = " ".join(rule["expr"].split())
        assert "avg(" not in expr and "avg by" not in expr, rule["record"]
        assert "_per_hour{" not in expr, rule["record"]
        assert "_per_gflop_joules{" not in expr, rule["record"]


def test_aggregation_unit_test_catches_averaged_host_means(promtool: str, tmp_path: Path) -> None:
    # Mutation check: record the fleet mean as the mean of host means (the classic
    # mistake); recording_test.yml must fail on it (4 J instead of the weighted 5 J).
    rules_dir = tmp_path / "rules"
    tests_dir = tmp_path / "tests"
    shutil.copytree(PROM / "rules", rules_dir)
    shutil.copytree(PROM / "tests", tests_dir)
    recording = rules_dir / "jouled-recording.yml"
    text = recording.read_text(encoding="utf-8")
    correct = (
        "      - record: workload_model:jouled_request_energy_joules:mean5m\n"
        "        expr: |\n"
        "          workload_model:jouled_request_energy_joules_sum:rate5m\n"
        "            / (workload_model:jouled_request_energy_joules_count:rate5m > 0)\n"
    )
    wrong = (
        "      - record: workload_model:jouled_request_energy_joules:mean5m\n"
        "        expr: avg by (workload, model) "
        "(instance_workload_model:jouled_request_energy_joules:mean5m)\n"
    )
    assert correct in text
    recording.write_text(text.replace(correct, wrong), encoding="utf-8")
    result = run([promtool, "test", "rules", "recording_test.yml"], cwd=tests_dir)
    assert result.returncode != 0
    report = result.stdout + result.stderr
    assert 'jouled_request_energy_joules:mean5m", model="m", workload="w"} 4E+00' in report


@pytest.mark.slow
def test_real_prometheus_loads_every_rule(prometheus: PrometheusServer) -> None:
    groups = prometheus.api("/api/v1/rules")["data"]["groups"]
    loaded = {rule["name"] for group in groups for rule in group["rules"]}
    expected = {
        rule.get("record") or rule["alert"] for path in RULE_FILES for rule in rules_of(path)
    }
    assert loaded == expected
    assert loaded >= ALERTS


def test_example_relabel_keeps_ip_targets_whole_and_shortens_dns_names(tmp_path: Path) -> None:
    """The example's relabel_configs in a real Prometheus: no fleet scraped by IP collapses
    into instance="127" (issue 15). Target labels are final before any scrape answers."""
    job = next(
        j for j in load(PROM / "prometheus.yml")["scrape_configs"] if j["job_name"] == "jouled"
    )
    expected = {
        "127.0.0.1:9877": ("127.0.0.1", "127.0.0.1"),
        "127.0.0.2:9877": ("127.0.0.2", "127.0.0.2"),
        "10.0.0.7:9877": ("10.0.0.7", "10.0.0.7"),
        "[::1]:9877": ("::1", "::1"),
        "[fe80::1]:9877": ("fe80::1", "fe80::1"),
        "localhost:9877": ("localhost", "localhost"),
        "gpu-node-01.example.internal:9877": ("gpu-node-01", "gpu-node-01.example.internal"),
        "node7.dc-2.example.com:9877": ("node7", "node7.dc-2.example.com"),
    }
    with run_prometheus(
        tmp_path, list(expected), rule_files=(), relabel_configs=job["relabel_configs"]
    ) as prom:
        deadline = time.monotonic() + 30  # targets appear after the first discovery sync
        active: list[dict[str, Any]] = []
        while time.monotonic() < deadline and len(active) < len(expected):
            active = prom.api("/api/v1/targets")["data"]["activeTargets"]
            time.sleep(0.2)
    got = {t["discoveredLabels"]["__address__"]: t["labels"] for t in active}
    assert {a: (lab["instance"], lab["host"]) for a, lab in got.items()} == expected


def test_token_unit_test_catches_host_energy_averaged_instead_of_summed(
    promtool: str, tmp_path: Path
) -> None:
    # Mutation check: averaging the hosts' model power (10 W and 50 W) instead of summing
    # it halves the fleet's joules per token; tokens_test.yml must fail on it.
    rules_dir = tmp_path / "rules"
    tests_dir = tmp_path / "tests"
    shutil.copytree(PROM / "rules", rules_dir)
    shutil.copytree(PROM / "tests", tests_dir)
    recording = rules_dir / "jouled-recording.yml"
    text = recording.read_text(encoding="utf-8")
    correct = (
        "expr: sum by (workload, model) (instance_workload_model:jouled_model_energy_joules:rate5m)"
    )
    assert correct in text
    recording.write_text(text.replace(correct, correct.replace("sum by", "avg by")), "utf-8")
    result = run([promtool, "test", "rules", "tokens_test.yml"], cwd=tests_dir)
    assert result.returncode != 0
    report = result.stdout + result.stderr
    assert 'jouled_energy_per_input_token_joules:ratio_rate5m", model="m", workload="w"} 1E-01' in (
        report
    )
