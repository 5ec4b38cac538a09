"""Decoding spans: OTLP protobuf and JSON, jouled's JSON schema, every rejection reason."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jouled.ingest import otlpscan
from jouled.ingest.decode import decode_otlp_json, decode_otlp_protobuf, decode_spans_json
from jouled.ingest.modelcap import ModelCap, apply_model_cap
from jouled.ingest.rules import REASONS, MalformedBody, Rules
from jouled.labels import sanitize_label
from tests.ingest.otlp import CLIENT, INTERNAL, NOW, pb_span, request

RULES = Rules(now=NOW, gflops_per_token={"llama-8b": 16.0})


@pytest.fixture(autouse=True, scope="module", params=["compiled", "pure"])
def span_scanner(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test twice: with the C span scanner (when built) and the pure-Python one."""
    if request.param == "compiled" and not otlpscan.AVAILABLE:
        pytest.skip("jouled.ingest._otlpscan not built (or JOULED_PURE_PYTHON=1)")
    saved = otlpscan.COMPILED
    otlpscan.COMPILED = request.param == "compiled"
    yield request.param
    otlpscan.COMPILED = saved


def pb(spans: list[Any], **resource: Any) -> bytes:
    return bytes(request(spans, **resource).SerializeToString())


# --- OTLP protobuf ------------------------------------------------------------------------------


def test_protobuf_server_span_maps_every_attribute() -> None:
    body = pb(
        [
            pb_span(
                1,
                gen_ai__request__model="bert-base",
                jouled__gflops=97.5,
                http__route="/predict",
            )
        ]
    )
    result = decode_otlp_protobuf(body, RULES)
    (span,) = result.spans
    assert span.workload == "classifier"
    assert span.model == "bert-base"
    assert span.gflops == 97.5
    assert span.route == "/predict"
    assert span.start == pytest.approx(NOW - 2.0)
    assert span.end == pytest.approx(NOW - 1.0)
    assert span.trace_id == "5b8efff798038103d269b633813fc60c"
    assert span.span_id == "0000000000000001"
    assert result.rejected == {}
    assert result.first_error is None


def test_protobuf_internal_child_lends_model_and_work_and_is_not_counted() -> None:
    body = pb(
        [
            pb_span(1, http__route="/generate"),
            pb_span(
                2, kind=INTERNAL, parent=1, gen_ai__request__model="llama-8b", jouled__gflops=5.0
            ),
            pb_span(3, kind=INTERNAL, parent=2, jouled__gflops=7.0),
            # A CLIENT span calls a model elsewhere: neither a request here nor lending.
            pb_span(4, kind=CLIENT, parent=1, gen_ai__request__model="gpt-4o", jouled__gflops=1e6),
        ]
    )
    result = decode_otlp_protobuf(body, RULES)
    (span,) = result.spans
    assert span.model == "llama-8b"
    assert span.gflops == 12.0
    assert span.route == "/generate"
    assert result.ignored == 3


def test_protobuf_tokens_times_gflops_per_token_and_unknown_model_means_unknown_work() -> None:
    body = pb(
        [
            pb_span(
                1,
                gen_ai__request__model="llama-8b",
                gen_ai__usage__input_tokens=100,
                gen_ai__usage__output_tokens=28,
            ),
            pb_span(2, gen_ai__request__model="mystery", gen_ai__usage__input_tokens=100),
        ]
    )
    first, second = decode_otlp_protobuf(body, RULES).spans
    assert first.gflops == 128 * 16.0
    assert second.gflops is None


def test_protobuf_explicit_jouled_request_overrides_kind_and_resource_model_is_fallback() -> None:
    body = pb(
        [
            pb_span(1, jouled__request=False),
            pb_span(2, kind=CLIENT, jouled__request=True, jouled__gflops=3),
            pb_span(3, kind=INTERNAL, parent=99),  # a child whose parent is elsewhere
        ],
        model="resnet50",
    )
    result = decode_otlp_protobuf(body, RULES)
    (span,) = result.spans
    assert span.span_id == "0000000000000002"
    assert span.gflops == 3.0  # an intValue works too
    assert span.model == "resnet50"
    assert result.ignored == 2


