"""The daemon's lifecycle: build collectors from config, tick, serve, reload, drain.

Signals: SIGTERM/SIGINT drain and exit 0; SIGHUP reloads the config file (a bad file is
rejected with an error and the running config stays). systemd is told READY=1 once the
listeners are bound and the first tick is published, and WATCHDOG=1 from the tick loop,
so a stalled loop (not just a live process) gets the service restarted.

Over 400 lines because it is the supervisor: start-up order, reload, drain and the tick loop
over every long-lived object it owns; collectors come from collectors/registry.py, listeners
from ingest/listeners.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from jouled import __version__
from jouled import config as config_mod
from jouled.attribution.by_model import tick_gflops
from jouled.attribution.server_stage import ServerMetricsStage
from jouled.attribution.stage import AttributionStage, GpuProcesses
from jouled.attribution.workloads import ProcessTracker
from jouled.clock import Clock, SystemClock
from jouled.collectors import registry
from jouled.collectors.base import EnergyCollector
from jouled.collectors.registry import CollectorPlan, Hardware, RequiredCollectorFailed
from jouled.config import Config, ConfigError, GridProviderConfig
from jouled.connections import ConnectionLimits, ConnectionStats, GuardedRunner
from jouled.cost.grid import GridPoller
from jouled.cost.live import CostStage
from jouled.costmodel.configjson import ConfigError as ModelConfigError
from jouled.costmodel.configjson import load_model_config
from jouled.costmodel.decoder import RequestWork
from jouled.costmodel.fitfile import Fit, FitFileError, load_fit
from jouled.daemon.gc_tuning import collect_young, tune_gc
from jouled.daemon.malloc_tuning import HEAP_TRIM_S, trim_heap_every
from jouled.daemon.page_out import PageOut
from jouled.daemon.systemd import Notifier
from jouled.exporter.attribution import AttributionCollector, RequestCollector
from jouled.exporter.cost import CostCollector
from jouled.exporter.exposition import Exposition
from jouled.exporter.http import build_metrics_app, tick_health
from jouled.exporter.ingest import IngestCollector
from jouled.exporter.metrics import SnapshotCollector
from jouled.exporter.server import ServerMetricsCollector, server_requests
from jouled.files import MAX_TOKEN_BYTES, FileReadError, read_small_file
from jouled.ingest.grpc import GrpcIngest, Http2Hint
from jouled.ingest.limits import BytesInFlight, OffLoop
from jouled.ingest.listeners import build_listeners
from jouled.ingest.requests import IngestRequests
from jouled.ledger import Ledger
from jouled.pipeline.sampler import Sampler
from jouled.threads import named_pool

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The daemon cannot start as configured; the message says what to fix."""


def build_collectors(
    cfg: Config, clock: Clock, *, nvml_module: Any | None = None, probe: bool = True
) -> CollectorPlan:
    """The registry's collectors; a required one that fails is a ``StartupError``."""
    try:
        return registry.build_collectors(
            cfg, clock, hardware=Hardware(nvml_module=nvml_module), probe=probe
        )
    except RequiredCollectorFailed as exc:
        raise StartupError(str(exc)) from None


def _gpu_processes(collectors: list[EnergyCollector]) -> GpuProcesses | None:
    for c in collectors:
        fn = getattr(c, "gpu_processes", None)
        if c.name == "nvml" and callable(fn):
            return fn  # type: ignore[no-any-return]
    return None


def _load_fit(cfg: Config) -> Fit | None:
    path = cfg.spans.fit_file
    if path is None:
        return None
    try:
        fit = load_fit(path)
    except (OSError, FitFileError) as exc:
        raise StartupError(f"spans.fit_file: cannot use {path}: {exc}") from None
    log.info("cost model: predicted joules per request from %s", path)
    return fit


