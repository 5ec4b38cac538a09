"""Decode request spans from OTLP/HTTP (protobuf and JSON) and from jouled's own JSON schema.

A *request span* is a span that stands for one request a workload served (an entry point:
SERVER or CONSUMER kind, or a local root); internal child spans only lend it their model and
work attributes. Each span is validated on its own: a bad one is rejected with a short
``reason`` code (the label of ``jouled_spans_rejected_total``); a body that cannot be parsed
raises ``MalformedBody``. Pure functions: the clock's ``now`` comes in as an argument.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from jouled.attribution.spans import Span

# Rejection reasons: the `reason` label values of jouled_spans_rejected_total.
END_BEFORE_START: Final = "end_before_start"
BAD_GFLOPS: Final = "bad_gflops"
BAD_TOKENS: Final = "bad_tokens"
TOO_FAR_FUTURE: Final = "too_far_future"
TOO_OLD: Final = "too_old"
MISSING_WORKLOAD: Final = "missing_workload"
UNKNOWN_WORKLOAD: Final = "unknown_workload"
BAD_TIME: Final = "bad_time"
MALFORMED: Final = "malformed"
REASONS: Final = (
    END_BEFORE_START,
    BAD_GFLOPS,
    BAD_TOKENS,
    TOO_FAR_FUTURE,
    TOO_OLD,
    MISSING_WORKLOAD,
    UNKNOWN_WORKLOAD,
    BAD_TIME,
    MALFORMED,
)

UNKNOWN_MODEL: Final = "unknown"
OTHER_MODEL: Final = "other"
LABEL_MAX_CHARS: Final = 128

# OTLP attribute keys (see docs/SPANS.md).
ATTR_WORKLOAD: Final = "service.name"
ATTR_MODELS: Final = ("gen_ai.request.model", "model")
ATTR_GFLOPS: Final = "jouled.gflops"
ATTR_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
ATTR_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
ATTR_ROUTE: Final = "http.route"
ATTR_REQUEST: Final = "jouled.request"

# opentelemetry.proto.trace.v1.Span.SpanKind
KIND_UNSPECIFIED, KIND_INTERNAL, KIND_SERVER, KIND_CLIENT, KIND_PRODUCER, KIND_CONSUMER = range(6)
_KIND_NAMES: Final = {
    "SPAN_KIND_UNSPECIFIED": KIND_UNSPECIFIED,
    "SPAN_KIND_INTERNAL": KIND_INTERNAL,
    "SPAN_KIND_SERVER": KIND_SERVER,
    "SPAN_KIND_CLIENT": KIND_CLIENT,
    "SPAN_KIND_PRODUCER": KIND_PRODUCER,
    "SPAN_KIND_CONSUMER": KIND_CONSUMER,
}
_MAX_PARENT_HOPS: Final = 64
_HEX = re.compile(r"[0-9a-fA-F]*")
_INT = re.compile(r"-?[0-9]{1,20}")  # int64/uint64; longer digit strings are not numbers here
_MAX_UINT64 = 2**64 - 1
_NS_PER_S: Final = 1_000_000_000


class MalformedBody(ValueError):
    """The body as a whole cannot be decoded; ``str()`` says where."""


@dataclass(frozen=True, slots=True)
class DecodeResult:
    spans: tuple[Span, ...]
    rejected: Mapping[str, int]  # reason -> count
    first_error: str | None  # the first rejection, human-readable
    ignored: int = 0  # OTLP spans that are not requests (children, CLIENT/PRODUCER spans)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


@dataclass(frozen=True, slots=True)
class Rules:
    """What a valid span must satisfy, relative to an injected wall-clock ``now``."""

    now: float
    known_workloads: Collection[str] | None = None
    gflops_per_token: Mapping[str, float] = field(default_factory=dict)
    max_future_s: float = 300.0  # clock skew allowed between the workload and jouled
    max_age_s: float = 3600.0  # older spans are not late but wrong (a clock problem)


# Characters that are always kept; a value made only of them needs no per-character pass.
_SAFE_LABEL: Final = re.compile(r"[\w.:/@+=,;~-]+(?: [\w.:/@+=,;~-]+)*")


def sanitize_label(value: str, max_chars: int = LABEL_MAX_CHARS) -> str:
    """A Prometheus-safe label value: printable, no quotes, backslashes or newlines, cut.

    Scaphandre exported a 4,478-character command line as a label and broke Prometheus;
    labels from the network are untrusted.
    """
    if len(value) <= max_chars and _SAFE_LABEL.fullmatch(value):
        return value  # the common case: nothing to remove, nothing to cut
    return sanitize_label_slow(value, max_chars)


def sanitize_label_slow(value: str, max_chars: int = LABEL_MAX_CHARS) -> str:
    """The character-by-character rule ``sanitize_label`` shortcuts (kept for its tests)."""
    out: list[str] = []
    for ch in value:
        if ch.isprintable() and ch not in "\"'`\\":
            out.append(ch)
            if len(out) >= max_chars:
                break
    return "".join(out).strip()


class ModelCap:
    """Caps the distinct models per workload; models past the cap become ``other``.

    Each model is a label value of several series; an unbounded set from the network would
    grow Prometheus without limit.
    """

    def __init__(self, max_models: int = 50, max_workloads: int = 1000) -> None:
        if max_models < 1 or max_workloads < 1:
            raise ValueError("max_models and max_workloads must be >= 1")
        self._max_models = max_models
        self._max_workloads = max_workloads
        self._seen: dict[str, set[str]] = {}
        self.capped = 0  # spans whose model was replaced by "other"

    def apply(self, workload: str, model: str) -> str:
        seen = self._seen.get(workload)
        if seen is None:
            if len(self._seen) >= self._max_workloads:
                self.capped += 1
                return OTHER_MODEL
            seen = self._seen[workload] = set()
        if model in seen or model == OTHER_MODEL:
            return model
        if len(seen) >= self._max_models:
            self.capped += 1
            return OTHER_MODEL
        seen.add(model)
        return model

    def models(self, workload: str) -> frozenset[str]:
        return frozenset(self._seen.get(workload, ()))


@dataclass(slots=True)
class _Raw:
    """One candidate span before validation; values as they came off the wire."""

    workload: Any
    model: Any
    start: Any  # float seconds, or None when absent
    end: Any
    gflops: Any = None
    input_tokens: Any = None
    output_tokens: Any = None
    route: Any = None
    trace_id: str = ""
    span_id: str = ""
    child_gflops: list[Any] = field(default_factory=list)
    child_tokens: list[Any] = field(default_factory=list)
    child_model: Any = None


class _Tally:
    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.rejected: dict[str, int] = {}
        self.first_error: str | None = None

    def reject(self, reason: str, detail: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        if self.first_error is None:
            self.first_error = f"{reason}: {detail}"

    def result(self, ignored: int = 0) -> DecodeResult:
        return DecodeResult(tuple(self.spans), dict(self.rejected), self.first_error, ignored)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_float(value: Any) -> float | None:
    """A number from a JSON/OTLP value (numbers or numeric strings); None if it is not one."""
    if _is_number(value) or isinstance(value, str):
        try:
            return float(value)
        except (ValueError, OverflowError):  # "abc"; an int beyond float range
            return None
    return None


def _as_count(value: Any) -> int | None:
    number = _as_float(value)
    if number is None or not math.isfinite(number) or number < 0 or number != int(number):
        return None
    return int(number)


def _label(value: Any) -> str | None:
    if isinstance(value, str):
        return sanitize_label(value)
    if _is_number(value):
        return sanitize_label(str(value))
    return None


def _sum_gflops(values: list[Any]) -> float:
    total = 0.0
    for value in values:
        number = _as_float(value)
        if number is None or not math.isfinite(number) or number < 0:
            raise _Reject(BAD_GFLOPS, f"GFLOPs must be a finite number >= 0, got {value!r:.40}")
        total += number
    return total


def _token_gflops(values: list[Any], model: str, rules: Rules) -> float | None:
    tokens = 0
    for value in values:
        count = _as_count(value)
        if count is None:
            raise _Reject(BAD_TOKENS, f"token counts must be integers >= 0, got {value!r:.40}")
        tokens += count
    per_token = rules.gflops_per_token.get(model)
    return tokens * per_token if per_token is not None else None


def _work(raw: _Raw, model: str, rules: Rules) -> float | None:
    """GFLOPs of a span, None when unknown: its own attributes first, then its children's."""
    if raw.gflops is not None:
        return _sum_gflops([raw.gflops])
    own_tokens = [t for t in (raw.input_tokens, raw.output_tokens) if t is not None]
    if own_tokens:
        return _token_gflops(own_tokens, model, rules)
    if raw.child_gflops:
        return _sum_gflops(raw.child_gflops)
    if raw.child_tokens:
        return _token_gflops(raw.child_tokens, model, rules)
    return None