@pytest.mark.parametrize(
    "body",
    [b"\xff\xff\xff\xff garbage", b"\x0a\xff\xff\xff\x0f", pb([pb_span(1)])[:-3]],
    ids=["garbage", "bad-length", "truncated"],
)
def test_protobuf_garbage_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedBody):
        decode_otlp_protobuf(body, RULES)


def test_protobuf_rejections_are_counted_per_span() -> None:
    body = pb(
        [
            pb_span(1, jouled__gflops=math.nan),
            pb_span(2, start=NOW - 1.0, end=NOW - 2.0),
            pb_span(3, start=0.0, end=0.0),
            pb_span(4, jouled__gflops=1.0),
        ]
    )
    result = decode_otlp_protobuf(body, RULES)
    assert len(result.spans) == 1
    assert result.rejected == {"bad_gflops": 1, "end_before_start": 1, "bad_time": 1}
    assert result.first_error is not None and result.first_error.startswith("bad_gflops")


def test_protobuf_without_service_name_is_missing_workload() -> None:
    body = pb([pb_span(1)], service__name="")
    assert decode_otlp_protobuf(body, RULES).rejected == {"missing_workload": 1}


# --- OTLP JSON ----------------------------------------------------------------------------------


def otlp_json(spans: list[dict[str, Any]], service: str = "llm") -> bytes:
    return json.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [{"key": "service.name", "value": {"stringValue": service}}]
                    },
                    "scopeSpans": [{"scope": {"name": "test"}, "spans": spans}],
                    "schemaUrl": "https://opentelemetry.io/schemas/1.21.0",
                }
            ]
        }
    ).encode()


def json_span(**over: Any) -> dict[str, Any]:
    span: dict[str, Any] = {
        "traceId": "5B8EFFF798038103D269B633813FC60C",  # hex, case-insensitive
        "spanId": "EEE19B7EC3C1B174",
        "name": "POST /generate",
        "kind": 2,
        "startTimeUnixNano": str(int((NOW - 3) * 1e9)),  # uint64 as a decimal string
        "endTimeUnixNano": int((NOW - 1) * 1e9),  # ... or a number
        "attributes": [
            {"key": "gen_ai.request.model", "value": {"stringValue": "llama-8b"}},
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "40"}},
            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 10}},
            {"key": "http.route", "value": {"stringValue": "/generate"}},
            {"key": "other", "value": {"arrayValue": {"values": [{"stringValue": "x"}]}}},
        ],
        "droppedAttributesCount": 0,
        "unknownFieldFromTheFuture": {"ignored": True},
    }
    span.update(over)
    return span


def test_otlp_json_hex_ids_string_ints_and_attributes() -> None:
    result = decode_otlp_json(otlp_json([json_span()]), RULES)
    (span,) = result.spans
    assert span.workload == "llm"
    assert span.model == "llama-8b"
    assert span.gflops == 50 * 16.0
    assert span.route == "/generate"
    assert span.trace_id == "5b8efff798038103d269b633813fc60c"
    assert span.span_id == "eee19b7ec3c1b174"
    assert span.end - span.start == pytest.approx(2.0)


def test_otlp_json_child_with_parent_id_lends_its_double_gflops() -> None:
    child = json_span(
        spanId="0000000000000002",
        parentSpanId="EEE19B7EC3C1B174",
        kind=1,
        attributes=[{"key": "jouled.gflops", "value": {"doubleValue": 12.5}}],
    )
    result = decode_otlp_json(otlp_json([json_span(), child]), RULES)
    (span,) = result.spans
    assert span.gflops == 800.0  # its own tokens win over the child's GFLOPs
    parent = json_span(attributes=[])
    (span,) = decode_otlp_json(otlp_json([parent, child]), RULES).spans
    assert span.gflops == 12.5


