"""Fixtures for the deploy tests; the helpers behind them live in ``tools.py``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from tests.deploy.tools import PrometheusServer, run_prometheus


@pytest.fixture(scope="module")
def prometheus(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    """A real Prometheus loaded with jouled's rule files.

    Scrapes nothing by default. To scrape a daemon, parametrize indirectly with its
    targets: ``@pytest.mark.parametrize("prometheus", [["127.0.0.1:9877"]], indirect=True)``
    then ``prometheus.wait_for_targets_up()`` and query.
    """
    targets: Sequence[str] = getattr(request, "param", ())
    with run_prometheus(tmp_path_factory.mktemp("prometheus"), targets) as server:
        yield server
