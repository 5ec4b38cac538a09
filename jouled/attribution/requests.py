"""One request, counted once: nested request spans of one trace and workload are joined.

Servers export several entry-point spans for one request: Triton exports ``InferRequest`` ->
a span named after the model (``triton.model_name``) -> ``compute``, all of kind SERVER and
each on its own (src/tracer.cc in triton-inference-server/server), children before or after
parents and in different export batches. The joiner remembers, per (workload, trace id),
the requests it has seen: a span whose parent is one of a request's spans, or that is the
parent of one, joins that request instead of becoming another. The outermost span's time is
kept where it arrives before any energy was split over the request; the model comes from
whichever span names one, the work from the first span that carries it.

Memory: one small record per span that has a trace and span id, forgotten ``memory_s``
after the span ends, to the next whole second (the stage uses 15 s: longer than exporters'
batch delays, so a child exported in a later batch is still recognised), at most
``max_requests`` records (the oldest go first). A nested span arriving after that is counted
as a request of its own.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from typing import Literal

from jouled.attribution.spans import Span, SpanSplitter

UNKNOWN_MODEL = "unknown"  # jouled.ingest.decode.UNKNOWN_MODEL: a span that names no model


class _Request:
    """What is remembered of a request: ~0.25 KB, kept ``memory_s`` after it ends (15 s in
    the stage: 15,000 of them at 1,000 spans/s), so no set, tuple or key object is made for
    the common request of one span until a second one joins it."""

    __slots__ = (
        "_ids",
        "_parents",
        "alive",
        "end",
        "first_parent",
        "gflops",
        "input_tokens",
        "model",
        "named",
        "output_tokens",
        "span_id",
        "start",
        "trace_id",
        "workload",
    )

    def __init__(self, span: Span, named: bool) -> None:
        self.workload = span.workload
        self.trace_id = span.trace_id
        self.span_id = span.span_id  # the span standing for the request in the splitter
        self.start = span.start
        self.end = span.end
        self.model = span.model
        self.named = named  # the model came from a span, not from a default
        self.gflops = span.gflops
        self.input_tokens = span.input_tokens
        self.output_tokens = span.output_tokens
        self.first_parent = span.parent_id
        # None until a second span joins: then the sets of its spans' and parents' ids.
        self._ids: set[str] | None = None
        self._parents: set[str] | None = None
        self.alive = True

    @property
    def tokens(self) -> tuple[int | None, int | None]:  # (input, output)
        return self.input_tokens, self.output_tokens

    @tokens.setter
    def tokens(self, value: tuple[int | None, int | None]) -> None:
        self.input_tokens, self.output_tokens = value

    @property
    def ids(self) -> Collection[str]:
        """Span ids of the request's spans."""
        return self._ids if self._ids is not None else (self.span_id,)

    @ids.setter
    def ids(self, value: set[str]) -> None:
        self._ids = value

    @property
    def parents(self) -> Collection[str]:
        """Their parents' span ids."""
        if self._parents is not None:
            return self._parents
        return (self.first_parent,) if self.first_parent else ()

    @parents.setter
    def parents(self, value: set[str]) -> None:
        self._parents = value


def _plus(ids: Collection[str], *more: str) -> set[str]:
    return {*ids, *more}


def _tokens(span: Span) -> tuple[int | None, int | None]:
    return span.input_tokens, span.output_tokens


def _known(tokens: tuple[int | None, int | None]) -> bool:
    return tokens[0] is not None or tokens[1] is not None


