"""The deploy tests' helpers: one shared implementation in ``tests.support.prometheus``."""

from tests.support.prometheus import (
    DEPLOY,
    REPO,
    RULE_FILES,
    PrometheusServer,
    require_tool,
    run_prometheus,
)

__all__ = ["DEPLOY", "REPO", "RULE_FILES", "PrometheusServer", "require_tool", "run_prometheus"]
