"""The splitter's pending-span record, id indexes and time queues both ways: the compiled ones
(where they are built) and the Python class and dicts they stand for (``spans._Pending``,
``dict``, ``spans._TimeQueue``)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from jouled.attribution import spans as spans_mod

COMPILED = spans_mod._compiled_pending()
COMPILED_INDEX = spans_mod._compiled_table("IdIndex")
COMPILED_RECORD_INDEX = spans_mod._compiled_table("RecordIndex")
COMPILED_TIME_QUEUE = spans_mod._compiled_table("TimeQueue")


@pytest.fixture(params=["compiled", "python"])
def pending_record(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs a test once with each record type and index (``usefixtures``); the compiled run
    is skipped where the extension is not built."""
    compiled = [COMPILED, COMPILED_INDEX, COMPILED_RECORD_INDEX, COMPILED_TIME_QUEUE]
    if request.param == "compiled" and None in compiled:
        pytest.skip("jouled.attribution._pending not built (or JOULED_PURE_PYTHON=1)")
    names = ("new_pending", "new_index", "new_record_index", "new_time_queue")
    saved = [getattr(spans_mod, name) for name in names]
    if request.param == "compiled":
        chosen = compiled
    else:
        chosen = [spans_mod._Pending, dict, dict, spans_mod._py_time_queue]
    for name, value in zip(names, chosen, strict=True):
        setattr(spans_mod, name, value)
    try:
        yield request.param
    finally:
        for name, value in zip(names, saved, strict=True):
            setattr(spans_mod, name, value)


@pytest.fixture
def marker() -> str:
    """A command-line word no other process on the host has (the tracker tests' workload)."""
    import uuid

    return f"jouled-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts, killed and reaped after it."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        p.kill()
        p.wait(5)


@pytest.fixture(params=["compiled", "python"])
def clock_loop(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The tracker's per-tick clock loop: the compiled one (``_proctick.to_read``, where
    built) or the Python one."""
    from jouled.attribution import workloads

    if request.param == "python":
        monkeypatch.setattr(workloads, "_c_to_read", None)
    elif workloads._c_to_read is None:
        pytest.skip("jouled.attribution._proctick not built (or JOULED_PURE_PYTHON=1)")
    return str(request.param)
