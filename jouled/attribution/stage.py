"""The attribution stage of the tick pipeline: host energy -> workloads -> request spans.

Each tick it measures the workloads' CPU time and GPU use, splits the tick's energy
(``share.split_tick``), hands each workload's energy to the span splitter, settles what is
old enough, and publishes an immutable ``AttributionSnapshot`` for the exporter. It is also
the daemon's span sink: the ingest listener submits decoded spans here.

Over 400 lines because the stage's per-tick sequence (CPU, idle, split, sub-ticks, settle,
freeze) runs over its running totals; the arithmetic is in share.py, spans.py and
requests.py.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import threading
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from jouled.attribution import spans as spans_mod
from jouled.attribution.matchers import tracker_for
from jouled.attribution.requests import RequestJoiner
from jouled.attribution.share import IdleMode, IdleModel, Key, split_tick
from jouled.attribution.spans import SettledRequest, SettleResult, Span, SpanSplitter
from jouled.attribution.visibility import Visibility
from jouled.attribution.workloads import CpuTick
from jouled.clock import Clock, SystemClock
from jouled.config import Config
from jouled.pipeline.attribution import AttributionSnapshot, RequestStats
from jouled.pipeline.snapshot import Snapshot, frozen
from jouled.pipeline.tick import Tick
from jouled.throttle import Throttle

log = logging.getLogger(__name__)

# Reasons the sink itself refuses a decoded span (jouled_spans_rejected_total{reason}).
PENDING_FULL = "pending_full"
INVALID = "invalid"

GpuProcesses = Callable[[], Mapping[int, Mapping[int, float]]]


class Tracker(Protocol):
    """What the stage reads of its process tracker: ``ProcessTracker``, or a test's fake."""

    def tick(self, t: float | None = None) -> CpuTick:
        """CPU seconds per workload and of the host since the previous call."""
        ...

    def workload_of(self, pid: int) -> str | None:
        """The workload that claims ``pid``, None for none."""
        ...

    def claimed(self) -> dict[int, str]:
        """pid -> workload for every claimed process."""
        ...

    def visible(self, pid: int) -> bool:
        """Whether ``pid`` is under the tracker's /proc (a process jouled can see)."""
        ...

    def unseen(self) -> dict[str, list[int]]:
        """Workload -> PIDs its rules name that are not under /proc."""
        ...


# How long a request span is remembered for nested spans of the same request: the spread
# between related spans' exports is the exporter's batch delay (OTel's BatchSpanProcessor and
# Triton's bsp_schedule_delay: 5 s) plus the time between their ends. At 1,000 spans/s this
# holds ~15,000 small records (about 5 MB).
JOIN_MEMORY_S = 15.0


def workload_models(cfg: Config) -> dict[str, str]:
    """workload -> the model it serves (``workloads[].model``), where configured."""
    return {w.name: w.model for w in cfg.workloads if w.model is not None}


# CPU-driven components follow the sub-tick CPU profile; GPU energy stays even in time.
_PROFILED = frozenset({"cpu", "dram", "other"})
# A profile whose sub-interval densities all lie within this factor of the mean is even
# enough to hand the splitter one whole tick (cheaper, and no different in effect).
_EVEN = 1.25