class RequestJoiner:
    """Sits in front of a ``SpanSplitter``: ``add`` says "accepted", "late", "nested" or
    "refused" (the splitter's pending spans are full for that workload)."""

    def __init__(
        self,
        splitter: SpanSplitter,
        *,
        memory_s: float,
        fallback_models: Mapping[str, str] | None = None,
        max_requests: int = 50_000,
    ) -> None:
        self._splitter = splitter
        self._memory_s = memory_s
        self.fallback_models: Mapping[str, str] = fallback_models or {}
        self._max = max_requests
        # trace id -> its request (nearly always one), or a list of them (of any workloads).
        self._by_trace: dict[str, _Request | list[_Request]] = {}
        # Forget times in whole seconds (a heap) and the requests due in each: a list slot
        # per request, not a (time, seq, request) tuple (~120 B each with its float and int).
        self._due: list[int] = []
        self._expiry: dict[int, list[_Request]] = {}
        self._size = 0
        self.nested = 0  # spans joined to a request already counted

    def _named(self, span: Span) -> bool:
        return span.model not in (UNKNOWN_MODEL, self.fallback_models.get(span.workload))

    def add(self, span: Span) -> Literal["accepted", "late", "nested", "refused"]:
        """Count ``span`` as a new request, or join it to the request it is nested in."""
        if not (span.trace_id and span.span_id):
            return self._splitter.add_span(span)
        key = span.trace_id
        linked = [
            req
            for req in self._requests(key)
            if req.workload == span.workload
            and (
                span.span_id in req.ids or span.parent_id in req.ids or span.span_id in req.parents
            )
        ]
        if linked:
            self._join(linked[0], span)
            self.nested += 1
            for other in linked[1:]:
                # The span links two requests seen apart (compute before its model span,
                # InferRequest before it too): they are one.
                self._unite(linked[0], other)
            return "nested"
        verdict = self._splitter.add_span(span)
        if verdict == "accepted":
            self._remember(span, key)
        return verdict

    def _remember(self, span: Span, key: str) -> None:
        req = _Request(span, self._named(span))
        got = self._by_trace.get(key)
        if got is None:
            self._by_trace[key] = req
        elif isinstance(got, list):
            got.append(req)
        else:
            self._by_trace[key] = [got, req]
        due = math.ceil(span.end + self._memory_s) if math.isfinite(span.end) else 0
        bucket = self._expiry.get(due)
        if bucket is None:
            bucket = self._expiry[due] = []
            heapq.heappush(self._due, due)
        bucket.append(req)
        self._size += 1
        while self._size > self._max:
            self._forget(self._oldest())

    def _join(self, req: _Request, span: Span) -> None:
        if span.span_id in req.ids:
            return  # a resent copy
        req.ids = _plus(req.ids, span.span_id)
        if span.parent_id:
            req.parents = _plus(req.parents, span.parent_id)
        named = self._named(span)
        model = span.model if named and not req.named else req.model
        gflops = req.gflops if req.gflops is not None else span.gflops
        tokens = req.tokens if _known(req.tokens) else _tokens(span)
        outer = span.start <= req.start and span.end >= req.end
        widened = outer and self._splitter.widen(
            req.workload,
            req.trace_id,
            req.span_id,
            replace(
                span, model=model, gflops=gflops, input_tokens=tokens[0], output_tokens=tokens[1]
            ),
        )
        if widened:
            req.span_id, req.start, req.end = span.span_id, span.start, span.end
            req.model, req.gflops, req.tokens = model, gflops, tokens
        self._take(req, model, gflops, tokens, named)

    def _take(
        self,
        req: _Request,
        model: str,
        gflops: float | None,
        tokens: tuple[int | None, int | None],
        named: bool,
    ) -> None:
        """Give ``req`` (and its pending span) a model, work and tokens found on another span."""
        if model != req.model or gflops != req.gflops or tokens != req.tokens:
            self._splitter.amend(
                req.workload,
                req.trace_id,
                req.span_id,
                model=model if model != req.model else None,
                gflops=gflops if gflops != req.gflops else None,
                tokens=tokens if tokens != req.tokens else None,
            )
        req.model, req.gflops, req.tokens = model, gflops, tokens
        req.named = req.named or named

    def _unite(self, a: _Request, b: _Request) -> None:
        outer, inner = (b, a) if b.start <= a.start and b.end >= a.end else (a, b)
        if not self._splitter.retract(inner.workload, inner.trace_id, inner.span_id):
            return  # the inner one already holds energy: both stay counted
        self.nested += 1
        model = outer.model if outer.named or not inner.named else inner.model
        gflops = outer.gflops if outer.gflops is not None else inner.gflops
        tokens = outer.tokens if _known(outer.tokens) else inner.tokens
        self._take(outer, model, gflops, tokens, inner.named)
        outer.ids = _plus(outer.ids, *inner.ids)
        outer.parents = _plus(outer.parents, *inner.parents)
        self._forget(inner)

    def expire(self, now_wall: float) -> None:
        """Forget requests that ended more than ``memory_s`` before ``now_wall``."""
        while self._due and self._due[0] < now_wall:
            for req in self._expiry.pop(heapq.heappop(self._due)):
                self._forget(req)

    def _oldest(self) -> _Request:
        """Take a request of the earliest forget second off its bucket."""
        due = self._due[0]
        bucket = self._expiry[due]
        req = bucket.pop()
        if not bucket:
            del self._expiry[heapq.heappop(self._due)]
        return req

    def _forget(self, req: _Request) -> None:
        if not req.alive:
            return
        req.alive = False
        self._size -= 1
        key = req.trace_id
        got = self._by_trace.get(key)
        if got is req:
            del self._by_trace[key]
        elif isinstance(got, list):
            got.remove(req)
            if len(got) == 1:
                self._by_trace[key] = got[0]

    def _requests(self, key: str) -> Sequence[_Request]:
        got = self._by_trace.get(key)
        if got is None:
            return ()
        return got if isinstance(got, list) else (got,)

    @property
    def tracked(self) -> int:
        return self._size
