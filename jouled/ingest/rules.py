"""What a decoded span must satisfy, and the label sanitizing every network value passes.

Each span is validated on its own: a bad one is rejected with a short ``reason`` code (the
label of ``jouled_spans_rejected_total``); a body that cannot be parsed raises
``MalformedBody``. Pure functions: the clock's ``now`` comes in as an argument (``Rules``).
The readers that turn OTLP and jouled JSON into ``RawSpan`` live in ``decode``.

Over 400 lines because each rejection reason sits beside the check that raises it and the
work (GFLOPs, from tokens) that the checks need; the readers are in decode.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from jouled.attribution.spans import Span
from jouled.ingest.attributes import DEFAULT_NAMES, AttributeNames
from jouled.labels import sanitize_label

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
SENDER_MISMATCH: Final = "sender_mismatch"
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
    SENDER_MISMATCH,
)

# Bounds on one span's work: far above any real request (a 1e6-token prompt through a
# 1e12-parameter model is ~2e9 GFLOPs), far below where float sums lose meaning or overflow.
MAX_GFLOPS: Final = 1e12
MAX_TOKENS: Final = 10**12

UNKNOWN_MODEL: Final = "unknown"
OTHER_MODEL: Final = "other"
TokenCostFn = Callable[[int, int], float]  # (input tokens, output tokens) -> GFLOPs


class MalformedBody(ValueError):
    """The body as a whole cannot be decoded; ``str()`` says where."""


@dataclass(frozen=True, slots=True)
class DecodeResult:
    spans: tuple[Span, ...]
    rejected: Mapping[str, int]  # reason -> count
    first_error: str | None  # the first rejection, human-readable
    ignored: int = 0  # OTLP spans that are not requests (children, CLIENT/PRODUCER spans)
    # service.name values of spans rejected as unknown_workload (for the operator's warning)
    unknown_services: frozenset[str] = frozenset()
    # Valid spans handed to the queue, kept once ``spans`` is dropped (-1: len(spans))
    taken_count: int = -1

    @property
    def taken(self) -> int:
        """The valid spans decoded (``len(spans)`` until the queue took them)."""
        return len(self.spans) if self.taken_count < 0 else self.taken_count

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


@dataclass(frozen=True, slots=True)
class Rules:
    """What a valid span must satisfy, relative to an injected wall-clock ``now``."""

    now: float
    known_workloads: Collection[str] | None = None
    gflops_per_token: Mapping[str, float] = field(default_factory=dict)
    # Per model: (input tokens, output tokens) -> GFLOPs of the request, from its config.json
    # (spans.model_configs); before gflops_per_token.
    token_costs: Mapping[str, TokenCostFn] = field(default_factory=dict)
    max_future_s: float = 300.0  # clock skew allowed between the workload and jouled
    max_age_s: float = 3600.0  # older spans are not late but wrong (a clock problem)
    names: AttributeNames = DEFAULT_NAMES
    # workload -> the model it serves, for spans that name none (workloads[].model)
    default_models: Mapping[str, str] = field(default_factory=dict)
    # The workload whose process sent the body (None: no workload's); called at most when a
    # span names no known workload, or for every body when verify_sender is on.
    sender: Callable[[], str | None] | None = None
    verify_sender: bool = False


@dataclass(slots=True)
class RawSpan:
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
    parent_id: str = ""
    # What internal child spans lend the request (their values as sent), None until one does.
    child_gflops: list[Any] | None = None
    child_input_tokens: list[Any] | None = None
    child_output_tokens: list[Any] | None = None
    child_model: Any = None


class Tally:
    """The spans accepted and the rejections counted while decoding one body."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.rejected: dict[str, int] = {}
        self.first_error: str | None = None
        self.unknown_services: set[str] = set()

    def reject(self, reason: str, detail: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        if self.first_error is None:
            self.first_error = f"{reason}: {detail}"

    def result(self, ignored: int = 0) -> DecodeResult:
        return DecodeResult(
            tuple(self.spans),
            dict(self.rejected),
            self.first_error,
            ignored,
            frozenset(self.unknown_services),
        )


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def as_float(value: Any) -> float | None:
    """A number from a JSON/OTLP value (numbers or numeric strings); None if it is not one."""
    if is_number(value) or isinstance(value, str):
        try:
            return float(value)
        except (ValueError, OverflowError):  # "abc"; an int beyond float range
            return None
    return None


def _as_count(value: Any) -> int | None:
    number = as_float(value)
    if number is None or not math.isfinite(number) or number < 0 or number != int(number):
        return None
    return int(number)


def _label(value: Any) -> str | None:
    if isinstance(value, str):
        return sanitize_label(value)
    if is_number(value):
        return sanitize_label(str(value))
    return None


def _sum_gflops(values: list[Any]) -> float:
    total = 0.0
    for value in values:
        number = as_float(value)
        if number is None or not 0 <= number <= MAX_GFLOPS:  # NaN and inf fail too
            raise Reject(
                BAD_GFLOPS, f"GFLOPs must be a number in [0, {MAX_GFLOPS:g}], got {value!r:.40}"
            )
        total += number
    if total > MAX_GFLOPS:
        raise Reject(BAD_GFLOPS, f"children's GFLOPs sum to {total:g} > {MAX_GFLOPS:g}")
    return total


def _tokens(values: list[Any] | None) -> int | None:
    """The sum of reported token counts; None when none was reported."""
    if not values:
        return None
    tokens = 0
    for value in values:
        count = _as_count(value)
        if count is None:
            raise Reject(BAD_TOKENS, f"token counts must be integers >= 0, got {value!r:.40}")
        if count > MAX_TOKENS:
            raise Reject(BAD_TOKENS, f"too many tokens: {value!r:.40} > {MAX_TOKENS:.0e}")
        tokens += count
    return tokens


def _token_gflops(inp: int | None, out: int | None, model: str, rules: Rules) -> float | None:
    """Work from tokens: the model's config (prefill + decode), else GFLOPs per token."""
    cost = rules.token_costs.get(model)
    if cost is not None:
        gflops = cost(inp or 0, out or 0)
        if not 0 <= gflops <= MAX_GFLOPS:  # NaN and inf fail too
            raise Reject(BAD_TOKENS, f"{inp} input and {out} output tokens are too many")
        return gflops
    per_token = rules.gflops_per_token.get(model)
    if per_token is None:
        return None
    gflops = float((inp or 0) + (out or 0)) * per_token
    if not gflops <= MAX_GFLOPS:
        raise Reject(
            BAD_TOKENS,
            f"{(inp or 0) + (out or 0)} tokens x {per_token:g} GFLOPs/token exceeds {MAX_GFLOPS:g}",
        )
    return gflops


def _one_count(value: Any) -> int | None:
    """``_tokens`` of one reported value (None: not reported); plain ints skip the lists."""
    if value is None:
        return None
    if type(value) is int and 0 <= value <= MAX_TOKENS:
        return value
    return _tokens([value])


def _one_gflops(value: Any) -> float:
    if type(value) is float and 0.0 <= value <= MAX_GFLOPS:
        return value
    return _sum_gflops([value])


def _work(  # noqa: PLR0917 - once per span: positional arguments are the cheaper call
    gflops: Any,
    input_tokens: Any,
    output_tokens: Any,
    raw: RawSpan | None,
    model: str,
    rules: Rules,
) -> tuple[float | None, int | None, int | None]:
    """(GFLOPs, input tokens, output tokens) of a span, None where unknown: its own
    attributes first, then its children's (``raw``'s, where the span has a candidate with
    children). ``jouled.gflops`` wins over token counts."""
    own = input_tokens is not None or output_tokens is not None
    if own:
        inp = _one_count(input_tokens)
        out = _one_count(output_tokens)
    elif raw is not None:
        inp, out = _tokens(raw.child_input_tokens), _tokens(raw.child_output_tokens)
    else:
        inp = out = None
    if gflops is not None:
        return _one_gflops(gflops), inp, out
    if own:
        return _token_gflops(inp, out, model, rules), inp, out
    if raw is not None and raw.child_gflops:
        return _sum_gflops(raw.child_gflops), inp, out
    if inp is not None or out is not None:
        return _token_gflops(inp, out, model, rules), inp, out
    return None, None, None


class Reject(Exception):
    """One span rejected: ``reason`` (a ``REASONS`` code) and a ``detail`` for the sender."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _times(start: Any, end: Any, workload: str, rules: Rules) -> tuple[float, float]:
    """(start, end) in seconds, checked; raises ``Reject`` saying what is wrong."""
    if type(start) is not float or type(end) is not float:  # OTLP times are floats already
        start = as_float(start) if is_number(start) else None
        end = as_float(end) if is_number(end) else None
    if start is None or end is None or not math.isfinite(start + end):
        raise Reject(BAD_TIME, f"span of {workload!r} lacks a valid start and end time")
    if start <= 0 or end <= 0:
        raise Reject(BAD_TIME, f"span of {workload!r} has an unset (zero) time")
    if end < start:
        raise Reject(END_BEFORE_START, f"span of {workload!r} ends {start - end:.6f} s early")
    if end < rules.now - rules.max_age_s:
        raise Reject(TOO_OLD, f"span of {workload!r} ended {rules.now - end:.0f} s ago")
    if end > rules.now + rules.max_future_s:
        raise Reject(TOO_FAR_FUTURE, f"span of {workload!r} ends {end - rules.now:.0f} s ahead")
    return start, end


class UnknownWorkload(Reject):
    def __init__(self, service: str) -> None:
        super().__init__(
            UNKNOWN_WORKLOAD,
            f"workload {service!r} is not configured and no workload's process sent the "
            "span: set OTEL_SERVICE_NAME (OTLP service.name) to a workloads[].name",
        )
        self.service = service


def _workload(value: Any, rules: Rules) -> str:
    """The span's workload: its own name (``value`` as sent) when configured, else the
    sending workload's."""
    workload = _label(value) if value is not None else None
    known = rules.known_workloads
    if known is not None and (not workload or workload not in known):
        sender = rules.sender() if rules.sender is not None else None
        if sender is not None:
            return sender  # e.g. vLLM without OTEL_SERVICE_NAME: unknown_service:python
        if workload:
            raise UnknownWorkload(workload)
    if not workload:
        raise Reject(MISSING_WORKLOAD, "no workload (OTLP: resource attribute service.name)")
    if rules.verify_sender and known is not None:
        sender = rules.sender() if rules.sender is not None else None
        if sender != workload:
            who = f"workload {sender!r}" if sender else "no workload's process"
            raise Reject(SENDER_MISMATCH, f"span names workload {workload!r} but {who} sent it")
    return workload


class Checker:
    """Validates the candidates of one body against ``rules`` into ``tally``, remembering
    what many spans share: the workload answer per service name (the sender is the same
    for the whole body) and each sanitized label."""

    __slots__ = ("_defaults", "_labels", "_workloads", "rules", "tally")

    def __init__(self, rules: Rules, tally: Tally) -> None:
        self.rules = rules
        self.tally = tally
        self._workloads: dict[str, str | Reject] = {}
        self._labels: dict[str, str] = {}
        self._defaults = rules.default_models

    def _workload(self, value: Any) -> str:
        if type(value) is not str:
            return _workload(value, self.rules)
        hit = self._workloads.get(value)
        if hit is None:
            try:
                hit = _workload(value, self.rules)
            except Reject as rej:
                hit = rej
            rules = self.rules
            # Answers that asked for the sender are not kept: the ingest layer's resolver
            # memoizes those (and a test counts the asks).
            if rules.sender is None or (hit == value and not rules.verify_sender):
                self._workloads[value] = hit
        if isinstance(hit, Reject):
            raise hit.with_traceback(None)
        return hit

    def workload_or_none(self, value: Any) -> str | None:
        """The workload ``span_of`` gives spans naming ``value``; None where it rejects them."""
        try:
            return self._workload(value)
        except Reject:
            return None

    def default_model(self, workload: str) -> str:
        """The model of a span of ``workload`` that names none."""
        return self._defaults.get(workload) or UNKNOWN_MODEL

    def _label(self, value: Any) -> str | None:
        if type(value) is not str:
            return _label(value)
        label = self._labels.get(value)
        if label is None:
            label = self._labels[value] = sanitize_label(value)
        return label

    def to_span(self, raw: RawSpan) -> Span:
        return self.span_of(
            raw.workload,
            raw.model if raw.model is not None else raw.child_model,
            raw.start,
            raw.end,
            raw.gflops,
            raw.input_tokens,
            raw.output_tokens,
            raw.route,
            raw.trace_id,
            raw.span_id,
            raw.parent_id,
            raw,
        )

    def span_of(  # noqa: PLR0917 - once per span: positional arguments are the cheaper call
        self,
        workload_value: Any,
        model_value: Any,
        start: Any,
        end: Any,
        gflops: Any,
        input_tokens: Any,
        output_tokens: Any,
        route_value: Any,
        trace_id: str,
        span_id: str,
        parent_id: str,
        raw: RawSpan | None = None,
    ) -> Span:
        """The valid ``Span`` of one candidate's values as sent (``raw``: the candidate, for
        the work its children lend; None when it has none), else raises ``Reject``."""
        rules = self.rules
        workload = self._workload(workload_value)
        if not (
            type(start) is float
            and type(end) is float
            and 0.0 < start <= end
            and rules.now - rules.max_age_s <= end <= rules.now + rules.max_future_s
        ):
            start, end = _times(start, end, workload, rules)  # converts, or says what is wrong
        model = self._label(model_value) if model_value is not None else None
        if model is None and model_value is not None:
            raise Reject(MALFORMED, f"span of {workload!r} has a non-scalar model")
        model = model or self.default_model(workload)
        work, inp, out = _work(gflops, input_tokens, output_tokens, raw, model, rules)
        route = self._label(route_value) if route_value is not None else ""
        return Span(
            workload, model, start, end, work, route or "", trace_id, span_id, parent_id, inp, out
        )

    def validate(self, raw: RawSpan) -> None:
        """Validate one candidate: its ``Span`` goes into the tally, or its rejection."""
        try:
            self.tally.spans.append(self.to_span(raw))
        except Reject as rej:
            self.reject(rej)

    def reject(self, rej: Reject) -> None:
        self.tally.reject(rej.reason, rej.detail)
        if isinstance(rej, UnknownWorkload):
            self.tally.unknown_services.add(rej.service)


def validate(raw: RawSpan, rules: Rules, tally: Tally) -> None:
    """Validate one candidate: its ``Span`` goes into ``tally``, or its rejection reason.
    (Bodies of many spans use one ``Checker``, which caches what spans share.)"""
    Checker(rules, tally).validate(raw)
