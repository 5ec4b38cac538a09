"""The splitter's pending-span record both ways: the compiled one (where it is built) and
the Python class it stands for (``jouled.attribution.spans._Pending``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jouled.attribution import spans as spans_mod

COMPILED = spans_mod._compiled_pending()


@pytest.fixture(params=["compiled", "python"])
def pending_record(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs a test once with each record type (``usefixtures``); the compiled run is skipped
    where the extension is not built."""
    if request.param == "compiled" and COMPILED is None:
        pytest.skip("jouled.attribution._pending not built (or JOULED_PURE_PYTHON=1)")
    saved = spans_mod.new_pending
    spans_mod.new_pending = COMPILED if request.param == "compiled" else spans_mod._Pending
    try:
        yield request.param
    finally:
        spans_mod.new_pending = saved