@pytest.mark.parametrize("special", ["NaN", "Infinity", "-Infinity", -1.0, "x"])
def test_otlp_json_special_doubles_are_bad_gflops(special: Any) -> None:
    span = json_span(attributes=[{"key": "jouled.gflops", "value": {"doubleValue": special}}])
    assert decode_otlp_json(otlp_json([span]), RULES).rejected == {"bad_gflops": 1}


def test_otlp_json_bad_time_and_bad_tokens() -> None:
    spans = [
        json_span(startTimeUnixNano="soon"),
        json_span(attributes=[{"key": "gen_ai.usage.input_tokens", "value": {"intValue": "-3"}}]),
    ]
    result = decode_otlp_json(otlp_json(spans), RULES)
    assert result.rejected == {"bad_time": 1, "bad_tokens": 1}


@pytest.mark.parametrize(
    "body",
    [
        b'{"resourceSpans": [',
        b"[1, 2]",
        b'{"resourceSpans": {"not": "a list"}}',
        b"\xff\xfe",
        otlp_json([json_span(traceId="W46P95gDgQPSabYzgT/GDA==")]),  # base64, not hex
        otlp_json([json_span(spanId="abc")]),
        otlp_json([json_span(kind="SERVER_PLEASE")]),
        otlp_json(["not a span"]),  # type: ignore[list-item]
        otlp_json([json_span(attributes=[{"value": {"stringValue": "no key"}}])]),
    ],
)
def test_otlp_json_malformed_bodies(body: bytes) -> None:
    with pytest.raises(MalformedBody):
        decode_otlp_json(body, RULES)


def test_otlp_json_empty_request_is_fine() -> None:
    assert decode_otlp_json(b"{}", RULES).spans == ()


# --- jouled's JSON schema -----------------------------------------------------------------------


def simple(*spans: dict[str, Any]) -> bytes:
    return json.dumps({"spans": list(spans)}).encode()


GOOD = {
    "workload": "classifier",
    "model": "bert-base",
    "start": NOW - 1.5,
    "end": NOW - 1.0,
    "gflops": 97.1,
    "input_tokens": 512,
    "output_tokens": 0,
    "route": "/predict",
}


def test_simple_schema_documented_example() -> None:
    (span,) = decode_spans_json(simple(GOOD), RULES).spans
    assert (span.workload, span.model, span.gflops, span.route) == (
        "classifier",
        "bert-base",
        97.1,
        "/predict",
    )
    assert span.end - span.start == pytest.approx(0.5)


def test_simple_schema_unix_nano_times_and_tokens() -> None:
    span = {
        "workload": "llm",
        "model": "llama-8b",
        "start_unix_nano": str(int(NOW * 1e9) - 2_000_000_000),
        "end_unix_nano": int(NOW * 1e9) - 1_000_000_000,
        "input_tokens": 10,
        "output_tokens": 5,
        "trace_id": "abc",
    }
    (out,) = decode_spans_json(simple(span), RULES).spans
    assert out.end - out.start == pytest.approx(1.0)
    assert out.gflops == 15 * 16.0
    assert out.trace_id == "abc"
    assert decode_spans_json(simple({**span, "model": None}), RULES).spans[0].model == "unknown"


