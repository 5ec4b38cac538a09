import logging
import math
from typing import Any

import pytest

from jouled import config
from jouled.attribution.spans import Span
from jouled.attribution.stage import AttributionStage
from jouled.attribution.workloads import CpuTick
from jouled.clock import FakeClock
from jouled.pipeline.snapshot import EMPTY, frozen
from jouled.pipeline.tick import Tick

T0 = 1_700_000_000.0


class FakeTracker:
    """CPU time per tick as the test dictates; optionally a sub-tick CPU profile."""

    def __init__(self, shares: dict[str, float]) -> None:
        self.shares = shares
        self.profile: dict[str, tuple[float, ...]] = {}
        self.cuts: tuple[float, ...] = ()  # offsets within the tick, 0 and 1 excluded

    def tick(self, t: float | None = None) -> CpuTick:
        times: tuple[float, ...] = ()
        if self.profile and t is not None:
            times = (t - 1.0, *(t - 1.0 + c for c in self.cuts), t)
        return CpuTick(
            1.0,
            dict(self.shares),
            {w: frozenset([1]) for w in self.shares},
            profile_t=times,
            profile=dict(self.profile),
        )

    def workload_of(self, pid: int) -> str | None:
        return {101: "api"}.get(pid)

    def visible(self, pid: int) -> bool:
        return pid < 1000  # PIDs from 1000 up live in another PID namespace

    def unseen(self) -> dict[str, list[int]]:
        return {}

    def claimed(self) -> dict[int, str]:
        return {101: "api"}


def make_stage(**spans: Any) -> AttributionStage:
    cfg = config.validate(
        {
            "workloads": [{"name": "api", "match": {"pid": 1}}],
            "attribution": {"idle_power_watts": {"cpu": 10.0}},
            "spans": {"settle_seconds": 2.0, **spans},
        },
        "test",
    )
    return AttributionStage(cfg, tracker=FakeTracker({"api": 1.0}))


def tick(
    seq: int,
    joules: float = 110.0,
    gpu: float = 0.0,
    *,
    host: dict[tuple[str, str], float] | None = None,
    known_idle: dict[tuple[str, str], float] | None = None,
) -> Tick:
    """One second of energy: ``joules`` of RAPL CPU (or ``host``), ``gpu`` on board 0."""
    host = dict(host) if host is not None else {("cpu", "rapl"): joules}
    if gpu:
        host[("gpu", "nvml")] = gpu
    return Tick(
        seq=seq,
        t0=float(seq - 1),
        t1=float(seq),
        w0=T0 + seq - 1,
        w1=T0 + seq,
        domain_j=frozen({}),
        host_j=frozen(host),
        gpu_j=frozen({"0": gpu} if gpu else {}),
        known_idle_w=frozen(known_idle or {}),
    )


def test_two_overlapping_requests_split_1_to_3_by_gflops_and_everything_adds_up() -> None:
    stage = make_stage()
    assert stage.submit(
        [
            Span("api", "bert", T0 + 0.0, T0 + 2.0, gflops=10.0),
            Span("api", "bert", T0 + 0.0, T0 + 2.0, gflops=30.0),
        ]
    ) == (2, 0)
    snap = None
    for seq in range(1, 8):
        snap = stage.on_tick(tick(seq), EMPTY)
    assert snap is not None
    # 110 J per tick, 10 W idle excluded: 100 J per tick to the workload.
    assert snap.workload_energy_j[("api", "cpu", "rapl")] == pytest.approx(700.0)
    assert snap.idle_energy_j["cpu"] == pytest.approx(70.0)
    req = snap.requests[("api", "bert")]
    assert req.count == 2
    assert req.energy_sum_j == pytest.approx(200.0)  # the two ticks the spans covered
    assert req.gflops_total == 40.0
    # 200 J for 40 GFLOPs.
    assert snap.energy_per_gflop_j[("api", "bert")] == pytest.approx(5.0)
    # Requests of 50 J and 150 J: one in the (25, 50] bucket, the other in (100, 250].
    bounds = snap.buckets
    counts = dict(zip([*bounds, math.inf], req.bucket_counts, strict=True))
    assert counts[25.0] == 0 and counts[50.0] == 1 and counts[100.0] == 1 and counts[250.0] == 2
    settled = sum(v for k, v in snap.workload_in_spans_j.items() if k[0] == "api")
    settled += sum(v for k, v in snap.workload_outside_spans_j.items() if k[0] == "api")
    # Ticks 1..5 are settled at tick 7 (2 s delay): 500 J, of which 200 J in spans.
    assert settled == pytest.approx(500.0)
    assert snap.workload_in_spans_j[("api", "cpu")] == pytest.approx(200.0)


