"""Decode request spans from OTLP/HTTP (protobuf and JSON) and from jouled's own JSON schema.

A *request span* is a span that stands for one request a workload served (an entry point:
SERVER or CONSUMER kind, or a local root); internal child spans only lend it their model and
work attributes. The readers here turn each encoding into ``RawSpan`` candidates; the rules
(``jouled.ingest.rules``) validate each one and say why a bad one is rejected.

Over 400 lines because the two OTLP encodings and jouled's JSON feed one selection path
(request spans, their children's work); splitting by encoding would split that path. The
rules are in ingest/rules.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

from jouled.attribution.spans import Span
from jouled.ingest import otlpscan
from jouled.ingest.attributes import AttributeNames, first
from jouled.ingest.otlpscan import any_value
from jouled.ingest.rules import (
    MALFORMED,
    MAX_GFLOPS,
    MAX_TOKENS,
    Checker,
    DecodeResult,
    MalformedBody,
    RawSpan,
    Reject,
    Rules,
    Tally,
    as_float,
    is_number,
)
from jouled.ingest.wire import WHOLE_SCOPE_BYTES, iter_span_batches, scopes
from jouled.labels import sanitize_label

# OTLP attribute keys (see docs/SPANS.md and ingest/attributes.py for the configurable ones).
ATTR_WORKLOAD: Final = "service.name"
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


# ---------------------------------------------------------------------------------------------
# OTLP: both encodings become _OtlpSpan, then one selection and validation path.


@dataclass(slots=True)
class _OtlpSpan:
    workload: Any
    resource_model: Any
    # Hex strings (OTLP/JSON) or raw bytes (protobuf: turned into hex for request spans only).
    trace_id: str | bytes
    span_id: str | bytes
    parent_id: str | bytes
    kind: int
    start_ns: int
    end_ns: int
    attrs: dict[str, Any]
    name: str = ""
    has_links: bool = False


def _hex(value: str | bytes) -> str:
    return value.hex() if isinstance(value, bytes) else value


def _is_request(span: _OtlpSpan, names: AttributeNames) -> bool:
    return _stands_for_request(
        span.attrs, span.name, span.kind, bool(span.parent_id), span.has_links, names
    )


def _stands_for_request(  # noqa: PLR0917 - once per span: positional arguments are cheaper
    attrs: Mapping[str, Any] | None,
    name: str,
    kind: int,
    has_parent: bool,
    has_links: bool,
    names: AttributeNames,
) -> bool:
    """One span per request: the workload's entry point, or what the workload says."""
    explicit = attrs.get(ATTR_REQUEST) if attrs else None
    if isinstance(explicit, bool):
        return explicit
    if names.ignored(name):
        return False
    if kind in (KIND_SERVER, KIND_CONSUMER):
        return True
    # A local root counts (a batch script), unless it links to other traces: then it is a
    # batch working for requests counted in their own traces (TGI's router "batch" span).
    local_root = not has_parent and not has_links
    return local_root and kind in (KIND_UNSPECIFIED, KIND_INTERNAL)


def _tokens(attrs: Mapping[str, Any], names: AttributeNames) -> tuple[Any, Any]:
    """(input, output) token counts; a total alone stands in as input."""
    given_in = first(attrs, names.input_tokens)
    given_out = first(attrs, names.output_tokens)
    if given_in is None and given_out is None:
        return first(attrs, names.total_tokens), None
    return given_in, given_out


# One resource's spans: (service.name value, the resource's model value, span tuples). A
# span tuple is ``otlpscan.SpanTuple``: (trace_id, span_id, parent_span_id, kind, start_ns,
# end_ns, name, has_links, attrs or None), ids as bytes (protobuf) or hex strings (JSON).
_Group = tuple[Any, Any, list[tuple[Any, ...]]]


# Labels of model and route values (``sanitize_label``, a pure function) kept across bodies
# for the compiled path: at most 4,096 values of at most 128 characters (jouled/ingest/
# _roots.c), so ever-new or huge names from a sender cannot grow it.
_LABELS: Final[dict[str, str]] = {}


