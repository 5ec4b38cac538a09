"""The ingest app over real HTTP on loopback: OTLP answers, limits, and surviving garbage."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from google.rpc.status_pb2 import Status  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from jouled.attribution.spans import Span, SpanSplitter
from jouled.clock import FakeClock
from jouled.ingest.app import STATE_KEY, build_ingest_app, ingest_body
from jouled.ingest.decode import decode_otlp_protobuf
from jouled.ingest.requests import IngestRequests
from tests.ingest.otlp import NOW, pb_span, request

PB = {"Content-Type": "application/x-protobuf"}
JS = {"Content-Type": "application/json"}


class RecordingSink:
    """A SpanSink over a real splitter, recording what it was given."""

    def __init__(self) -> None:
        self.splitter = SpanSplitter(settle_seconds=5.0)
        self.spans: list[Span] = []
        self.rejections: dict[str, int] = {}

    def submit(self, spans: Sequence[Span]) -> tuple[int, int]:
        self.spans.extend(spans)
        late = sum(self.splitter.add_span(s) == "late" for s in spans)
        return len(spans) - late, late

    def rejected(self, reason: str, n: int) -> None:
        self.rejections[reason] = self.rejections.get(reason, 0) + n


Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Any]


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def book() -> IngestRequests:
    return IngestRequests()


@pytest.fixture
async def make_client(sink: RecordingSink, book: IngestRequests) -> AsyncIterator[MakeClient]:
    clients: list[Client] = []

    async def make(auto_decompress: bool = True, **kwargs: Any) -> Client:
        kwargs.setdefault("requests", book)
        kwargs.setdefault("clock", FakeClock(start_wall=NOW))
        kwargs.setdefault("known_workloads", None)
        kwargs.setdefault("gflops_per_token", {"llama-8b": 16.0})
        app = build_ingest_app(sink, **kwargs)
        # auto_decompress=False: a runner that leaves gzip to the app's own bounded gunzip.
        client: Client = TestClient(TestServer(app, auto_decompress=auto_decompress))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def pb_body(*spans: Any) -> bytes:
    return bytes(request(list(spans)).SerializeToString())


def json_body(*gflops: float | str) -> bytes:
    spans = [
        {
            "traceId": "5b8efff798038103d269b633813fc60c",
            "spanId": f"{k + 1:016x}",
            "kind": 2,
            "startTimeUnixNano": str(int((NOW - 2) * 1e9)),
            "endTimeUnixNano": str(int((NOW - 1) * 1e9)),
            "attributes": [{"key": "jouled.gflops", "value": {"doubleValue": g}}],
        }
        for k, g in enumerate(gflops)
    ]
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "llm"}}]}
    return json.dumps(
        {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": spans}]}]}
    ).encode()


async def test_protobuf_full_success(make_client: MakeClient, sink: RecordingSink) -> None:
    client = await make_client()
    resp = await client.post("/v1/traces", data=pb_body(pb_span(1, jouled__gflops=2.0)), headers=PB)
    assert resp.status == 200
    assert resp.content_type == "application/x-protobuf"
    answer = ExportTraceServiceResponse.FromString(await resp.read())
    assert not answer.HasField("partial_success")
    assert [(s.workload, s.gflops) for s in sink.spans] == [("classifier", 2.0)]


async def test_protobuf_partial_success(make_client: MakeClient, sink: RecordingSink) -> None:
    client = await make_client()
    body = pb_body(
        pb_span(1, jouled__gflops=-5.0), pb_span(2), pb_span(3, start=NOW + 9000, end=NOW + 9001)
    )
    resp = await client.post("/v1/traces", data=body, headers=PB)
    assert resp.status == 200
    answer = ExportTraceServiceResponse.FromString(await resp.read())
    assert answer.partial_success.rejected_spans == 2
    assert "bad_gflops" in answer.partial_success.error_message
    assert len(sink.spans) == 1
    assert sink.rejections == {"bad_gflops": 1, "too_far_future": 1}


async def test_json_full_and_partial_success(make_client: MakeClient, sink: RecordingSink) -> None:
    client = await make_client()
    resp = await client.post("/v1/traces", data=json_body(1.0, 2.0), headers=JS)
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert await resp.json() == {}
    resp = await client.post("/v1/traces", data=json_body(1.0, "NaN"), headers=JS)
    assert resp.status == 200
    partial = (await resp.json())["partialSuccess"]
    assert partial["rejectedSpans"] == "1"
    assert partial["errorMessage"].startswith("1 span(s) rejected; first: bad_gflops")
    assert len(sink.spans) == 3


@pytest.mark.parametrize("auto_decompress", [True, False])
@pytest.mark.parametrize(("body", "headers"), [(pb_body(pb_span(1)), PB), (json_body(3.0), JS)])
async def test_gzip_bodies(
    make_client: MakeClient,
    sink: RecordingSink,
    body: bytes,
    headers: dict[str, str],
    auto_decompress: bool,
) -> None:
    client = await make_client(auto_decompress=auto_decompress)
    resp = await client.post(
        "/v1/traces", data=gzip.compress(body), headers={**headers, "Content-Encoding": "gzip"}
    )
    assert resp.status == 200
    assert len(sink.spans) == 1
    # Two gzip members in one body are one stream (RFC 1952).
    half = len(body) // 2
    two = gzip.compress(body[:half]) + gzip.compress(body[half:])
    resp = await client.post(
        "/v1/traces", data=two, headers={**headers, "Content-Encoding": "gzip"}
    )
    assert resp.status == 200
    assert len(sink.spans) == 2
    resp = await client.post(
        "/v1/traces",
        data=gzip.compress(body)[:-12],
        headers={**headers, "Content-Encoding": "gzip"},
    )
    assert resp.status == 400


async def test_malformed_bodies_answer_400_with_a_status(
    make_client: MakeClient, sink: RecordingSink, book: IngestRequests
) -> None:
    client = await make_client()
    resp = await client.post("/v1/traces", data=b"\xff\x00garbage\x13", headers=PB)
    assert resp.status == 400
    status = Status.FromString(await resp.read())
    assert status.code == 3
    assert "protobuf" in status.message
    resp = await client.post("/v1/traces", data=b'{"resourceSpans": [', headers=JS)
    assert resp.status == 400
    assert "not valid JSON" in (await resp.json())["message"]
    resp = await client.post(
        "/v1/traces", data=b"\x1f\x8bnot gzip", headers={**PB, "Content-Encoding": "gzip"}
    )
    assert resp.status == 400
    # Three requests refused, no span among them: the span books stay empty.
    assert book.totals() == {("http", "400", "malformed"): 3}
    assert sink.rejections == {}


@pytest.mark.parametrize("auto_decompress", [True, False])
async def test_body_limits_answer_413_even_after_decompression(
    make_client: MakeClient, sink: RecordingSink, book: IngestRequests, auto_decompress: bool
) -> None:
    client = await make_client(max_body_bytes=4096, auto_decompress=auto_decompress)
    resp = await client.post("/v1/traces", data=b"\x00" * 5000, headers=PB)
    assert resp.status == 413
    bomb = gzip.compress(b"{" + b" " * 1_000_000 + b"}")
    assert len(bomb) < 4096
    resp = await client.post("/v1/traces", data=bomb, headers={**JS, "Content-Encoding": "gzip"})
    assert resp.status == 413
    assert "exceeds 4096 bytes" in (await resp.json())["message"]
    assert book.totals() == {("http", "413", "too_large"): 2}
    assert sink.rejections == {}


async def test_unsupported_media_type_is_415(
    make_client: MakeClient, sink: RecordingSink, book: IngestRequests
) -> None:
    client = await make_client()
    resp = await client.post("/v1/traces", data=b"hi", headers={"Content-Type": "text/plain"})
    assert resp.status == 415
    assert "application/x-protobuf" in Status.FromString(await resp.read()).message
    resp = await client.post("/v1/spans", data=b"{}", headers={"Content-Type": "text/csv"})
    assert resp.status == 415
    resp = await client.post(
        "/v1/traces", data=b"x", headers={**PB, "Content-Encoding": "compress"}
    )
    assert resp.status == 415
    assert book.totals() == {
        ("http", "415", "unsupported_media_type"): 2,
        ("http", "415", "unsupported_encoding"): 1,
    }
    assert sink.rejections == {}


async def test_keeps_working_after_garbage(make_client: MakeClient, sink: RecordingSink) -> None:
    client = await make_client()
    garbage = [b"", b"\x00" * 100, bytes(range(256)) * 4, b"\n\x05\n\x03\x12\x01", b"{}" * 1000]
    for body in garbage:
        for path, headers in (("/v1/traces", PB), ("/v1/traces", JS), ("/v1/spans", JS)):
            resp = await client.post(path, data=body, headers=headers)
            assert resp.status in (200, 400), (path, body[:20])
    resp = await client.post("/v1/traces", data=pb_body(pb_span(1)), headers=PB)
    assert resp.status == 200
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.text() == "ok\n"
    assert len(sink.spans) == 1


async def test_simple_spans_endpoint_counts_accepted_rejected_and_late(
    make_client: MakeClient, sink: RecordingSink
) -> None:
    client = await make_client(known_workloads=lambda: {"classifier"})
    sink.splitter.add_tick(NOW - 10.0, NOW - 9.0, {"classifier": {"cpu": 1.0}})
    sink.splitter.settle(NOW)  # [NOW-10, NOW-9) is settled: spans there are late
    good = {"workload": "classifier", "model": "bert", "start": NOW - 2.0, "end": NOW - 1.0}
    late = {**good, "start": NOW - 9.5}
    body = {"spans": [good, late, {**good, "workload": "nope"}, {**good, "end": NOW - 3.0}]}
    resp = await client.post("/v1/spans", json=body)
    assert resp.status == 200
    assert await resp.json() == {
        "accepted": 1,
        "rejected": 2,
        "late": 1,
        "errors": {"unknown_workload": 1, "end_before_start": 1},
        "first_error": "unknown_workload: workload 'nope' is not configured and no workload's "
        "process sent the span: set OTEL_SERVICE_NAME (OTLP service.name) to a workloads[].name",
    }
    resp = await client.post("/v1/spans", data=b'{"spans": 3}', headers=JS)
    assert resp.status == 400
    assert (await resp.json())["error"] == "malformed"


async def test_model_cap_applies_per_workload(make_client: MakeClient, sink: RecordingSink) -> None:
    client = await make_client(model_cap=1)
    spans = [
        {"workload": "w", "model": m, "start": NOW - 2.0, "end": NOW - 1.0} for m in ("a", "b", "a")
    ]
    resp = await client.post("/v1/spans", json={"spans": spans})
    assert resp.status == 200
    assert [s.model for s in sink.spans] == ["a", "other", "a"]


async def test_sink_failure_is_a_500_status_not_a_crash(make_client: MakeClient) -> None:
    class BrokenSink(RecordingSink):
        def submit(self, spans: Sequence[Span]) -> tuple[int, int]:
            raise RuntimeError("splitter bug")

    app = build_ingest_app(
        BrokenSink(), clock=FakeClock(start_wall=NOW), known_workloads=None, gflops_per_token={}
    )
    async with TestClient(TestServer(app)) as client:
        resp = await client.post("/v1/traces", data=pb_body(pb_span(1)), headers=PB)
        assert resp.status == 500
        assert Status.FromString(await resp.read()).code == 13
        assert (await client.get("/healthz")).status == 200


async def test_large_batch_is_decoded_off_the_event_loop_and_fully_accepted(
    make_client: MakeClient, sink: RecordingSink
) -> None:
    spans = [pb_span(k + 1, jouled__gflops=float(k), http__route="/r" * 20) for k in range(3000)]
    body = pb_body(*spans)
    assert len(body) > 256 * 1024  # above the inline-decode threshold
    client = await make_client()
    resp = await client.post("/v1/traces", data=body, headers=PB)
    assert resp.status == 200
    assert not ExportTraceServiceResponse.FromString(await resp.read()).HasField("partial_success")
    assert len(sink.spans) == 3000
    assert sink.spans[-1].gflops == 2999.0


@pytest.mark.parametrize("n", [3, 3000], ids=["inline", "off-loop"])
async def test_spans_the_sink_refuses_are_told_to_the_sender_once_the_spans_are_dropped(
    n: int,
) -> None:
    class HalfSink(RecordingSink):
        def submit(self, spans: Sequence[Span]) -> tuple[int, int]:
            taken = spans[: len(spans) // 2]
            self.spans.extend(taken)
            return len(taken), 0

    sink = HalfSink()
    on_loop: list[bool] = []
    app = build_ingest_app(
        sink, clock=FakeClock(start_wall=NOW), known_workloads=None, gflops_per_token={}
    )
    state = app[STATE_KEY]
    real_submit = sink.submit

    def submit(spans: Sequence[Span]) -> tuple[int, int]:
        on_loop.append(threading.current_thread() is threading.main_thread())
        return real_submit(spans)

    sink.submit = submit  # type: ignore[method-assign]
    body = pb_body(*[pb_span(k + 1, http__route="/r" * 20) for k in range(n)])
    async with TestClient(TestServer(app)) as client:
        resp = await client.post("/v1/traces", data=body, headers=PB)
        assert resp.status == 200
        partial = ExportTraceServiceResponse.FromString(await resp.read()).partial_success
        result, accepted, late = await ingest_body(state, decode_otlp_protobuf, body, None)
    # The decoded spans were handed over and dropped off the loop; their count still tells
    # the sender how many the sink did not keep.
    assert on_loop and not any(on_loop)
    assert partial.rejected_spans == n - n // 2
    assert "pending_full" in partial.error_message
    assert (accepted, late, result.taken, result.spans) == (n // 2, 0, n, ())
