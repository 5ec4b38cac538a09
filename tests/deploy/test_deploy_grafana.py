"""The Grafana dashboard and provisioning files.

Every panel query is PromQL with Grafana template variables in it (``$instance``,
``$__rate_interval``, ...); the slow test substitutes concrete values and sends each query
to a real Prometheus, which parses and evaluates it (data may be empty: no daemon yet).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from tests.deploy.tools import DEPLOY, RULE_FILES, PrometheusServer

GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "jouled.json"
# Concrete stand-ins for Grafana's variables; longest names first so that $__range is not
# mistaken for a prefix of $__range_s.
SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range_s": "3600",
    "$__range": "1h",
    "${instance}": "gpu-node-01:9877",
    "$instance": "gpu-node-01:9877",
    "${workload}": "classifier",
    "$workload": "classifier",
    "${model}": "resnet50",
    "$model": "resnet50",
}
RECORDED_NAME = re.compile(r"\b[a-z_]+:jouled_[a-z_]+:[a-z0-9_]+\b")


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # collapsed rows nest their panels
    return found


def exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) for every query target."""
    return [
        (panel["title"], target["expr"])
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def variable_selectors(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(variable, the series selector inside label_values(selector, label))."""
    found = []
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["definition"])
        assert match, f"variable {var['name']}: {var['definition']!r} is not label_values()"
        found.append((var["name"], match.group(1)))
    return found


def substitute(expr: str) -> str:
    for name, value in SUBSTITUTIONS.items():
        expr = expr.replace(name, value)
    return expr


def test_dashboard_shape() -> None:
    dash = load_dashboard()
    assert dash["schemaVersion"] == 39
    assert dash["uid"] == "jouled"
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dash):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
    names = [v["name"] for v in dash["templating"]["list"]]
    assert {"datasource", "instance", "workload", "model"} <= set(names)
    for panel in panels(dash):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_dashboard_covers_the_required_views() -> None:
    queries = "\n".join(expr for _, expr in exprs(load_dashboard()))
    required = [
        "sum by (component, source) (rate(jouled_host_energy_joules_total",
        "rate(jouled_workload_energy_joules_total",
        "histogram_quantile(0.5, sum by (model, le) (rate(jouled_request_energy_joules_bucket",
        "histogram_quantile(0.95, sum by (model, le) (rate(jouled_request_energy_joules_bucket",
        "sum by (model) (rate(jouled_request_energy_joules_sum",
        "rate(jouled_request_gflops_total",
        "jouled_host_cost_per_hour",
        "jouled_host_emissions_grams_per_hour",
        "increase(jouled_host_cost_total",
        "increase(jouled_host_emissions_grams_total",
        "rate(jouled_requests_total",
        "jouled_collector_up",
        "workload_model:jouled_request_energy_joules:baseline_mean1d",
        "jouled_predicted_request_energy_joules",
        "model:jouled_energy_per_output_token_joules:ratio_rate5m",
        "model:jouled_energy_per_input_token_joules:ratio_rate5m",
        'rate(jouled_tokens_total{instance=~"$instance", workload=~"$workload", '
        'model=~"$model", kind="output"}',
        "rate(jouled_model_energy_joules_total",
        "jouled_server_metrics_up",
        "rate(jouled_ingest_requests_total",
    ]
    missing = [r for r in required if r not in queries]
    assert not missing, missing


def test_every_query_is_fully_substituted() -> None:
    for title, expr in exprs(load_dashboard()):
        assert "$" not in substitute(expr), f"{title}: unknown variable in {expr}"


def test_recorded_series_used_by_the_dashboard_are_defined() -> None:
    recorded = {
        rule["record"]
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    used = {name for _, expr in exprs(load_dashboard()) for name in RECORDED_NAME.findall(expr)}
    assert used, "the drift panels read recorded series"
    assert used <= recorded, used - recorded


def test_provisioning_points_at_prometheus_and_the_dashboard_folder() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning/datasources/jouled.yaml").read_text())
    assert ds["apiVersion"] == 1
    assert [d["type"] for d in ds["datasources"]] == ["prometheus"]
    dashboards = yaml.safe_load((GRAFANA / "provisioning/dashboards/jouled.yaml").read_text())
    (provider,) = dashboards["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")


@pytest.mark.slow
def test_every_panel_query_is_valid_promql(prometheus: PrometheusServer) -> None:
    dash = load_dashboard()
    queries = exprs(dash) + variable_selectors(dash)
    assert len(queries) >= 30
    failures = []
    for title, expr in queries:
        answer = prometheus.query(substitute(expr))
        if answer.get("status") != "success":
            failures.append(f"{title}: {answer.get('error')}\n  {substitute(expr)}")
    assert not failures, "\n".join(failures)


@pytest.mark.slow
def test_real_prometheus_rejects_broken_promql(prometheus: PrometheusServer) -> None:
    # Guards the test above: a malformed query comes back as an error, not as success.
    answer = prometheus.query("sum by (model (rate(jouled_requests_total[1m]))")
    assert answer["status"] == "error"
    assert answer["errorType"] == "bad_data"
