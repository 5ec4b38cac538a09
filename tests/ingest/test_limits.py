"""The shared ingest limits (jouled.ingest.limits) and the span-at-a-time protobuf walker,
with hypothesis fuzzing of every decoder: any bytes give a result or MalformedBody."""

from __future__ import annotations

import asyncio
import gzip
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from benchmarks._util import otlp_batch
from jouled.ingest.attributes import AttributeNames
from jouled.ingest.decode import decode_otlp_json, decode_otlp_protobuf, decode_spans_json
from jouled.ingest.limits import BytesInFlight, LimitError, check_encoding, decompress
from jouled.ingest.otlpscan import span_tuple
from jouled.ingest.rules import DecodeResult, MalformedBody, Rules
from jouled.ingest.wire import WireError, iter_span_batches

NOW = 1.7e9


def test_a_gzip_bomb_inflates_no_further_than_the_cap() -> None:
    bomb = gzip.compress(b"\0" * (64 << 20))
    assert len(bomb) < 100_000
    with pytest.raises(LimitError) as err:
        decompress(bomb, "gzip", 1 << 20)
    assert (err.value.status, err.value.reason) == (413, "too_large")
    assert decompress(gzip.compress(b"x" * 1000), "gzip", 1000) == b"x" * 1000


def test_gzip_members_deflate_and_already_inflated_bodies() -> None:
    assert decompress(gzip.compress(b"ab") + gzip.compress(b"cd"), "gzip", 10) == b"abcd"
    assert decompress(zlib.compress(b"{}" * 50), "deflate", 100) == b"{}" * 50
    # aiohttp inflated it already (auto_decompress): the body passes as it is.
    assert decompress(b'{"spans": []}', "gzip", 100) == b'{"spans": []}'
    for bad in (gzip.compress(b"abc")[:-6], b"\x1f\x8b\x08\x00garbage"):
        with pytest.raises(LimitError) as err:
            decompress(bad, "gzip", 100)
        assert (err.value.status, err.value.reason) == (400, "malformed")


def test_encodings_jouled_cannot_read_are_415() -> None:
    assert check_encoding(None) == "identity"
    assert check_encoding(" GZip ") == "gzip"
    for enc in ("br", "zstd", "gzip, br", "compress"):
        with pytest.raises(LimitError) as err:
            check_encoding(enc)
        assert err.value.status == 415 and "gzip" in err.value.message


async def test_bytes_in_flight_wait_in_order_time_out_and_never_leak() -> None:
    budget = BytesInFlight(100, max_wait_s=0.3)
    order: list[str] = []

    async def hold(name: str, n: int, seconds: float) -> None:
        async with budget.reserve(n):
            order.append(name)
            await asyncio.sleep(seconds)

    first = asyncio.ensure_future(hold("a", 80, 0.1))
    await asyncio.sleep(0)
    assert budget.try_reserve(30) == 0  # a thread (gRPC) never waits
    await asyncio.gather(first, hold("b", 50, 0), hold("c", 10, 0))
    assert order == ["a", "b", "c"]  # FIFO: c waits behind b although it would fit
    assert budget.in_flight == 0 and budget.high_water == 80
    big = asyncio.ensure_future(hold("big", 10**9, 0.5))  # cut to the capacity
    await asyncio.sleep(0.01)
    assert budget.in_flight == 100
    with pytest.raises(LimitError) as err:
        await hold("late", 1, 0)
    assert (err.value.status, err.value.reason) == (503, "busy")
    await big
    assert budget.in_flight == 0 and budget.refused == 1
    assert budget.try_reserve(40) == 40
    budget.release(40)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 40), workloads=st.integers(1, 4))
def test_the_span_walker_reads_what_protobuf_reads(n: int, workloads: int) -> None:
    body = otlp_batch(
        n, workloads=[f"w{i}" for i in range(workloads)], models=["a", "b"], end_ns=10**18
    )
    whole = ExportTraceServiceRequest.FromString(body)
    wanted = AttributeNames().wanted
    expected = [
        (rs.resource, span_tuple(span, wanted))
        for rs in whole.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]
    assert [(r, t) for r, ts in iter_span_batches(body, wanted) for t in ts] == expected


def _check(decoder, body: bytes) -> None:  # type: ignore[no-untyped-def]
    try:
        result = decoder(body, Rules(now=NOW))
    except MalformedBody:
        return
    assert isinstance(result, DecodeResult)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=300))
def test_any_bytes_decode_or_are_malformed(body: bytes) -> None:
    for decoder in (decode_otlp_protobuf, decode_otlp_json, decode_spans_json):
        _check(decoder, body)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_a_mutated_real_batch_decodes_or_is_malformed(data: st.DataObject) -> None:
    body = bytearray(otlp_batch(3, workloads=["w"], models=["m"], end_ns=int(NOW * 1e9)))
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(body) - 1))
        body[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(body)))
    _check(decode_otlp_protobuf, bytes(body[:cut]))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats()
    | st.integers(-(10**30), 10**30)
    | st.text(max_size=10)
    | st.sampled_from(["NaN", "Infinity", "1e308", "-1", "99999999999999999999"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
span_keys = st.sampled_from(
    ["workload", "model", "start", "end", "gflops", "input_tokens", "output_tokens", "route",
     "start_unix_nano", "end_unix_nano", "trace_id", "span_id"]
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(spans=st.lists(st.dictionaries(span_keys, json_values, max_size=8), max_size=4))
def test_jouled_json_with_hostile_values_decodes_per_span(spans: list) -> None:
    import json

    result = decode_spans_json(json.dumps({"spans": spans}).encode(), Rules(now=NOW))
    assert len(result.spans) + result.rejected_total == len(spans)
    for span in result.spans:
        assert span.gflops is None or 0 <= span.gflops <= 1e12


def test_malformed_wire_framing_is_a_wire_error() -> None:
    with pytest.raises(WireError):
        list(iter_span_batches(b"\x0a\x05ab", frozenset()))  # a length past the end
    with pytest.raises(WireError):
        list(iter_span_batches(b"\x0b", frozenset()))  # a group