def sub_ticks(
    tick: Tick, energy_j: Mapping[str, Mapping[str, float]], cpu: CpuTick
) -> list[tuple[float, float, dict[str, dict[str, float]], dict[str, float]]]:
    """Cut a tick's workload energy where the workloads' CPU was sampled, so that energy
    goes to the requests open while the CPU was spent, not evenly over the tick.

    Per workload, sub-interval k gets the share of the tick's CPU-driven energy that its CPU
    seconds were of the tick's (evenly by time when the workload's samples show no CPU);
    the shares add up to the tick's energy exactly as the parts of 1 do. Each part carries
    the workloads' CPU seconds in it, for the splitter's CPU budget.
    """
    busy = {w: cpu.workload_s.get(w, 0.0) for w in energy_j}
    whole = [(tick.w0, tick.w1, {w: dict(parts) for w, parts in energy_j.items()}, busy)]
    times = cpu.profile_t
    if len(times) < 3 or not cpu.profile or tick.seconds <= 0:
        return whole
    span = times[-1] - times[0]
    if span <= 0:
        return whole
    lengths = [b - a for a, b in itertools.pairwise(times)]
    even = [length / span for length in lengths]
    fractions: dict[str, list[float]] = {}
    uneven = False
    for workload in energy_j:
        incs = cpu.profile.get(workload)
        total = sum(incs) if incs else 0.0
        if not incs or total <= 0:
            fractions[workload] = even
            continue
        frac = [inc / total for inc in incs]
        fractions[workload] = frac
        uneven = uneven or any(
            not (f <= e * _EVEN and f >= e / _EVEN) for f, e in zip(frac, even, strict=True)
        )
    if not uneven:
        return whole
    out = []
    for k in range(len(lengths)):
        # Wall bounds: the tick's wall interval cut at the same monotonic offsets.
        w0 = tick.w1 - (tick.t1 - times[k]) if k else tick.w0
        w1 = tick.w1 - (tick.t1 - times[k + 1]) if k + 1 < len(lengths) else tick.w1
        part = {
            w: {c: j * (fractions[w][k] if c in _PROFILED else even[k]) for c, j in parts.items()}
            for w, parts in energy_j.items()
        }
        part_busy = {w: busy[w] * fractions[w][k] for w in energy_j}
        out.append((w0, w1, part, part_busy))
    return out


