"""Split a workload's measured energy among the request spans it reports.

A *span* is one request a workload served, [start, end) in wall-clock seconds, with its work
in GFLOPs when known. A *tick* is one interval [w0, w1) of measured energy per workload and
component. A tick *settles* ``settle_seconds`` after it ends: its energy is then split, once
and for all, among the spans overlapping it; time with no span open is the workload's energy
*outside* spans. A span arriving after a tick it overlaps has settled is *late*: it is
counted and never re-splits settled energy.

Split rule: the tick is cut into segments at span boundaries; a segment's energy (tick energy
times segment length over tick length) goes to the spans open in it, in proportion to their
work rate (GFLOPs / duration) when every open span has known work, else equally.

Over 400 lines because the span splitter is one data structure (open ticks, pending spans
per workload, the settle frontier) whose invariants (conservation, settled once) are kept in
one place.
"""

from __future__ import annotations

import bisect
import heapq
import math
import struct
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Literal, cast

from jouled.native import pure_requested

EnergyByWorkload = Mapping[str, Mapping[str, float]]
_INF = math.inf


@dataclass(slots=True, unsafe_hash=True)
class Span:
    """One request as reported by its workload; times are unix seconds (wall clock).

    Treated as a value (``dataclasses.replace`` makes changed copies); not frozen because a
    frozen dataclass's ``__init__`` costs twice as much, once per span received."""

    workload: str
    model: str
    start: float
    end: float
    gflops: float | None = None
    route: str = ""
    trace_id: str = ""
    span_id: str = ""
    parent_id: str = ""  # the enclosing request span's id, when it is known to be one
    # Tokens the request consumed (prompt, prefill) and produced (generated), where reported.
    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(slots=True, unsafe_hash=True)
class SettledRequest:
    """One span whose every overlapping tick has settled (or that was settled early); a
    value, not frozen for the same reason as ``Span``."""

    workload: str
    model: str
    energy_j: Mapping[str, float]  # per component; empty for a zero-length span
    gflops: float | None
    duration_s: float
    route: str
    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class SettleResult:
    """What one ``settle``/``flush`` call settled.

    ``in_spans_j`` and ``outside_j`` hold, per workload and component, the energy of ticks
    settled by this call that went to spans and to time outside any span: together they are
    exactly the ticks' energy. ``requests`` are the spans completed by this call; their
    energy was counted in ``in_spans_j`` of this or earlier calls.
    """

    in_spans_j: Mapping[str, Mapping[str, float]]
    outside_j: Mapping[str, Mapping[str, float]]
    requests: tuple[SettledRequest, ...]


@dataclass(frozen=True, slots=True)
class SplitterStats:
    open_ticks: int
    pending_spans: int
    late_spans: int  # refused by add_span: they overlap settled time
    refused_spans: int  # refused by add_span: pending is full and the workload holds its share
    duplicate_spans: int  # same (workload, trace_id, span_id) as a pending span; ignored
    dropped_spans: int  # evicted over max_pending_spans before receiving any energy
    truncated_spans: int  # evicted over the cap, or waited too long: settled with what they had
    forced_ticks: int  # settled early because more than max_open_ticks were open
    clamped_ticks: int  # started before the previous tick ended (wall clock stepped back)


def id_key(span_or_trace_id: str) -> int:
    """The key a trace or span id is held by once decoded: ``hash(id)`` (0 for ""; 64 bits,
    salted per process, so a sender cannot choose ids that collide). The splitter's
    records and the request joiner keep these ints, not the ids' hex strings (~65-81
    bytes each)."""
    return hash(span_or_trace_id)


class _Pending:
    """A pending span: what the split and the settled request need of it, without its ids
    (only their keys: ``dedup``, the splitter's, and ``span_key`` and ``parent_key``, the
    request joiner's, which remembers a request of one span by this record alone).

    The reference for its compiled twin, ``jouled.attribution._pending.Pending`` (same
    attributes, numbers held as C numbers, the workload, model and route one shared tuple,
    not tracked by gc: 96 bytes against ~256 with this one's floats and ints), which the
    splitter makes where it is built (``new_pending``)."""

    __slots__ = (
        "dedup",
        "done",
        "end",
        "energy_j",
        "gflops",
        "input_tokens",
        "model",
        "output_tokens",
        "parent_key",
        "route",
        "span_key",
        "start",
        "workload",
    )

    def __init__(self, span: Span, dedup: int = 0, span_key: int = 0, parent_key: int = 0) -> None:
        self.workload = span.workload
        self.model = span.model
        self.start = span.start
        self.end = span.end
        self.gflops = span.gflops
        self.route = span.route
        self.input_tokens = span.input_tokens
        self.output_tokens = span.output_tokens
        # Created on the first share: most pending spans wait seconds before any tick settles.
        self.energy_j: dict[str, float] | None = None
        self.done = False
        self.dedup = dedup  # the _by_id key; 0 when the span has no trace and span id
        self.span_key = span_key  # id_key(span id) and id_key(parent id); 0: not given
        self.parent_key = parent_key