def _root_plan(rules: Rules) -> tuple[Any, ...] | None:
    """What ``_roots.select_roots`` reads of ``rules`` (its docstring gives the order); None
    where the compiled path is not in use or the rules are not plain dicts."""
    if not otlpscan.COMPILED or (otlpscan.c_select_roots is None and otlpscan.c_scan_roots is None):
        return None
    if type(rules.gflops_per_token) is not dict or type(rules.token_costs) is not dict:
        return None
    names = rules.names
    return (
        Span,
        names.model,
        names.gflops,
        names.input_tokens,
        names.output_tokens,
        names.total_tokens,
        ATTR_ROUTE,
        ATTR_REQUEST,
        names.ignore_span_names,
        _LABELS,
        sanitize_label,
        rules.gflops_per_token,
        rules.token_costs,
        rules.now - rules.max_age_s,
        rules.now + rules.max_future_s,
        MAX_GFLOPS,
        MAX_TOKENS,
    )


def _select_roots(groups: list[_Group], checker: Checker, tally: Tally) -> DecodeResult:
    """``_select`` for a body in which no span has a parent: each span is a request or is
    ignored, and none lends work to another; each request is validated as it is met, off
    its tuple (no object per span before its ``Span``). A resource's spans go through the
    compiled twin of this loop (``_roots.c``) where it is built; any span it cannot take
    plainly sends its whole group through the loop below, which says what is wrong."""
    names = checker.rules.names
    model_names, gflops_names = names.model, names.gflops
    spans_out = tally.spans
    span_of = checker.span_of
    plan = _root_plan(checker.rules)
    select_roots = otlpscan.c_select_roots if plan is not None else None
    seen = counted = 0
    for workload, resource_model, tuples in groups:
        seen += len(tuples)
        if select_roots is not None:
            resolved = checker.workload_or_none(workload)
            if type(resolved) is str:
                fast = select_roots(
                    tuples, resolved, resource_model, checker.default_model(resolved), plan
                )
                if fast is not None:
                    spans_out += fast
                    counted += len(fast)
                    continue
        for trace_id, span_id, _, kind, start_ns, end_ns, name, has_links, attrs in tuples:
            if not _stands_for_request(attrs, name, kind, False, has_links, names):
                continue
            counted += 1
            if attrs:
                inp, out = _tokens(attrs, names)
                model, gflops = first(attrs, model_names), first(attrs, gflops_names)
                route = attrs.get(ATTR_ROUTE)
            else:
                inp = out = model = gflops = route = None
            try:
                spans_out.append(
                    span_of(
                        workload,
                        model if model is not None else resource_model,
                        start_ns / _NS_PER_S if start_ns else 0.0,
                        end_ns / _NS_PER_S if end_ns else 0.0,
                        gflops,
                        inp,
                        out,
                        route,
                        _hex(trace_id),
                        _hex(span_id),
                        "",
                    )
                )
            except Reject as rej:
                checker.reject(rej)
    return tally.result(ignored=seen - counted)