def _load_model_configs(cfg: Config) -> dict[str, RequestWork]:
    """Per model, the request cost from its config.json (``spans.model_configs``)."""
    costs = {}
    for model, path in cfg.spans.model_configs.items():
        try:
            costs[model] = RequestWork.from_config(load_model_config(path))
        except ModelConfigError as exc:
            where = "" if str(path) in str(exc) else f"{path}: "  # named once
            raise StartupError(f"spans.model_configs[{model!r}]: {where}{exc}") from None
        log.info("cost model: work of %r spans from tokens with %s", model, path)
    return costs


def _read_token(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        token = read_small_file(path, MAX_TOKEN_BYTES, "token file").decode().strip()
    except (FileReadError, UnicodeDecodeError) as exc:
        raise StartupError(f"ingest.token_file: cannot use {path}: {exc}") from None
    if not token:
        raise StartupError(f"ingest.token_file: {path} is empty; put the bearer token in it")
    return token


def split_listen(value: str) -> tuple[str | None, int]:
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    return (host or None), int(port)


class Daemon:
    """Owns every long-lived object; nothing of the daemon lives at module level."""

    def __init__(
        self,
        cfg: Config,
        *,
        config_path: Path | None = None,
        flag_overrides: dict[str, Any] | None = None,
        clock: Clock | None = None,
        nvml_module: Any | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = cfg
        self.config_path = config_path
        self._flags = flag_overrides or {}
        self.clock = clock or SystemClock()
        self._nvml_module = nvml_module
        self.notifier = notifier or Notifier()
        self._stop = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self.page_out = PageOut()  # library pages start-up ran, handed back (daemon/page_out.py)
        self._runners: list[web.AppRunner] = []
        self.sampler: Sampler | None = None
        self.attribution: AttributionStage | None = None
        self.cost: CostStage | None = None
        self.server_metrics: ServerMetricsStage | None = None
        self.ledger: Ledger | None = None
        self.grid: GridPoller | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        self.ingest_requests = IngestRequests()  # jouled_ingest_requests_total
        self.bound: dict[str, tuple[str, int]] = {}
        self.exposition: Exposition | None = None
        self.grpc: GrpcIngest | None = None
        self._h2hint: Http2Hint | None = None
        self.connection_stats: dict[str, ConnectionStats] = {}
        # Shared by every span receiver (OTLP/HTTP, JSON, gRPC): jouled.ingest.limits.
        self.ingest_budget = BytesInFlight(cfg.ingest.max_bytes_in_flight)
        self.ingest_pool = OffLoop()

    def _timeout(self, cfg: Config) -> float:
        return min(cfg.collectors.timeout, cfg.interval * 0.8)

    async def start(self) -> None:
        cfg = self.config
        log.info("jouled %s starting (interval %.2fs)", __version__, cfg.interval)
        # Files the config names are checked before anything starts.
        token = _read_token(cfg.ingest.token_file) if cfg.ingest.enabled else None
        fit = _load_fit(cfg)
        token_costs = _load_model_configs(cfg)
        plan = await asyncio.to_thread(
            build_collectors, cfg, self.clock, nvml_module=self._nvml_module
        )
        for note in plan.notes:
            log.info("%s", note)
        if not plan.collectors:
            log.warning("no collector enabled: jouled serves health metrics only")
        self.attribution = AttributionStage(
            cfg, gpu_processes=_gpu_processes(plan.collectors), clock=self.clock
        )
        # An unwritable ledger logs one warning and leaves the live metrics running.
        ledger = self.ledger = Ledger(
            cfg.ledger.path, retention_days=cfg.ledger.retention_days, wall=self.clock.time
        )
        if cfg.ledger.path is not None:
            if "path" not in cfg.ledger.model_fields_set:
                log.info(
                    "ledger.path not configured: using %s (%s)",
                    cfg.ledger.path,
                    "systemd StateDirectory"
                    if os.environ.get("STATE_DIRECTORY")
                    else "root"
                    if os.geteuid() == 0
                    else "not root: the XDG state directory",
                )
            await ledger.open_async()
        self.grid = self._grid_poller(cfg)
        self.cost = CostStage(cfg.cost, self.grid, sink=ledger.add, fit=fit)
        self.server_metrics = ServerMetricsStage(
            cfg, self.clock, gflops_of=tick_gflops(token_costs)
        )
        self.sampler = Sampler(
            plan.collectors,
            self.clock,
            timeout_s=self._timeout(cfg),
            stages=[self.attribution, self.server_metrics, self.cost],
        )
        sampler = self.sampler
        light = CollectorRegistry(auto_describe=True)  # all but the per-model families
        for collector in (
            SnapshotCollector(lambda: sampler.snapshot),
            AttributionCollector(lambda: sampler.snapshot),
            ServerMetricsCollector(lambda: sampler.snapshot),
            IngestCollector(self.ingest_requests.totals),
            CostCollector(
                lambda: sampler.snapshot,
                ledger=ledger.status,
                grid=lambda: self.grid.status() if self.grid is not None else None,
            ),
        ):
            light.register(collector)
            self.registry.register(collector)
        self.registry.register(RequestCollector(lambda: sampler.snapshot, server_requests))
        self.exposition = Exposition(light, lambda: sampler.snapshot)
        await sampler.tick()  # baselines; the first published tick carries no energy yet
        self._start_task("subsample", self._subsample())
        self._start_task("reload", self._reloads())
        self._start_task("ledger", ledger.run(cfg.ledger.flush_interval))
        # The cycles grpcio's server leaves would otherwise wait ~70 minutes (gc_tuning).
        self._start_task("heap-trim", trim_heap_every(HEAP_TRIM_S, collect=collect_young))
        self._start_task("page-out", self.page_out.run())
        if self.grid is not None:
            self._start_task("grid", self.grid.run())
        health = tick_health(lambda: sampler.snapshot, self.clock.monotonic, cfg.interval)
        await self._serve(
            "metrics",
            build_metrics_app(self.registry, health, exposition=self.exposition),
            cfg.listen,
            max_connections=cfg.connections.max_metrics,
        )
        grpc_where = None
        if cfg.ingest.enabled:
            ingest = build_listeners(
                cfg,
                self.attribution,
                self.clock,
                token,
                token_costs,
                budget=self.ingest_budget,
                off_loop=self.ingest_pool,
                requests=self.ingest_requests,
            )
            await self._serve(
                "ingest",
                ingest.http,
                cfg.ingest.listen,
                socket_mode=int(cfg.ingest.socket_mode, 8),
                max_connections=cfg.connections.max_ingest,
                # Bodies are inflated by the app, off the loop and with a cap (limits.py).
                auto_decompress=False,
            )
            if ingest.grpc is not None and cfg.ingest.grpc_listen is not None:
                grpc_where = await self._serve_grpc(ingest.grpc, cfg.ingest.grpc_listen)
        # A gRPC client on an HTTP port: one line saying where gRPC is, not a traceback.
        self._h2hint = Http2Hint(grpc_where, self.clock)
        logging.getLogger("aiohttp.server").addFilter(self._h2hint)

    async def _serve_grpc(self, grpc: GrpcIngest, listen: str) -> str:
        try:
            host, port = await grpc.start(listen)
        except OSError as exc:
            await grpc.stop(0)
            raise StartupError(
                f"cannot listen on {listen} for OTLP/gRPC: {exc} (is another jouled or an "
                "OpenTelemetry Collector on it? set ingest.grpc_listen to another address, "
                "or null to turn gRPC off)"
            ) from None
        self.grpc = grpc
        self.bound["grpc"] = (host, port)
        log.info(
            "OTLP/gRPC ingest listening on %s:%d%s",
            host,
            port,
            "" if grpc.started else " (grpcio starts at the first gRPC connection)",
        )
        return f"{host}:{port}"

    async def _subsample(self) -> None:
        """Sample the workloads' active processes between ticks (attribution's CPU profile)."""
        while True:
            n = self.config.attribution.cpu_samples_per_tick
            tracker = self.attribution.tracker if self.attribution is not None else None
            if not isinstance(tracker, ProcessTracker):
                tracker = None  # a test's fake tracker has no sub-tick sampling
            # With no recently active workload process there is nothing to sample: wake
            # once a tick to look again, not n times (an idle daemon stays idle).
            if n <= 1 or tracker is None or not tracker.has_active:
                # No workload at all: look again every 10 ticks (a reload may add some).
                idle = tracker is not None and not tracker.matchers
                await asyncio.sleep(self.config.interval * (10 if idle else 1))
                continue
            await asyncio.sleep(self.config.interval / n)
            stage = self.attribution
            # The tick (on its worker thread) holds the tracker: skip this sample then
            # rather than make the loop wait.
            if stage is None or not stage.lock.acquire(blocking=False):
                continue
            try:
                tracker.subsample(self.clock.monotonic())
            except Exception:  # never let sampling end the task
                log.exception("sub-tick CPU sampling failed")
            finally:
                stage.lock.release()

    def _grid_poller(self, cfg: Config) -> GridPoller | None:
        gi = cfg.cost.grid_intensity
        return GridPoller(gi, self.clock) if isinstance(gi, GridProviderConfig) else None

    def _start_task(self, name: str, coro: Any) -> None:
        old = self._tasks.pop(name, None)
        if old is not None:
            old.cancel()
        self._tasks[name] = asyncio.ensure_future(coro)

    async def _serve(
        self,
        name: str,
        app: web.Application,
        listen: str,
        *,
        socket_mode: int = 0o660,
        max_connections: int,
        auto_decompress: bool = True,
    ) -> None:
        cc = self.config.connections
        limits = ConnectionLimits(max_connections, cc.header_timeout, cc.idle_timeout)
        runner = GuardedRunner(
            app,
            limits,
            on_refused=lambda: self._refused_connection(name, max_connections),
            access_log=None,
            handle_signals=False,
            auto_decompress=auto_decompress,
        )
        self.connection_stats[name] = runner.stats
        await runner.setup()
        site: web.BaseSite
        path = listen.removeprefix("unix:") if listen.startswith("unix:") else None
        if path is not None:
            site = web.UnixSite(runner, path)
        else:
            host, port = split_listen(listen)
            site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
            if path is not None:
                # Who may connect is the socket file's mode (and its directory's).
                os.chmod(path, socket_mode)
        except OSError as exc:
            await runner.cleanup()
            raise StartupError(
                f"cannot listen on {listen} for {name}: {exc.strerror or exc} "
                "(is another jouled running? choose another address with --listen or the config)"
            ) from None
        self._runners.append(runner)
        if path is not None:
            self.bound[name] = ("unix", 0)
            log.info("%s listening on unix:%s (mode %o)", name, path, socket_mode)
            return
        bound = runner.addresses[0]
        self.bound[name] = (str(bound[0]), int(bound[1]))
        log.info("%s listening on http://%s:%d", name, self.bound[name][0], self.bound[name][1])

    def _refused_connection(self, name: str, cap: int) -> None:
        # Rate-limited by the log filter (jouled.connections.RepeatFilter).
        log.warning(
            "%s listener: %d connections open; refusing new ones (connections.max_%s)",
            name,
            cap,
            name,
        )

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload_requested.set()

    def _reject_reload(self, reason: Exception) -> bool:
        log.error("reload rejected, keeping the running config: %s", reason)
        self.notifier.ready("reload rejected")
        return False

    def _read_config(self) -> Config:
        return config_mod.load(self.config_path).with_overrides(**self._flags)

    async def _reloads(self) -> None:
        """One reload at a time; SIGHUPs arriving meanwhile coalesce into one more."""
        while True:
            await self._reload_requested.wait()
            self._reload_requested.clear()
            await self.reload_async()
            self.page_out.soon()  # the reload ran pydantic's validators again

    async def reload_async(self) -> bool:
        """Read and validate the file on a worker thread (a large file never holds the
        loop), then apply it on the loop; keep the running config if the new one is bad."""
        self.notifier.reloading()
        try:
            new = await asyncio.to_thread(self._read_config)
        except ConfigError as exc:
            return self._reject_reload(exc)
        except Exception as exc:  # a bad reload must never end the daemon
            log.debug("reload failed", exc_info=True)
            return self._reject_reload(exc)
        return self.reload(new)

    def reload(self, new: Config | None = None) -> bool:
        """Re-read the config file (or apply ``new``, read already); keep the running config
        if the new one is bad."""
        if new is None:
            self.notifier.reloading()
            try:
                new = self._read_config()
            except ConfigError as exc:
                return self._reject_reload(exc)
        try:
            return self._apply(new)
        except Exception as exc:  # a bad reload must never end the daemon
            log.debug("applying the reloaded config failed", exc_info=True)
            return self._reject_reload(exc)

    def _apply(self, new: Config) -> bool:
        old = self.config
        fit = self.cost.fit if self.cost is not None else None
        if new.spans.fit_file != old.spans.fit_file:
            try:
                fit = _load_fit(new)
            except StartupError as exc:
                return self._reject_reload(exc)
        if new.spans.model_copy(update={"fit_file": None}) != old.spans.model_copy(
            update={"fit_file": None}
        ):
            log.warning("spans settings other than fit_file change only on restart")
        if new.listen != old.listen or new.ingest != old.ingest:
            log.warning("listen addresses change only on restart; other changes applied")
        if new.collectors != old.collectors and self.sampler is not None:
            try:
                plan = build_collectors(new, self.clock, nvml_module=self._nvml_module)
            except StartupError as exc:
                return self._reject_reload(exc)
            previous = self.sampler.collectors
            self.sampler.set_collectors(plan.collectors)
            if self.attribution is not None:
                self.attribution.set_gpu_processes(_gpu_processes(plan.collectors))
            for c in previous:
                with contextlib.suppress(Exception):
                    c.close()
            for note in plan.notes:
                log.info("%s", note)
        if self.sampler is not None:
            self.sampler.timeout_s = self._timeout(new)
        if self.attribution is not None and (
            new.workloads != old.workloads or new.attribution != old.attribution
        ):
            self.attribution.reconfigure(new)
        if self.server_metrics is not None and new.workloads != old.workloads:
            self.server_metrics.reconfigure(new)
        if self.cost is not None:
            self.cost.fit = fit
        if self.cost is not None and new.cost != old.cost:
            if new.cost.grid_intensity != old.cost.grid_intensity:
                self.grid = self._grid_poller(new)
                if self.grid is not None:
                    self._start_task("grid", self.grid.run())
                elif (task := self._tasks.pop("grid", None)) is not None:
                    task.cancel()
            if new.cost.energy_price.currency != old.cost.energy_price.currency:
                log.warning("cost totals so far keep their values under the new currency label")
            self.cost.reconfigure(new.cost, self.grid)
        if new.ledger != old.ledger:
            log.warning("ledger settings change only on restart")
        self.config = new
        log.info("configuration reloaded from %s", self.config_path or "embedded defaults")
        self.notifier.ready("reloaded")
        return True

    async def run(self) -> None:
        """The tick loop, until a stop is requested."""
        assert self.sampler is not None, "start() first"
        sampler = self.sampler
        next_tick = self.clock.monotonic() + self.config.interval
        last_ping = 0.0
        # One waiter on the stop event for the whole loop: a new task and timeout wrapper per
        # tick (wait_for) is most of an idle daemon's event-loop work.
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            await self._tick_loop(sampler, stopped, next_tick, last_ping)
        finally:
            stopped.cancel()

    async def _tick_loop(
        self, sampler: Sampler, stopped: asyncio.Future[Any], next_tick: float, last_ping: float
    ) -> None:
        while not self._stop.is_set():
            delay = next_tick - self.clock.monotonic()
            if delay > 0:
                await asyncio.wait((stopped,), timeout=delay)
                if self._stop.is_set():
                    break
            await sampler.tick()
            if self.exposition is not None:
                # Formats a scraper will ask for before the next tick render now, off the loop.
                self.exposition.prefetch(self.config.interval)
            now = self.clock.monotonic()
            next_tick += self.config.interval
            if next_tick < now:
                # Fell behind (suspended host, overloaded CPU): skip, do not burst-tick.
                missed = int((now - next_tick) / self.config.interval) + 1
                log.warning("tick loop fell behind by %d interval(s); skipping ahead", missed)
                next_tick += missed * self.config.interval
            wd = self.notifier.watchdog_interval_s
            if wd is not None and now - last_ping >= wd:
                self.notifier.watchdog()
                last_ping = now

    async def shutdown(self) -> None:
        self.notifier.stopping()
        # Stop taking spans first, then settle everything accepted so none is lost.
        if self.grpc is not None:
            await self.grpc.stop()
            self.grpc = None
        if self._h2hint is not None:
            logging.getLogger("aiohttp.server").removeFilter(self._h2hint)
            self._h2hint = None
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        if self.exposition is not None:
            self.exposition.close()
        self.ingest_pool.close()
        if self.attribution is not None and self.sampler is not None:
            final = self.attribution.flush(self.clock.time())
            self.sampler.publish_stage(self.attribution.name, final)
            if final is not None:
                # The books of every span taken: nothing accepted is lost on the way out.
                log.info(
                    "spans: received %d = settled %d + late %d + rejected %d + duplicate %d "
                    "+ dropped %d + pending %d (balance %d)",
                    final.spans_received,
                    final.spans_settled,
                    final.spans_late,
                    sum(final.spans_rejected.values()),
                    final.spans_duplicate,
                    final.spans_dropped,
                    final.spans_pending,
                    final.spans_balance,
                )
        if self.server_metrics is not None:
            await self.server_metrics.close()
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        if self.cost is not None and self.sampler is not None:
            # Books for the requests the attribution flush settled, then the last write.
            section = self.sampler.snapshot.attribution
            self.sampler.publish_stage(
                self.cost.name, self.cost.flush(section, self.clock.time(), self.clock.monotonic())
            )
        if self.ledger is not None:
            await self.ledger.flush_async()
            await self.ledger.close_async()
        if self.sampler is not None:
            await asyncio.to_thread(self.sampler.close)


async def serve(daemon: Daemon) -> int:
    """Run a daemon until SIGTERM/SIGINT; returns the process exit code."""
    loop = asyncio.get_running_loop()
    # The tick's stages, decoding and rendering run on worker threads; the event loop gets
    # the GIL back within 1 ms instead of 5 (CPython's default), so /healthz and scrapes
    # stay fast while they work (benchmarks/hostile.py).
    sys.setswitchinterval(0.001)
    # asyncio.to_thread's pool (the tick's stages) with names an operator can see in top -H.
    loop.set_default_executor(named_pool(min(32, (os.cpu_count() or 1) + 4), "jouled-worker"))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop)
    loop.add_signal_handler(signal.SIGHUP, daemon.request_reload)
    try:
        await daemon.start()
    except StartupError as exc:
        log.error("%s", exc)
        await daemon.shutdown()
        return 1
    daemon.notifier.ready(f"jouled {__version__} serving")
    tune_gc()
    try:
        await daemon.run()
    finally:
        log.info("stopping: draining and flushing")
        await daemon.shutdown()
    log.info("stopped")
    return 0
