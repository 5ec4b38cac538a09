"""``benchmarks.receive_floor``: the receivers' CPU per export call against the libraries."""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchmarks._util import wait_for
from benchmarks.receive_floor import (
    _BARE_AIOHTTP,
    _answers,
    _bare,
    _http_caller,
    _jouled,
    measure,
)
from jouled.testing.net import free_port


@pytest.mark.parametrize("kind", ["aiohttp", "grpcio"])
def test_a_bare_server_is_measured_per_call(kind: str) -> None:
    with _bare(kind) as (pid, call):
        row = measure(pid, call, spans=3, rate=20, seconds=1.0, idle=1.0)
    assert row["calls"] >= 15  # ~20 at 20 a second, paced, not flooded
    assert row["calls"] <= 21
    assert row["body_bytes"] > 3 * 100  # three spans with their attributes
    assert row["cpu_us_per_call"] > 0  # receiving costs the server something


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_the_daemon_is_measured_through_its_own_receivers(transport: str) -> None:
    with _jouled(transport) as (pid, call):
        row = measure(pid, call, spans=3, rate=20, seconds=1.0, idle=1.0)
        assert row["calls"] >= 15
        assert row["cpu_us_per_call"] > 0


def test_a_server_that_refuses_the_call_is_an_error_not_a_figure() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", _BARE_AIOHTTP, str(port)])
    try:
        right = _http_caller(f"http://127.0.0.1:{port}/v1/traces")
        wait_for(lambda: _answers(right), 30, "the bare aiohttp server")
        wrong = _http_caller(f"http://127.0.0.1:{port}/v1/nope")
        assert not _answers(wrong)
        with pytest.raises(RuntimeError, match="answered 404"):
            measure(proc.pid, wrong, spans=1, rate=20, seconds=0.5, idle=0.1)
    finally:
        proc.kill()
        proc.wait()