def test_a_span_after_its_ticks_settled_is_late_and_changes_nothing() -> None:
    stage = make_stage()
    for seq in range(1, 6):
        before = stage.on_tick(tick(seq), EMPTY)
    assert stage.submit([Span("api", "bert", T0 + 0.5, T0 + 1.5, gflops=1.0)]) == (0, 1)
    after = stage.on_tick(tick(6), EMPTY)
    assert after.spans_late == 1
    assert after.spans_received == 1
    assert ("api", "bert") not in after.requests
    assert after.workload_in_spans_j.get(("api", "cpu"), 0.0) == before.workload_in_spans_j.get(
        ("api", "cpu"), 0.0
    )


def test_rejections_are_counted_by_reason() -> None:
    stage = make_stage()
    stage.rejected("unknown_workload", 3)
    snap = stage.on_tick(tick(1), EMPTY)
    assert snap.spans_rejected == {"unknown_workload": 3}
    assert snap.spans_received == 3


def test_flush_settles_pending_spans_on_shutdown() -> None:
    stage = make_stage()
    stage.submit([Span("api", "bert", T0 + 0.0, T0 + 1.0, gflops=1.0)])
    stage.on_tick(tick(1), EMPTY)
    final = stage.flush(T0 + 1.0)
    assert final is not None
    assert final.requests[("api", "bert")].count == 1
    assert final.requests[("api", "bert")].energy_sum_j == pytest.approx(100.0)
    assert final.spans_pending == 0


def test_gpu_processes_of_the_workload_get_the_board() -> None:
    cfg = config.validate(
        {"workloads": [{"name": "api", "match": {"pid": 1}}], "attribution": {"idle": "share"}},
        "test",
    )
    stage = AttributionStage(
        cfg,
        tracker=FakeTracker({"api": 0.0}),
        gpu_processes=lambda: {0: {101: 50.0, 202: 50.0}},
    )
    snap = stage.on_tick(tick(1, joules=0.0, gpu=300.0), EMPTY)
    assert snap.workload_energy_j[("api", "gpu", "nvml")] == pytest.approx(150.0)
    assert snap.unattributed_energy_j[("gpu", "nvml")] == pytest.approx(150.0)


def test_span_accounting_always_balances() -> None:
    stage = make_stage()
    stage.submit(
        [
            Span("api", "m", T0 + 0.0, T0 + 1.0, gflops=1.0, trace_id="t", span_id="1"),
            Span("api", "m", T0 + 0.0, T0 + 1.0, gflops=1.0, trace_id="t", span_id="1"),  # dup
            Span("api", "m", T0 + 2.0, T0 + 1.0),  # end before start: refused by the splitter
        ]
    )
    stage.rejected("malformed", 2)
    for seq in range(1, 6):
        snap = stage.on_tick(tick(seq), EMPTY)
    stage.submit([Span("api", "m", T0 + 0.1, T0 + 0.2)])  # late
    snap = stage.on_tick(tick(6), EMPTY)
    assert snap.spans_received == 6
    assert snap.spans_settled == 1
    assert snap.spans_duplicate == 1
    assert snap.spans_late == 1
    assert sum(snap.spans_rejected.values()) == 3
    assert snap.spans_balance == 0
    final = stage.flush(T0 + 100)
    assert final is not None and final.spans_pending == 0 and final.spans_balance == 0


def test_a_short_request_gets_the_cpu_spent_during_it_not_a_share_of_wall_time() -> None:
    # The workload spends all of its tick's CPU in the first 100 ms, serving one request;
    # the rest of the second it idles. Even in time the request would get 10 %.
    stage = make_stage()
    tracker = stage.tracker
    assert isinstance(tracker, FakeTracker)
    tracker.cuts = tuple(k / 10 for k in range(1, 10))
    tracker.profile = {"api": (0.1, *([0.0] * 9))}
    stage.submit([Span("api", "bert", T0 + 1.0, T0 + 1.1, gflops=5.0)])
    for seq in range(1, 6):
        snap = stage.on_tick(tick(seq), EMPTY)
    req = snap.requests[("api", "bert")]
    assert req.count == 1
    assert req.energy_sum_j == pytest.approx(100.0)  # the whole active energy of its tick
    # Conservation still holds: settled ticks 1-3 = 300 J, 100 J of it in the span.
    assert snap.workload_in_spans_j[("api", "cpu")] == pytest.approx(100.0)
    assert snap.workload_in_spans_j[("api", "cpu")] + snap.workload_outside_spans_j[
        ("api", "cpu")
    ] == pytest.approx(300.0)


