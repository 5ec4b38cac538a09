"""Bearer token and rate limit on the ingest listener, over real loopback HTTP."""

import json

import pytest
from aiohttp.test_utils import TestClient, TestServer

from jouled.attribution.spans import Span
from jouled.clock import FakeClock
from jouled.ingest.app import build_ingest_app
from jouled.ingest.guard import TokenBucket
from jouled.ingest.requests import IngestRequests


class Sink:
    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.rejections: dict[str, int] = {}

    def submit(self, spans: list[Span]) -> tuple[int, int]:
        self.spans.extend(spans)
        return len(spans), 0

    def rejected(self, reason: str, n: int) -> None:
        self.rejections[reason] = self.rejections.get(reason, 0) + n


def batch(clock: FakeClock) -> bytes:
    now = clock.time()
    return json.dumps(
        {"spans": [{"workload": "api", "model": "m", "start": now - 1, "end": now}]}
    ).encode()


async def test_a_token_is_required_and_compared_exactly() -> None:
    clock, sink, book = FakeClock(), Sink(), IngestRequests()
    app = build_ingest_app(
        sink,
        clock=clock,
        known_workloads=None,
        gflops_per_token={},
        token="s3cret",
        requests=book,
    )
    async with TestClient(TestServer(app)) as client:
        headers = {"Content-Type": "application/json"}
        r = await client.post("/v1/spans", data=batch(clock), headers=headers)
        assert r.status == 401
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert "s3cret" not in await r.text()
        wrong = {**headers, "Authorization": "Bearer s3cre"}
        assert (await client.post("/v1/spans", data=batch(clock), headers=wrong)).status == 401
        right = {**headers, "Authorization": "Bearer s3cret"}
        assert (await client.post("/v1/spans", data=batch(clock), headers=right)).status == 200
        assert (await client.get("/healthz")).status == 200  # probes need no token
    assert len(sink.spans) == 1
    # Requests, not spans: two refused, one taken; the health probe is not counted.
    assert book.totals() == {("http", "401", "unauthorized"): 2, ("http", "200", "ok"): 1}
    assert sink.rejections == {}


async def test_over_the_rate_limit_answers_429_with_retry_after() -> None:
    clock, sink, book = FakeClock(), Sink(), IngestRequests()
    app = build_ingest_app(
        sink,
        clock=clock,
        known_workloads=None,
        gflops_per_token={},
        max_requests_per_second=5,
        requests=book,
    )
    statuses = []
    async with TestClient(TestServer(app)) as client:
        for _ in range(15):
            r = await client.post(
                "/v1/spans", data=batch(clock), headers={"Content-Type": "application/json"}
            )
            statuses.append(r.status)
            if r.status == 429:
                assert int(r.headers["Retry-After"]) >= 1
        clock.advance(2.0)  # the bucket refills at 5/s
        r = await client.post(
            "/v1/spans", data=batch(clock), headers={"Content-Type": "application/json"}
        )
        assert r.status == 200
    # The burst is max(10, 2 x rate) = 10 requests.
    assert statuses == [200] * 10 + [429] * 5
    assert book.totals() == {("http", "200", "ok"): 11, ("http", "429", "rate_limited"): 5}
    assert sink.rejections == {}


def test_token_bucket_refills_at_its_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=2.0, burst=2.0, clock=clock)
    assert bucket.take() == 0.0 and bucket.take() == 0.0
    assert bucket.take() == pytest.approx(0.5)
    clock.advance(0.5)
    assert bucket.take() == 0.0
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1, clock=clock)


async def test_refusals_before_the_body_expect_100_continue_are_counted_requests() -> None:
    # aiohttp answers an Expect: 100-continue refusal before the middlewares run.
    clock, sink, book = FakeClock(), Sink(), IngestRequests()
    app = build_ingest_app(
        sink,
        clock=clock,
        known_workloads=None,
        gflops_per_token={},
        token="s3cret",
        max_body_bytes=1024,
        requests=book,
    )
    async with TestClient(TestServer(app)) as client:
        headers = {"Content-Type": "application/json"}
        r = await client.post("/v1/spans", data=batch(clock), headers=headers, expect100=True)
        assert r.status == 401
        authorized = {**headers, "Authorization": "Bearer s3cret"}
        big = b"{" + b" " * 2000 + b"}"
        r = await client.post("/v1/spans", data=big, headers=authorized, expect100=True)
        assert r.status == 413
        r = await client.post("/v1/spans", data=batch(clock), headers=authorized, expect100=True)
        assert r.status == 200
    assert book.totals() == {
        ("http", "401", "unauthorized"): 1,
        ("http", "413", "too_large"): 1,
        ("http", "200", "ok"): 1,
    }
    assert sink.rejections == {} and len(sink.spans) == 1
