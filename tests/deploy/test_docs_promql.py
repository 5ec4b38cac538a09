"""The PromQL that README.md and docs/ show, run by promtool on synthetic series.

Every query on the pages (```promql blocks, unlabeled blocks with a ``rate(``, and inline
code with one) must parse, name only families jouled exports (README's metric table) or
recording rules, and give the hand-computed answer on two hosts' series; where the page
says a query is recorded, the recording rule must give the same answer. A query added to
the docs without an expected answer here fails the test.

Series, one-minute steps (so per-second rates are the per-minute increase / 60):
- host a: model m at 10 W, 1 req/s, 60 output tokens/min; its requests 10 J each;
  host b: model m at 50 W, 2 req/s, 120 output tokens/min; its requests 4 J each.
  Fleet: 60 W / 1 output token/s = 60 J per output token (not the mean of the hosts'
  ratios); 60 W / 3 req/s = 20 J per request; 18 J/s / 3 req/s = 6 J per request by the
  histogram (the mean of the hosts' ratios would be 7).
- model "idle" served nothing in the window: no ratio, not NaN or +Inf.
- embodied: workload w 0.75 g/s over 3 req/s = 0.25 g per request; workload "quiet" has
  embodied emissions and a requests counter that does not move: no ratio.
- host power by component: cpu 100 W on a, 50 W on b.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import REPO, RULE_FILES, require_tool
from tests.support.readme import metric_rows

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RECORDED = {str(r["record"]) for f in RULE_FILES for g in yaml.safe_load(f.read_text())["groups"]
            for r in g["rules"] if "record" in r}  # fmt: skip

M = {"model": "m"}
# Normalized query -> (expected samples, recording rules that must give the same samples,
# with their own labels).
EXPECTED: dict[str, tuple[list[tuple[dict[str, str], float]], dict[str, dict[str, str]]]] = {
    # docs/TOKENS.md, README: joules per output token by model.
    "sum by (model) (rate(jouled_model_energy_joules_total[5m])) / on (model) (sum by (model) "
    '(rate(jouled_tokens_total{kind="output"}[5m])) > 0)': (
        [(M, 60.0)],
        {
            "model:jouled_energy_per_output_token_joules:ratio_rate5m": M,
            "workload_model:jouled_energy_per_output_token_joules:ratio_rate5m": M
            | {"workload": "w"},
        },
    ),
    # docs/TOKENS.md: joules per request by model.
    "sum by (model) (rate(jouled_model_energy_joules_total[5m])) / on (model) (sum by (model) "
    "(rate(jouled_requests_total[5m])) > 0)": (
        [(M, 20.0)],
        {
            "workload_model:jouled_model_energy_per_request_joules:ratio_rate5m": M
            | {"workload": "w"}
        },
    ),
    # README, docs/ATTRIBUTION.md, docs/ARCHITECTURE.md: joules per request across a fleet.
    "sum(rate(jouled_request_energy_joules_sum[5m])) / "
    "sum(rate(jouled_request_energy_joules_count[5m]))": (
        [({}, 6.0)],
        {"workload_model:jouled_request_energy_joules:mean5m": M | {"workload": "w"}},
    ),
    # README: host power in watts.
    "sum by (component) (rate(jouled_host_energy_joules_total[1m]))": (
        [({"component": "cpu"}, 150.0)],
        {},
    ),
    # docs/COST.md: embodied gCO2e per request.
    "sum by (workload) (rate(jouled_workload_embodied_emissions_grams_total[1h])) / (sum by "
    "(workload) (rate(jouled_requests_total[1h])) > 0)": (
        [({"workload": "w"}, 0.25)],
        {"workload:jouled_embodied_emissions_grams_per_request:ratio_rate1h": {"workload": "w"}},
    ),
}


def run_promtool(spec: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    promtool = require_tool("promtool", "/usr/bin/promtool", "prometheus")
    path = tmp_path / "docs_test.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return subprocess.run(
        [promtool, "test", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )


def _labels(labels: dict[str, str]) -> str:
    return ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    return {"series": f"{name}{{{_labels({'job': 'jouled'} | labels)}}}", "values": values}


A, B = {"instance": "a:9877"}, {"instance": "b:9877"}
W = {"workload": "w", "model": "m"}
CPU = {"component": "cpu", "source": "rapl"}
INPUT = [
    series("jouled_model_energy_joules_total", A | W, "0+600x70"),
    series("jouled_model_energy_joules_total", B | W, "0+3000x70"),
    series("jouled_tokens_total", A | W | {"kind": "output"}, "0+20x70"),
    series("jouled_tokens_total", B | W | {"kind": "output"}, "0+40x70"),
    series("jouled_requests_total", A | W, "0+60x70"),
    series("jouled_requests_total", B | W, "0+120x70"),
    series("jouled_request_energy_joules_sum", A | W, "0+600x70"),
    series("jouled_request_energy_joules_count", A | W, "0+60x70"),
    series("jouled_request_energy_joules_sum", B | W, "0+480x70"),
    series("jouled_request_energy_joules_count", B | W, "0+120x70"),
    series("jouled_model_energy_joules_total", A | W | {"model": "idle"}, "7x70"),
    series("jouled_tokens_total", A | W | {"model": "idle", "kind": "output"}, "3x70"),
    series("jouled_requests_total", A | W | {"model": "idle"}, "3x70"),
    series("jouled_workload_embodied_emissions_grams_total", A | {"workload": "w"}, "0+45x70"),
    series("jouled_workload_embodied_emissions_grams_total", A | {"workload": "quiet"}, "0+9x70"),
    series("jouled_requests_total", A | {"workload": "quiet", "model": "x"}, "5x70"),
    series("jouled_host_energy_joules_total", A | CPU, "0+6000x70"),
    series("jouled_host_energy_joules_total", B | CPU, "0+3000x70"),
]  # fmt: skip


def normalize(query: str) -> str:
    return re.sub(r"\s+", " ", query).replace("( ", "(").replace(" )", ")").strip()


def doc_queries() -> dict[str, list[str]]:
    """Normalized query -> the pages (file:line) that show it."""
    found: dict[str, list[str]] = {}
    for page in PAGES:
        text = page.read_text()
        spans = [
            (m.start(), m.group(2))
            for m in re.finditer(r"```(\w*)\n(.*?)```", text, flags=re.S)
            if m.group(1) == "promql" or (m.group(1) == "" and "rate(" in m.group(2))
        ]
        prose = re.sub(r"```.*?```", lambda m: " " * len(m.group(0)), text, flags=re.S)
        spans += [(m.start(), m.group(1)) for m in re.finditer(r"`([^`\n]*rate\([^`\n]*)`", prose)]
        for start, query in spans:
            if "..." in query or "*" in query or query.strip() == "rate()":
                continue  # a pattern in prose (`rate(jouled_*_total[5m])`), not a query
            line = text.count("\n", 0, start) + 1
            found.setdefault(normalize(query), []).append(f"{page.name}:{line}")
    return found


QUERIES = doc_queries()


def test_every_query_on_the_pages_has_an_expected_answer() -> None:
    assert len(QUERIES) >= 5
    assert {q: w for q, w in QUERIES.items() if q not in EXPECTED} == {}
    assert sorted(set(EXPECTED) - set(QUERIES)) == []  # no stale expectation


def test_every_query_names_exported_families_or_recorded_rules() -> None:
    families = {n for row, _ in metric_rows() for n in row}
    for query in QUERIES:
        for name in re.findall(r"[a-z_:]*jouled_[a-z_:]+", query):
            base = re.sub(r"_(sum|count|bucket)$", "", name)
            assert name in RECORDED or base in families, (name, QUERIES[query])
    for rules in (r for _, r in EXPECTED.values()):
        assert set(rules) <= RECORDED


def promtool_test(tmp_path: Path) -> dict[str, Any]:
    tests = []
    for query, (samples, rules) in EXPECTED.items():
        tests.append(
            {
                "expr": query,
                "eval_time": "65m",
                "exp_samples": [
                    {"labels": "{" + _labels(lab) + "}", "value": v} for lab, v in samples
                ],
            }
        )
        for rule, lab in rules.items():
            [(_, value)] = samples
            tests.append(
                {
                    "expr": rule,
                    "eval_time": "65m",
                    "exp_samples": [{"labels": f"{rule}{{{_labels(lab)}}}", "value": value}],
                }
            )
    return {
        "rule_files": [str(f) for f in RULE_FILES],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": INPUT, "promql_expr_test": tests}],
    }


def test_each_query_gives_the_hand_computed_answer_and_its_rule_the_same(tmp_path: Path) -> None:
    result = run_promtool(promtool_test(tmp_path), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


@pytest.mark.parametrize("wrong", ["no_guard", "averaged"])
def test_the_promtool_check_catches_a_wrong_query(tmp_path: Path, wrong: str) -> None:
    """Mutations: the old README query (no `> 0` guard: the idle model's NaN) and an average
    of per-host ratios (7 J, not 6 J) both fail."""
    spec = promtool_test(tmp_path)
    tests = spec["tests"][0]["promql_expr_test"]
    if wrong == "no_guard":
        tests[0]["expr"] = (
            "sum by (model) (rate(jouled_model_energy_joules_total[5m])) / sum by (model) "
            '(rate(jouled_tokens_total{kind="output"}[5m]))'
        )
    else:
        tests[0]["expr"] = (
            "avg(rate(jouled_request_energy_joules_sum[5m])"
            " / rate(jouled_request_energy_joules_count[5m]))"
        )
        tests[0]["exp_samples"] = [{"labels": "{}", "value": 6.0}]
    result = run_promtool(spec, tmp_path)
    assert result.returncode != 0
    assert ("NaN" if wrong == "no_guard" else "7E+00") in result.stdout + result.stderr
