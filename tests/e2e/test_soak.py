"""The soak's 2-minute version (the 30-minute run is `python -m benchmarks.soak`)."""

from pathlib import Path

import pytest

from benchmarks.soak import report, soak

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_two_minute_soak(tmp_path: Path) -> None:
    r = soak(120, 2000, tmp_path, progress=False)
    print(report(r))
    assert r.scrapes >= 100
    # The sender aims at 2,000 spans/s; a loaded CI machine may fall short, which is not what
    # this test is about (the books and the memory are), so half the rate is the floor.
    assert r.spans_sent >= 2000 * 120 * 0.5
    assert r.conservation_worst_rel < 1e-9
    assert r.books_unbalanced == 0
    assert r.final["balance"] == 0 and r.final["pending"] == 0
    assert r.final["settled"] == r.spans_accepted
    assert r.rss_growth < 0.05, report(r)