@dataclass(slots=True)
class _Tick:
    w0: float
    w1: float
    energy_j: dict[str, dict[str, float]]
    busy_s: dict[str, float] | None = None  # CPU seconds per workload in the tick


def _compiled_pending() -> Callable[..., _Pending] | None:
    """The compiled record type, or None when not built or not wanted (JOULED_PURE_PYTHON=1)."""
    if pure_requested():
        return None
    try:
        from jouled.attribution._pending import Pending
    except ImportError:
        return None
    return cast("Callable[..., _Pending]", Pending)


# What the splitter makes its records with: the compiled type where it is built, else the
# Python class (tests set it to ``_Pending`` to run the Python one).
new_pending: Callable[..., _Pending] = _compiled_pending() or _Pending


def _compiled_table(
    name: Literal[
        "IdIndex",
        "RecordIndex",
        "TimeQueue",
        "finish_all",
        "add_all",
        "rates",
        "share_out",
        "book",
    ],
) -> Callable[..., Any] | None:
    """A compiled table (or function) of ``_pending``, or None as ``_compiled_pending``.
    ``IdIndex``: int64 key -> object, 16 bytes a slot (~30-45 bytes an entry against a
    dict's ~125 with its int keys). ``RecordIndex``: compiled records under their own
    ``dedup``, the key read from the record, 8 bytes a slot; it refuses anything else.
    ``TimeQueue(by_end)``: ``_TimeQueue``'s twin for compiled records (the same order, the
    sort in C). ``finish_all``: ``SpanSplitter._finish_all``'s loop for compiled records in
    a RecordIndex. ``add_all``: ``RequestJoiner.add_all``'s common case (a new request of
    one span) over these tables. ``rates`` and ``share_out``: a tick's split over compiled
    records (``SpanSplitter._settle_tick``). ``book``: the stage's ``_book``."""
    if pure_requested():
        return None
    try:
        from jouled.attribution import _pending

        table = getattr(_pending, name)
    except (ImportError, AttributeError):  # not built, or built from an older source
        return None
    return cast("Callable[..., Any]", table)


# What the request joiner indexes its requests by trace key with: the compiled table, else a
# dict. Only ``in``, ``[]``, ``[] =``, ``del``, ``get`` and ``len`` are used (what IdIndex has).
new_index: Callable[[], dict[int, Any]] = _compiled_table("IdIndex") or dict
# What the splitter indexes its records by id with (each under its own ``dedup``; the same
# operations): the compiled table when its records are compiled, else a dict.
new_record_index: Callable[[], dict[int, Any]] = (
    new_pending is not _Pending and _compiled_table("RecordIndex")
) or dict


# Sort keys of the time queues: attrgetter runs in C, a def per record costs ~4x as much.
_start: Callable[[_Pending], float] = attrgetter("start")
_end: Callable[[_Pending], float] = attrgetter("end")


class _TimeQueue:
    """Records taken in (time, arrival) order, as from a heap of (time, seq) tuples, in fewer
    comparisons and with no tuple per record.

    A calendar of one-second buckets: a record is appended to its second's bucket, and a
    bucket is sorted by ``key`` when a take reaches it (about a second of spans, arriving in
    a few sorted runs, one per exporter batch), so a record costs a share of a small sort
    where a heap of all spans in flight needs ~2 log2 n comparisons (30 at 30,000 spans).
    The sort is stable: records of equal time leave in the order they were pushed."""

    __slots__ = ("_buckets", "_key", "_n", "_seconds")

    def __init__(self, key: Callable[[_Pending], float]) -> None:
        self._key = key
        self._buckets: dict[int, list[_Pending]] = {}
        self._seconds: list[int] = []  # a heap of the buckets' seconds
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def push(self, rec: _Pending, t: float) -> None:
        """Queue ``rec``, whose key is ``t`` (passed in: the caller has it at hand)."""
        second = math.floor(t)
        bucket = self._buckets.get(second)
        if bucket is None:
            bucket = self._buckets[second] = []
            heapq.heappush(self._seconds, second)
        bucket.append(rec)
        self._n += 1

    def _take(self, t: float, through: bool) -> list[_Pending]:
        out: list[_Pending] = []
        seconds, buckets, key = self._seconds, self._buckets, self._key
        while seconds and seconds[0] <= t:
            second = seconds[0]
            bucket = buckets[second]
            bucket.sort(key=key)
            if second + 1 <= t:  # every record of [second, second + 1) is before t
                out += bucket
                del buckets[heapq.heappop(seconds)]
                continue
            cut = bisect.bisect_right if through else bisect.bisect_left
            k = cut(bucket, t, key=key)
            out += bucket[:k]
            del bucket[:k]
            if not bucket:
                del buckets[heapq.heappop(seconds)]
            break
        self._n -= len(out)
        return out

    def take_through(self, t: float) -> list[_Pending]:
        """Records with time <= t, in order, removed."""
        return self._take(t, True)

    def take_before(self, t: float) -> list[_Pending]:
        """Records with time < t, in order, removed."""
        return self._take(t, False)

    def drop_done(self) -> None:
        """Forget finished records."""
        for second, bucket in list(self._buckets.items()):
            kept = [x for x in bucket if not x.done]
            if kept:
                self._buckets[second] = kept
            else:
                del self._buckets[second]
        self._seconds = list(self._buckets)
        heapq.heapify(self._seconds)
        self._n = sum(len(b) for b in self._buckets.values())