def test_an_even_profile_keeps_the_tick_whole() -> None:
    from jouled.attribution.stage import sub_ticks

    cpu = CpuTick(1.0, {"api": 1.0}, profile_t=(0.0, 0.5, 1.0), profile={"api": (0.5, 0.52)})
    t = Tick(1, 0.0, 1.0, T0, T0 + 1, frozen({}), frozen({}), frozen({}))
    assert sub_ticks(t, {"api": {"cpu": 10.0}}, cpu) == [
        (T0, T0 + 1, {"api": {"cpu": 10.0}}, {"api": 1.0})
    ]
    uneven = CpuTick(1.0, {"api": 1.0}, profile_t=(0.0, 0.5, 1.0), profile={"api": (0.9, 0.1)})
    parts = sub_ticks(t, {"api": {"cpu": 10.0, "gpu": 4.0}}, uneven)
    assert [(a - T0, b - T0) for a, b, _, _ in parts] == [(0.0, 0.5), (0.5, 1.0)]
    assert [busy["api"] for _, _, _, busy in parts] == pytest.approx([0.9, 0.1])
    assert parts[0][2]["api"]["cpu"] == pytest.approx(9.0)
    assert parts[1][2]["api"]["cpu"] == pytest.approx(1.0)
    # GPU energy is not driven by the CPU: it stays even in time.
    assert parts[0][2]["api"]["gpu"] == pytest.approx(2.0)


def test_reloaded_idle_power_applies_to_components_first_seen_after_the_reload() -> None:
    stage = make_stage()  # idle cpu 10 W, dram learned
    stage.on_tick(tick(1), EMPTY)  # only cpu seen so far
    cfg = config.validate(
        {
            "workloads": [{"name": "api", "match": {"pid": 1}}],
            "attribution": {"idle_power_watts": {"cpu": 20.0, "dram": 3.0}},
        },
        "test",
    )
    stage.reconfigure(cfg)
    stage.tracker = FakeTracker({"api": 1.0})  # the test's CPU shares, as before the reload
    t = tick(2)
    t = Tick(
        t.seq, t.t0, t.t1, t.w0, t.w1, t.domain_j,
        frozen({("cpu", "rapl"): 110.0, ("dram", "rapl"): 10.0}), t.gpu_j,
    )  # fmt: skip
    snap = stage.on_tick(t, EMPTY)
    assert snap.idle_power_w == {"cpu": 20.0, "dram": 3.0}
    assert snap.idle_energy_j["dram"] == pytest.approx(3.0)


def _early_and_late(
    host: dict[tuple[str, str], float], known: dict[tuple[str, str], float], request_j: float
) -> tuple[float, float]:
    """Energy of one request 3 s after start and of the same request after warm-up (30 s),
    on a host spending ``host`` joules a second, plus ``request_j`` CPU joules while each
    request runs."""
    cfg = config.validate(
        {"workloads": [{"name": "api", "match": {"pid": 1}}], "spans": {"settle_seconds": 2.0}},
        "test",
    )
    stage = AttributionStage(cfg, tracker=FakeTracker({"api": 1.0}))
    stage.submit(
        [
            Span("api", "bert", T0 + 2.0, T0 + 3.0, gflops=1.0),
            Span("api", "bert", T0 + 29.0, T0 + 30.0, gflops=1.0),
        ]
    )
    cpu_key = next(k for k in host if k[0] == "cpu")
    early = 0.0
    snap = None
    for seq in range(1, 40):
        joules = dict(host) if seq > 1 else dict.fromkeys(host, 0.0)  # tick 1: a baseline
        if seq in (3, 30):
            joules[cpu_key] += request_j
        snap = stage.on_tick(tick(seq, host=joules, known_idle=known), EMPTY)
        if seq == 10:  # the early request has settled, the late one has not begun
            early = snap.requests[("api", "bert")].energy_sum_j
    assert snap is not None
    req = snap.requests[("api", "bert")]
    assert req.count == 2
    return early, req.energy_sum_j - early


