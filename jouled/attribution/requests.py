"""One request, counted once: nested request spans of one trace and workload are joined.

Servers export several entry-point spans for one request: Triton exports ``InferRequest`` ->
a span named after the model (``triton.model_name``) -> ``compute``, all of kind SERVER and
each on its own (src/tracer.cc in triton-inference-server/server), children before or after
parents and in different export batches. The joiner remembers, per (workload, trace id),
the requests it has seen: a span whose parent is one of a request's spans, or that is the
parent of one, joins that request instead of becoming another. The outermost span's time is
kept where it arrives before any energy was split over the request; the model comes from
whichever span names one, the work from the first span that carries it.

Memory: one small record per span that has a trace and span id (a request of one span is
its ids and the splitter's pending record, ``_Single``, not the span), forgotten ``memory_s``
after the span ends, to the next whole second (the stage uses 15 s: longer than exporters'
batch delays, so a child exported in a later batch is still recognised), at most
``max_requests`` records (the oldest go first). A nested span arriving after that is counted
as a request of its own. A trace holding several requests also indexes their spans' and
parents' ids (two small dict entries per id), so a span finds its request in O(1) however
many requests its trace holds.

Over 400 lines because the joiner and the three shapes it remembers a request in (``_Single``,
``_Request``, ``_Trace``) change together: each rule of joining reads and converts all three.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Mapping
from dataclasses import replace
from typing import Literal

from jouled.attribution.spans import Span, SpanSplitter, _Pending

UNKNOWN_MODEL = "unknown"  # jouled.ingest.decode.UNKNOWN_MODEL: a span that names no model


class _Single:
    """A request of one span, as remembered until a second span of its trace arrives: its
    ids, and the splitter's pending record of it for the rest (workload, times, model, work
    and tokens: the span's values, changed only by ``amend``, which the joiner calls on
    ``_Request``s alone). ~130 bytes with its span id against ~500 for the span with its
    floats and ints; 15,000 of them at 1,000 spans/s."""

    __slots__ = ("parent_id", "rec", "span_id", "trace_id")

    def __init__(self, span: Span, rec: _Pending) -> None:
        self.trace_id = span.trace_id  # the joiner's key for it: the same str
        self.span_id = span.span_id
        self.parent_id = span.parent_id
        self.rec = rec

    @property
    def workload(self) -> str:
        return self.rec.workload

    @property
    def model(self) -> str:
        return self.rec.model

    @property
    def start(self) -> float:
        return self.rec.start

    @property
    def end(self) -> float:
        return self.rec.end

    @property
    def gflops(self) -> float | None:
        return self.rec.gflops

    @property
    def input_tokens(self) -> int | None:
        return self.rec.input_tokens

    @property
    def output_tokens(self) -> int | None:
        return self.rec.output_tokens


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
        "seq",
        "span_id",
        "start",
        "trace_id",
        "workload",
    )

    def __init__(self, span: Span | _Single, named: bool, seq: int) -> None:
        self.seq = seq  # arrival order: of two requests a span links, the first is kept
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

    def add_ids(self, ids: Collection[str]) -> None:
        """Add span ids in place (a copy per join made uniting n requests O(n^2))."""
        if self._ids is None:
            self._ids = {self.span_id}
        self._ids.update(ids)

    @property
    def parents(self) -> Collection[str]:
        """Their parents' span ids."""
        if self._parents is not None:
            return self._parents
        return (self.first_parent,) if self.first_parent else ()

    def add_parents(self, parents: Collection[str]) -> None:
        if self._parents is None:
            self._parents = set(self.parents)
        self._parents.update(parents)


def _links(req: _Request, span: Span) -> bool:
    """Is ``span`` one of ``req``'s spans, its child or its parent?"""
    return req.workload == span.workload and (
        span.span_id in req.ids or span.parent_id in req.ids or span.span_id in req.parents
    )


def _links_span(first: _Single, span: Span) -> bool:
    """``_links`` for a request still remembered as its one span."""
    return first.workload == span.workload and (
        first.span_id in (span.span_id, span.parent_id)
        or (bool(first.parent_id) and span.span_id == first.parent_id)
    )


