"""The server-metrics stage: per tick, each workload's measured energy goes to the models its
inference server reports work for (``workloads[].server_metrics``; docs/TOKENS.md).

Runs after the attribution stage and reads its section (the workloads' cumulative energy).
Each tick it takes the page read that finished since the last tick, turns it into
per-model token and request increases (``CounterFollower``, resets handled), splits the
workload's energy of the tick by the models' work (``split_by_work``), and starts the next
read. Reads run as tasks on the event loop (aiohttp, with a timeout) and are parsed on one
worker thread: the tick never waits for a server. A read that fails, times out or finds no
recognized counter marks the server down in ``jouled_server_metrics_up``.

Books per workload, exact at every tick: energy = Σ models + unserved + pending, where
pending is energy waiting (at most ``carry_seconds``) for the server to report work.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from jouled.attribution.by_model import GflopsOf, split_by_work, work_by_model
from jouled.clock import Clock
from jouled.collectors.server_http import fetch_page
from jouled.collectors.server_metrics import (
    CounterFollower,
    Counts,
    Page,
    PageError,
    parse_page,
)
from jouled.config import Config, ServerMetricsConfig
from jouled.pipeline.server_metrics import ServerMetricsSnapshot, ServerStatus
from jouled.pipeline.snapshot import Snapshot, frozen
from jouled.pipeline.tick import Tick
from jouled.threads import named_pool
from jouled.tls import verified_context

log = logging.getLogger(__name__)

OTHER_MODEL = "other"  # the models past the cap (the span path's name for them too)


Fetch = Callable[[ServerMetricsConfig], Awaitable[str]]  # a page's text (tests, benchmarks)


class _Server:
    """One workload's server: its reads, counters and energy books."""

    def __init__(self, workload: str, cfg: ServerMetricsConfig, model: str | None) -> None:
        self.workload = workload
        self.cfg = cfg
        self.model = model
        self.follower = CounterFollower()
        self.task: asyncio.Task[tuple[Page | None, str, float]] | None = None
        self.status = ServerStatus(False, "not read yet", (), 0.0)
        self.pending: deque[tuple[float, float]] = deque()  # (wall, joules)
        self.parsing: concurrent.futures.Future[Page] | None = None
        self.last_energy: float | None = None

    @property
    def default_model(self) -> str:
        return self.cfg.model or self.model or self.workload