def test_early_requests_are_not_charged_the_estimates_idle_power() -> None:
    # Issue 14: on an estimated host a request 3 s after start got 8.45 J (5.07 J of it the
    # memory estimate's constant power) where the same batch after warm-up got 0.25 J. The
    # estimate knows its zero-load power (4 vCPU x 0.74 W, and all 5.07 W of memory): idle
    # from the first tick, so both requests get their 0.25 J.
    host = {("cpu", "estimate"): 4 * 0.74, ("dram", "estimate"): 5.07}
    early, late = _early_and_late(host, dict(host), request_j=0.25)
    assert early == pytest.approx(0.25)  # not 0.25 + 2.96 + 5.07 = 8.28 J
    assert late == pytest.approx(0.25)


def test_early_requests_are_not_charged_idle_that_is_still_being_learned() -> None:
    # A measured host (RAPL): idle must be learned. Until it is, the lowest power seen so far
    # is excluded, so the request at 3 s is not inflated either (50.25 J before).
    early, late = _early_and_late({("cpu", "rapl"): 50.0}, {}, request_j=0.25)
    assert early == pytest.approx(0.25)
    assert late == pytest.approx(0.25)


def test_gpu_processes_jouled_cannot_see_are_counted_and_warned_with_the_fix(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Issue 14: NVML reports GPU processes that are not under attribution.proc_path (jouled
    # in a container without the host's PIDs): the GPU's energy went unattributed silently.
    stage = make_stage()
    stage.set_gpu_processes(lambda: {0: {4242: 80.0, 101: 20.0}})  # 4242: not under /proc
    with caplog.at_level(logging.WARNING, logger="jouled.attribution.visibility"):
        for seq in range(1, 4):
            snap = stage.on_tick(tick(seq, gpu=100.0), EMPTY)
    assert snap.unseen_processes == {("nvml", "gpu-0"): 1}
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1  # once, not every tick
    assert "4242" in warned[0] and "hostPID" in warned[0]
    assert "attribution.proc_path" in warned[0]


def test_a_workload_whose_pid_is_not_under_proc_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = config.validate({"workloads": [{"name": "api", "match": {"pid": 4_000_000}}]}, "test")
    stage = AttributionStage(cfg)  # the real tracker, on this machine's /proc
    with caplog.at_level(logging.WARNING, logger="jouled.attribution.visibility"):
        snap = stage.on_tick(tick(1), EMPTY)
    assert snap.workload_processes == {"api": 0}
    assert snap.unseen_processes == {("workload_rule", "api"): 1}
    [warning] = [r.getMessage() for r in caplog.records]
    assert "workload api" in warning and "4000000" in warning and "hostPID" in warning


def test_the_splitters_degraded_paths_are_counted_and_exported() -> None:
    from dataclasses import replace

    from prometheus_client import CollectorRegistry, generate_latest

    from jouled.attribution.spans import SpanSplitter
    from jouled.exporter.attribution import AttributionCollector

    stage = make_stage()
    stage.splitter = SpanSplitter(settle_seconds=100.0, max_open_ticks=2, max_span_wait_s=10.0)
    stage.on_tick(tick(1), EMPTY)
    # The wall clock stepped back half a second: clamped to start where tick 1 ended.
    stage.on_tick(replace(tick(2), w0=T0 + 0.5, w1=T0 + 1.5), EMPTY)
    # A third open tick over a limit of two settles tick 1 early (forced); then tick 2.
    stage.on_tick(tick(3), EMPTY)
    # Straight to the splitter (the stage's span joiner holds spans back a moment): a span
    # whose end no tick will cover before it has waited max_span_wait_s (truncated).
    stage.splitter.add_span(Span("api", "m", T0 + 3.5, T0 + 50.0))
    stage.on_tick(tick(4), EMPTY)
    stage.splitter.settle(T0 + 300.0)  # long after: every tick settles, the span waited
    snap = stage.on_tick(tick(5), EMPTY)
    assert (snap.ticks_clamped, snap.ticks_forced, snap.spans_truncated) == (1, 2, 1)
    registry = CollectorRegistry()
    registry.register(AttributionCollector(lambda: replace(EMPTY, attribution=snap)))
    text = generate_latest(registry).decode()
    assert "jouled_splitter_clamped_ticks_total 1.0" in text
    assert "jouled_splitter_forced_ticks_total 2.0" in text
    assert "jouled_spans_truncated_total 1.0" in text
    assert "jouled_spans_accepted" not in text


def test_hostile_trace_shapes_count_each_request_once_and_the_books_balance() -> None:
    """Cycles, a span that is its own parent, one span id with different content, 2,000
    siblings united by their late parent, and spans whose parent never arrives: each request
    settles once, its energy is the workload's, and received = settled + late + rejected +
    duplicate + dropped + pending at every tick."""

    def span(trace: str, span_id: str, parent: str = "", end: float = 0.5) -> Span:
        return Span("api", "m", T0 + 0.1, T0 + end, trace_id=trace, span_id=span_id,
                    parent_id=parent)  # fmt: skip

    spans = [
        span("self", "a", "a"),
        span("self", "a", "a"),
        span("cycle", "a", "b"),
        span("cycle", "b", "c"),
        span("cycle", "c", "a"),
        span("dup", "a"),
        Span("api", "other", T0 + 0.2, T0 + 0.3, gflops=7.0, trace_id="dup", span_id="a"),
        *(span("family", f"k{i}", "p") for i in range(2000)),
        span("family", "p", end=0.9),  # wider: it stands for the 2,001 spans
        *(span("orphans", f"o{i}", f"never{i}") for i in range(10)),
    ]
    stage = make_stage()
    stage.submit(spans)
    first = stage.on_tick(tick(1), EMPTY)  # every span lies in this second
    assert first.spans_balance == 0
    api_j = sum(j for (w, _c, _s), j in first.workload_energy_j.items() if w == "api")
    for seq in range(2, 6):
        assert stage.on_tick(tick(seq), EMPTY).spans_balance == 0
    final = stage.flush(T0 + 100)
    assert final is not None and final.spans_balance == 0 and final.spans_pending == 0
    assert final.spans_received == len(spans)
    assert final.spans_settled == 4 + 10  # self, cycle, dup, family; the orphans each
    assert final.spans_duplicate == len(spans) - 14
    stats = final.requests[("api", "m")]
    assert stats.count == 14 and set(final.requests) == {("api", "m")}
    # Conservation: the requests cover 0.1 s to 0.9 s of a 100 J second, counted once.
    assert api_j == pytest.approx(100.0)
    assert stats.energy_sum_j == pytest.approx(80.0, rel=1e-6)


def test_spans_past_max_pending_spans_are_refused_counted_and_warned_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # At 5,000 spans/s and the 30 s settle ~155,000 spans wait to settle: the old fixed cap
    # of 100,000 refused a quarter of them with no log line. The cap is now a setting, and
    # reaching it says which one to change.
    stage = make_stage(max_pending_spans=1000)
    assert stage.splitter.max_pending == 1000
    spans = [
        Span(
            "api",
            "m",
            T0 + 0.001 * i,
            T0 + 0.001 * i + 0.005,
            trace_id=f"{i:032x}",
            span_id=f"{i:016x}",
        )
        for i in range(1500)
    ]
    with caplog.at_level(logging.WARNING, logger="jouled.attribution.stage"):
        assert stage.submit(spans[:1200]) == (1000, 0)
        assert stage.submit(spans[1200:]) == (0, 0)  # within the minute: counted, no new line
    warned = [r.getMessage() for r in caplog.records if "max_pending_spans" in r.getMessage()]
    assert len(warned) == 1
    assert "spans.max_pending_spans (1000), the latest refused of workload 'api'" in warned[0]
    assert "200 refused" in warned[0]
    assert "lower spans.settle_seconds" in warned[0]
    snap = stage.on_tick(tick(1), EMPTY)
    assert snap.spans_rejected == {"pending_full": 500}
    assert snap.spans_received == 1500
    assert snap.spans_pending == 1000


def test_max_pending_spans_has_a_floor_and_a_ceiling() -> None:
    for bad in (999, 10_000_001):
        with pytest.raises(config.ConfigError, match="max_pending_spans"):
            make_stage(max_pending_spans=bad)
    assert make_stage().splitter.max_pending == 100_000


def test_the_joiner_remembers_half_as_many_requests_as_spans_may_wait() -> None:
    # Requests are remembered 15 s after they end, spans wait ~30 s: a cap raised for a
    # higher rate raises the joiner's too, never below its 50,000.
    assert make_stage().joiner.max_requests == 50_000
    assert make_stage(max_pending_spans=250_000).joiner.max_requests == 125_000


def _two_workloads(**spans: Any) -> AttributionStage:
    cfg = config.validate(
        {
            "workloads": [
                {"name": "api", "match": {"pid": 1}},
                {"name": "b", "match": {"pid": 2}},
            ],
            "attribution": {"idle_power_watts": {"cpu": 10.0}},
            "spans": {"settle_seconds": 2.0, **spans},
        },
        "test",
    )
    return AttributionStage(cfg, tracker=FakeTracker({"api": 1.0}))


def _spans(workload: str, n: int, length_s: float, at: float = 0.0) -> list[Span]:
    return [
        Span(
            workload,
            "m",
            T0 + at + 0.001 * i,
            T0 + at + 0.001 * i + length_s,
            trace_id=f"{workload}{i}",
            span_id=f"{i:016x}",
        )
        for i in range(n)
    ]


def _cap_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "spans.max_pending_spans (" in r.getMessage()]


def test_pending_spans_pushed_out_at_the_cap_warn_too(caplog: pytest.LogCaptureFixture) -> None:
    # A workload below its fair share makes room from the largest holder's newest spans: none
    # of its own is refused, but spans are lost all the same.
    stage = _two_workloads(max_pending_spans=1000)
    with caplog.at_level(logging.WARNING, logger="jouled.attribution.stage"):
        assert stage.submit(_spans("api", 1000, 0.005)) == (1000, 0)
        assert _cap_warnings(caplog) == []
        assert stage.submit(_spans("b", 300, 0.005)) == (300, 0)
    (warned,) = _cap_warnings(caplog)
    assert "0 refused" in warned and "300 dropped and 0 cut short" in warned
    assert stage.splitter.stats.dropped_spans == 300


def test_long_requests_cut_short_at_the_cap_warn(caplog: pytest.LogCaptureFixture) -> None:
    # LLM-length requests already hold settled energy when the cap pushes them out: they are
    # settled early with what they have (truncated), the usual loss with long requests.
    stage = _two_workloads(max_pending_spans=1000)
    assert stage.submit(_spans("api", 1000, 20.0)) == (1000, 0)
    for seq in range(1, 7):
        stage.on_tick(tick(seq), EMPTY)
    with caplog.at_level(logging.WARNING, logger="jouled.attribution.stage"):
        assert stage.submit(_spans("b", 300, 20.0, at=6.5)) == (300, 0)
    (warned,) = _cap_warnings(caplog)
    assert "0 dropped and 300 cut short" in warned
    assert stage.splitter.stats.truncated_spans == 300


def test_the_cap_warning_repeats_after_a_minute_not_before(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    cfg = config.validate(
        {
            "workloads": [{"name": "api", "match": {"pid": 1}}],
            "spans": {"settle_seconds": 2.0, "max_pending_spans": 1000},
        },
        "test",
    )
    stage = AttributionStage(cfg, tracker=FakeTracker({"api": 1.0}), clock=clock)
    spans = _spans("api", 1300, 0.005)
    with caplog.at_level(logging.WARNING, logger="jouled.attribution.stage"):
        stage.submit(spans[:1100])
        clock.advance(59.0)
        stage.submit(spans[1100:1200])
        assert len(_cap_warnings(caplog)) == 1
        clock.advance(1.0)
        stage.submit(spans[1200:])
    warned = _cap_warnings(caplog)
    assert len(warned) == 2 and "300 refused" in warned[1]


def test_an_invalid_span_at_the_cap_is_not_reported_as_the_cap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stage = make_stage(max_pending_spans=1000)
    assert stage.submit(_spans("api", 1000, 0.005)) == (1000, 0)
    bad = Span("api", "m", T0 + 5.0, T0 + 4.0)  # ends before it starts
    with caplog.at_level(logging.WARNING, logger="jouled.attribution.stage"):
        assert stage.submit([bad]) == (0, 0)
    assert _cap_warnings(caplog) == []
    assert stage.on_tick(tick(1), EMPTY).spans_rejected == {"invalid": 1}