REJECTIONS: list[tuple[str, dict[str, Any], Rules]] = [
    ("end_before_start", {**GOOD, "end": NOW - 2.0}, RULES),
    ("bad_gflops", {**GOOD, "gflops": -1}, RULES),
    ("bad_gflops", {**GOOD, "gflops": "lots"}, RULES),
    ("bad_tokens", {**GOOD, "gflops": None, "input_tokens": 1.5}, RULES),
    ("too_far_future", {**GOOD, "start": NOW + 3600, "end": NOW + 3601}, RULES),
    ("too_old", {**GOOD, "start": NOW - 90_000, "end": NOW - 86_400}, RULES),
    ("missing_workload", {**GOOD, "workload": ""}, RULES),
    ("missing_workload", {**GOOD, "workload": None}, RULES),
    ("unknown_workload", GOOD, Rules(now=NOW, known_workloads={"llm"})),
    ("bad_tokens", {**GOOD, "gflops": None, "output_tokens": "many"}, RULES),
    ("bad_time", {**GOOD, "start": "yesterday"}, RULES),
    ("bad_time", {**GOOD, "start": True}, RULES),
    ("bad_time", {**GOOD, "start_unix_nano": "1.5e18"}, RULES),
    ("malformed", {**GOOD, "model": {"name": "x"}}, RULES),
]


@pytest.mark.parametrize(("reason", "span", "rules"), REJECTIONS)
def test_simple_schema_every_rejection_reason(
    reason: str, span: dict[str, Any], rules: Rules
) -> None:
    control = {**GOOD, "workload": "llm"}
    result = decode_spans_json(simple(span, control), rules)
    assert result.rejected == {reason: 1}
    assert [s.workload for s in result.spans] == ["llm"]
    assert result.first_error is not None and result.first_error.startswith(reason)
    assert reason in REASONS


def test_simple_schema_nan_and_inf_gflops_from_lenient_json() -> None:
    template = json.dumps({**GOOD, "gflops": "G"})
    body = b'{"spans": [%s, %s]}' % (
        template.replace('"G"', "NaN").encode(),
        template.replace('"G"', "1e999").encode(),
    )
    assert decode_spans_json(body, RULES).rejected == {"bad_gflops": 2}


def test_simple_schema_non_object_span_is_a_malformed_span_not_body() -> None:
    result = decode_spans_json(simple(GOOD, 42, "x"), RULES)  # type: ignore[arg-type]
    assert len(result.spans) == 1
    assert result.rejected == {"malformed": 2}


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b'{"spans": {}}', b'{"span": []}', b"\x00"])
def test_simple_schema_malformed_bodies(body: bytes) -> None:
    with pytest.raises(MalformedBody):
        decode_spans_json(body, RULES)


# --- labels and cardinality ---------------------------------------------------------------------


def test_sanitize_label_cuts_and_cleans_hostile_values() -> None:
    cmdline = "python -m \"serve\"\n--x='1'\\\x00\x1b[31m" + "a" * 4478
    label = sanitize_label(cmdline)
    assert len(label) == 128
    assert not any(ch in label for ch in "\"'\\\n\x00\x1b")
    assert label.startswith("python -m serve--x=1[31maaa")
    assert sanitize_label("  caf\u00e9 ") == "caf\u00e9"


def test_hostile_labels_are_sanitized_in_decoded_spans() -> None:
    span = {**GOOD, "workload": 'bad"wl\n', "model": "m" * 500, "route": "/r\x07"}
    (out,) = decode_spans_json(simple(span), RULES).spans
    assert out.workload == "badwl"
    assert out.model == "m" * 128
    assert out.route == "/r"


def test_model_cap_maps_excess_models_to_other_per_workload() -> None:
    cap = ModelCap(max_models=2)
    assert [cap.apply("a", m) for m in ("m1", "m2", "m3", "m1", "m4")] == [
        "m1",
        "m2",
        "other",
        "m1",
        "other",
    ]
    assert cap.apply("b", "m3") == "m3"  # the cap is per workload
    assert cap.capped == 2
    assert cap.models("a") == {"m1", "m2"}


def test_apply_model_cap_to_spans() -> None:
    spans = decode_spans_json(simple(GOOD, {**GOOD, "model": "gpt2"}), RULES).spans
    capped = apply_model_cap(spans, ModelCap(max_models=1))
    assert [s.model for s in capped] == ["bert-base", "other"]
    assert capped[0] is spans[0]


