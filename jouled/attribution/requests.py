"""One request, counted once: nested request spans of one trace and workload are joined.

Servers export several entry-point spans for one request: Triton exports ``InferRequest`` ->
a span named after the model (``triton.model_name``) -> ``compute``, all of kind SERVER and
each on its own (src/tracer.cc in triton-inference-server/server), children before or after
parents and in different export batches. The joiner remembers, per (workload, trace id),
the requests it has seen: a span whose parent is one of a request's spans, or that is the
parent of one, joins that request instead of becoming another. The outermost span's time is
kept where it arrives before any energy was split over the request; the model comes from
whichever span names one, the work from the first span that carries it.

Ids are held by their keys (``spans.id_key``: ``hash(id)``, an int), never as the hex
strings they arrive as. Memory: a request of one span is the splitter's pending record
alone (it carries the span's and its parent's keys), in an int64 table by trace key
(``spans.new_index``: 16 bytes a slot) and an 8-byte slot of the second it is to be
forgotten in: ~40 bytes a request against ~290 when its ids were strings and a ``_Single``
held them. It is forgotten ``memory_s`` after the span ends, to the next whole second (the
stage uses 15 s: longer than exporters' batch delays, so a child exported in a later batch
is still recognised), at most ``max_requests`` requests (the oldest go first). A nested
span arriving after that is counted as a request of its own. A request of several spans is
a ``_Request``; a trace holding several requests also indexes their spans' and parents'
keys (two small dict entries per key), so a span finds its request in O(1) however many
requests its trace holds.

Over 400 lines because the joiner and the three shapes it remembers a request in (a record,
``_Request``, ``_Trace``) change together: each rule of joining reads and converts all three.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Literal

from jouled.attribution import spans as spans_mod
from jouled.attribution.spans import Span, SpanSplitter, _Pending

UNKNOWN_MODEL = "unknown"  # jouled.ingest.decode.UNKNOWN_MODEL: a span that names no model
_EXACT = 2**53  # forget seconds the compiled index takes (exact doubles)
# ``add_all``'s common case in C (``_pending.add_all``), or None (tests set it).
_c_add_all: Callable[..., int] | None = spans_mod._compiled_table("add_all")


class _Request:
    """What is remembered of a request of several spans: ~0.25 KB, kept ``memory_s`` after
    it ends. Its ids are ``id_key``s (ints); no set is made until a third span joins."""

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
        "span_key",
        "start",
        "trace_key",
        "workload",
    )

    def __init__(
        self,
        trace_key: int,
        span_key: int,
        parent_key: int,
        span: Span | _Pending,
        *,
        named: bool,
        seq: int,
    ) -> None:
        self.seq = seq  # arrival order: of two requests a span links, the first is kept
        self.workload = span.workload
        self.trace_key = trace_key
        self.span_key = span_key  # the span standing for the request in the splitter
        self.start = span.start
        self.end = span.end
        self.model = span.model
        self.named = named  # the model came from a span, not from a default
        self.gflops = span.gflops
        self.input_tokens = span.input_tokens
        self.output_tokens = span.output_tokens
        self.first_parent = parent_key  # 0: none
        # None until a second span joins: then the sets of its spans' and parents' keys.
        self._ids: set[int] | None = None
        self._parents: set[int] | None = None
        self.alive = True

    @property
    def tokens(self) -> tuple[int | None, int | None]:  # (input, output)
        return self.input_tokens, self.output_tokens

    @tokens.setter
    def tokens(self, value: tuple[int | None, int | None]) -> None:
        self.input_tokens, self.output_tokens = value

    @property
    def ids(self) -> Collection[int]:
        """Keys of the request's spans' ids."""
        return self._ids if self._ids is not None else (self.span_key,)

    def add_ids(self, ids: Collection[int]) -> None:
        """Add span keys in place (a copy per join made uniting n requests O(n^2))."""
        if self._ids is None:
            self._ids = {self.span_key}
        self._ids.update(ids)

    @property
    def parents(self) -> Collection[int]:
        """Keys of their parents' span ids."""
        if self._parents is not None:
            return self._parents
        return (self.first_parent,) if self.first_parent else ()

    def add_parents(self, parents: Collection[int]) -> None:
        if self._parents is None:
            self._parents = set(self.parents)
        self._parents.update(parents)


def _links(req: _Request, workload: str, span_key: int, parent_key: int) -> bool:
    """Is the span (by its workload and keys) one of ``req``'s spans, its child or parent?"""
    return req.workload == workload and (
        span_key in req.ids or parent_key in req.ids or span_key in req.parents
    )


def _links_record(first: _Pending, workload: str, span_key: int, parent_key: int) -> bool:
    """``_links`` for a request still remembered as its one span's pending record."""
    return first.workload == workload and (
        first.span_key in (span_key, parent_key)
        or (first.parent_key != 0 and span_key == first.parent_key)
    )


