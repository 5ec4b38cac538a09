"""``jouled report --prometheus URL`` against hostile or broken HTTP APIs on loopback: every
answer is bounded in time and size and every wrong shape is a one-line error, never a
traceback or a wait without end."""

from __future__ import annotations

import contextlib
import io
import json
import time
from http.server import BaseHTTPRequestHandler

import pytest

from jouled import fleet
from jouled.report import main as report_main
from tests.support.loopback import http_server


def vector(result: object) -> bytes:
    return json.dumps(
        {"status": "success", "data": {"resultType": "vector", "result": result}}
    ).encode()


class Hostile(BaseHTTPRequestHandler):
    answer: bytes = b""
    mode = "plain"  # plain | trickle_body | trickle_headers | endless

    def do_GET(self) -> None:
        mode, answer = self.server.mode, self.server.answer  # type: ignore[attr-defined]
        with contextlib.suppress(OSError):
            if mode == "trickle_headers":  # a header line every 0.2 s, for ever
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                for _ in range(100):
                    self.wfile.write(b"X-Slow: 1\r\n")
                    self.wfile.flush()
                    time.sleep(0.2)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if mode == "plain":
                self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            if mode == "trickle_body":  # a byte every 0.2 s: each read is within timeout
                for _ in range(100):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.2)
            elif mode == "endless":  # valid-looking samples without end
                self.wfile.write(b'{"status":"success","data":{"resultType":"vector","result":[')
                for _ in range(60):
                    self.wfile.write(b'{"metric":{},"value":[1,"1"]},' * 20_000)
            else:
                self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


def hostile(mode: str, answer: bytes = b"") -> contextlib.AbstractContextManager[str]:
    return http_server(Hostile, mode=mode, answer=answer)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        # Each of these raised AttributeError, ValueError, KeyError or TypeError out of the CLI.
        (json.dumps({"status": "success", "data": [1, 2]}).encode(), "did not return a vector"),
        (vector([{"metric": {}, "value": [1, "abc"]}]), "could not convert"),
        (vector([{"metric": {}}]), "KeyError: 'value'"),
        (vector([{"metric": [1, 2], "value": [1, "1"]}]), "metric is list"),
        (vector("abc"), "did not return a vector"),
        (b"[" * 100_000 + b"]" * 100_000, "did not answer with Prometheus API JSON"),  # Recursion
    ],
)
def test_wrong_shapes_are_one_line_errors(answer: bytes, message: str) -> None:
    with hostile("plain", answer) as url, pytest.raises(fleet.FleetError, match=message):
        fleet.http_query(url, timeout_s=2.0)("up", 0.0)


@pytest.mark.parametrize("mode", ["trickle_body", "trickle_headers"])
def test_a_server_trickling_bytes_is_cut_off_at_the_timeout(mode: str) -> None:
    # Each byte came within urllib's per-read timeout: the CLI waited 20 s+ (for ever).
    start = time.monotonic()
    with hostile(mode) as url, pytest.raises(fleet.FleetError, match="within 1 s"):
        fleet.http_query(url, timeout_s=1.0)("up", 0.0)
    assert time.monotonic() - start < 3.0


def test_an_answer_over_the_size_bound_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleet, "MAX_BODY_BYTES", 4 << 20)
    with hostile("endless") as url, pytest.raises(fleet.FleetError, match="more than 4 MiB"):
        fleet.http_query(url, timeout_s=10.0)("up", 0.0)


def test_the_report_command_exits_1_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    with hostile("plain", vector([{"value": None}])) as url:
        code = report_main(["--prometheus", url, "--since", "1d"], out=io.StringIO())
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("jouled report: query ") and "did not return a vector" in err
    assert len(err.splitlines()) == 1
    code = report_main(["--prometheus", "file:///dev/zero", "--since", "1d"], out=io.StringIO())
    assert code == 1
    assert "give an http:// or https:// URL" in capsys.readouterr().err
