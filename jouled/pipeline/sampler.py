"""The tick loop: read every collector, turn cumulative readings into per-tick deltas,
build non-overlapping host components, run later stages, publish a snapshot.

A *tick* is one interval (default 1 s). Collectors run concurrently in worker threads with
a timeout, so a slow or hung source (an NVML call stuck on a dying GPU) never stalls the
others: it is marked down for that tick and not called again until its last read returns.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from jouled.clock import Clock
from jouled.collectors.base import (
    CollectorError,
    Component,
    DomainReading,
    EnergyCollector,
    Kind,
    Sample,
    Source,
)
from jouled.pipeline.snapshot import EMPTY, SECTIONS, CollectorStatus, Snapshot, frozen
from jouled.pipeline.tick import DomainKey, HostKey, Tick
from jouled.threads import named_pool

log = logging.getLogger(__name__)


class Stage(Protocol):
    """A later step of the pipeline (attribution, cost). Returns its snapshot section, which
    the sampler publishes in the ``Snapshot`` field named like the stage. A stage with a
    true ``off_loop`` attribute guards its own state and has ``on_tick`` run on a worker
    thread; the others run on the event loop."""

    name: str

    def on_tick(self, tick: Tick, snapshot: Snapshot) -> object: ...


def _section(name: str) -> str:
    if name not in SECTIONS:
        raise ValueError(f"a stage named {name!r} has no snapshot section ({sorted(SECTIONS)})")
    return name


# Estimated domain kinds and the host component each fills.
_ESTIMATED = {Kind.CPU: Component.CPU, Kind.MEMORY: Component.DRAM}


def _by_source(sample: Sample, counts: Mapping[str, int], fallback: str) -> dict[DomainKey, int]:
    """Per-domain counts of a sample keyed (domain, source), as the snapshot keys them."""
    sources = {r.domain: str(r.source) for r in sample.readings}
    return {(d, sources.get(d, fallback)): n for d, n in counts.items()}


def host_components(readings: Sequence[tuple[DomainReading, float]]) -> dict[HostKey, float]:
    """Per-tick host energy by non-overlapping component, from per-domain deltas.

    package covers cores and uncore (so those are never added); DRAM is a separate RAPL
    domain; psys covers the whole platform, so ``other`` = psys - package - dram. An
    estimate fills a component only where no measurement covers it. A frozen meter (its
    counter does not move while the host works) measures nothing and covers nothing.
    """
    by_kind: dict[tuple[Kind, Source], float] = {}
    for reading, delta in readings:
        if reading.frozen:
            continue
        key = (reading.kind, reading.source)
        by_kind[key] = by_kind.get(key, 0.0) + delta
    out: dict[HostKey, float] = {}
    measured: set[str] = set()
    cpu = by_kind.get((Kind.PACKAGE, Source.RAPL))
    dram = by_kind.get((Kind.DRAM, Source.RAPL))
    psys = by_kind.get((Kind.PSYS, Source.RAPL))
    if cpu is not None:
        out[(Component.CPU, Source.RAPL)] = cpu
        measured.add(Component.CPU)
    if dram is not None:
        out[(Component.DRAM, Source.RAPL)] = dram
        measured.add(Component.DRAM)
    if psys is not None:
        # Clamped: psys and package are sampled at slightly different instants.
        out[(Component.OTHER, Source.RAPL)] = max(0.0, psys - (cpu or 0.0) - (dram or 0.0))
        measured.add(Component.OTHER)
    gpu = by_kind.get((Kind.GPU, Source.NVML))
    if gpu is not None:
        out[(Component.GPU, Source.NVML)] = gpu
        measured.add(Component.GPU)
    for kind, component in _ESTIMATED.items():
        est = by_kind.get((kind, Source.ESTIMATE))
        if est is not None and component not in measured:
            out[(component, Source.ESTIMATE)] = est
    return out


# A placeholder, replaced before a tick's results are used.
_NOT_READ = CollectorStatus(False, 0.0, "not read")


class Sampler:
    """Owns the running totals; the only writer of the published snapshot."""

    def __init__(
        self,
        collectors: Sequence[EnergyCollector],
        clock: Clock,
        *,
        timeout_s: float = 0.5,
        stages: Sequence[Stage] = (),
    ) -> None:
        self._clock = clock
        self.timeout_s = timeout_s
        self._stages: list[Stage] = []
        self.set_stages(stages)
        self._executor = named_pool(4, "jouled-collector")
        self._collectors: list[EnergyCollector] = []
        self._pending: dict[str, concurrent.futures.Future[Sample]] = {}
        self._last_cumulative: dict[tuple[str, str], float] = {}
        self._domain_total: dict[DomainKey, float] = {}
        self._host_total: dict[HostKey, float] = {}
        self._resets: dict[DomainKey, int] = {}
        self._glitches: dict[DomainKey, int] = {}
        self._frozen: dict[DomainKey, bool] = {}
        self._status: dict[str, CollectorStatus] = {}
        self._last_t = clock.monotonic()
        self._seq = 0
        self.snapshot: Snapshot = EMPTY
        self.set_collectors(collectors)

    @property
    def collectors(self) -> list[EnergyCollector]:
        return list(self._collectors)

    def set_collectors(self, collectors: Sequence[EnergyCollector]) -> None:
        """Swap the collector set (config reload). Totals carry on; new ones start a baseline."""
        keep = {id(c) for c in collectors}
        for old in self._collectors:
            if id(old) not in keep:
                self._forget(old.name)
                self._status.pop(old.name, None)
        self._collectors = list(collectors)

    def set_stages(self, stages: Sequence[Stage]) -> None:
        for stage in stages:
            _section(stage.name)
        self._stages = list(stages)

    def _forget(self, collector_name: str) -> None:
        for key in [k for k in self._last_cumulative if k[0] == collector_name]:
            del self._last_cumulative[key]

    def _inline(self, collector: EnergyCollector) -> bool:
        """Whether ``collector`` is read on the loop this tick: its read cannot block
        (/proc/stat: microseconds, less than the hand-off to a thread and back) and no read of
        it is still running on a thread."""
        return collector.name not in self._pending and getattr(collector, "reads_inline", False)

    def _read_inline(self, collector: EnergyCollector) -> tuple[Sample | None, CollectorStatus]:
        start = self._clock.monotonic()
        try:
            sample = collector.read()
        except Exception as exc:
            return self._failed(collector, start, exc)
        return self._read_ok(start, sample)

    def _read_ok(self, start: float, sample: Sample) -> tuple[Sample, CollectorStatus]:
        return sample, CollectorStatus(
            True, self._clock.monotonic() - start, "", frozen(sample.problems)
        )

    def _failed(
        self, collector: EnergyCollector, start: float, exc: Exception
    ) -> tuple[None, CollectorStatus]:
        """The status of a read that raised ``exc``: its message (a ``CollectorError`` says
        what to fix), or, for a collector bug, which must not end the tick loop, its type."""
        elapsed = self._clock.monotonic() - start
        if isinstance(exc, CollectorError):
            return None, CollectorStatus(False, elapsed, str(exc))
        log.error("collector %s failed unexpectedly", collector.name, exc_info=exc)
        return None, CollectorStatus(False, elapsed, f"{type(exc).__name__}: {exc}")

    async def _read_all(self) -> list[tuple[Sample | None, CollectorStatus]]:
        """Every collector's (sample, status), in collector order: inline reads at once, the
        others on threads, concurrently. No task is made for a tick with at most one read on
        a thread (gather's task and callbacks were 3 of an idle tick's 5 loop iterations)."""
        collectors = self._collectors
        threaded = [i for i, c in enumerate(collectors) if not self._inline(c)]
        if len(threaded) > 1:
            return list(await asyncio.gather(*(self._read(c) for c in collectors)))
        results: list[tuple[Sample | None, CollectorStatus]] = [
            (None, _NOT_READ) if i in threaded else self._read_inline(c)
            for i, c in enumerate(collectors)
        ]
        for i in threaded:
            results[i] = await self._read(collectors[i])
        return results

    async def _read(self, collector: EnergyCollector) -> tuple[Sample | None, CollectorStatus]:
        if self._inline(collector):
            return self._read_inline(collector)
        loop = asyncio.get_running_loop()
        start = self._clock.monotonic()
        fut = self._pending.get(collector.name)
        try:
            if fut is None:
                fut = self._executor.submit(collector.read)
                self._pending[collector.name] = fut
            sample = await asyncio.wait_for(asyncio.wrap_future(fut, loop=loop), self.timeout_s)
        except TimeoutError:
            # Leave the future pending: the thread is still inside the read. It is not
            # submitted again until it returns, so a hung source holds one thread at most.
            elapsed = self._clock.monotonic() - start
            return None, CollectorStatus(False, elapsed, f"read timed out after {self.timeout_s}s")
        except Exception as exc:
            self._pending.pop(collector.name, None)
            return self._failed(collector, start, exc)
        self._pending.pop(collector.name, None)
        return self._read_ok(start, sample)

    def _log_transition(self, name: str, status: CollectorStatus) -> None:
        before = self._status.get(name)
        if not status.up and (before is None or before.up or before.error != status.error):
            log.warning("collector %s is down: %s", name, status.error)
        elif status.up and before is not None and not before.up:
            log.info("collector %s is up again", name)
        new_problems = set(status.problems) - set(before.problems if before else {})
        for domain in sorted(new_problems):
            log.warning("collector %s: %s: %s", name, domain, status.problems[domain])

    async def tick(self) -> Snapshot:
        """Read every collector (concurrently, each within ``timeout_s``), turn the
        cumulative joules into this tick's deltas, run the stages in order, publish and
        return the new ``Snapshot``. A collector or stage failure degrades its own series
        (status down, last section kept); this never raises for one.
        """
        results = await self._read_all()
        t1 = self._clock.monotonic()
        w1 = self._clock.time()
        t0 = self._last_t
        # The tick's wall interval keeps its monotonic length, placed by the wall clock at
        # its end: an NTP step moves the next tick, never stretches or inverts it.
        w0 = w1 - (t1 - t0)
        deltas: list[tuple[DomainReading, float]] = []
        known_idle: dict[HostKey, float] = {}
        for collector, (sample, status) in zip(self._collectors, results, strict=True):
            if sample is not None and sample.standby:
                self._status.pop(collector.name, None)  # in reserve: neither up nor down
                self._forget(collector.name)
                continue
            self._log_transition(collector.name, status)
            self._status[collector.name] = status
            if sample is None:
                continue
            # A domain missing from a good read (a mirror found out, an estimate on standby)
            # starts from a new baseline if it comes back: its old value would be a spike.
            present = {r.domain for r in sample.readings}
            for key in [k for k in self._last_cumulative if k[0] == collector.name]:
                if key[1] not in present:
                    del self._last_cumulative[key]
            for reading in sample.readings:
                self._frozen[(reading.domain, str(reading.source))] = reading.frozen
                idle = sample.idle_w.get(reading.domain)
                if idle is not None and reading.kind in _ESTIMATED:
                    hkey = (str(_ESTIMATED[reading.kind]), str(reading.source))
                    known_idle[hkey] = known_idle.get(hkey, 0.0) + idle
                key = (collector.name, reading.domain)
                prev = self._last_cumulative.get(key)
                self._last_cumulative[key] = reading.energy_j
                if prev is None:
                    # First sight of this domain: a baseline, not energy. The series starts
                    # at 0 so that Prometheus's increase() counts the very first interval.
                    deltas.append((reading, 0.0))
                    continue
                # Collectors guarantee monotonic totals; clamp anyway, never export a rewind.
                deltas.append((reading, max(0.0, reading.energy_j - prev)))
            self._resets.update(_by_source(sample, sample.resets, collector.name))
            self._glitches.update(_by_source(sample, sample.glitches, collector.name))
        domain_j: dict[DomainKey, float] = {}
        gpu_j: dict[str, float] = {}
        for reading, delta in deltas:
            dkey = (reading.domain, str(reading.source))
            domain_j[dkey] = domain_j.get(dkey, 0.0) + delta
            self._domain_total[dkey] = self._domain_total.get(dkey, 0.0) + delta
            if reading.kind is Kind.GPU:
                gpu_j[reading.device] = gpu_j.get(reading.device, 0.0) + delta
        host_j = {(str(c), str(s)): v for (c, s), v in host_components(deltas).items()}
        for hkey, delta in host_j.items():
            self._host_total[hkey] = self._host_total.get(hkey, 0.0) + delta
        for dkey in domain_j:
            self._domain_total.setdefault(dkey, 0.0)
        self._seq += 1
        tick = Tick(
            seq=self._seq,
            t0=t0,
            t1=t1,
            w0=w0,
            w1=w1,
            domain_j=frozen(domain_j),
            host_j=frozen(host_j),
            gpu_j=frozen(gpu_j),
            known_idle_w=frozen(known_idle),
        )
        self._last_t = t1
        base = Snapshot(
            seq=self._seq,
            wall_time=w1,
            monotonic_time=t1,
            domain_energy_j=frozen(self._domain_total),
            host_energy_j=frozen(self._host_total),
            counter_resets=frozen(self._resets),
            collectors=frozen(self._status),
            counter_glitches=frozen(self._glitches),
            counter_frozen=frozen(self._frozen),
        )
        sections: dict[str, Any] = {}  # stage name -> its section (a Snapshot field)
        for stage in self._stages:
            # Each stage sees the sections the stages before it published this tick.
            view = replace(base, **sections) if sections else base
            try:
                if getattr(stage, "off_loop", False):
                    # Settling a tick with tens of thousands of spans is ~0.3 s of Python:
                    # a stage that guards its own state runs on a worker thread, so the
                    # event loop (/healthz, ingest) never waits for it.
                    section = await asyncio.to_thread(stage.on_tick, tick, view)
                else:
                    section = stage.on_tick(tick, view)
                sections[stage.name] = section
            except Exception:  # one stage's bug degrades its series, not the loop
                log.exception("stage %s failed on tick %d", stage.name, tick.seq)
                previous = getattr(self.snapshot, stage.name)
                if previous is not None:
                    sections[stage.name] = previous
        self.snapshot = replace(base, **sections)
        return self.snapshot

    def publish_stage(self, name: str, section: object) -> None:
        """Replace one stage's section outside a tick (the final flush on shutdown)."""
        if section is None:
            return
        changes: dict[str, Any] = {_section(name): section}
        self.snapshot = replace(self.snapshot, **changes)

    def close(self) -> None:
        for collector in self._collectors:
            try:
                collector.close()
            except Exception:
                log.exception("closing collector %s", collector.name)
        self._executor.shutdown(wait=False, cancel_futures=True)