def _select(groups: list[_Group], rules: Rules) -> DecodeResult:
    tally = Tally()
    checker = Checker(rules, tally)
    names = rules.names
    # Spans pointing at a parent are rare in request batches (a request span is the local
    # root of its service): only then are spans made objects and looked up by id.
    if not any(t[2] for _, _, tuples in groups for t in tuples):
        return _select_roots(groups, checker, tally)
    spans = [
        _OtlpSpan(workload, model, t[0], t[1], t[2], t[3], t[4], t[5], t[8] or _EMPTY, t[6], t[7])
        for workload, model, tuples in groups
        for t in tuples
    ]
    by_id = {(s.trace_id, s.span_id): s for s in spans if s.span_id}
    raws: dict[int, RawSpan] = {}
    counted: list[_OtlpSpan] = []
    model_names, gflops_names = names.model, names.gflops
    for span in spans:
        if _is_request(span, names):
            counted.append(span)
            attrs = span.attrs
            input_tokens, output_tokens = _tokens(attrs, names) if attrs else (None, None)
            raws[id(span)] = RawSpan(
                workload=span.workload,
                model=first(attrs, model_names) if attrs else None,
                start=span.start_ns / _NS_PER_S if span.start_ns else 0.0,
                end=span.end_ns / _NS_PER_S if span.end_ns else 0.0,
                gflops=first(attrs, gflops_names) if attrs else None,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                route=attrs.get(ATTR_ROUTE) if attrs else None,
                trace_id=_hex(span.trace_id),
                span_id=_hex(span.span_id),
                parent_id=_hex(span.parent_id),
            )
    for span in spans if len(counted) < len(spans) else ():
        if id(span) in raws or span.kind not in (KIND_UNSPECIFIED, KIND_INTERNAL):
            # CLIENT/PRODUCER spans describe work done elsewhere (a remote model): not ours.
            continue
        model = first(span.attrs, model_names)
        gflops = first(span.attrs, gflops_names)
        inp, out = _tokens(span.attrs, names)
        if model is None and gflops is None and inp is None and out is None:
            continue
        owner = _request_ancestor(span, by_id, raws)
        if owner is None:
            continue
        # An internal child (e.g. "generate" under a FastAPI SERVER span) lends its model and
        # work to the request it belongs to; the request's own attributes win.
        if owner.child_model is None:
            owner.child_model = model
        if gflops is not None:
            owner.child_gflops = [*(owner.child_gflops or ()), gflops]
        if inp is not None:
            owner.child_input_tokens = [*(owner.child_input_tokens or ()), inp]
        if out is not None:
            owner.child_output_tokens = [*(owner.child_output_tokens or ()), out]
    for span in counted:
        raw = raws[id(span)]
        # A request span nested in another of the same batch (Triton's InferRequest -> model
        # -> compute, all SERVER) points at it, so that the stage counts the request once.
        outer = _request_ancestor(span, by_id, raws) if span.parent_id else None
        if outer is not None:
            raw.parent_id = outer.span_id
        if raw.model is None and raw.child_model is None:
            raw.model = span.resource_model
        checker.validate(raw)
    return tally.result(ignored=len(spans) - len(counted))


def _request_ancestor(
    span: _OtlpSpan,
    by_id: Mapping[tuple[str | bytes, str | bytes], _OtlpSpan],
    raws: Mapping[int, RawSpan],
) -> RawSpan | None:
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


_EMPTY: Final[dict[str, Any]] = {}


def _decode_flat(body: bytes, rules: Rules) -> DecodeResult | None:
    """``decode_otlp_protobuf`` of a body in which no span has a parent and every resource's
    workload resolves, in one compiled pass per scope (``_roots.scan_roots``: read, judge
    and make each request's ``Span`` off the wire, no span tuple or attribute dict between);
    None (nothing done that counts) where any part of the body needs the general path,
    which then runs over all of it and says what is wrong. Each scope is checked as upb
    would parse it first (``otlpscan.check_scope``), as on the general path."""
    scan = otlpscan.c_scan_roots
    plan = _root_plan(rules) if scan is not None else None
    if scan is None or plan is None:
        return None
    from google.protobuf.message import DecodeError

    tally = Tally()
    checker = Checker(rules, tally)
    model_names = rules.names.model
    out = tally.spans
    seen = 0
    resource_of: Any = None
    workload = default = ""
    resource_model: Any = None
    buf = memoryview(body)
    try:
        for resource_msg, sa, sb in scopes(buf):
            if sb - sa > WHOLE_SCOPE_BYTES:
                return None  # read a span at a time on the general path
            if resource_msg is not resource_of:
                resource_of = resource_msg
                resource = {kv.key: any_value(kv.value) for kv in resource_msg.attributes}
                resolved = checker.workload_or_none(resource.get(ATTR_WORKLOAD))
                if type(resolved) is not str:
                    return None
                workload, default = resolved, checker.default_model(resolved)
                resource_model = first(resource, model_names)
            data = buf[sa:sb]
            otlpscan.check_scope(data)
            got = scan(data, workload, resource_model, default, plan)
            if got is None:
                return None
            out += got[0]
            seen += got[1]
    except (DecodeError, ValueError, TypeError):
        return None  # the general path raises what it should
    return tally.result(ignored=seen - len(out))