# The splitter's settle loop in C where its records and id index are compiled (tests set
# ``new_record_index`` to dict to run the Python loop).
_c_finish_all = _compiled_table("finish_all")
# A tick's split over compiled records: their packed rates and the energy by fraction (each
# answers None/False for input it does not take; tests set them to None).
_c_rates = _compiled_table("rates")
_c_share_out = _compiled_table("share_out")


def _py_time_queue(by_end: bool) -> _TimeQueue:
    return _TimeQueue(_end if by_end else _start)


# What the splitter queues its records by start or end with (``by_end``): the compiled
# calendar when its records are compiled (push ~0.05 µs against 0.15, the bucket sorted in
# C), else ``_TimeQueue``; tests set it with ``new_pending``.
new_time_queue: Callable[[bool], _TimeQueue] = (
    new_pending is not _Pending and _compiled_table("TimeQueue")
) or _py_time_queue


@dataclass(slots=True)
class _Lane:
    """One workload's spans on their way through the ticks, settled in time order."""

    waiting: _TimeQueue = field(default_factory=lambda: new_time_queue(False))
    # Started before the last settled tick and open after it.
    active: dict[_Pending, None] = field(default_factory=dict)  # an ordered set
    active_ends: _TimeQueue = field(default_factory=lambda: new_time_queue(True))


# Work rates (GFLOPs/s) are clamped to this range so that sums never overflow and per-segment
# weights never go subnormal; real rates are many orders of magnitude inside it.
_MIN_RATE = 1e-200
_MAX_RATE = 1e200


def _clamp_rate(rate: float) -> float:
    if not rate >= _MIN_RATE:  # NaN lands here too
        return 0.0
    return min(rate, _MAX_RATE)


def _exact_rates(rates: list[float]) -> tuple[list[int], int]:
    """Rates as integers times a common power of two, so running sums never drift.

    A float running sum with additions and removals can cancel catastrophically
    (1e20 + 1 - 1e20 == 0) and break conservation; integer sums are exact.
    """
    parts: list[tuple[int, int]] = []
    for rate in rates:
        if rate > 0.0:
            mantissa, exponent = math.frexp(rate)
            parts.append((int(mantissa * (1 << 53)), exponent - 53))
        else:
            parts.append((0, 0))
    min_exp = min((e for m, e in parts if m), default=0)
    return [m << (e - min_exp) if m else 0 for m, e in parts], min_exp


def _to_float(value: int, exp: int) -> float:
    # int / int is correctly rounded in CPython, even for integers beyond float range.
    return value / (1 << -exp) if exp < 0 else float(value << exp)


class _RangeSum:
    """Sums of non-negative values over index ranges in O(log n), by a segment tree.

    Prefix-sum differences would absorb small terms next to large ones (0.5 + 5e-301 - 0.5
    == 0); a tree only ever adds non-negative numbers, so each range sum keeps its relative
    precision.
    """

    def __init__(self, values: list[float]) -> None:
        n = len(values)
        self._n = n
        tree = [0.0] * n + values
        for k in range(n - 1, 0, -1):
            tree[k] = tree[2 * k] + tree[2 * k + 1]
        self._tree = tree

    def sum(self, lo: int, hi: int) -> float:
        """Sum of values[lo:hi]."""
        tree = self._tree
        total = 0.0
        lo += self._n
        hi += self._n
        while lo < hi:
            if lo & 1:
                total += tree[lo]
                lo += 1
            if hi & 1:
                hi -= 1
                total += tree[hi]
            lo >>= 1
            hi >>= 1
        return total


def _compiled_split() -> Callable[..., tuple[float, list[float]] | None] | None:
    """The compiled split, or None when not built (no compiler at install time) or not
    wanted (JOULED_PURE_PYTHON=1)."""
    if pure_requested():
        return None
    try:
        from jouled.attribution._split import split_fractions as compiled
    except ImportError:
        return None
    return compiled


# Tests set it to None to run the Python function.
_c_split_fractions = _compiled_split()


