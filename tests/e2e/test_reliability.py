"""Faults a production sidecar meets, against the real daemon process."""

import json
import signal
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.procs import Daemon, fake_powercap, http_get, jouled, wait_for

pytestmark = pytest.mark.slow


def _api_without_rapl(tmp_path: Path, **more: object) -> dict[str, object]:
    """A daemon config: workload ``api`` (pid 1), no RAPL zone (an empty powercap tree), no
    GPU; ``more`` adds top-level sections."""
    empty = tmp_path / "none"
    empty.mkdir()
    return {
        "workloads": [{"name": "api", "match": {"pid": 1}}],
        "collectors": {"rapl": {"path": str(empty)}, "nvml": {"enabled": False}},
        **more,
    }


def test_concurrent_scrapes_during_reloads_all_succeed(tmp_path: Path) -> None:
    with (
        fake_powercap(tmp_path, "--package-watts", "40") as powercap,
        jouled(
            tmp_path,
            {
                "interval": 0.2,
                "collectors": {"rapl": {"path": str(powercap)}, "nvml": {"enabled": False}},
            },
        ) as daemon,
    ):
        failures: list[str] = []
        done = threading.Event()
        counts = [0] * 4

        def scrape(i: int) -> None:
            while not done.is_set():
                status, body = http_get(daemon.metrics_url + "/metrics")
                if status != 200 or "jouled_host_energy_joules_total" not in body:
                    failures.append(f"{status}: {body[:200]}")
                counts[i] += 1

        threads = [threading.Thread(target=scrape, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for _ in range(10):
            daemon.proc.signal(signal.SIGHUP)
            time.sleep(0.2)
        done.set()
        for t in threads:
            t.join(10)
        assert failures == []
        assert sum(counts) > 20
        wait_for(lambda: daemon.proc.output().count("configuration reloaded") >= 1, 10, "reloads")
        assert http_get(daemon.metrics_url + "/healthz")[0] == 200


def test_garbage_on_the_ingest_listener_leaves_the_daemon_and_its_series_intact(
    tmp_path: Path,
) -> None:
    cfg = _api_without_rapl(tmp_path)
    with jouled(tmp_path, cfg) as daemon:
        bodies = [
            (b'{"spans": [{"workload": "api"', "application/json", "/v1/spans"),
            (b"\x00\xff garbage", "application/x-protobuf", "/v1/traces"),
            (b"{}", "text/plain", "/v1/traces"),
            (json.dumps({"spans": [{"workload": "api", "model": "m", "start": 5, "end": 1}]})
             .encode(), "application/json", "/v1/spans"),
        ]  # fmt: skip
        statuses = []
        for body, ctype, path in bodies:
            req = urllib.request.Request(
                daemon.ingest_url + path, data=body, headers={"Content-Type": ctype}
            )
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    statuses.append(resp.status)
                    answer = resp.read().decode()
            except urllib.error.HTTPError as exc:
                statuses.append(exc.code)
                answer = exc.read().decode(errors="replace")
            assert answer, "every refusal says why"
        assert statuses[0] == 400 and statuses[1] == 400 and statuses[2] == 415
        # A well-formed batch whose one span is invalid: OTLP-style partial success.
        assert statuses[3] in (200, 400)
        text = daemon.metrics()
        assert "jouled_spans_rejected_total" in text
        assert 'jouled_host_energy_joules_total{component="cpu",source="estimate"}' in text
        assert http_get(daemon.metrics_url + "/healthz")[0] == 200


def _stream_through_sigterm(tmp_path: Path, send: Callable[[Daemon, int], int | None]) -> None:
    """Batches of 50 spans to a daemon (2 s settle), SIGTERM 1.5 s in while they go on,
    until ``send(daemon, i)`` says the listener stopped (None; else the spans answered
    accepted). Then the daemon's last books (logged on the way out) must balance, and every
    span answered accepted must have been settled into a request."""
    import re

    cfg = _api_without_rapl(
        tmp_path,
        interval=0.2,
        spans={"settle_seconds": 2.0},
        ingest={"max_requests_per_second": 0},
    )
    accepted = 0
    with jouled(tmp_path, cfg) as daemon:
        stop_at = time.monotonic() + 1.5
        sent_sigterm = False
        for i in range(10_000):
            taken = send(daemon, i)
            if taken is None:
                break  # the listener stopped: nothing more is taken
            accepted += taken
            if not sent_sigterm and time.monotonic() > stop_at:
                daemon.proc.signal(signal.SIGTERM)  # while the stream goes on
                sent_sigterm = True
            assert i < 9_999, "the daemon never stopped taking spans"
        assert daemon.proc.wait(15) == 0
        log = daemon.proc.output()
    assert accepted > 100
    line = re.search(
        r"spans: received (\d+) = settled (\d+) \+ late (\d+) \+ rejected (\d+) \+ "
        r"duplicate (\d+) \+ dropped (\d+) \+ pending (\d+) \(balance (-?\d+)\)",
        log,
    )
    assert line, log
    received, settled, late, rejected, dup, dropped, pending, balance = map(int, line.groups())
    assert balance == 0 and pending == 0
    assert received == settled + late + rejected + dup + dropped
    assert settled == accepted
    assert dropped == 0


def test_sigterm_while_spans_stream_in_loses_nothing_accepted(tmp_path: Path) -> None:
    def send(daemon: Daemon, _i: int) -> int | None:
        now = time.time()
        spans = [
            {"workload": "api", "model": f"m{j % 3}", "start": now - 0.2, "end": now,
             "gflops": 1.0 + j}
            for j in range(50)
        ]  # fmt: skip
        req = urllib.request.Request(
            daemon.ingest_url + "/v1/spans",
            data=json.dumps({"spans": spans}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return int(json.loads(resp.read())["accepted"])
        except (urllib.error.URLError, ConnectionError):
            return None  # refused, reset or 503 "stopping": none of it taken

    _stream_through_sigterm(tmp_path, send)


def test_sigterm_while_grpc_spans_stream_in_loses_nothing_accepted(tmp_path: Path) -> None:
    """The OTLP/gRPC twin of the test above: every Export call is answered at once, OK (its
    spans settled) or, once the listener stops, a code OTLP exporters retry; none waits for
    its deadline."""
    import grpc
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    from tests.ingest.otlp import pb_span, request

    export = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    retry_codes = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    channels: dict[str, grpc.Channel] = {}

    def send(daemon: Daemon, i: int) -> int | None:
        assert daemon.grpc is not None
        channel = channels.get(daemon.grpc) or channels.setdefault(
            daemon.grpc, grpc.insecure_channel(daemon.grpc)
        )
        now = time.time()
        model = {"gen_ai.request.model": "m"}
        spans = [pb_span(50 * i + j + 1, start=now - 0.2, end=now, **model) for j in range(50)]
        body = request(spans, service__name="api").SerializeToString()
        try:
            reply = channel.unary_unary(export)(body, timeout=5)
        except grpc.RpcError as err:
            # grpcio answers a call that arrives as the server stops UNAVAILABLE or, when
            # it had already reached the server, CANCELLED: both retryable for OTLP
            # exporters (the OTLP specification's retryable codes), neither taken.
            assert err.code() in retry_codes, err
            return None
        return 50 - ExportTraceServiceResponse.FromString(reply).partial_success.rejected_spans

    try:
        _stream_through_sigterm(tmp_path, send)
    finally:
        for channel in channels.values():
            channel.close()


def test_unix_socket_ingest_with_a_token_and_no_secret_in_metrics(tmp_path: Path) -> None:
    import asyncio
    import os
    import stat

    import aiohttp

    empty = tmp_path / "none"
    empty.mkdir()
    token_file = tmp_path / "token"
    token_file.write_text("tok-3f9a1c\n")
    sock = tmp_path / "ingest.sock"
    cfg = {
        "workloads": [{"name": "api", "match": {"cmdline": "secret-flag-xyz"}}],
        "ingest": {
            "listen": f"unix:{sock}",
            "socket_mode": "0600",
            "token_file": str(token_file),
        },
        "collectors": {"rapl": {"path": str(empty)}, "nvml": {"enabled": False}},
    }
    with jouled(tmp_path, cfg) as daemon:
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600

        async def post(headers: dict[str, str]) -> int:
            now = time.time()
            body = {"spans": [{"workload": "api", "model": "m", "start": now - 1, "end": now}]}
            conn = aiohttp.UnixConnector(path=str(sock))
            async with (
                aiohttp.ClientSession(connector=conn) as http,
                http.post("http://jouled/v1/spans", json=body, headers=headers) as resp,
            ):
                return resp.status

        assert asyncio.run(post({})) == 401
        assert asyncio.run(post({"Authorization": "Bearer tok-3f9a1c"})) == 200
        refused = (
            'jouled_ingest_requests_total{code="401",listener="http",reason="unauthorized"} 1.0'
        )
        wait_for(lambda: refused in daemon.metrics(), 10, "the refusal counted")
        # A refused body is a request, not a span: the span books see the accepted one only
        # (published with the next tick).
        received = "jouled_spans_received_total 1.0"
        wait_for(lambda: received in daemon.metrics(), 10, "the accepted span counted")
        ok = 'jouled_ingest_requests_total{code="200",listener="http",reason="ok"} 1.0'
        assert ok in daemon.metrics()
        text = daemon.metrics()
        for secret in ("tok-3f9a1c", str(token_file), "secret-flag-xyz", str(sock)):
            assert secret not in text
        assert "tok-3f9a1c" not in daemon.proc.output()


def test_spans_past_the_pending_cap_are_refused_counted_and_logged_with_the_setting(
    tmp_path: Path,
) -> None:
    # The example that found it: at 5,000 spans/s and the 30 s settle a quarter of the spans
    # were refused with no log line. Here the cap is 1,000 and 1,500 spans arrive.
    cfg = _api_without_rapl(
        tmp_path,
        spans={"settle_seconds": 30.0, "max_pending_spans": 1000},
        ingest={"max_requests_per_second": 0},
    )
    answers = []
    with jouled(tmp_path, cfg) as daemon:
        time.sleep(2.5)  # spans ending before the first measured tick would be late
        now = time.time()
        for batch in range(3):
            spans = [
                {"workload": "api", "model": "m", "start": now - 0.2, "end": now - 0.1,
                 "gflops": 1.0 + batch * 500 + j}
                for j in range(500)
            ]  # fmt: skip
            req = urllib.request.Request(
                daemon.ingest_url + "/v1/spans",
                data=json.dumps({"spans": spans}).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=5) as resp:
                answers.append(json.loads(resp.read()))
        wait_for(lambda: "jouled_spans_pending 1000.0" in daemon.metrics(), 10, "a tick")
        metrics = daemon.metrics()
        log = daemon.proc.output()
    assert [a["accepted"] for a in answers] == [500, 500, 0], answers
    # The sender is told which spans were not kept, and why.
    assert answers[2]["errors"] == {"pending_full": 500}
    assert "spans.max_pending_spans" in answers[2]["first_error"]
    assert 'jouled_spans_rejected_total{reason="pending_full"} 500.0' in metrics
    assert "jouled_spans_pending 1000.0" in metrics
    warned = [line for line in log.splitlines() if "spans.max_pending_spans (1000)" in line]
    assert len(warned) == 1, log
    assert "500 refused" in warned[0]
