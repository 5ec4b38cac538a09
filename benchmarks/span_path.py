"""The span path in one process, stage by stage: decode + validate, queue, tick + settle + book.

What a real ``jouled run`` does with spans at ``--rate`` spans/s, without the network or
the host's processes, so that each change to the path can be measured in seconds:

- bodies made by the real OpenTelemetry Python SDK (``TracerProvider``, the OTLP protobuf
  encoder the exporters use): per workload a batch every 5 s (the ``BatchSpanProcessor``'s
  schedule delay), ``--rate`` / workloads spans a second each, 5 ms SERVER spans with the
  attributes of an instrumented FastAPI server and GenAI model and token counts, as
  ``benchmarks.span_sender`` sends them;
- ``decode_otlp_protobuf`` with the daemon's rules, ``AttributionStage.submit`` (request
  joiner, splitter), and one ``AttributionStage.on_tick`` a (virtual) second with a fake
  process tracker, so the default 30 s settle delay runs in full;
- CPU time per stage per span (``time.thread_time``): check (each scope checked as upb
  would parse it: the compiled check, or upb under ``JOULED_PURE_PYTHON=1``), read + select
  (the rest of the decode: off the wire straight into ``Span``s where compiled), queue,
  tick; and the Python heap held by the spans in flight at steady state (tracemalloc, a
  second pass) per span.

    .venv/bin/python -m benchmarks.span_path --seconds 90 --rate 1000
    .venv/bin/python -m benchmarks.span_path --span-ms 2000   # LLM requests, ~2,000 open
    .venv/bin/python -m benchmarks.span_path --evict-mb 64    # caches cold, as in the daemon
    JOULED_PURE_PYTHON=1 .venv/bin/python -m benchmarks.span_path   # without the C extensions
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
import tracemalloc
from typing import Any

from benchmarks._util import machine, save
from benchmarks.span_sender import model_names, record_request

T0 = 1_800_000_000.0  # virtual wall clock start (2027), whole seconds
BATCH_DELAY_S = 5


def sdk_bodies(
    rate: int, seconds: int, workloads: int, span_ms: float = 5.0
) -> list[tuple[float, bytes]]:
    """(virtual send time, body) in send order: the SDK's encoding of its spans."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class Keep(SpanExporter):
        def __init__(self) -> None:
            self.spans: list[Any] = []

        def export(self, spans: Any) -> SpanExportResult:
            self.spans.extend(spans)
            return SpanExportResult.SUCCESS

    models = model_names(workloads)
    per_s = rate // workloads
    out: list[tuple[float, bytes]] = []
    for w in range(workloads):
        keep = Keep()
        provider = TracerProvider(resource=Resource.create({"service.name": f"w{w}"}))
        provider.add_span_processor(SimpleSpanProcessor(keep))
        tracer = provider.get_tracer("fastapi-app", "0.1.0")
        offset = w / workloads  # the workloads' exporters tick out of step
        for s in range(seconds):
            for i in range(per_s):
                end = int((T0 + s + offset + (i + 0.5) / per_s) * 1e9)
                model = models[w][(s * per_s + i) % 5]
                record_request(tracer, end, model, int(span_ms * 1e6))
            if (s + 1) % BATCH_DELAY_S == 0 or s == seconds - 1:
                for k in range(0, len(keep.spans), 512):
                    body = encode_spans(keep.spans[k : k + 512]).SerializeToString()
                    out.append((T0 + s + 1 + offset, body))
                keep.spans.clear()
        provider.shutdown()
    out.sort(key=lambda x: x[0])
    return out


def _stage(workloads: int, models: list[list[str]]) -> Any:
    from jouled.attribution.stage import AttributionStage
    from jouled.attribution.workloads import CpuTick
    from jouled.config import Config

    names = [f"w{w}" for w in range(workloads)]

    class Tracker:
        def tick(self, t: float | None = None) -> CpuTick:
            return CpuTick(1.0, dict.fromkeys(names, 0.08), {n: frozenset([1]) for n in names})

        def workload_of(self, pid: int) -> str | None:
            return None

        def claimed(self) -> dict[int, str]:
            return {}

        def visible(self, pid: int) -> bool:
            return True

        def unseen(self) -> dict[str, list[int]]:
            return {}

    per_token = {m: 14.0 for ms in models for m in ms}
    cfg = Config.model_validate(
        {
            "workloads": [{"name": n, "match": {"cmdline": f"^{n}$"}} for n in names],
            "spans": {"gflops_per_token": per_token},
        }
    )
    return AttributionStage(cfg, tracker=Tracker()), cfg


class _Evictor:
    """Copies ``mb`` MiB over ``mb`` MiB between the stages' steps (not timed), as the host's
    other processes and the daemon's other threads do between a batch and the next: each step
    then finds its data and code out of the CPU caches, as in the daemon, where a step's
    tables (tens of thousands of spans in flight) are not touched again for ~0.25-1 s."""

    def __init__(self, mb: int) -> None:
        self._buf = bytearray(mb << 20)
        self._src = bytes(range(256)) * (mb << 12)

    def __call__(self) -> None:
        if self._buf:
            self._buf[:] = self._src