class _Trace:
    """Two or more requests of one trace, indexed by their spans' ids and their parents' ids
    (each an insertion-ordered set of requests), so that a span finds the requests it links
    without scanning the trace: a scan made one trace of n requests cost O(n^2) (8,000 took
    9.5 s of the settling thread; 100,000 would take half an hour)."""

    __slots__ = ("by_parent", "by_span", "size")

    def __init__(self) -> None:
        self.by_span: dict[str, dict[_Request, None]] = {}
        self.by_parent: dict[str, dict[_Request, None]] = {}
        self.size = 0

    @staticmethod
    def _put(index: dict[str, dict[_Request, None]], ids: Collection[str], req: _Request) -> None:
        for i in ids:
            got = index.get(i)
            if got is None:
                index[i] = {req: None}
            else:
                got[req] = None

    @staticmethod
    def _drop(index: dict[str, dict[_Request, None]], ids: Collection[str], req: _Request) -> None:
        for i in ids:
            got = index.get(i)
            if got is not None:
                got.pop(req, None)
                if not got:
                    del index[i]

    def index(self, req: _Request, ids: Collection[str], parents: Collection[str]) -> None:
        self._put(self.by_span, ids, req)
        self._put(self.by_parent, parents, req)

    def add(self, req: _Request) -> None:
        self.index(req, req.ids, req.parents)
        self.size += 1

    def remove(self, req: _Request) -> None:
        self._drop(self.by_span, req.ids, req)
        self._drop(self.by_parent, req.parents, req)
        self.size -= 1

    def linked(self, span: Span) -> list[_Request]:
        """The requests ``span`` links, in arrival order."""
        found: dict[_Request, None] = {}
        for index, key in (
            (self.by_span, span.span_id),
            (self.by_span, span.parent_id),
            (self.by_parent, span.span_id),
        ):
            got = index.get(key) if key else None
            if got:
                found.update(got)
        return sorted((r for r in found if _links(r, span)), key=lambda r: r.seq)


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
        self.max_requests = max_requests  # the oldest are forgotten past it
        # trace id -> its request (nearly always one), or an index of them (of any workloads).
        # A request of one span is remembered as a _Single (no _Request is made) until a
        # second span of its trace arrives.
        self._by_trace: dict[str, _Single | _Request | _Trace] = {}
        self._seq = 0
        # Forget times in whole seconds (a heap) and the requests due in each: a list slot
        # per request, not a (time, seq, request) tuple (~120 B each with its float and int).
        # A span made a _Request leaves its slot behind (skipped when due).
        self._due: list[int] = []
        self._expiry: dict[int, list[_Single | _Request]] = {}
        self._size = 0
        self.nested = 0  # spans joined to a request already counted

    def _named(self, span: Span | _Single) -> bool:
        return span.model not in (UNKNOWN_MODEL, self.fallback_models.get(span.workload))

    def add(self, span: Span) -> Literal["accepted", "late", "nested", "refused"]:
        """Count ``span`` as a new request, or join it to the request it is nested in."""
        if not (span.trace_id and span.span_id):
            return self._splitter.add_span(span)
        key = span.trace_id
        got = self._by_trace.get(key)
        if got is None:
            linked: list[_Request] = []
        elif isinstance(got, _Trace):
            linked = got.linked(span)
        elif isinstance(got, _Request):
            linked = [got] if _links(got, span) else []
        else:
            linked = [self._request(got)] if _links_span(got, span) else []
        if linked:
            # The widest request (the first of equals) takes the span and the others: each
            # union then moves the smaller side's ids, never the growing set (n siblings
            # united under their parent cost O(n^2) when the set moved at each step).
            head = min(linked, key=lambda r: (r.start - r.end, r.seq))
            self._join(head, span)
            self.nested += 1
            for other in linked:
                if other is not head:
                    # The span links two requests seen apart (compute before its model span,
                    # InferRequest before it too): they are one, kept as the outer of the two.
                    head = self._unite(head, other)
            return "nested"
        rec = self._splitter.admit(span)
        if isinstance(rec, str):
            return rec
        self._remember(span, key, rec)
        return "accepted"

    def _remember(self, span: Span, key: str, rec: _Pending) -> None:
        got = self._by_trace.get(key)
        entry: _Single | _Request
        if got is None:
            entry = self._by_trace[key] = _Single(span, rec)
        else:
            if isinstance(got, _Single):
                got = self._request(got)
            self._seq += 1
            entry = _Request(span, self._named(span), self._seq)
            if isinstance(got, _Trace):
                got.add(entry)
            else:
                trace = self._by_trace[key] = _Trace()
                trace.add(got)
                trace.add(entry)
        self._due_at(span.end, entry)
        self._size += 1
        while self._size > self.max_requests:
            self._forget(self._oldest())

    def _due_at(self, end: float, entry: _Single | _Request) -> None:
        due = math.ceil(end + self._memory_s) if math.isfinite(end) else 0
        bucket = self._expiry.get(due)
        if bucket is None:
            bucket = self._expiry[due] = []
            heapq.heappush(self._due, due)
        bucket.append(entry)

    def _request(self, single: _Single) -> _Request:
        """Make the request remembered as its one span a ``_Request`` (a second span of its
        trace has arrived), in its place and due when the span was."""
        self._seq += 1
        req = _Request(single, self._named(single), self._seq)
        self._by_trace[single.trace_id] = req
        self._due_at(req.end, req)
        return req

    def _join(self, req: _Request, span: Span) -> None:
        if span.span_id in req.ids:
            return  # a resent copy
        req.add_ids((span.span_id,))
        if span.parent_id:
            req.add_parents((span.parent_id,))
        self._index(req, (span.span_id,), (span.parent_id,) if span.parent_id else ())
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

    def _unite(self, a: _Request, b: _Request) -> _Request:
        """Make ``a`` and ``b`` one request; returns the one that stands for both (``a``
        where the inner one already holds energy and both stay counted)."""
        wider = b.start <= a.start and b.end >= a.end and (b.start, b.end) != (a.start, a.end)
        outer, inner = (b, a) if wider else (a, b)
        if not self._splitter.retract(inner.workload, inner.trace_id, inner.span_id):
            return a  # the inner one already holds energy: both stay counted
        self.nested += 1
        model = outer.model if outer.named or not inner.named else inner.model
        gflops = outer.gflops if outer.gflops is not None else inner.gflops
        tokens = outer.tokens if _known(outer.tokens) else inner.tokens
        self._take(outer, model, gflops, tokens, inner.named)
        outer.add_ids(inner.ids)
        outer.add_parents(inner.parents)
        self._index(outer, inner.ids, inner.parents)
        self._forget(inner)
        return outer

    def _index(self, req: _Request, ids: Collection[str], parents: Collection[str]) -> None:
        """Index ids newly joined to ``req`` where its trace holds several requests."""
        got = self._by_trace.get(req.trace_id)
        if isinstance(got, _Trace):
            got.index(req, ids, parents)

    def expire(self, now_wall: float) -> None:
        """Forget requests that ended more than ``memory_s`` before ``now_wall``."""
        while self._due and self._due[0] < now_wall:
            for req in self._expiry.pop(heapq.heappop(self._due)):
                self._forget(req)

    def _oldest(self) -> _Single | _Request:
        """Take a request of the earliest forget second off its bucket."""
        due = self._due[0]
        bucket = self._expiry[due]
        req = bucket.pop()
        if not bucket:
            del self._expiry[heapq.heappop(self._due)]
        return req

    def _forget(self, req: _Single | _Request) -> None:
        if isinstance(req, _Single):
            if self._by_trace.get(req.trace_id) is req:  # else: made a _Request since
                del self._by_trace[req.trace_id]
                self._size -= 1
            return
        if not req.alive:
            return
        req.alive = False
        self._size -= 1
        key = req.trace_id
        got = self._by_trace.get(key)
        if got is req:
            del self._by_trace[key]
        elif isinstance(got, _Trace):
            got.remove(req)
            if not got.size:
                del self._by_trace[key]

    @property
    def tracked(self) -> int:
        return self._size