def decode_otlp_protobuf(body: bytes, rules: Rules) -> DecodeResult:
    """Decode an OTLP binary ``ExportTraceServiceRequest`` (OTLP/HTTP body or gRPC message),
    a scope's spans (or, in a large scope, one span message) at a time
    (``wire.iter_span_batches``: memory stays near the body's size, not ~24x it as a
    whole-message parse; the C scanner of ``otlpscan`` when built).

    Only the attributes jouled reads (``AttributeNames.wanted``) are taken off each span; the
    ids stay bytes until the span is known to be a request."""
    from google.protobuf.message import DecodeError

    flat = _decode_flat(body, rules)
    if flat is not None:
        return flat
    wanted = rules.names.wanted
    model_names = rules.names.model
    groups: list[_Group] = []
    resource_of: Any = None
    tuples: list[tuple[Any, ...]] = []
    try:
        for resource_msg, spans in iter_span_batches(body, wanted):
            if resource_msg is not resource_of:
                resource_of = resource_msg
                resource = {kv.key: any_value(kv.value) for kv in resource_msg.attributes}
                tuples = []
                groups.append((resource.get(ATTR_WORKLOAD), first(resource, model_names), tuples))
            tuples += spans
    except (DecodeError, ValueError, TypeError) as exc:  # WireError is a ValueError
        raise MalformedBody(f"not a protobuf ExportTraceServiceRequest: {exc}") from None
    return _select(groups, rules)


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
    number = as_float(raw)
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


def _scope_spans(rs: Mapping[str, Any], where: str) -> list[tuple[str, Any]]:
    """ScopeSpans, and the pre-1.0 ``instrumentationLibrarySpans`` (older Go and Java SDKs),
    which has the same shape."""
    out = [(f"{where}.scopeSpans[{i}]", v) for i, v in enumerate(_list(rs, "scopeSpans", where))]
    old = _list(rs, "instrumentationLibrarySpans", where)
    out += [(f"{where}.instrumentationLibrarySpans[{i}]", v) for i, v in enumerate(old)]
    return out


def decode_otlp_json(body: bytes, rules: Rules) -> DecodeResult:
    """Decode an OTLP/HTTP JSON ``ExportTraceServiceRequest`` (hex ids, lowerCamelCase)."""
    top = _obj(_load_json(body), "body")
    wanted = rules.names.wanted
    groups: list[_Group] = []
    for r, rs_value in enumerate(_list(top, "resourceSpans", "body")):
        where_r = f"resourceSpans[{r}]"
        rs = _obj(rs_value, where_r)
        resource = _obj(rs.get("resource") or {}, f"{where_r}.resource")
        resource_attrs = _json_attrs(resource, f"{where_r}.resource", None)
        tuples: list[tuple[Any, ...]] = []
        groups.append(
            (resource_attrs.get(ATTR_WORKLOAD), first(resource_attrs, rules.names.model), tuples)
        )
        for where_s, ss_value in _scope_spans(rs, where_r):
            ss = _obj(ss_value, where_s)
            for i, span_value in enumerate(_list(ss, "spans", where_s)):
                where = f"{where_s}.spans[{i}]"
                span = _obj(span_value, where)
                name = span.get("name")
                tuples.append(
                    (
                        _json_id(span.get("traceId"), 16, f"{where}.traceId"),
                        _json_id(span.get("spanId"), 8, f"{where}.spanId"),
                        _json_id(span.get("parentSpanId"), 8, f"{where}.parentSpanId"),
                        _json_kind(span.get("kind"), where),
                        # An unreadable time becomes 0 (unset) and is rejected as bad_time.
                        _json_uint64(span.get("startTimeUnixNano")) or 0,
                        _json_uint64(span.get("endTimeUnixNano")) or 0,
                        name if isinstance(name, str) else "",
                        bool(_list(span, "links", where)),
                        _json_attrs(span, where, wanted),
                    )
                )
    return _select(groups, rules)


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
    return seconds if is_number(seconds) else None


def decode_spans_json(body: bytes, rules: Rules) -> DecodeResult:
    """Decode jouled's own JSON batch: ``{"spans": [{"workload": ..., "start": ...}, ...]}``."""
    top = _load_json(body)
    if not isinstance(top, dict) or not isinstance(top.get("spans"), list):
        raise MalformedBody('expected an object {"spans": [...]}')
    tally = Tally()
    checker = Checker(rules, tally)
    for i, item in enumerate(top["spans"]):
        if not isinstance(item, dict):
            tally.reject(MALFORMED, f"spans[{i}] is not an object")
            continue
        checker.validate(
            RawSpan(
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
            )
        )
    return tally.result()


def _simple_id(value: Any) -> str:
    return sanitize_label(value, 64) if isinstance(value, str) else ""