class _Trace:
    """Two or more requests of one trace, indexed by their spans' keys and their parents'
    keys (each an insertion-ordered set of requests), so that a span finds the requests it
    links without scanning the trace: a scan made one trace of n requests cost O(n^2)
    (8,000 took 9.5 s of the settling thread; 100,000 would take half an hour)."""

    __slots__ = ("by_parent", "by_span", "size")

    def __init__(self) -> None:
        self.by_span: dict[int, dict[_Request, None]] = {}
        self.by_parent: dict[int, dict[_Request, None]] = {}
        self.size = 0

    @staticmethod
    def _put(index: dict[int, dict[_Request, None]], ids: Collection[int], req: _Request) -> None:
        for i in ids:
            got = index.get(i)
            if got is None:
                index[i] = {req: None}
            else:
                got[req] = None

    @staticmethod
    def _drop(index: dict[int, dict[_Request, None]], ids: Collection[int], req: _Request) -> None:
        for i in ids:
            got = index.get(i)
            if got is not None:
                got.pop(req, None)
                if not got:
                    del index[i]

    def index(self, req: _Request, ids: Collection[int], parents: Collection[int]) -> None:
        self._put(self.by_span, ids, req)
        self._put(self.by_parent, parents, req)

    def add(self, req: _Request) -> None:
        self.index(req, req.ids, req.parents)
        self.size += 1

    def remove(self, req: _Request) -> None:
        self._drop(self.by_span, req.ids, req)
        self._drop(self.by_parent, req.parents, req)
        self.size -= 1

    def linked(self, workload: str, span_key: int, parent_key: int) -> list[_Request]:
        """The requests the span links, in arrival order."""
        found: dict[_Request, None] = {}
        for index, key in (
            (self.by_span, span_key),
            (self.by_span, parent_key),
            (self.by_parent, span_key),
        ):
            got = index.get(key) if key else None
            if got:
                found.update(got)
        return sorted(
            (r for r in found if _links(r, workload, span_key, parent_key)), key=lambda r: r.seq
        )