def split_fractions(
    spans: Iterable[tuple[float, float, float, bool]] | bytes, w0: float, w1: float
) -> tuple[float, list[float]]:
    """Fractions of a tick [w0, w1) going outside spans and to each span: the rule of
    ``py_split_fractions``, by the compiled twin (``jouled/attribution/_split.c``, equal
    value for value) where it is built and takes the input, else by the Python function.
    ``spans`` may come packed: bytes of four doubles a span (start, end, rate, has_rate as
    0.0 or 1.0), as ``_pending.rates`` makes them."""
    if isinstance(spans, bytes):  # packed (``_pending.rates``): four doubles a span
        if _c_split_fractions is not None:
            got = _c_split_fractions(spans, w0, w1)
            if got is not None:
                return got
        # The compiled split refuses packed spans for what it refuses in tuples (times that
        # are not finite): the Python rule, without asking it again.
        unpacked = [(s, e, r, has != 0.0) for s, e, r, has in struct.iter_unpack("4d", spans)]
        return py_split_fractions(unpacked, w0, w1)
    items = spans if isinstance(spans, list) else list(spans)
    if _c_split_fractions is not None:
        got = _c_split_fractions(items, w0, w1)
        if got is not None:
            return got
    return py_split_fractions(items, w0, w1)


def py_split_fractions(
    spans: Iterable[tuple[float, float, float, bool]], w0: float, w1: float
) -> tuple[float, list[float]]:
    """Fractions of a tick [w0, w1) going outside spans and to each span.

    ``spans`` yields (start, end, rate, known); rates are clamped to [1e-200, 1e200] (below:
    0). Returns (outside, per-span fractions) summing to 1 up to rounding. O(n log n): the
    spans sorted by start fall into clusters of overlapping spans; a span alone in its
    cluster gets its time's share, a cluster of several is swept over its boundaries
    (``_cluster_shares``); the time between clusters is outside.
    """
    items = [(max(s, w0), min(e, w1), r, k) for s, e, r, k in spans]
    n = len(items)
    length = w1 - w0
    starts = [item[0] for item in items]
    # Stable, so spans of equal start keep their order (C-level key: no call per span).
    open_ = [i for i in sorted(range(n), key=starts.__getitem__) if items[i][1] > starts[i]]
    if length <= 0.0 or not open_:
        return 1.0, [0.0] * n
    raw = [0.0] * n
    gaps: list[float] = []
    cluster: list[int] = []
    cluster_end = w0
    for i in open_:
        s, e = items[i][0], items[i][1]
        if s < cluster_end:  # overlaps the cluster (spans that only touch do not)
            cluster.append(i)
            cluster_end = max(cluster_end, e)
            continue
        if len(cluster) == 1:  # a span alone: its time's share (most spans; no call)
            c = cluster[0]
            raw[c] = (items[c][1] - items[c][0]) / length
        elif cluster:
            _cluster_shares(cluster, items, length, raw)
        gaps.append(s - cluster_end)
        cluster = [i]
        cluster_end = e
    _cluster_shares(cluster, items, length, raw)
    gaps.append(w1 - cluster_end)
    outside = min(1.0, math.fsum(gaps) / length)
    total = math.fsum(raw)
    if total <= 0.0:
        return 1.0, [0.0] * n
    # Each share is within a few ulps; rescaling to the in-span share makes the fractions
    # sum to 1 to rounding, which is what conservation needs.
    scale = (1.0 - outside) / total
    return outside, [x * scale for x in raw]


def _cluster_shares(
    cluster: list[int],
    items: list[tuple[float, float, float, bool]],
    length: float,
    raw: list[float],
) -> None:
    """Each span's share of the tick (``length`` s) in one cluster of overlapping spans
    (clipped to the tick, of positive length), into ``raw``: a sweep over the cluster's
    boundaries, then one range sum per span. A segment's time goes to the spans open in it
    by work rate when every one has known work (exact integer rate sums: no drift), else
    equally."""
    if len(cluster) == 1:
        s, e = items[cluster[0]][0], items[cluster[0]][1]
        raw[cluster[0]] = (e - s) / length
        return
    members = [items[i] for i in cluster]
    points = sorted({*(m[0] for m in members), *(m[1] for m in members)})
    index = {t: k for k, t in enumerate(points)}
    n_points = len(points)
    d_count = [0] * n_points
    d_unknown = [0] * n_points
    d_rate = [0] * n_points
    rates = [_clamp_rate(m[2]) for m in members]
    exact, exp = _exact_rates(rates)
    for (s, e, _, known), q in zip(members, exact, strict=True):
        i, j = index[s], index[e]
        d_count[i] += 1
        d_count[j] -= 1
        d_rate[i] += q
        d_rate[j] -= q
        if not known:
            d_unknown[i] += 1
            d_unknown[j] -= 1
    # Per segment: by_rate = fraction / rate sum where rates decide (a span then gets
    # rate x by_rate); equal = fraction / open count where spans share equally.
    by_rate = [0.0] * (n_points - 1)
    equal = [0.0] * (n_points - 1)
    count = unknown = rate_sum = 0
    for k in range(n_points - 1):
        count += d_count[k]
        unknown += d_unknown[k]
        rate_sum += d_rate[k]
        seg = points[k + 1] - points[k]
        if unknown == 0 and rate_sum > 0:
            by_rate[k] = (seg / length) / _to_float(rate_sum, exp)
        elif count:
            equal[k] = (seg / length) / count
    rate_sums = _RangeSum(by_rate)
    equal_sums = _RangeSum(equal)
    for i, (s, e, _, _), rate in zip(cluster, members, rates, strict=True):
        a, b = index[s], index[e]
        raw[i] = rate * rate_sums.sum(a, b) + equal_sums.sum(a, b)


