"""SpanReporter against the real ingest app on loopback, and against dead or hung peers."""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jouled.client import SpanReporter, current_work, set_work
from jouled.clock import FakeClock
from tests.client.conftest import HungServer, IngestServer, RecordingSink

WAIT_S = 10.0  # an upper bound for things that happen in milliseconds; never a speed claim


@pytest.fixture
def reporters() -> Iterator[Callable[..., SpanReporter]]:
    made: list[SpanReporter] = []

    def make(url: str, **kw: Any) -> SpanReporter:
        kw.setdefault("workload", "classifier")
        reporter = SpanReporter(url, **kw)
        made.append(reporter)
        return reporter

    yield make
    for reporter in made:
        reporter.close(timeout=0.5)


def test_recorded_spans_arrive_with_their_fields(ingest: IngestServer, reporters: Any) -> None:
    reporter = reporters(ingest.url, workload="chat")
    now = time.time()
    assert reporter.record(
        model="bert-base", start=now - 0.5, end=now, gflops=12.5, route="/v1/classify"
    )
    assert reporter.record(model="llama-8b", start=now - 2, end=now - 1, output_tokens=10,
                           input_tokens=5)  # fmt: skip
    assert reporter.flush(WAIT_S)
    first, second = ingest.sink.spans
    assert (first.workload, first.model, first.route) == ("chat", "bert-base", "/v1/classify")
    assert (first.start, first.end, first.gflops) == (now - 0.5, now, 12.5)
    # Tokens become GFLOPs with the ingest's per-model rate: 15 tokens x 16 GFLOPs.
    assert (second.model, second.gflops, second.route) == ("llama-8b", 240.0, "")
    assert len({(s.trace_id, s.span_id) for s in ingest.sink.spans}) == 2
    assert all(s.trace_id and s.span_id for s in ingest.sink.spans)
    stats = reporter.stats
    assert (stats.sent, stats.failed, stats.dropped, stats.batches) == (2, 0, 0, 1)


def test_span_times_the_request_with_the_injected_clock(
    ingest: IngestServer, reporters: Any
) -> None:
    clock = FakeClock(start_wall=time.time() - 10)
    reporter = reporters(ingest.url, clock=clock)
    t0 = clock.time()
    with reporter.span(model="bert-base", route="/r") as timer:
        clock.advance(0.25)
        clock.jump_wall(-30)  # an NTP step mid-request must not change its duration
        assert set_work(gflops=7.0)
    t1 = clock.time()  # 30 s behind t0: the wall clock stepped back
    with pytest.raises(ZeroDivisionError), reporter.span(model="bert-base", gflops=1.0):
        clock.advance(0.5)
        _ = 1 / 0  # a failed request spent energy too: still reported
    assert timer.error is False
    assert current_work() is None
    assert set_work(gflops=1.0) is False  # outside any span: a no-op
    assert reporter.flush(WAIT_S)
    ok, failed = ingest.sink.spans
    assert (ok.start, ok.end, ok.gflops, ok.route) == (t0, t0 + 0.25, 7.0, "/r")
    assert (failed.start, failed.end) == (t1, t1 + 0.5)
    assert t1 < t0
    assert failed.gflops == 1.0


def test_thousand_spans_go_in_few_posts(ingest: IngestServer, reporters: Any) -> None:
    reporter = reporters(ingest.url, batch_size=512, flush_interval=60.0)
    now = time.time()
    for k in range(1000):
        reporter.record(model="m", start=now - 1 + k * 1e-4, end=now, gflops=float(k))
    assert reporter.close(timeout=WAIT_S)
    assert len(ingest.sink.spans) == 1000
    assert sorted(s.gflops or 0.0 for s in ingest.sink.spans) == [float(k) for k in range(1000)]
    assert ingest.sink.posts == reporter.stats.batches <= 3


def test_close_flushes_and_later_spans_are_dropped(ingest: IngestServer, reporters: Any) -> None:
    # A flush interval longer than the test: only close() can have sent these.
    reporter = reporters(ingest.url, flush_interval=3600.0)
    now = time.time()
    for k in range(3):
        reporter.record(model=f"m{k}", start=now - 1, end=now)
    assert reporter.close(timeout=WAIT_S) is True
    assert [s.model for s in ingest.sink.spans] == ["m0", "m1", "m2"]
    assert reporter.record(model="late", start=now - 1, end=now) is False
    assert reporter.close() is True  # idempotent
    stats = reporter.stats
    assert (stats.sent, stats.dropped, stats.queued) == (3, 1, 0)


