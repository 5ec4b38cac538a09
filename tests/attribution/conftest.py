"""The splitter's pending-span record and id index both ways: the compiled ones (where they
are built) and the Python class and dict they stand for (``spans._Pending``, ``dict``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jouled.attribution import spans as spans_mod

COMPILED = spans_mod._compiled_pending()
COMPILED_INDEX = spans_mod._compiled_index()


@pytest.fixture(params=["compiled", "python"])
def pending_record(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs a test once with each record type and index (``usefixtures``); the compiled run
    is skipped where the extension is not built."""
    if request.param == "compiled" and (COMPILED is None or COMPILED_INDEX is None):
        pytest.skip("jouled.attribution._pending not built (or JOULED_PURE_PYTHON=1)")
    saved = spans_mod.new_pending, spans_mod.new_index
    if request.param == "compiled":
        spans_mod.new_pending, spans_mod.new_index = COMPILED, COMPILED_INDEX
    else:
        spans_mod.new_pending, spans_mod.new_index = spans_mod._Pending, dict
    try:
        yield request.param
    finally:
        spans_mod.new_pending, spans_mod.new_index = saved