# --- no input crashes a decoder -----------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["NaN", "Infinity", "00ff", "5b8efff798038103d269b633813fc60c"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
SPAN_KEYS = [*json_span(), "parentSpanId", *GOOD, "start_unix_nano", "end_unix_nano"]


def must_not_crash(decoder: Any, body: bytes) -> None:
    try:
        result = decoder(body, RULES)
    except MalformedBody:
        return
    assert set(result.rejected) <= set(REASONS)
    for span in result.spans:
        assert span.end >= span.start
        assert span.gflops is None or (math.isfinite(span.gflops) and span.gflops >= 0)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_a_decoder(body: bytes) -> None:
    for decoder in (decode_otlp_protobuf, decode_otlp_json, decode_spans_json):
        must_not_crash(decoder, body)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(SPAN_KEYS), json_values, max_size=8), json_values)
def test_hostile_field_values_never_crash_a_decoder(fields: dict[str, Any], attr: Any) -> None:
    span = {**json_span(), **fields}
    if isinstance(span.get("attributes"), list):
        span["attributes"] = [*span["attributes"], {"key": "jouled.gflops", "value": attr}]
    must_not_crash(decode_otlp_json, otlp_json([span]))
    must_not_crash(decode_spans_json, simple({**GOOD, **fields}))


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"start": 10**400}, "bad_time"),
        ({"end": -(10**400)}, "bad_time"),
        ({"gflops": 10**400}, "bad_gflops"),
        ({"input_tokens": 10**400, "gflops": None}, "bad_tokens"),
        ({"start_unix_nano": 10**400}, "bad_time"),
        ({"start_unix_nano": "9" * 5000}, "bad_time"),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else v,
)
def test_huge_numbers_are_rejected_with_their_reason(fields: dict[str, Any], reason: str) -> None:
    body = b'{"spans": [%s]}' % json.dumps({**GOOD, **fields}).encode()
    must_not_crash(decode_spans_json, body)
    result = decode_spans_json(body, RULES)
    assert (result.rejected, result.spans) == ({reason: 1}, ())


def test_a_100000_character_workload_is_accepted_cut_to_128() -> None:
    body = simple({**GOOD, "workload": "w" * 100_000})
    result = decode_spans_json(body, RULES)
    assert result.rejected == {}
    [span] = result.spans
    assert span.workload == "w" * 128


def gflops_attr(value: dict[str, Any]) -> dict[str, Any]:
    return {"key": "jouled.gflops", "value": value}


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"startTimeUnixNano": "9" * 5000}, "bad_time"),
        ({"endTimeUnixNano": 10**400}, "bad_time"),
        (
            {"attributes": [{"key": "jouled.gflops", "value": {"intValue": "9" * 5000}}]},
            "bad_gflops",
        ),
        ({"attributes": [{"key": "jouled.gflops", "value": {"intValue": 10**400}}]}, "bad_gflops"),
    ],
    ids=["start-5000-digits", "end-huge", "gflops-5000-digits", "gflops-huge"],
)
def test_huge_otlp_json_values_are_rejected_with_their_reason(
    over: dict[str, Any], reason: str
) -> None:
    body = otlp_json([json_span(**over)])
    must_not_crash(decode_otlp_json, body)
    result = decode_otlp_json(body, RULES)
    assert (result.rejected, result.spans) == ({reason: 1}, ())


def test_a_huge_span_kind_is_no_request_kind_and_is_ignored_not_rejected() -> None:
    result = decode_otlp_json(otlp_json([json_span(kind=10**400)]), RULES)
    assert (result.rejected, result.spans, result.ignored) == ({}, (), 1)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200) | st.from_regex(r"[\w.:/@+=,;~ -]{0,150}", fullmatch=True))
def test_the_label_fast_path_agrees_with_the_character_rule(value: str) -> None:
    from jouled.labels import sanitize_label, sanitize_label_slow

    assert sanitize_label(value) == sanitize_label_slow(value)
