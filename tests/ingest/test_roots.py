"""The compiled request loop (jouled/ingest/_roots.c) against the Python one it stands for.

Random flat batches (no span has a parent) over several resources, with every attribute jouled
reads drawn from plain, odd and invalid values, decoded with the compiled path and with the
pure-Python path: the results must be equal, spans, rejections and messages alike. The
compiled path must also really run (counted), and take whole groups when it can."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from jouled.ingest import decode as decode_mod
from jouled.ingest import otlpscan
from jouled.ingest.attributes import AttributeNames
from jouled.ingest.decode import decode_otlp_protobuf
from jouled.ingest.rules import DecodeResult, Rules
from tests.ingest.otlp import NOW, kvs

pytestmark = pytest.mark.skipif(
    otlpscan.c_select_roots is None, reason="jouled.ingest._roots not built"
)

NAMES = AttributeNames(ignore_span_names=("health", "GET /metrics"))
MODELS = ["llama-8b", "bert", "m\"odd'", "x" * 300, "", "per-config"]
values: Any = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**13),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(MODELS),
)


def _cost(inp: int, out: int) -> float:
    return 2.0 * inp + 3.0 * out


# Valid values per attribute, drawn for most spans so that most groups take the compiled path.
PLAIN: dict[str, Any] = {
    "gen_ai.request.model": st.sampled_from(["llama-8b", "bert", "other", "m\tx"]),
    "jouled.gflops": st.floats(0.0, 1e12),
    "gen_ai.usage.input_tokens": st.integers(0, 10**6),
    "gen_ai.usage.output_tokens": st.integers(0, 10**6),
    "llm.usage.total_tokens": st.integers(0, 10**6),
    "http.route": st.sampled_from(["/v1/completions", "/generate", "/a\nb"]),
}


@st.composite
def spans(draw: Any) -> PbSpan:
    plain = draw(st.integers(0, 4)) > 0
    attrs: dict[str, Any] = {}
    for key in (*PLAIN, "jouled.request"):
        if draw(st.integers(0, 2)) == 0:
            value = draw(PLAIN[key] if plain and key in PLAIN else values)
            if value is not None:
                attrs[key] = value
    if plain:
        start = draw(st.floats(NOW - 100.0, NOW - 1.0))
        length = draw(st.sampled_from([0.005, 0.0, 0.25]))
        kind = draw(st.sampled_from([0, 1, 2, 2, 2, 5]))
    else:
        start = draw(st.sampled_from([NOW - 2.0, 0.0, NOW + 10_000.0, NOW - 10**6]))
        length = draw(st.sampled_from([0.005, 0.0, -1.0, 1.5]))
        kind = draw(st.integers(0, 6))
    return PbSpan(
        trace_id=draw(st.binary(min_size=16, max_size=16)),
        span_id=draw(st.binary(min_size=8, max_size=8)),
        name=draw(st.sampled_from(["POST /v1/completions", "health", "healthz", "", "op"])),
        kind=kind,  # type: ignore[arg-type]
        start_time_unix_nano=int(start * 1e9) if start > 0 else 0,
        end_time_unix_nano=int((start + length) * 1e9) if start + length > 0 else 0,
        attributes=kvs(attrs),
        links=[PbSpan.Link(trace_id=b"\x01" * 16, span_id=b"\x02" * 8)]
        if draw(st.integers(0, 5)) == 0
        else [],
    )


@st.composite
def bodies(draw: Any) -> bytes:
    resources = []
    for _ in range(draw(st.integers(1, 3))):
        res: dict[str, Any] = {"service.name": draw(st.sampled_from(["w0", "w1", "nope", ""]))}
        if draw(st.booleans()):
            res["gen_ai.request.model"] = draw(st.sampled_from(MODELS))
        resources.append(
            ResourceSpans(
                resource=Resource(attributes=kvs(res)),
                scope_spans=[ScopeSpans(spans=draw(st.lists(spans(), max_size=6)))],
            )
        )
    return bytes(ExportTraceServiceRequest(resource_spans=resources).SerializeToString())


def _rules() -> Rules:
    return Rules(
        now=NOW,
        known_workloads={"w0", "w1"},
        gflops_per_token={"llama-8b": 16.0, "bert": 0.5},
        token_costs={"per-config": _cost},
        names=NAMES,
        default_models={"w1": "w1-default"},
    )


def _same(a: DecodeResult, b: DecodeResult) -> None:
    assert len(a.spans) == len(b.spans)
    for x, y in zip(a.spans, b.spans, strict=True):
        assert x == y, (x, y)
        assert type(x.start) is type(y.start) is float
    assert a.rejected == b.rejected
    assert a.first_error == b.first_error
    assert a.unknown_services == b.unknown_services
    assert a.ignored == b.ignored


def _decode(body: bytes, compiled: bool, monkeypatch: pytest.MonkeyPatch) -> DecodeResult:
    with monkeypatch.context() as m:
        m.setattr(otlpscan, "COMPILED", compiled)
        return decode_otlp_protobuf(body, _rules())


def _count(monkeypatch: pytest.MonkeyPatch, name: str, size: Any) -> list[int]:
    """Calls of the compiled ``otlpscan.<name>``: ``size(result)`` each, -1 for None."""
    calls: list[int] = []
    real = getattr(otlpscan, name)
    assert real is not None

    def counted(*args: Any) -> Any:
        got = real(*args)
        calls.append(-1 if got is None else size(got))
        return got

    monkeypatch.setattr(otlpscan, name, counted)
    return calls


def _server_span(attrs: dict[str, Any], **fields: Any) -> PbSpan:
    """A plain SERVER request span from NOW - 2 to NOW - 1; ``fields`` override."""
    plain: dict[str, Any] = {
        "trace_id": b"\x07" * 16,
        "span_id": b"\x01" * 8,
        "name": "POST /v1/completions",
        "kind": PbSpan.SpanKind.SPAN_KIND_SERVER,
        "start_time_unix_nano": int((NOW - 2) * 1e9),
        "end_time_unix_nano": int((NOW - 1) * 1e9),
    }
    return PbSpan(**{**plain, **fields}, attributes=kvs(attrs))


def _body(*groups: tuple[str, list[list[PbSpan]]]) -> bytes:
    """A body of one resource per (service.name, its scopes' spans)."""
    return bytes(
        ExportTraceServiceRequest(
            resource_spans=[
                ResourceSpans(
                    resource=Resource(attributes=kvs({"service.name": name})),
                    scope_spans=[ScopeSpans(spans=spans) for spans in scopes],
                )
                for name, scopes in groups
            ]
        ).SerializeToString()
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies())
def test_the_compiled_loop_gives_what_the_python_loop_gives(body: bytes) -> None:
    with pytest.MonkeyPatch.context() as mp:
        _same(_decode(body, True, mp), _decode(body, False, mp))


def test_the_compiled_loop_runs_and_takes_plain_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count(monkeypatch, "c_select_roots", len)
    plain = _server_span(
        {
            "gen_ai.request.model": "llama-8b",
            "gen_ai.usage.input_tokens": 100,
            "gen_ai.usage.output_tokens": 28,
            "http.route": "/v1/completions",
        }
    )
    bad = PbSpan()
    bad.CopyFrom(plain)
    bad.span_id = b"\x02" * 8
    bad.attributes[1].value.int_value = -3  # an invalid count: the group goes to Python
    body = bytes(
        ExportTraceServiceRequest(
            resource_spans=[
                ResourceSpans(
                    resource=Resource(attributes=kvs({"service.name": name})),
                    scope_spans=[ScopeSpans(spans=group)],
                )
                for name, group in (("w0", [plain, plain]), ("w1", [plain, bad]))
            ]
        ).SerializeToString()
    )
    result = decode_otlp_protobuf(body, _rules())
    assert calls == [2, -1]
    assert [s.workload for s in result.spans] == ["w0", "w0", "w1"]
    span = result.spans[0]
    assert span.gflops == 128 * 16.0 and span.input_tokens == 100 and span.output_tokens == 28
    assert span.trace_id == "07" * 16 and span.span_id == "01" * 8 and span.parent_id == ""
    assert span.route == "/v1/completions" and span.model == "llama-8b"
    assert sum(result.rejected.values()) == 1
    assert decode_mod._LABELS["llama-8b"] == "llama-8b"  # kept across bodies


def test_the_label_cache_stays_bounded_under_ever_new_and_huge_names() -> None:
    # A hostile sender: thousands of distinct model names, some of 100,000 characters. The
    # cache kept across bodies must not hold them all, nor any huge one.
    decode_mod._LABELS.clear()
    spans = [
        PbSpan(
            trace_id=b"\x07" * 16,
            span_id=i.to_bytes(8, "big"),
            name="POST /v1/completions",
            kind=PbSpan.SpanKind.SPAN_KIND_SERVER,
            start_time_unix_nano=int((NOW - 2) * 1e9),
            end_time_unix_nano=int((NOW - 1) * 1e9),
            attributes=kvs(
                {"gen_ai.request.model": ("x" * 100_000 if i % 50 == 0 else "") + f"model-{i}"}
            ),
        )
        for i in range(5000)
    ]
    for k in range(0, 5000, 500):
        body = bytes(
            ExportTraceServiceRequest(
                resource_spans=[
                    ResourceSpans(
                        resource=Resource(attributes=kvs({"service.name": "w0"})),
                        scope_spans=[ScopeSpans(spans=spans[k : k + 500])],
                    )
                ]
            ).SerializeToString()
        )
        result = decode_otlp_protobuf(body, _rules())
        assert len(result.spans) == 500
        assert all(len(s.model) <= 128 for s in result.spans)
    assert len(decode_mod._LABELS) == 4096
    assert max(len(key) for key in decode_mod._LABELS) <= 128


# --- the same loop straight off the wire (_roots.scan_roots) ---


def _decode_three(body: bytes, rules: Rules) -> tuple[DecodeResult, DecodeResult, DecodeResult]:
    """(off the wire, off the span tuples, pure Python)."""
    with pytest.MonkeyPatch.context() as m:
        wire = decode_otlp_protobuf(body, rules)
        m.setattr(otlpscan, "c_scan_roots", None)
        tuples = decode_otlp_protobuf(body, rules)
        m.setattr(otlpscan, "COMPILED", False)
        pure = decode_otlp_protobuf(body, rules)
    return wire, tuples, pure


@st.composite
def odd_bodies(draw: Any) -> bytes:
    """Bodies of ``bodies()`` in which some spans point at a parent (the general path) and
    some repeat an attribute key (the last copy wins) or split a value in two fields."""
    message = ExportTraceServiceRequest.FromString(draw(bodies()))
    for resource in message.resource_spans:
        for scope in resource.scope_spans:
            for span in scope.spans:
                if draw(st.integers(0, 7)) == 0:
                    span.parent_span_id = draw(st.binary(min_size=8, max_size=8))
                if span.attributes and draw(st.booleans()):
                    key = draw(st.sampled_from([kv.key for kv in span.attributes]))
                    span.attributes.extend(kvs({key: draw(PLAIN.get(key, values))}))
    return bytes(message.SerializeToString())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.one_of(bodies(), odd_bodies()))