class _Reject(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _times(raw: _Raw, workload: str, rules: Rules) -> tuple[float, float]:
    start = _as_float(raw.start) if _is_number(raw.start) else None
    end = _as_float(raw.end) if _is_number(raw.end) else None
    if start is None or end is None or not math.isfinite(start + end):
        raise _Reject(BAD_TIME, f"span of {workload!r} lacks a valid start and end time")
    if start <= 0 or end <= 0:
        raise _Reject(BAD_TIME, f"span of {workload!r} has an unset (zero) time")
    if end < start:
        raise _Reject(END_BEFORE_START, f"span of {workload!r} ends {start - end:.6f} s early")
    if end < rules.now - rules.max_age_s:
        raise _Reject(TOO_OLD, f"span of {workload!r} ended {rules.now - end:.0f} s ago")
    if end > rules.now + rules.max_future_s:
        raise _Reject(TOO_FAR_FUTURE, f"span of {workload!r} ends {end - rules.now:.0f} s ahead")
    return start, end


def _to_span(raw: _Raw, rules: Rules) -> Span:
    workload = _label(raw.workload) if raw.workload is not None else None
    if not workload:
        raise _Reject(MISSING_WORKLOAD, "no workload (OTLP: resource attribute service.name)")
    if rules.known_workloads is not None and workload not in rules.known_workloads:
        raise _Reject(UNKNOWN_WORKLOAD, f"workload {workload!r} is not configured")
    start, end = _times(raw, workload, rules)
    model_value = raw.model if raw.model is not None else raw.child_model
    model = _label(model_value) if model_value is not None else UNKNOWN_MODEL
    if model is None:
        raise _Reject(MALFORMED, f"span of {workload!r} has a non-scalar model")
    model = model or UNKNOWN_MODEL
    gflops = _work(raw, model, rules)
    route = _label(raw.route) if raw.route is not None else ""
    return Span(
        workload=workload,
        model=model,
        start=start,
        end=end,
        gflops=gflops,
        route=route or "",
        trace_id=raw.trace_id,
        span_id=raw.span_id,
    )


def _validate(raw: _Raw, rules: Rules, tally: _Tally) -> None:
    try:
        tally.spans.append(_to_span(raw, rules))
    except _Reject as rej:
        tally.reject(rej.reason, rej.detail)


# ---------------------------------------------------------------------------------------------
# OTLP: both encodings become _OtlpSpan, then one selection and validation path.


@dataclass(slots=True)
class _OtlpSpan:
    workload: Any
    resource_model: Any
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    start_ns: int
    end_ns: int
    attrs: dict[str, Any]


_WANTED: Final = frozenset(
    {*ATTR_MODELS, ATTR_GFLOPS, ATTR_INPUT_TOKENS, ATTR_OUTPUT_TOKENS, ATTR_ROUTE, ATTR_REQUEST}
)


def _first_model(attrs: Mapping[str, Any]) -> Any:
    for key in ATTR_MODELS:
        if attrs.get(key) is not None:
            return attrs[key]
    return None


def _is_request(span: _OtlpSpan) -> bool:
    """One span per request: the workload's entry point, or what the workload says."""
    explicit = span.attrs.get(ATTR_REQUEST)
    if isinstance(explicit, bool):
        return explicit
    if span.kind in (KIND_SERVER, KIND_CONSUMER):
        return True
    return not span.parent_id and span.kind in (KIND_UNSPECIFIED, KIND_INTERNAL)


def _select(spans: list[_OtlpSpan], rules: Rules) -> DecodeResult:
    tally = _Tally()
    by_id = {(s.trace_id, s.span_id): s for s in spans if s.span_id}
    raws: dict[int, _Raw] = {}
    counted: list[_OtlpSpan] = []
    for span in spans:
        if _is_request(span):
            counted.append(span)
            raws[id(span)] = _Raw(
                workload=span.workload,
                model=_first_model(span.attrs),
                start=span.start_ns / _NS_PER_S if span.start_ns else 0.0,
                end=span.end_ns / _NS_PER_S if span.end_ns else 0.0,
                gflops=span.attrs.get(ATTR_GFLOPS),
                input_tokens=span.attrs.get(ATTR_INPUT_TOKENS),
                output_tokens=span.attrs.get(ATTR_OUTPUT_TOKENS),
                route=span.attrs.get(ATTR_ROUTE),
                trace_id=span.trace_id,
                span_id=span.span_id,
            )
    for span in spans:
        if id(span) in raws or span.kind not in (KIND_UNSPECIFIED, KIND_INTERNAL):
            # CLIENT/PRODUCER spans describe work done elsewhere (a remote model): not ours.
            continue
        model = _first_model(span.attrs)
        gflops = span.attrs.get(ATTR_GFLOPS)
        tokens = [span.attrs.get(k) for k in (ATTR_INPUT_TOKENS, ATTR_OUTPUT_TOKENS)]
        tokens = [t for t in tokens if t is not None]
        if model is None and gflops is None and not tokens:
            continue
        owner = _request_ancestor(span, by_id, raws)
        if owner is None:
            continue
        # An internal child (e.g. "generate" under a FastAPI SERVER span) lends its model and
        # work to the request it belongs to; the request's own attributes win.
        if owner.child_model is None:
            owner.child_model = model
        if gflops is not None:
            owner.child_gflops.append(gflops)
        owner.child_tokens.extend(tokens)
    for span in counted:
        raw = raws[id(span)]
        if raw.model is None and raw.child_model is None:
            raw.model = span.resource_model
        _validate(raw, rules, tally)
    return tally.result(ignored=len(spans) - len(counted))


def _request_ancestor(
    span: _OtlpSpan, by_id: Mapping[tuple[str, str], _OtlpSpan], raws: Mapping[int, _Raw]
) -> _Raw | None:
    current = span
    for _ in range(_MAX_PARENT_HOPS):
        parent = by_id.get((current.trace_id, current.parent_id)) if current.parent_id else None
        if parent is None or parent.workload != span.workload:
            return None
        raw = raws.get(id(parent))
        if raw is not None:
            return raw
        current = parent
    return None


def _pb_value(value: Any) -> Any:
    which = value.WhichOneof("value")
    if which in ("string_value", "int_value", "double_value", "bool_value"):
        return getattr(value, which)
    return None


def decode_otlp_protobuf(body: bytes, rules: Rules) -> DecodeResult:
    """Decode an OTLP/HTTP binary ``ExportTraceServiceRequest``."""
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    try:
        request = ExportTraceServiceRequest.FromString(body)
    except (DecodeError, ValueError, TypeError) as exc:
        raise MalformedBody(f"not a protobuf ExportTraceServiceRequest: {exc}") from None
    spans: list[_OtlpSpan] = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: _pb_value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attrs = {kv.key: _pb_value(kv.value) for kv in span.attributes if kv.key in _WANTED}
                spans.append(
                    _OtlpSpan(
                        workload=resource.get(ATTR_WORKLOAD),
                        resource_model=_first_model(resource),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(),
                        kind=int(span.kind),
                        start_ns=int(span.start_time_unix_nano),
                        end_ns=int(span.end_time_unix_nano),
                        attrs=attrs,
                    )
                )
    return _select(spans, rules)


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedBody(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _list(parent: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedBody(f"{where}.{key}: expected an array, got {type(value).__name__}")
    return value


def _json_int(raw: Any) -> Any:
    # int64 travels as a decimal string in proto3 JSON; numbers are accepted too. Anything
    # else is passed on unchanged and fails validation of the attribute that uses it.
    return int(raw) if isinstance(raw, str) and _INT.fullmatch(raw) else raw


def _json_double(raw: Any) -> Any:
    # proto3 JSON spells special doubles "NaN", "Infinity", "-Infinity": float() reads them.
    number = _as_float(raw)
    return raw if number is None else number


def _json_same(raw: Any) -> Any:
    return raw


_ANY_VALUE_READERS: Final[tuple[tuple[str, Callable[[Any], Any]], ...]] = (
    ("stringValue", _json_same),
    ("boolValue", _json_same),
    ("intValue", _json_int),
    ("doubleValue", _json_double),
)


def _json_any_value(value: Any, where: str) -> Any:
    """An OTLP/JSON AnyValue: {"stringValue": ...}, {"intValue": "123"}, {"doubleValue": 1.5}."""
    if value is None:
        return None
    obj = _obj(value, where)
    for key, reader in _ANY_VALUE_READERS:
        if key in obj:
            return reader(obj[key])
    return None  # arrays, kvlists and bytes carry nothing jouled reads


def _json_attrs(
    parent: Mapping[str, Any], where: str, wanted: Collection[str] | None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, item in enumerate(_list(parent, "attributes", where)):
        kv = _obj(item, f"{where}.attributes[{i}]")
        key = kv.get("key")
        if not isinstance(key, str):
            raise MalformedBody(f"{where}.attributes[{i}].key: expected a string")
        if wanted is None or key in wanted:
            out[key] = _json_any_value(kv.get("value"), f"{where}.attributes[{i}].value")
    return out


def _json_id(value: Any, size: int, where: str) -> str:
    """OTLP/JSON ids are case-insensitive hex, not base64 as in the plain protobuf mapping."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or len(value) != 2 * size or not _HEX.fullmatch(value):
        raise MalformedBody(f"{where}: expected {2 * size} hex digits, got {value!r:.80}")
    return value.lower()


def _json_uint64(value: Any) -> int | None:
    if value is None:
        return 0
    if isinstance(value, str) and _INT.fullmatch(value):
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    else:
        return None
    return number if 0 <= number <= _MAX_UINT64 else None


def _json_kind(value: Any, where: str) -> int:
    if value is None:
        return KIND_UNSPECIFIED
    if isinstance(value, int) and not isinstance(value, bool):
        return value  # unknown kinds (future enum values) are simply not requests
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        # The spec demands integers; names are accepted because some exporters send them.
        if value in _KIND_NAMES:
            return _KIND_NAMES[value]
        if _INT.fullmatch(value):
            return int(value)
    raise MalformedBody(f"{where}.kind: expected an integer SpanKind, got {value!r:.40}")


def _load_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, int too long
        raise MalformedBody(f"not valid JSON: {exc}") from None


def decode_otlp_json(body: bytes, rules: Rules) -> DecodeResult:
    """Decode an OTLP/HTTP JSON ``ExportTraceServiceRequest`` (hex ids, lowerCamelCase)."""
    top = _obj(_load_json(body), "body")
    spans: list[_OtlpSpan] = []
    for r, rs_value in enumerate(_list(top, "resourceSpans", "body")):
        where_r = f"resourceSpans[{r}]"
        rs = _obj(rs_value, where_r)
        resource = _obj(rs.get("resource") or {}, f"{where_r}.resource")
        resource_attrs = _json_attrs(resource, f"{where_r}.resource", None)
        for s, ss_value in enumerate(_list(rs, "scopeSpans", where_r)):
            where_s = f"{where_r}.scopeSpans[{s}]"
            ss = _obj(ss_value, where_s)
            for i, span_value in enumerate(_list(ss, "spans", where_s)):
                where = f"{where_s}.spans[{i}]"
                span = _obj(span_value, where)
                start_ns = _json_uint64(span.get("startTimeUnixNano"))
                end_ns = _json_uint64(span.get("endTimeUnixNano"))
                spans.append(
                    _OtlpSpan(
                        workload=resource_attrs.get(ATTR_WORKLOAD),
                        resource_model=_first_model(resource_attrs),
                        trace_id=_json_id(span.get("traceId"), 16, f"{where}.traceId"),
                        span_id=_json_id(span.get("spanId"), 8, f"{where}.spanId"),
                        parent_id=_json_id(span.get("parentSpanId"), 8, f"{where}.parentSpanId"),
                        kind=_json_kind(span.get("kind"), where),
                        # An unreadable time becomes 0 (unset) and is rejected as bad_time.
                        start_ns=start_ns or 0,
                        end_ns=end_ns or 0,
                        attrs=_json_attrs(span, where, _WANTED),
                    )
                )
    return _select(spans, rules)


# ---------------------------------------------------------------------------------------------
# jouled's own schema: POST /v1/spans {"spans": [{...}, ...]} (docs/SPANS.md).


def _simple_time(span: Mapping[str, Any], name: str) -> Any:
    nano = span.get(f"{name}_unix_nano")
    if nano is not None:
        if isinstance(nano, str | int) and not isinstance(nano, bool):
            value = _json_uint64(nano)
            return value / _NS_PER_S if value is not None else None
        return None
    seconds = span.get(name)
    return seconds if _is_number(seconds) else None


def decode_spans_json(body: bytes, rules: Rules) -> DecodeResult:
    """Decode jouled's own JSON batch: ``{"spans": [{"workload": ..., "start": ...}, ...]}``."""
    top = _load_json(body)
    if not isinstance(top, dict) or not isinstance(top.get("spans"), list):
        raise MalformedBody('expected an object {"spans": [...]}')
    tally = _Tally()
    for i, item in enumerate(top["spans"]):
        if not isinstance(item, dict):
            tally.reject(MALFORMED, f"spans[{i}] is not an object")
            continue
        _validate(
            _Raw(
                workload=item.get("workload"),
                model=item.get("model"),
                start=_simple_time(item, "start"),
                end=_simple_time(item, "end"),
                gflops=item.get("gflops"),
                input_tokens=item.get("input_tokens"),
                output_tokens=item.get("output_tokens"),
                route=item.get("route"),
                trace_id=_simple_id(item.get("trace_id")),
                span_id=_simple_id(item.get("span_id")),
            ),
            rules,
            tally,
        )
    return tally.result()


def _simple_id(value: Any) -> str:
    return sanitize_label(value, 64) if isinstance(value, str) else ""


def apply_model_cap(spans: Iterable[Span], cap: ModelCap) -> list[Span]:
    """Spans with models past the per-workload cap replaced by ``other``."""
    out: list[Span] = []
    for span in spans:
        model = cap.apply(span.workload, span.model)
        out.append(span if model == span.model else replace(span, model=model))
    return out