class _Due:
    """What is to be forgotten in one second: the trace keys of requests remembered as one
    record (8 bytes each in an array; one whose trace holds something else by then is
    skipped) and the ``_Request``s."""

    __slots__ = ("lone", "requests")

    def __init__(self) -> None:
        self.lone = array("q")
        self.requests: list[_Request] = []


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
        # trace key -> its request (nearly always one), or an index of them (of any
        # workloads). A request of one span is its pending record (no _Request is made)
        # until a second span of its trace arrives.
        self._by_trace: dict[int, _Pending | _Request | _Trace] = spans_mod.new_index()
        # The compiled index forgets due records in C (``IdIndex.forget_lone``) when they
        # are compiled records (it knows no other record type).
        self._forget_lone = (
            getattr(self._by_trace, "forget_lone", None)
            if spans_mod.new_pending is not spans_mod._Pending
            else None
        )
        self._seq = 0
        # Forget times in whole seconds (a heap) and what is due in each. A request made a
        # _Request leaves its slot as a record behind (skipped when due).
        self._due: list[int] = []
        self._expiry: dict[int, _Due] = {}
        self._size = 0
        self.nested = 0  # spans joined to a request already counted

    def _named(self, span: Span | _Pending) -> bool:
        return span.model not in (UNKNOWN_MODEL, self.fallback_models.get(span.workload))

    def add(self, span: Span) -> Literal["accepted", "late", "nested", "refused"]:
        """Count ``span`` as a new request, or join it to the request it is nested in."""
        if not (span.trace_id and span.span_id):
            return self._splitter.add_span(span)
        key = hash(span.trace_id)  # spans.id_key, inline: once per span
        span_key, parent_key = hash(span.span_id), hash(span.parent_id)
        got = self._by_trace.get(key)
        if got is None:
            linked: list[_Request] = []
        elif isinstance(got, _Trace):
            linked = got.linked(span.workload, span_key, parent_key)
        elif isinstance(got, _Request):
            linked = [got] if _links(got, span.workload, span_key, parent_key) else []
        elif _links_record(got, span.workload, span_key, parent_key):
            linked = [self._request(key, got)]
        else:
            linked = []
        if linked:
            # The widest request (the first of equals) takes the span and the others: each
            # union then moves the smaller side's ids, never the growing set (n siblings
            # united under their parent cost O(n^2) when the set moved at each step).
            head = min(linked, key=lambda r: (r.start - r.end, r.seq))
            self._join(head, span, span_key, parent_key)
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
        if got is None:  # the common case: a request of one span, remembered as its record
            self._by_trace[key] = rec
            # Due by the record's end: a resend's record is the first copy's.
            self._bucket(rec.end).lone.append(key)
        else:
            self._remember(span, got, key, span_key, parent_key)
        self._size += 1
        while self._size > self.max_requests:
            self._forget_oldest()
        return "accepted"

    def add_all(self, spans: Sequence[Span], other: Callable[[Span], object]) -> int:
        """Take a batch in order: each span that is a new request of one span and that the
        splitter accepts as it is (valid, not late, not a resend, under the caps, for a
        workload with spans pending) is counted here as ``add`` counts it ("accepted");
        every other span goes to ``other(span)`` in its place (a caller's step that calls
        ``add`` and reads its verdict). Returns the spans counted here.

        The compiled tables do the common case in C (``_pending.add_all``, ~0.5 µs a span
        against ~2 for ``add``: no frame, no tuple of ids, no bound methods); without them
        every span goes to ``other``. Errors from ``other`` propagate, the spans before it
        counted."""
        if _c_add_all is not None:
            return _c_add_all(spans, self._splitter, self, other)
        for span in spans:
            other(span)
        return 0

    def _remember(
        self,
        span: Span,
        got: _Pending | _Request | _Trace,
        key: int,
        span_key: int,
        parent_key: int,
    ) -> None:
        """A request of a trace that holds others: a ``_Request`` beside them."""
        if not isinstance(got, (_Request, _Trace)):
            got = self._request(key, got)
        self._seq += 1
        entry = _Request(key, span_key, parent_key, span, named=self._named(span), seq=self._seq)
        if isinstance(got, _Trace):
            got.add(entry)
        else:
            trace = self._by_trace[key] = _Trace()
            trace.add(got)
            trace.add(entry)
        self._bucket(span.end).requests.append(entry)

    def _bucket(self, end: float) -> _Due:
        """The slots of the second a request ending at ``end`` is forgotten in (ends are
        finite: the splitter admitted the span)."""
        due = math.ceil(end + self._memory_s)
        bucket = self._expiry.get(due)
        if bucket is None:
            bucket = self._expiry[due] = _Due()
            heapq.heappush(self._due, due)
        return bucket

    def _request(self, key: int, rec: _Pending) -> _Request:
        """Make the request remembered as its one span's record a ``_Request`` (a second
        span of its trace has arrived), in its place and due when the span was."""
        self._seq += 1
        req = _Request(
            key, rec.span_key, rec.parent_key, rec, named=self._named(rec), seq=self._seq
        )
        self._by_trace[key] = req
        self._bucket(req.end).requests.append(req)
        return req

    def _join(self, req: _Request, span: Span, span_key: int, parent_key: int) -> None:
        if span_key in req.ids:
            return  # a resent copy
        req.add_ids((span_key,))
        if parent_key:
            req.add_parents((parent_key,))
        self._index(req, (span_key,), (parent_key,) if parent_key else ())
        named = self._named(span)
        model = span.model if named and not req.named else req.model
        gflops = req.gflops if req.gflops is not None else span.gflops
        tokens = req.tokens if _known(req.tokens) else _tokens(span)
        outer = span.start <= req.start and span.end >= req.end
        widened = outer and self._splitter.widen(
            req.workload,
            req.trace_key,
            req.span_key,
            replace(
                span, model=model, gflops=gflops, input_tokens=tokens[0], output_tokens=tokens[1]
            ),
        )
        if widened:
            req.span_key, req.start, req.end = span_key, span.start, span.end
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
                req.trace_key,
                req.span_key,
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
        if not self._splitter.retract(inner.workload, inner.trace_key, inner.span_key):
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

    def _index(self, req: _Request, ids: Collection[int], parents: Collection[int]) -> None:
        """Index ids newly joined to ``req`` where its trace holds several requests."""
        got = self._by_trace.get(req.trace_key)
        if isinstance(got, _Trace):
            got.index(req, ids, parents)

    def expire(self, now_wall: float) -> None:
        """Forget requests that ended more than ``memory_s`` before ``now_wall``."""
        while self._due and self._due[0] < now_wall:
            due = heapq.heappop(self._due)
            bucket = self._expiry.pop(due)
            self._forget_records(bucket.lone, due)
            for req in bucket.requests:
                self._forget(req)

    def _forget_records(self, keys: Iterable[int], due: int) -> None:
        """Forget the request of one span of each trace key if it is due at ``due`` (else
        the trace holds a _Request since, or a later request of one span)."""
        by_trace, memory_s, ceil = self._by_trace, self._memory_s, math.ceil
        if self._forget_lone is not None and -_EXACT < due < _EXACT:
            self._size -= self._forget_lone(keys, due, memory_s)
            return
        forgotten = 0
        for key in keys:
            got = by_trace.get(key)
            if (
                got is not None
                and not isinstance(got, (_Request, _Trace))
                and ceil(got.end + memory_s) == due
            ):
                del by_trace[key]
                forgotten += 1
        self._size -= forgotten

    def _forget_oldest(self) -> None:
        """Forget one request of the earliest forget second (or skip a stale slot of it)."""
        due = self._due[0]
        bucket = self._expiry[due]
        if bucket.lone:
            self._forget_records((bucket.lone.pop(),), due)
        else:
            self._forget(bucket.requests.pop())
        if not (bucket.lone or bucket.requests):
            del self._expiry[heapq.heappop(self._due)]

    def _forget(self, req: _Request) -> None:
        if not req.alive:
            return
        req.alive = False
        self._size -= 1
        key = req.trace_key
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