def test_the_wire_loop_gives_what_the_tuple_loop_and_python_give(body: bytes) -> None:
    wire, tuples, pure = _decode_three(body, _rules())
    _same(wire, tuples)
    _same(wire, pure)


def test_the_wire_loop_takes_a_plain_body_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count(monkeypatch, "c_scan_roots", lambda got: got[1])
    monkeypatch.setattr(otlpscan, "c_select_roots", None)  # would be the tuple loop's
    ok = _server_span({"gen_ai.request.model": "llama-8b", "gen_ai.usage.input_tokens": 10})
    health = PbSpan()
    health.CopyFrom(ok)
    health.name = "health"
    # A key sent twice: the last copy wins, as in the attribute dict of the other paths.
    ok.attributes.extend(kvs({"gen_ai.request.model": "bert"}))
    result = decode_otlp_protobuf(_body(("w0", [[ok, health], [ok]])), _rules())
    assert calls == [2, 1]  # both scopes, off the wire
    assert len(result.spans) == 2 and result.ignored == 1
    assert result.spans[0].start == (NOW - 2)
    assert result.spans[0].model == "bert" and result.spans[0].gflops == 10 * 0.5
    # A span that points at a parent anywhere sends the whole body to the general path.
    child = PbSpan()
    child.CopyFrom(ok)
    child.parent_span_id = b"\x09" * 8
    calls.clear()
    result = decode_otlp_protobuf(_body(("w0", [[ok, health], [ok, child]])), _rules())
    assert calls == [2, -1]
    assert len(result.spans) == 3


@settings(max_examples=500, deadline=None)
@given(a=st.integers(1, 2**64 - 1), b=st.integers(1, 2**64 - 1))
@example(a=2**53 - 1, b=2**53)
@example(a=2**53 + 1, b=2**64 - 1)
@example(a=1, b=999_999_999)
@example(a=1_700_000_000_123_456_789, b=1_700_000_000_987_654_321)
def test_times_are_the_int_true_division_to_the_bit(a: int, b: int) -> None:
    start, end = min(a, b), max(a, b)
    rules = Rules(now=NOW, known_workloads={"w0"}, names=NAMES, max_age_s=1e12, max_future_s=1e12)
    span = _server_span({}, name="op", start_time_unix_nano=start, end_time_unix_nano=end)
    body = _body(("w0", [[span]]))
    wire, tuples, pure = _decode_three(body, rules)
    assert len(wire.spans) == 1
    _same(wire, tuples)
    got = wire.spans[0]
    assert got.start.hex() == (start / 10**9).hex()
    assert got.end.hex() == (end / 10**9).hex()
    _same(wire, pure)