def test_full_queue_drops_the_oldest(ingest: IngestServer, reporters: Any) -> None:
    # batch_size above max_queue and a long interval: the sender stays asleep until close.
    reporter = reporters(ingest.url, max_queue=4, batch_size=100, flush_interval=3600.0)
    now = time.time()
    for k in range(10):
        assert reporter.record(model=f"m{k}", start=now - 1, end=now)
    assert (reporter.stats.queued, reporter.dropped) == (4, 6)
    assert reporter.close(timeout=WAIT_S)
    assert [s.model for s in ingest.sink.spans] == ["m6", "m7", "m8", "m9"]
    assert (reporter.sent, reporter.dropped, reporter.failed) == (4, 6, 0)


def test_refused_connection_counts_and_logs_once_a_minute(
    refused_url: str, reporters: Any, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(start_wall=time.time())
    reporter = reporters(refused_url, batch_size=1, clock=clock)
    caplog.set_level(logging.WARNING, logger="jouled.client.reporter")
    for _ in range(5):
        assert reporter.record(model="m", start=clock.time() - 1, end=clock.time())
    assert reporter.flush(WAIT_S)
    stats = reporter.stats
    assert (stats.sent, stats.failed, stats.failed_batches) == (0, 5, 5)
    assert len(caplog.records) == 1
    assert "ConnectionRefusedError" in caplog.records[0].getMessage()
    clock.advance(61.0)
    reporter.record(model="m", start=clock.time() - 1, end=clock.time())
    assert reporter.flush(WAIT_S)
    assert len(caplog.records) == 2
    assert "4 similar message(s) held back" in caplog.records[1].getMessage()
    assert reporter.close(timeout=WAIT_S)  # nothing queued: failed spans are settled


def test_http_errors_fail_the_batch(ingest: IngestServer, reporters: Any) -> None:
    now = time.time()
    wrong_path = reporters(ingest.url.replace("/v1/spans", "/v1/nope"))
    wrong_path.record(model="m", start=now - 1, end=now)
    assert wrong_path.flush(WAIT_S)
    assert (wrong_path.sent, wrong_path.failed) == (0, 1)  # 404
    ingest.sink.fail = True
    broken = reporters(ingest.url)
    broken.record(model="m", start=now - 1, end=now)
    assert broken.flush(WAIT_S)
    assert (broken.sent, broken.failed) == (0, 1)  # 500 from a failing sink
    ingest.sink.fail = False
    broken.record(model="m", start=now - 1, end=now)
    assert broken.flush(WAIT_S)
    assert (broken.sent, broken.failed) == (1, 1)  # and it recovers on the same reporter


def test_invalid_spans_are_rejected_by_jouled_not_by_the_batch(
    ingest: IngestServer, reporters: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="jouled.client.reporter")
    reporter = reporters(ingest.url)
    now = time.time()
    reporter.record(model="ok", start=now - 1, end=now, gflops=1.0)
    reporter.record(model="nan", start=now - 1, end=now, gflops=math.nan)
    reporter.record(model="inverted", start=now, end=now - 1)
    assert reporter.flush(WAIT_S)
    assert [s.model for s in ingest.sink.spans] == ["ok"]
    assert ingest.sink.rejections == {"bad_gflops": 1, "end_before_start": 1}
    stats = reporter.stats
    assert (stats.sent, stats.rejected, stats.failed) == (3, 2, 0)
    assert "rejected 2 of 3" in caplog.records[0].getMessage()


def test_record_returns_while_the_sender_is_blocked(hung: HungServer, reporters: Any) -> None:
    reporter = reporters(hung.url, batch_size=1, max_queue=100, timeout=30.0)
    now = time.time()
    reporter.record(model="first", start=now - 1, end=now)
    assert hung.got_request.wait(WAIT_S)  # the sender now waits up to 30 s for an answer
    # The test finishing at all shows that no call waited on the sender.
    assert all(reporter.record(model="m", start=now - 1, end=now) for _ in range(5000))
    stats = reporter.stats
    assert (stats.queued, stats.dropped, stats.sent, stats.failed) == (100, 4900, 0, 0)
    assert reporter.close(timeout=0.2) is False  # bounded although the sender is still stuck
    assert reporter.dropped == 5000
    hung.stop()  # the server drops the connection: the in-flight batch fails
    sender = reporter._thread
    assert sender is not None
    sender.join(WAIT_S)
    assert not sender.is_alive()
    assert (reporter.sent, reporter.failed, reporter.dropped) == (0, 1, 5000)


class _IOWatch:
    """Records, on this thread only, every C function called and every Python file entered."""

    def __init__(self) -> None:
        self.c_calls: set[str] = set()
        self.files: set[str] = set()

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "c_call":
            owner = getattr(arg, "__self__", None)
            kind = type(owner).__module__ if owner is not None else getattr(arg, "__module__", "")
            self.c_calls.add(f"{kind}.{arg.__qualname__}")
        elif event == "call":
            self.files.add(frame.f_code.co_filename)

    def __enter__(self) -> _IOWatch:
        sys.setprofile(self)
        return self

    def __exit__(self, *_exc: object) -> None:
        sys.setprofile(None)

    def io(self) -> list[str]:
        words = ("socket", "select", "poll", "write", "send", "recv", "connect", "http")
        hits = [c for c in self.c_calls if any(w in c.lower() for w in words)]
        return hits + [f for f in self.files if any(w in f for w in ("socket", "http"))]


def test_request_path_does_no_io_on_the_callers_thread(
    ingest: IngestServer, reporters: Any
) -> None:
    reporter = reporters(ingest.url, batch_size=2)
    now = time.time()
    with _IOWatch() as watch:
        for _ in range(5):  # past batch_size: the wake-up path runs too
            reporter.record(model="m", start=now - 1, end=now, gflops=1.0)
        with reporter.span(model="m"):
            set_work(gflops=2.0)
    assert watch.io() == []
    assert "collections.deque.append" in " ".join(watch.c_calls)  # the watch did see calls
    a, b = socket.socketpair()
    with _IOWatch() as control:
        a.send(b"x")
    a.close()
    b.close()
    assert control.io()  # and it does see socket calls when there are some
    assert reporter.flush(WAIT_S)
    assert len(ingest.sink.spans) == 6


async def test_usable_from_asyncio(ingest: IngestServer) -> None:
    async with SpanReporter(ingest.url, workload="w", flush_interval=3600.0) as reporter:
        with reporter.span(model="m"):
            set_work(output_tokens=2, model="llama-8b")
    assert reporter.stats.sent == 1
    (span,) = ingest.sink.spans
    assert (span.model, span.gflops) == ("llama-8b", 32.0)


def test_stale_keepalive_connection_is_retried(sink: RecordingSink, reporters: Any) -> None:
    server = IngestServer(sink, keepalive_timeout=0.05).start()
    try:
        reporter = reporters(server.url)
        now = time.time()
        reporter.record(model="a", start=now - 1, end=now)
        assert reporter.flush(WAIT_S)
        time.sleep(0.3)  # past keepalive_timeout: the server closes the idle connection
        reporter.record(model="b", start=now - 1, end=now)
        assert reporter.flush(WAIT_S)
        assert (reporter.sent, reporter.failed) == (2, 0)
        assert [s.model for s in sink.spans] == ["a", "b"]
    finally:
        server.stop()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_forked_child_gets_its_own_sender(ingest: IngestServer, reporters: Any) -> None:
    reporter = reporters(ingest.url, flush_interval=3600.0)
    now = time.time()
    reporter.record(model="parent-queued", start=now - 1, end=now)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's result travels in its exit status
        code = 1
        try:
            reporter.record(model="child", start=now - 1, end=now)
            stats = reporter.stats
            done = reporter.close(timeout=WAIT_S)
            code = 0 if done and reporter.stats.sent == 1 and stats.queued == 1 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert reporter.close(timeout=WAIT_S)
    assert sorted(s.model for s in ingest.sink.spans) == ["child", "parent-queued"]


def test_constructor_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="http"):
        SpanReporter("ftp://x/v1/spans", workload="w")
    with pytest.raises(ValueError, match="workload"):
        SpanReporter(workload="")
    with pytest.raises(ValueError, match="batch_size"):
        SpanReporter(workload="w", batch_size=0)
    assert threading.active_count() >= 1


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(0, 300),
    max_queue=st.integers(1, 64),
    batch_size=st.integers(1, 64),
)
def test_every_span_is_sent_or_dropped_exactly_once(
    ingest: IngestServer, n: int, max_queue: int, batch_size: int
) -> None:
    before = len(ingest.sink.spans)
    reporter = SpanReporter(
        ingest.url, workload="w", max_queue=max_queue, batch_size=batch_size, flush_interval=3600.0
    )
    now = time.time()
    for k in range(n):
        reporter.record(model="m", start=now - 1, end=now, gflops=float(k))
    assert reporter.close(timeout=WAIT_S)
    stats = reporter.stats
    assert stats.sent + stats.dropped == n
    assert stats.failed == stats.queued == 0
    if batch_size > max_queue:  # the sender never woke before close: drops are exact
        assert stats.dropped == max(0, n - max_queue)
    got = [int(s.gflops or 0.0) for s in ingest.sink.spans[before:]]
    assert len(got) == stats.sent
    assert got == sorted(got)  # in recording order; drops only ever remove the oldest
    if n:
        assert got[-1] == n - 1  # the newest span is never the one dropped