def run(
    rate: int,
    seconds: int,
    workloads: int,
    trace: bool,
    span_ms: float = 5.0,
    *,
    evict_mb: int = 0,
) -> dict[str, Any]:
    from jouled.ingest import otlpscan
    from jouled.ingest.decode import decode_otlp_protobuf
    from jouled.ingest.otlpscan import check_scope
    from jouled.ingest.rules import Rules
    from jouled.ingest.wire import scopes
    from jouled.pipeline.tick import Tick

    models = model_names(workloads)
    bodies = sdk_bodies(rate, seconds, workloads, span_ms)
    stage, cfg = _stage(workloads, models)
    known = stage.known_workloads()
    per_token = dict(cfg.spans.gflops_per_token)
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)  # the daemon's (jouled/daemon/gc_tuning.py)
    if trace:
        tracemalloc.start()
    # decode = check (framing and each scope checked as upb would parse it: ``otlpscan.
    # check_scope``, timed on its own over the same body just before) + read and select
    # (the rest of ``decode_otlp_protobuf``: reading ids, times and the wanted attributes,
    # judging each request and making its ``Span``).
    cpu = {"check": 0.0, "read_select": 0.0, "queue": 0.0, "tick": 0.0}
    spans = 0
    held: list[float] = []  # Python heap over the no-span start, per pending span
    held_pending: list[int] = []
    clock = time.thread_time
    evict = _Evictor(evict_mb)
    b = 0
    base = 0
    for s in range(seconds + 40):
        now = T0 + s + 1
        if trace and s == 0:  # before the first batch: what the stage holds without spans
            gc.collect()
            base = tracemalloc.get_traced_memory()[0]
        while b < len(bodies) and bodies[b][0] <= now:
            evict()
            rules = Rules(now=now, known_workloads=known, gflops_per_token=per_token)
            c0 = clock()
            view = memoryview(bodies[b][1])
            for _, sa, sb in scopes(view):
                check_scope(view[sa:sb])
            scan = clock() - c0
            c0 = clock()
            result = decode_otlp_protobuf(bodies[b][1], rules)
            c1 = clock()
            stage.submit(result.spans)
            c2 = clock()
            cpu["check"] += scan
            cpu["read_select"] += max(0.0, c1 - c0 - scan)
            cpu["queue"] += c2 - c1
            spans += len(result.spans)
            b += 1
        # The estimate's two components, as on a host without RAPL (the daemon benchmark's).
        host = {("cpu", "estimate"): 60.0, ("memory", "estimate"): 6.0}
        tick = Tick(s, s, s + 1.0, now - 1.0, now, {}, host, {})
        evict()
        c0 = clock()
        stage.on_tick(tick, None)
        cpu["tick"] += clock() - c0
        if trace and s in (seconds - 10, seconds - 5, seconds - 1):
            gc.collect()
            pending = max(1, stage.splitter.pending)
            held.append((tracemalloc.get_traced_memory()[0] - base) / pending)
            held_pending.append(pending)
    snap = stage.last
    settled = snap.spans_settled if snap else 0
    in_spans = sum(snap.workload_in_spans_j.values()) if snap else 0.0
    booked = sum(r.energy_sum_j for r in snap.requests.values()) if snap else 0.0
    out: dict[str, Any] = {
        "rate": rate,
        "seconds": seconds,
        "evict_mb": evict_mb,
        "span_ms": span_ms,
        "spans": spans,
        "settled": settled,
        "books_balance_rel": abs(in_spans - booked) / in_spans if in_spans else math.nan,
        "us_per_span": {k: 1e6 * v / spans for k, v in cpu.items()},
        "us_per_span_total": 1e6 * sum(cpu.values()) / spans,
        "compiled_scanner": otlpscan.COMPILED,
    }
    if held:
        out["heap_bytes_per_pending_span"] = sum(held) / len(held)
        out["pending"] = sum(held_pending) / len(held_pending)
        tracemalloc.stop()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=int, default=1000)
    p.add_argument("--seconds", type=int, default=90, help="virtual seconds of spans")
    p.add_argument("--workloads", type=int, default=10)
    p.add_argument("--no-memory", action="store_true", help="skip the tracemalloc pass")
    p.add_argument(
        "--span-ms",
        type=float,
        default=5.0,
        help="request length: 5 ms spans are mostly alone in their tick; LLM requests of "
        "seconds (e.g. 2000) overlap by the hundred, as under continuous batching",
    )
    p.add_argument(
        "--evict-mb",
        type=int,
        default=0,
        help="MiB copied between steps (not timed), so that each step starts with cold "
        "caches as in the daemon (64: more than this machine's L2 and its share of L3)",
    )
    args = p.parse_args()
    seconds = min(args.seconds, 600)
    span_ms = min(max(args.span_ms, 0.0), 30_000.0)
    evict_mb = min(max(args.evict_mb, 0), 1024)
    r = run(args.rate, seconds, args.workloads, trace=False, span_ms=span_ms, evict_mb=evict_mb)
    if not args.no_memory:
        r["memory"] = run(args.rate, seconds, args.workloads, trace=True, span_ms=span_ms)
    print(
        f"{r['spans']} spans, {r['settled']} settled; CPU per span: "
        + ", ".join(f"{k} {v:.2f} us" for k, v in r["us_per_span"].items())
        + f"; total {r['us_per_span_total']:.2f} us",
        file=sys.stderr,
    )
    if "memory" in r:
        m = r["memory"]
        print(
            f"heap per pending span {m['heap_bytes_per_pending_span']:.0f} B "
            f"(~{m['pending']:.0f} spans pending; joiner records and books included)",
            file=sys.stderr,
        )
    name = "span_path" if span_ms == 5.0 else f"span_path_{span_ms:g}ms"
    if evict_mb:
        name += f"_evict{evict_mb}"
    save(name, {"machine": machine(), "command": " ".join(sys.argv), "result": r})


if __name__ == "__main__":
    main()