def _budget(
    outside: float, fractions: list[float], length_s: float, busy_s: float
) -> tuple[float, list[float]]:
    """Give spans the tick's energy up to the CPU their open time can hold.

    By time alone, a 6 ms request in a 1 s tick gets 0.6 % of the tick, although the server
    spent its whole tick's CPU serving it. A request can use at least one core while it is
    open, so spans covering ``covered`` seconds can account for ``covered`` CPU seconds:
    spans get ``min(1, covered / busy)`` of the energy when that is more than their time
    share; the rest (CPU that cannot have run inside a span) stays outside. The fractions
    still sum to 1.
    """
    in_spans = 1.0 - outside
    if in_spans <= 0.0 or busy_s <= 0.0:
        return outside, fractions
    target = min(1.0, in_spans * length_s / busy_s)
    if target <= in_spans:
        return outside, fractions
    scale = target / in_spans
    return 1.0 - target, [f * scale for f in fractions]


def _add(into: dict[str, dict[str, float]], workload: str, component: str, joules: float) -> None:
    per = into.setdefault(workload, {})
    per[component] = per.get(component, 0.0) + joules


class SpanSplitter:
    """Holds open ticks and pending spans; settles ticks in time order, each exactly once.

    Not thread-safe: one owner (the daemon's tick loop) calls every method.
    """

    def __init__(
        self,
        settle_seconds: float = 30.0,  # the project's spans.settle_seconds default
        max_open_ticks: int = 3600,
        max_pending_spans: int = 100_000,
        max_span_wait_s: float = 60.0,
    ) -> None:
        if settle_seconds < 0 or max_span_wait_s < 0:
            raise ValueError("settle_seconds and max_span_wait_s must be >= 0")
        if max_open_ticks < 1 or max_pending_spans < 1:
            raise ValueError("max_open_ticks and max_pending_spans must be >= 1")
        self._settle_s = settle_seconds
        self._max_ticks = max_open_ticks
        self._max_pending = max_pending_spans
        self._max_wait_s = max_span_wait_s
        self._ticks: deque[_Tick] = deque()
        self._frontier = -math.inf  # w1 of the newest settled tick
        self._last_w1 = -math.inf  # w1 of the newest tick, settled or not
        self._lanes: dict[str, _Lane] = {}
        # Pending spans per workload in arrival order (done ones are skipped when met), and
        # their live counts: eviction is O(1) and takes from the workload holding the most.
        self._fifo: dict[str, deque[_Pending]] = {}
        self._count: dict[str, int] = {}
        self._n_pending = 0
        self._ends = new_time_queue(True)  # completion order
        # hash((workload, id_key(trace_id), id_key(span_id))) -> its pending span: an int
        # key, not a tuple of three strings per pending span. A hash collision can only make
        # a span look like a duplicate of one pending at the same moment: odds of about
        # n^2 / 2^64.
        self._by_id: dict[int, _Pending] = new_record_index()
        self._in_spans: dict[str, dict[str, float]] = {}
        self._outside: dict[str, dict[str, float]] = {}
        self._requests: list[SettledRequest] = []
        self._late = self._duplicates = self._dropped = self._truncated = self._refused = 0
        self._forced = self._clamped = 0

    @property
    def stats(self) -> SplitterStats:
        return SplitterStats(
            open_ticks=len(self._ticks),
            pending_spans=self._n_pending,
            late_spans=self._late,
            refused_spans=self._refused,
            duplicate_spans=self._duplicates,
            dropped_spans=self._dropped,
            truncated_spans=self._truncated,
            forced_ticks=self._forced,
            clamped_ticks=self._clamped,
        )

    @property
    def pending(self) -> int:
        """Spans waiting to settle (``stats.pending_spans``, without building the stats)."""
        return self._n_pending

    @property
    def max_pending(self) -> int:
        """``max_pending_spans``: spans past it are refused or push out another workload's."""
        return self._max_pending

    @property
    def dropped(self) -> int:
        """``stats.dropped_spans``, without building the stats."""
        return self._dropped

    @property
    def truncated(self) -> int:
        """``stats.truncated_spans``, without building the stats."""
        return self._truncated

    @property
    def settled_until(self) -> float:
        """Wall time up to which energy is settled; spans starting before it are late."""
        return self._frontier

    def add_span(self, span: Span) -> Literal["accepted", "late", "refused"]:
        """Queue a span. ``late``: it overlaps settled time. ``refused``: ``max_pending_spans``
        are pending and the span's workload already holds its fair share of them (the cap
        over the workloads with pending spans); otherwise, when full, the newest pending span
        of the workload holding the most is dropped. A burst never pushes out spans accepted
        before it, and one workload's sender cannot push out another workload's spans.
        ValueError, changing nothing, for times or work that are not finite, negative work,
        and values the record cannot hold (the compiled record: floats and 63-bit tokens)."""
        got = self.admit(span)
        return got if isinstance(got, str) else "accepted"

    def admit(self, span: Span) -> _Pending | Literal["late", "refused"]:
        """``add_span``, answering "accepted" with the span's pending record (the one it
        duplicates for a resent span): the request joiner remembers a request of one span
        by its ids and this record (its values are the span's; only ``amend`` changes them)
        rather than by the span (its floats, ints and record-sized object, ~250 bytes more
        for the 15 s it is remembered)."""
        start, end, gflops = span.start, span.end, span.gflops
        if not -_INF < start <= end < _INF:  # NaN fails too
            raise ValueError(f"span times must be finite with end >= start: {span!r}")
        if gflops is not None and not 0 <= gflops < _INF:
            raise ValueError(f"span gflops must be finite and >= 0: {span!r}")
        if start < self._frontier or (self._ticks and self._is_late(span)):
            self._late += 1
            return "late"
        key = span_key = 0
        if span.trace_id and span.span_id:
            span_key = hash(span.span_id)  # id_key, inline: once per span
            key = hash((span.workload, hash(span.trace_id), span_key))
            pending = self._by_id.get(key)
            if pending is not None:
                # OTLP clients resend a batch whose answer they missed: count the span once.
                self._duplicates += 1
                return pending
        try:
            # Made before any eviction: a span the record cannot hold must not push one out.
            rec = (
                new_pending(span, key, span_key, hash(span.parent_id)) if key else new_pending(span)
            )
        except (OverflowError, TypeError) as exc:  # the C record: beyond 63 bits or float
            raise ValueError(f"span values out of range: {exc}: {span!r}") from None
        if self._n_pending >= self._max_pending:
            victim = self._victim(span.workload)
            if victim is None:
                self._refused += 1
                return "refused"
            self._evict_newest(victim)
        self._queue(rec)
        if key:
            self._by_id[key] = rec
        self._ends.push(rec, end)
        if end > start:
            # Zero-length spans never receive energy; they only wait to be counted.
            lane = self._lanes.get(span.workload)
            if lane is None:
                lane = self._lanes[span.workload] = _Lane()
            lane.waiting.push(rec, start)
        return rec

    def _find(self, workload: str, trace_key: int, span_key: int) -> _Pending | None:
        rec = self._by_id.get(hash((workload, trace_key, span_key)))
        return rec if rec is not None and not rec.done else None

    def amend(
        self,
        workload: str,
        trace_key: int,
        span_key: int,
        *,
        model: str | None,
        gflops: float | None,
        tokens: tuple[int | None, int | None] | None = None,
    ) -> bool:
        """Give a pending span (by its workload and the ``id_key`` of its trace and span ids)
        the model, work and/or (input, output) tokens a nested span of its request names
        (None keeps its own). False when it is no longer pending;
        ValueError, changing nothing, for token counts the record cannot hold (the compiled
        record's 63 bits)."""
        rec = self._find(workload, trace_key, span_key)
        if rec is None:
            return False
        if tokens is not None:
            old = rec.input_tokens, rec.output_tokens
            try:
                rec.input_tokens, rec.output_tokens = tokens
            except (OverflowError, TypeError) as exc:  # the C record: beyond 63 bits
                rec.input_tokens, rec.output_tokens = old  # all or nothing
                raise ValueError(f"token counts out of range: {exc}") from None
        if model is not None:
            rec.model = model
        if gflops is not None and math.isfinite(gflops) and gflops >= 0:
            rec.gflops = gflops
        return True

    def widen(self, workload: str, trace_key: int, span_key: int, span: Span) -> bool:
        """Put ``span`` (an enclosing span of the same request) in the place of a pending span
        that has received no energy yet. False, changing nothing, when the pending span holds
        energy or is gone, or when ``span`` would be late."""
        if self._is_late(span) or not self.retract(workload, trace_key, span_key):
            return False
        self.add_span(span)
        return True

    def retract(self, workload: str, trace_key: int, span_key: int) -> bool:
        """Take back a pending span that has received no energy yet (it turned out to be part
        of another request). False, changing nothing, when it holds energy or is gone."""
        rec = self._find(workload, trace_key, span_key)
        if rec is None or rec.energy_j:
            return False
        rec.done = True  # its heap entries are dead now; _maybe_compact drops them
        self._unqueue(rec)
        del self._by_id[rec.dedup]
        lane = self._lanes.get(workload)
        if lane is not None:
            lane.active.pop(rec, None)
        return True

    def _queue(self, rec: _Pending) -> None:
        workload = rec.workload
        fifo = self._fifo.get(workload)
        if fifo is None:
            fifo = self._fifo[workload] = deque()
        count = self._count.get(workload, 0) + 1
        self._count[workload] = count
        self._n_pending += 1
        while fifo and fifo[0].done:
            # Spans mostly finish in arrival order: the finished ones at the front go now,
            # not at the next compaction (each holds its span and energy until it goes).
            fifo.popleft()
        fifo.append(rec)
        if len(fifo) > 2 * count + 1024:
            # Spans finished in place (settled, not evicted) leave entries behind: drop them.
            self._fifo[workload] = deque(r for r in fifo if not r.done)

    def _unqueue(self, rec: _Pending) -> None:
        workload = rec.workload
        count = self._count[workload] - 1
        self._n_pending -= 1
        if count:
            self._count[workload] = count
        else:
            del self._count[workload]
            del self._fifo[workload]

    def _victim(self, workload: str) -> str | None:
        """The workload to evict from to make room for one of ``workload``'s spans; None
        when ``workload`` holds its fair share or more (its span is refused instead)."""
        holders = len(self._count) + (workload not in self._count)
        if self._count.get(workload, 0) >= self._max_pending // holders:
            return None
        return max(self._count.items(), key=lambda kv: kv[1])[0]

    def _is_late(self, span: Span) -> bool:
        if span.start < self._frontier:
            return True
        if self._ticks:
            oldest = self._ticks[0].w0
            return span.end < oldest or (span.end == oldest and span.end > span.start)
        return False

    def add_tick(
        self,
        w0: float,
        w1: float,
        energy_j: EnergyByWorkload,
        busy_s: Mapping[str, float] | None = None,
    ) -> None:
        """Record one tick's energy: workload -> component -> joules, for [w0, w1).

        ``busy_s``: the CPU seconds each workload spent in the tick, where known. Spans then
        get at least their share of the tick's time and, where the workload's CPU time fits
        inside the time its spans were open, up to all of it (see ``_budget``).
        """
        if not (math.isfinite(w0) and math.isfinite(w1)):
            raise ValueError(f"tick bounds must be finite: [{w0}, {w1})")
        copied: dict[str, dict[str, float]] = {}
        for workload, per in energy_j.items():
            for component, joules in per.items():
                if not (math.isfinite(joules) and joules >= 0):
                    raise ValueError(f"tick energy must be finite and >= 0: {workload}/{component}")
            copied[workload] = dict(per)
        if w0 < self._last_w1:
            # The wall clock stepped back (NTP): keep ticks disjoint so that no time is split
            # twice; the energy is kept whole (a tick cut to zero length goes outside spans).
            self._clamped += 1
            w0 = self._last_w1
        w1 = max(w1, w0)
        busy = None
        if busy_s is not None:
            busy = {w: b for w, b in busy_s.items() if math.isfinite(b) and b > 0}
        self._ticks.append(_Tick(w0, w1, copied, busy))
        self._last_w1 = w1
        while len(self._ticks) > self._max_ticks:
            self._forced += 1
            self._settle_tick(self._ticks.popleft())

    def settle(self, now_wall: float) -> SettleResult:
        """Settle ticks with ``w1 + settle_seconds <= now_wall``; complete their spans."""
        while self._ticks and self._ticks[0].w1 + self._settle_s <= now_wall:
            self._settle_tick(self._ticks.popleft())
        self._complete(max(self._frontier, now_wall - self._settle_s - self._max_wait_s))
        self._drop_finished_fronts()
        self._maybe_compact()
        return self._drain()

    def _drop_finished_fronts(self) -> None:
        """Let go of the spans just settled at the front of each workload's arrival queue
        now, not when the workload's next batch arrives (up to its exporter's 5 s later): each
        holds its record and energy until then, ~15 % more records in memory at 1,000 spans/s."""
        for fifo in self._fifo.values():
            while fifo and fifo[0].done:
                fifo.popleft()

    def flush(self) -> SettleResult:
        """Settle every tick and every pending span now (shutdown drain)."""
        while self._ticks:
            self._settle_tick(self._ticks.popleft())
        self._complete(math.inf)
        return self._drain()

    def _drain(self) -> SettleResult:
        result = SettleResult(
            in_spans_j=self._in_spans, outside_j=self._outside, requests=tuple(self._requests)
        )
        self._in_spans, self._outside, self._requests = {}, {}, []
        return result

    def _settle_tick(self, tick: _Tick) -> None:
        for workload in {*tick.energy_j, *self._lanes}:
            lane = self._lanes.get(workload)
            energy = tick.energy_j.get(workload, {})
            active: list[_Pending] = []
            if lane is not None:
                active = list(lane.active)
                for rec in lane.waiting.take_before(tick.w1):
                    if rec.done:
                        continue
                    active.append(rec)
                    if rec.end > tick.w1:  # open after this tick: met again by the next
                        lane.active[rec] = None
                        lane.active_ends.push(rec, rec.end)
            if energy:
                # Work rates, GFLOPs per second (0.0 for a span of no length): derived per
                # tick, not stored (a float per span in flight is 24 B), and inline: no call
                # per open span per tick (LLM requests stay open for several ticks).
                packed = _c_rates(active) if _c_rates is not None else None
                outside, fractions = split_fractions(
                    packed
                    if packed is not None
                    else [
                        (
                            r.start,
                            r.end,
                            r.gflops / (r.end - r.start) if r.end > r.start else 0.0,
                            True,
                        )
                        if r.gflops is not None
                        else (r.start, r.end, 0.0, False)
                        for r in active
                    ],
                    tick.w0,
                    tick.w1,
                )
                busy = tick.busy_s.get(workload) if tick.busy_s else None
                if busy is not None and active:
                    outside, fractions = _budget(outside, fractions, tick.w1 - tick.w0, busy)
                parts = list(energy.items())
                shared = _c_share_out is not None and _c_share_out(active, fractions, parts)
                for rec, frac in zip(active, fractions, strict=True) if not shared else ():
                    if frac > 0.0:
                        got = rec.energy_j
                        if got is None:  # most spans: their only tick
                            rec.energy_j = {component: j * frac for component, j in parts}
                        else:
                            for component, j in parts:
                                got[component] = got.get(component, 0.0) + j * frac
                # What the spans got, per component: its energy times their summed fractions
                # (equal to the sum of their shares up to rounding).
                in_frac = math.fsum(f for f in fractions if f > 0.0)
                for component, j in parts:
                    _add(self._outside, workload, component, j * outside)
                    _add(self._in_spans, workload, component, j * in_frac)
            if lane is not None:
                for rec in lane.active_ends.take_through(tick.w1):
                    lane.active.pop(rec, None)
                if not lane.waiting and not lane.active:
                    del self._lanes[workload]
        self._frontier = max(self._frontier, tick.w1)

    def _complete(self, until: float) -> None:
        due = [rec for rec in self._ends.take_through(until) if not rec.done]
        frontier = self._frontier
        # Those that waited past max_span_wait_s for ticks covering their end.
        self._truncated += sum(1 for rec in due if rec.end > frontier)
        self._finish_all(due)

    def _finish(self, rec: _Pending) -> None:
        self._finish_all((rec,))

    def _finish_all(self, recs: Iterable[_Pending]) -> None:
        """Settle ``recs`` (pending, not done): each leaves the books as a SettledRequest,
        in one loop for a tick's thousand spans (in C where the records are: ~0.2 µs a
        record against ~0.65, ``_pending.finish_all``)."""
        by_id, lanes, unqueue = self._by_id, self._lanes, self._unqueue
        if _c_finish_all is not None and not isinstance(by_id, dict):
            _c_finish_all(
                self, recs, by_id, self._count, self._fifo, lanes, self._requests, SettledRequest
            )
            return
        append = self._requests.append
        for rec in recs:
            rec.done = True
            unqueue(rec)
            workload = rec.workload
            dedup = rec.dedup
            if dedup and by_id.get(dedup) is rec:
                del by_id[dedup]
            lane = lanes.get(workload)
            if lane is not None:
                lane.active.pop(rec, None)
            energy = rec.energy_j
            # Handed over, not copied, and not kept: the request joiner may hold the record
            # a while after it settles (a short settle delay: up to its 15 s memory).
            rec.energy_j = None
            append(
                SettledRequest(
                    workload,
                    rec.model,
                    energy if energy is not None else {},
                    rec.gflops,
                    rec.end - rec.start,
                    rec.route,
                    rec.input_tokens,
                    rec.output_tokens,
                )
            )

    def _evict_newest(self, workload: str) -> None:
        # The newest: a burst into a full buffer cannot push out spans accepted before it.
        fifo = self._fifo[workload]
        rec = fifo.pop()
        while rec.done:  # each entry is skipped once: amortized O(1)
            rec = fifo.pop()
        if rec.energy_j:
            # Already holds settled energy: emit it so that requests still sum to in_spans.
            self._truncated += 1
            self._finish(rec)
            return
        self._dropped += 1
        rec.done = True
        self._unqueue(rec)
        if rec.dedup and self._by_id.get(rec.dedup) is rec:
            del self._by_id[rec.dedup]
        lane = self._lanes.get(rec.workload)
        if lane is not None:
            lane.active.pop(rec, None)

    def _maybe_compact(self) -> None:
        """Rebuild heaps when evicted or timed-out spans left too many dead entries."""
        entries = len(self._ends) + sum(
            len(lane.waiting) + len(lane.active_ends) for lane in self._lanes.values()
        )
        if entries <= 3 * self._n_pending + 3000:
            return
        self._ends.drop_done()
        for workload, lane in list(self._lanes.items()):
            lane.waiting.drop_done()
            lane.active_ends.drop_done()
            if not lane.waiting and not lane.active:
                del self._lanes[workload]