class ServerMetricsStage:
    name = "server_metrics"

    def __init__(
        self,
        cfg: Config,
        clock: Clock,
        *,
        gflops_of: GflopsOf | None = None,
        fetch: Fetch | None = None,
    ) -> None:
        self._clock = clock
        self._gflops_of = gflops_of
        self._fetch = fetch
        self._session: Any = None
        self._tls: ssl.SSLContext | None = None  # for https pages: made at the first read
        self._parser: concurrent.futures.ThreadPoolExecutor | None = None
        self._servers: dict[str, _Server] = {}
        self._interval = cfg.interval
        self._model_cap = cfg.spans.max_models_per_workload
        self._models: dict[str, set[str]] = {}  # per workload, the models given a series
        self._model_j: dict[tuple[str, str], float] = {}
        self._tokens: dict[tuple[str, str, str], float] = {}
        self._requests: dict[tuple[str, str], float] = {}
        self._unserved: dict[str, float] = {}
        self.reconfigure(cfg)

    def reconfigure(self, cfg: Config) -> None:
        """Apply reloaded workloads: new servers start with a baseline read; totals stay."""
        self._interval = cfg.interval
        wanted = {w.name: w for w in cfg.workloads if w.server_metrics is not None}
        replaced: dict[str, _Server] = {}
        for name in list(self._servers):
            server = self._servers[name]
            w = wanted.get(name)
            if w is None or (w.server_metrics, w.model) != (server.cfg, server.model):
                if server.task is not None:
                    server.task.cancel()
                del self._servers[name]
                if w is None:  # no model will come for what waits: the books stay whole
                    waiting = math.fsum(j for _, j in server.pending)
                    self._unserved[name] = self._unserved.get(name, 0.0) + waiting
                else:
                    replaced[name] = server
        for name, w in wanted.items():
            if name not in self._servers and w.server_metrics is not None:
                new = self._servers[name] = _Server(name, w.server_metrics, w.model)
                old = replaced.get(name)
                if old is not None:  # a new URL or model: the energy books carry on
                    new.last_energy = old.last_energy
                    new.pending = old.pending

    @property
    def workloads(self) -> frozenset[str]:
        return frozenset(self._servers)

    # --- reads ---
    def _timeout(self, server: _Server) -> float:
        return min(server.cfg.timeout, 0.8 * self._interval)

    async def _get(self, server: _Server) -> str:
        if self._fetch is not None:
            return await self._fetch(server.cfg)
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None), raise_for_status=False
            )
        tls = None
        if server.cfg.url.startswith("https:"):
            # The daemon imports aiohttp without the CA bundle (jouled/tls.py): its default
            # context trusts nothing. This one reads the bundle once, off the event loop.
            if self._tls is None:
                self._tls = await asyncio.to_thread(verified_context)
            tls = self._tls
        return await fetch_page(
            self._session, server.cfg.url, max_bytes=server.cfg.max_body_bytes, tls=tls
        )

    async def _parse(self, server: _Server, text: str) -> Page:
        """Parse on the stage's one worker thread. A parse outlives a timeout (a thread
        cannot be stopped): the server reads again only once it has ended, so parses never
        pile up."""
        if self._parser is None:
            self._parser = named_pool(1, "jouled-server-metrics")
        fut = self._parser.submit(parse_page, text, default_model=server.default_model)
        server.parsing = fut
        return await asyncio.wrap_future(fut)

    async def _read(self, server: _Server) -> tuple[Page | None, str, float]:
        start = self._clock.monotonic()
        timeout = self._timeout(server)
        try:
            async with asyncio.timeout(timeout):
                text = await self._get(server)
                # Parsing a large page takes milliseconds: off the event loop.
                page = await self._parse(server, text)
        except TimeoutError:
            return None, f"no answer within {timeout:g}s", self._clock.monotonic() - start
        except PageError as exc:
            return None, str(exc), self._clock.monotonic() - start
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # refused, reset, DNS, TLS: the server is down
            return None, f"{type(exc).__name__}: {exc}", self._clock.monotonic() - start
        return page, "", self._clock.monotonic() - start

    def _collect(self, server: _Server) -> dict[str, Counts]:
        """The increases of the read that finished since the last tick (none: empty)."""
        task = server.task
        if task is None or not task.done():
            return {}
        server.task = None
        if task.cancelled():
            return {}
        page, error, duration = task.result()
        before = server.status
        if page is None:
            server.status = ServerStatus(False, error, before.servers, duration)
            if before.up or before.error != error:
                log.warning(
                    "server_metrics of workload %s (%s) is down: %s",
                    server.workload,
                    server.cfg.url,
                    error,
                )
            return {}
        server.status = ServerStatus(True, "", tuple(sorted(page.servers)), duration)
        if not before.up:
            log.info(
                "server_metrics of workload %s: reading %s counters from %s",
                server.workload,
                "/".join(sorted(page.servers)),
                server.cfg.url,
            )
        resets = server.follower.resets
        counts = server.follower.advance(page)
        if server.follower.resets != resets:
            log.warning(
                "server_metrics of workload %s: a counter went down (the server restarted); "
                "counting from zero",
                server.workload,
            )
        return counts

    def _labels(self, workload: str, counts: dict[str, Counts]) -> dict[str, str]:
        """Each model's ``model`` label: itself, or "other" past ``spans.max_models_per_workload``
        models per workload. The cap holds for as long as the daemon runs, first come with
        work (the busiest first within one read), as spans are capped: each model is a label
        value of series that never go away, so a server naming new models read after read
        must not grow them. A model with no work yet (the baseline read) gets no label.
        """
        seen = self._models.setdefault(workload, set())
        labels: dict[str, str] = {}
        for m in sorted(counts, key=lambda m: (-(counts[m].input + counts[m].output), m)):
            c = counts[m]
            if m not in seen and c.input == c.output == c.requests == 0:
                continue  # takes no place under the cap
            if m != OTHER_MODEL and (m in seen or len(seen) < self._model_cap):
                seen.add(m)
                labels[m] = m
            else:
                labels[m] = OTHER_MODEL
        return labels

    def _start(self, server: _Server) -> None:
        if server.task is not None:
            return  # the last read is still running: one at a time per server
        if server.parsing is not None and not server.parsing.done():
            return  # a page that timed out is still being parsed
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        server.task = loop.create_task(self._read(server))

    # --- the tick ---
    def on_tick(self, tick: Tick, snapshot: Snapshot) -> ServerMetricsSnapshot:
        energy = _workload_energy(snapshot)
        for server in self._servers.values():
            counts = self._collect(server)
            self._book(server, tick.w1, energy.get(server.workload, 0.0), counts)
            self._start(server)
        return self._freeze()

    def _book(
        self, server: _Server, wall: float, total_j: float, counts: dict[str, Counts]
    ) -> None:
        w = server.workload
        # The attribution section carries cumulative energy: this tick's is the difference.
        tick_j = 0.0 if server.last_energy is None else max(0.0, total_j - server.last_energy)
        server.last_energy = total_j
        labels = self._labels(w, counts)
        for model, label in labels.items():
            c = counts[model]
            for kind, value in (("input", c.input), ("output", c.output)):
                key = (w, label, kind)
                self._tokens[key] = self._tokens.get(key, 0.0) + value
            self._requests[(w, label)] = self._requests.get((w, label), 0.0) + c.requests
        if tick_j > 0:
            server.pending.append((wall, tick_j))
        # Work per model before the cap merges any into "other": each keeps its GFLOPs
        # (an "other" bucket has no config; splitting by it fell back to tokens for all).
        _basis, by_model = work_by_model(counts, self._gflops_of)
        work: dict[str, float] = {}
        for model, value in by_model.items():
            work[labels[model]] = work.get(labels[model], 0.0) + value
        if work and server.pending:
            joules = math.fsum(j for _, j in server.pending)
            server.pending.clear()
            for model, j in split_by_work(joules, work).items():
                self._model_j[(w, model)] = self._model_j.get((w, model), 0.0) + j
            return
        horizon = wall - server.cfg.carry_seconds
        while server.pending and server.pending[0][0] <= horizon:
            _, j = server.pending.popleft()
            self._unserved[w] = self._unserved.get(w, 0.0) + j

    def _freeze(self) -> ServerMetricsSnapshot:
        return ServerMetricsSnapshot(
            model_energy_j=frozen(self._model_j),
            tokens=frozen(self._tokens),
            requests=frozen(self._requests),
            status=frozen({w: s.status for w, s in self._servers.items()}),
            resets=frozen({w: s.follower.resets for w, s in self._servers.items()}),
            unserved_j=frozen(dict.fromkeys(self._servers, 0.0) | self._unserved),
            pending_j=frozen(
                {w: math.fsum(j for _, j in s.pending) for w, s in self._servers.items()}
            ),
            workloads=frozenset(self._servers),
        )

    async def close(self) -> None:
        tasks = [s.task for s in self._servers.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._parser is not None:
            self._parser.shutdown(wait=False, cancel_futures=True)
            self._parser = None


def _workload_energy(snapshot: Snapshot) -> dict[str, float]:
    """Cumulative joules per workload (all components) from the attribution section."""
    section = snapshot.attribution
    parts: Mapping[tuple[str, str, str], float] = getattr(section, "workload_energy_j", {})
    sums: dict[str, list[float]] = {}
    for (workload, _component, _source), j in parts.items():
        sums.setdefault(workload, []).append(j)
    return {w: math.fsum(v) for w, v in sums.items()}