class _Histogram:
    """One (workload, model)'s settled requests: counts per joules bucket (``bounds``, the
    upper bounds; one more for +Inf), their joules, GFLOPs and tokens. Slots, which the
    compiled ``_book`` (``_pending.book``) reads and writes."""

    __slots__ = ("bounds", "counts", "gflops", "input_tokens", "n", "output_tokens", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.n = 0
        self.gflops = 0.0
        self.input_tokens = 0
        self.output_tokens = 0

    def freeze(self) -> RequestStats:
        cumulative, acc = [], 0
        for c in self.counts:
            acc += c
            cumulative.append(acc)
        return RequestStats(
            self.n,
            self.total,
            tuple(cumulative),
            self.gflops,
            self.input_tokens,
            self.output_tokens,
        )


def _book(
    requests: Iterable[SettledRequest],
    hists: dict[tuple[str, str], _Histogram],
    bounds: tuple[float, ...],
    worked: dict[tuple[str, str], list[float]],
) -> None:
    """Book settled requests into the histograms of their (workload, model) (made on first
    use) and, for those with work (GFLOPs > 0), their [joules, GFLOPs] into ``worked``. A
    request's joules are ``math.fsum`` of its energy's components (``sum`` of one). The
    reference for ``_pending.book``, which does the same in C (``_c_book``)."""
    fsum, bisect_left = math.fsum, bisect.bisect_left
    for req in requests:
        key = (req.workload, req.model)
        hist = hists.get(key)
        if hist is None:
            hist = hists[key] = _Histogram(bounds)
        energy = req.energy_j
        joules = fsum(energy.values()) if len(energy) > 1 else sum(energy.values())
        # _Histogram.observe, inlined: once per settled request.
        hist.counts[bisect_left(bounds, joules)] += 1
        hist.total += joules
        hist.n += 1
        gflops = req.gflops
        if gflops is not None:
            hist.gflops += gflops
        if req.input_tokens:
            hist.input_tokens += req.input_tokens
        if req.output_tokens:
            hist.output_tokens += req.output_tokens
        if gflops is not None and gflops > 0:
            got = worked.get(key)
            if got is None:
                worked[key] = [joules, gflops]
            else:
                got[0] += joules
                got[1] += gflops


# The stage's booking in C where it is built (tests set it to None to run ``_book``).
_c_book: Callable[..., int] | None = spans_mod._compiled_table("book")


class _Window:
    """Joules and GFLOPs of the requests settled in the last ``seconds``, in one bucket per
    settle call: memory is bounded by the window's ticks, not by the request rate.

    The buckets are doubles in one ``array('d')`` (wall, joules, GFLOPs; the live ones from
    ``_head``), 24 bytes a bucket and at most 32 expired ones kept: ~8 KB for the default
    300 s window (``spans.window``) at a 1 s tick, where a list of three floats a bucket
    held ~42 KB, 2.0 MB for 50 models, reached minutes after the daemon benchmark's window
    had closed."""

    __slots__ = ("_data", "_gflops", "_head", "_joules", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._data = array("d")  # wall, joules, gflops per bucket, oldest first
        self._head = 0  # where the oldest live bucket starts in _data
        self._joules = 0.0
        self._gflops = 0.0

    def add(self, wall: float, joules: float, gflops: float) -> None:
        data = self._data
        if len(data) > self._head and data[-3] == wall:
            data[-2] += joules
            data[-1] += gflops
        else:
            data.extend((wall, joules, gflops))
        self._joules += joules
        self._gflops += gflops

    def ratio(self, now: float) -> float | None:
        data, head, oldest = self._data, self._head, now - self.seconds
        while head < len(data) and data[head] < oldest:
            self._joules -= data[head + 1]
            self._gflops -= data[head + 2]
            head += 3
        if head == len(data):
            del data[:]
            self._head = 0
            self._joules = self._gflops = 0.0  # no drift from repeated subtraction
            return None
        if head >= 96 or 2 * head > len(data):  # 32 expired buckets, or half: they go
            del data[:head]
            head = 0
        self._head = head
        return self._joules / self._gflops if self._gflops > 0 else None


class AttributionStage:
    name = "attribution"

    @property
    def off_loop(self) -> bool:
        """The sampler runs on_tick on a worker thread (``lock`` guards the books) when the
        tick has work: workloads to measure or spans to settle. An idle daemon's tick is
        microseconds, less than the hand-off to a thread."""
        return bool(self._workloads) or self.splitter.pending > 0

    def __init__(
        self,
        cfg: Config,
        *,
        tracker: Tracker | None = None,
        gpu_processes: GpuProcesses | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.tracker: Tracker = tracker or tracker_for(cfg)
        self._gpu_processes = gpu_processes
        self.visibility = Visibility(cfg.attribution.proc_path)
        self._gpu_unseen: dict[str, list[int]] = {}
        self._mode: IdleMode = cfg.attribution.idle
        self._idle_cfg = cfg.attribution.idle_power_watts
        self._idle: dict[Key, IdleModel] = {}
        self._gpu_idle: dict[str, IdleModel] = {}
        self.splitter = SpanSplitter(
            settle_seconds=cfg.spans.settle_seconds,
            max_pending_spans=cfg.spans.max_pending_spans,
        )
        # Nested spans of one request (Triton's three SERVER spans) count once: each span is
        # remembered for JOIN_MEMORY_S after it ends, longer than exporters' batch delays.
        self.joiner = RequestJoiner(
            self.splitter,
            memory_s=JOIN_MEMORY_S,
            fallback_models=workload_models(cfg),
            # Half the pending cap: the joiner remembers requests 15 s after they end, about
            # half as long as spans wait to settle, so a cap raised for a higher rate raises
            # both (at 5,000 spans/s the fixed 50,000 covered 10 s, not 15).
            max_requests=max(50_000, cfg.spans.max_pending_spans // 2),
        )
        self.splitter_settle_s = cfg.spans.settle_seconds
        self._late_longest_s = 0.0
        self._late_logged_at = -math.inf
        self._full_log = Throttle(clock or SystemClock(), 60.0)  # the pending cap's warning
        self._buckets = tuple(cfg.spans.buckets)
        self._window_s = cfg.spans.window
        self._workloads = [w.name for w in cfg.workloads]
        self._workload_j: dict[tuple[str, str, str], float] = {}
        self._idle_j: dict[str, float] = {}
        self._unattr_j: dict[Key, float] = {}
        self._in_spans: dict[tuple[str, str], float] = {}
        self._outside: dict[tuple[str, str], float] = {}
        self._hist: dict[tuple[str, str], _Histogram] = {}
        self._recent: dict[tuple[str, str], _Window] = {}
        self._received = self._late = self._settled = 0
        self._rejected: dict[str, int] = {}
        self.last: AttributionSnapshot | None = None
        # The tick runs on the sampler's worker thread, spans arrive from the ingest pool:
        # whoever changes the books holds this (the event loop never waits on it).
        self.lock = threading.RLock()

    def set_gpu_processes(self, fn: GpuProcesses | None) -> None:
        self._gpu_processes = fn

    def reconfigure(self, cfg: Config) -> None:
        """Apply reloaded workloads and idle settings; totals and pending spans carry on."""
        with self.lock:
            self._reconfigure(cfg)

    def _reconfigure(self, cfg: Config) -> None:
        self.tracker = tracker_for(cfg)
        self.visibility.proc_path = cfg.attribution.proc_path
        self._workloads = [w.name for w in cfg.workloads]
        self.joiner.fallback_models = workload_models(cfg)
        self._mode = cfg.attribution.idle
        # Models made from now on read the new settings; those already learning are updated.
        self._idle_cfg = cfg.attribution.idle_power_watts
        for (component, _source), model in self._idle.items():
            model.configured_w = self._configured_idle_w(component)
        for model in self._gpu_idle.values():
            model.configured_w = self._configured_idle_w("gpu")

    def _configured_idle_w(self, component: str) -> float | None:
        value: float | None = getattr(self._idle_cfg, component, None)
        return value

    def _idle_power(self, store: dict[Any, IdleModel], key: Any, component: str) -> IdleModel:
        model = store.get(key)
        if model is None:
            model = store[key] = IdleModel(self._configured_idle_w(component))
        return model

    # --- the span sink (called by the ingest listener on the same event loop) ---
    def known_workloads(self) -> set[str]:
        return set(self._workloads)

    def default_models(self) -> Mapping[str, str]:
        """workload -> its ``workloads[].model``, for spans that name no model."""
        return self.joiner.fallback_models

    def workload_pids(self) -> dict[int, str]:
        """pid -> workload of every process a workload claims (the ingest's sender check)."""
        return self.tracker.claimed()

    def submit(self, spans: Sequence[Span]) -> tuple[int, int]:
        """Queue decoded spans; (accepted, late). Each counts as received; a late one (its
        time already settled) is counted, never split. The rest were refused and are counted
        under ``spans_rejected``: ``pending_full`` (the pending cap is reached and the span's
        workload holds its fair share) or ``invalid`` (values the splitter cannot hold; the
        ingest rules reject them first, so this only guards other callers). Called by the
        ingest listeners on their pool (it may wait for a tick); never raises for a bad span."""
        with self.lock:
            return self._submit(spans)

    def _submit(self, spans: Sequence[Span]) -> tuple[int, int]:
        accepted = late = 0
        splitter = self.splitter
        pushed_out = splitter.dropped + splitter.truncated  # only the cap does it in a submit
        refused_by: str | None = None

        def one(span: Span) -> None:
            # A span the joiner's common case did not take: ``add`` and its verdict.
            nonlocal accepted, late, refused_by
            self._received += 1
            try:
                verdict = self.joiner.add(span)
            except ValueError as exc:
                log.debug("span refused by the splitter: %s", exc)
                self._rejected[INVALID] = self._rejected.get(INVALID, 0) + 1
                return
            if verdict == "late":
                late += 1
                self._note_late(span)
            elif verdict == "refused":
                self._rejected[PENDING_FULL] = self._rejected.get(PENDING_FULL, 0) + 1
                refused_by = span.workload
            else:
                accepted += 1

        lone = self.joiner.add_all(spans, one)  # new requests of one span: all "accepted"
        self._received += lone
        accepted += lone
        self._late += late
        if refused_by is not None or splitter.dropped + splitter.truncated != pushed_out:
            self._note_full(refused_by)
        return accepted, late

    def _note_full(self, refused_by: str | None) -> None:
        """One warning a minute at most while the pending cap refuses spans or pushes pending
        ones out (dropped before any energy, or settled early with what they had)."""
        if self._full_log.allow() is None:
            return
        stats = self.splitter.stats
        log.warning(
            "spans waiting to settle reached spans.max_pending_spans (%d)%s: %d refused "
            '(jouled_spans_rejected_total{reason="pending_full"}), %d dropped and %d cut '
            "short so far; about spans/s x (spans.settle_seconds %.0fs + the tick + the "
            "exporter's batch delay) wait: raise spans.max_pending_spans (~0.3-0.4 KB a "
            "span) or lower spans.settle_seconds",
            self.splitter.max_pending,
            f", the latest refused of workload {refused_by!r}" if refused_by else "",
            self._rejected.get(PENDING_FULL, 0),
            stats.dropped_spans,
            stats.truncated_spans,
            self.splitter_settle_s,
        )

    def _note_late(self, span: Span) -> None:
        """One warning a minute at most, with what to change."""
        self._late_longest_s = max(self._late_longest_s, span.end - span.start)
        now = span.end
        if now - self._late_logged_at >= 60.0:
            self._late_logged_at = now
            log.warning(
                "spans arrive after their time settled and are not counted (late); the "
                "longest lasted %.1fs: raise spans.settle_seconds (%.0fs) above your longest "
                "request plus the exporter's batch delay",
                self._late_longest_s,
                self.splitter_settle_s,
            )

    def rejected(self, reason: str, n: int) -> None:
        with self.lock:
            self._received += n
            self._rejected[reason] = self._rejected.get(reason, 0) + n

    # --- the tick ---
    def _idle_w(
        self, host_j: Mapping[Key, float], seconds: float, known: Mapping[Key, float]
    ) -> dict[Key, float]:
        out = {}
        for key, joules in host_j.items():
            model = self._idle_power(self._idle, key, key[0])
            model.known_w = known.get(key)  # the estimate's own zero-load power
            model.observe(joules, seconds)
            out[key] = model.power_w
        return out

    def _gpu_weights(self) -> dict[str, dict[str, float]]:
        """GPU index -> workload ("" for processes of no workload) -> summed SM use."""
        weights: dict[str, dict[str, float]] = {}
        if self._gpu_processes is None:
            return weights
        try:
            per_gpu = self._gpu_processes()
        except Exception:
            log.exception("reading GPU processes failed; GPU energy stays unattributed")
            return weights
        self._gpu_unseen = {}
        for index, pids in per_gpu.items():
            per: dict[str, float] = {}
            for pid, weight in pids.items():
                owner = self.tracker.workload_of(pid) or ""
                per[owner] = per.get(owner, 0.0) + weight
                if not owner and not self.tracker.visible(pid):
                    self._gpu_unseen.setdefault(str(index), []).append(pid)
            weights[str(index)] = per
        return weights

    def on_tick(self, tick: Tick, snapshot: Snapshot) -> AttributionSnapshot:
        with self.lock:
            return self._on_tick(tick)

    def _on_tick(self, tick: Tick) -> AttributionSnapshot:
        cpu = self.tracker.tick(tick.t1)
        seconds = tick.seconds
        idle_w = self._idle_w(tick.host_j, seconds, tick.known_idle_w)
        gpu_idle_w = {}
        for device, joules in tick.gpu_j.items():
            model = self._idle_power(self._gpu_idle, device, "gpu")
            model.observe(joules, seconds)
            gpu_idle_w[device] = model.power_w
        gpu_weights = self._gpu_weights()
        self.visibility.update(tick.w1, self.tracker.unseen(), self._gpu_unseen)
        shares = split_tick(
            tick.host_j,
            seconds,
            idle_w=idle_w,
            cpu_s=cpu.workload_s,
            host_busy_s=cpu.host_busy_s,
            gpu_j=tick.gpu_j,
            gpu_weights=gpu_weights,
            gpu_idle_w=gpu_idle_w,
            mode=self._mode,
        )
        for (component, _source), j in shares.idle_j.items():
            self._idle_j[component] = self._idle_j.get(component, 0.0) + j
        for key, j in shares.unattributed_j.items():
            self._unattr_j[key] = self._unattr_j.get(key, 0.0) + j
        per_component: dict[str, dict[str, float]] = {}
        for workload, parts in shares.workload_j.items():
            mine = per_component.setdefault(workload, {})
            for (component, source), j in parts.items():
                wkey = (workload, component, source)
                self._workload_j[wkey] = self._workload_j.get(wkey, 0.0) + j
                mine[component] = mine.get(component, 0.0) + j
        if seconds > 0:
            for w0, w1, energy, busy in sub_ticks(tick, per_component, cpu):
                self.splitter.add_tick(w0, w1, energy, busy)
        self._absorb(self.splitter.settle(tick.w1), tick.w1)
        self.joiner.expire(tick.w1)
        idle_power: dict[str, float] = {}
        for (component, _source), model in self._idle.items():
            if component != "gpu":
                idle_power[component] = idle_power.get(component, 0.0) + model.power_w
        if self._gpu_idle:
            idle_power["gpu"] = sum(m.power_w for m in self._gpu_idle.values())
        self.last = self._freeze(cpu.workload_pids, idle_power, tick.w1)
        return self.last

    def flush(self, now_wall: float) -> AttributionSnapshot | None:
        """Settle everything (SIGTERM drain): pending spans get the energy they have."""
        with self.lock:
            return self._flush(now_wall)

    def _flush(self, now_wall: float) -> AttributionSnapshot | None:
        self._absorb(self.splitter.flush(), now_wall)
        if self.last is None:
            return None
        self.last = self._freeze(
            {w: frozenset() for w in self.last.workload_processes},
            dict(self.last.idle_power_w),
            now_wall,
        )
        return self.last

    def _absorb(self, result: SettleResult, now_wall: float) -> None:
        pairs = ((self._in_spans, result.in_spans_j), (self._outside, result.outside_j))
        for target, settled in pairs:
            for workload, parts in settled.items():
                for component, j in parts.items():
                    k = (workload, component)
                    target[k] = target.get(k, 0.0) + j
        self._settled += len(result.requests)
        # Per (workload, model): [joules, GFLOPs] of its requests with work, added to its
        # per-GFLOP window once per call (they share ``now_wall``).
        worked: dict[tuple[str, str], list[float]] = {}
        requests = result.requests
        done = 0
        if _c_book is not None:  # the same loop in C, up to a request it does not take
            done = _c_book(requests, self._hist, self._buckets, worked, _Histogram, SettledRequest)
        if done < len(requests):
            _book(requests[done:] if done else requests, self._hist, self._buckets, worked)
        for key, (joules, gflops) in worked.items():
            window = self._recent.get(key)
            if window is None:
                window = self._recent[key] = _Window(self._window_s)
            window.add(now_wall, joules, gflops)

    def _freeze(
        self,
        pids: Mapping[str, frozenset[int]],
        idle_power: Mapping[str, float],
        now_wall: float,
    ) -> AttributionSnapshot:
        per_gflop = {}
        for key, window in self._recent.items():
            ratio = window.ratio(now_wall)
            if ratio is not None:
                per_gflop[key] = ratio
        stats = self.splitter.stats
        return AttributionSnapshot(
            workload_energy_j=frozen(self._workload_j),
            idle_energy_j=frozen(self._idle_j),
            idle_power_w=frozen(idle_power),
            unattributed_energy_j=frozen(self._unattr_j),
            workload_in_spans_j=frozen(self._in_spans),
            workload_outside_spans_j=frozen(self._outside),
            workload_processes=frozen({w: len(pids.get(w, ())) for w in self._workloads}),
            unseen_processes=frozen(self.visibility.unseen),
            requests=frozen({k: h.freeze() for k, h in self._hist.items()}),
            energy_per_gflop_j=frozen(per_gflop),
            buckets=self._buckets,
            spans_received=self._received,
            spans_late=self._late,
            spans_rejected=frozen(self._rejected),
            spans_pending=stats.pending_spans,
            spans_settled=self._settled,
            spans_duplicate=stats.duplicate_spans + self.joiner.nested,
            spans_dropped=stats.dropped_spans,
            spans_truncated=stats.truncated_spans,
            ticks_forced=stats.forced_ticks,
            ticks_clamped=stats.clamped_ticks,
        )
